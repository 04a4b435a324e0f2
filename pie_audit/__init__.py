"""pie-audit: audit what pruning does to a neural network, class by class and example by example.

What users may import is listed in ``__all__`` here and in the face (``__init__.py``) of each
wing: :mod:`pie_audit.interchange` (the on-disk format), :mod:`pie_audit.audit` (the statistics,
no torch), :mod:`pie_audit.report` (HTML and output directories), :mod:`pie_audit.data`,
:mod:`pie_audit.training`, :mod:`pie_audit.prediction` and :mod:`pie_audit.study`. Modules whose
names start with ``_`` are private (``docs/architecture.md``).
"""

from __future__ import annotations

from ._compare import CompareResult, compare, sweep
from ._version import __version__
from .audit import GateRules, PowerSummary, Settings, power
from .errors import ConfigError, DatasetError, FormatError, OutputError, PieAuditError
from .interchange import Population, load_population, write_population
from .prediction import predict
from .report import pie_gallery, write_outputs

__all__ = [
    "__version__",
    "PieAuditError",
    "ConfigError",
    "DatasetError",
    "FormatError",
    "OutputError",
    "compare",
    "sweep",
    "CompareResult",
    "GateRules",
    "Settings",
    "PowerSummary",
    "power",
    "Population",
    "load_population",
    "write_population",
    "predict",
    "pie_gallery",
    "write_outputs",
]
