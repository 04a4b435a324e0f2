"""Studies: a whole pruning study from one TOML spec, trained (locally or on Ray) and audited."""

from __future__ import annotations

from ._study import Study, read_study, run_study, study_status

__all__ = ["Study", "read_study", "run_study", "study_status"]
