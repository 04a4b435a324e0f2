"""Parent populations: the trained dense models that ``oneshot`` and ``int8`` derive from, seed by seed.

A derived method names its parent population (``--from``); :func:`check_parent` refuses one that
is not a dense population of the same data and architecture, before anything is written, and
:func:`load_parent` reads one finished parent model. The records are read through
:mod:`pie_audit.interchange`; a problem with them is reported as :data:`PARENT_NOT_A_POPULATION`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from ...data import Dataset
from ...errors import ConfigError, FormatError
from ...interchange import MODEL_FILE, POPULATION_FILE, RUN_FILE, incomplete_reason, read_json_object, read_population_spec
from .._population import model_dir_name

__all__ = [
    "FromParent",
    "check_parent",
    "load_parent",
    "PARENT_NOT_A_POPULATION",
    "PARENT_NOT_DENSE",
    "PARENT_OTHER",
    "PARENT_MISSING",
]

PARENT_NOT_A_POPULATION = "parent population {path}: not a pie-audit population ({reason})"
PARENT_NOT_DENSE = (
    "parent population {path}: not a dense population (method {method!r}, sparsity "
    "{sparsity!r}); {derived} derives from a dense baseline"
)
PARENT_OTHER = "parent population {path}: trained on {what} {theirs!r}, not {ours!r}"
PARENT_MISSING = (
    "parent population {path}: no finished model of seed {seeds}; train the baseline's seeds "
    "first (the same --seed-start and --population)"
)


class FromParent:
    """A method whose models derive from a parent population's (``source``), seed by seed."""

    source: str
    method: ClassVar[str]

    def check(self, dataset: Dataset, *, arch: str, seeds: Sequence[int] | None = None) -> None:
        """Refuse a parent population that is not a dense one of this data and architecture."""
        check_parent(self.source, dataset, arch=arch, derived=self.method, seeds=seeds)


def _parent_spec(source: Path) -> dict[str, Any]:
    """The training configuration ``source/population.json`` records."""
    marker = source / POPULATION_FILE
    try:
        spec = read_population_spec(marker)
    except FormatError as e:
        # The interchange's words name the file; these name the parent and say what is wrong.
        cause = e.__cause__
        if isinstance(cause, FileNotFoundError):
            reason = f"no {POPULATION_FILE}"
        elif cause is not None:
            reason = f"{POPULATION_FILE} is unreadable: {cause}"
        else:  # valid JSON that is not a record of a configuration
            reason = f"{POPULATION_FILE} records no training configuration"
        raise ConfigError(PARENT_NOT_A_POPULATION.format(path=source, reason=reason)) from e
    if not isinstance(spec.get("prune"), dict):
        reason = f"{POPULATION_FILE} records no training configuration"
        raise ConfigError(PARENT_NOT_A_POPULATION.format(path=source, reason=reason))
    return spec


def check_parent(
    source: str | Path, dataset: Dataset, *, arch: str, derived: str, seeds: Sequence[int] | None = None
) -> None:
    """Refuse a parent population a derived method cannot use; nothing is written.

    Parameters
    ----------
    source : path
        The parent population directory (``--from``).
    dataset : Dataset
        The derived population's data: the parent must have been trained on the same.
    arch : str
    derived : str
        The derived method's name, for the message.
    seeds : sequence of int, optional
        Seeds whose finished parent models must be there; not checked when ``None`` (a study
        trains its baseline first).

    Raises
    ------
    ConfigError
        :data:`PARENT_NOT_A_POPULATION`, :data:`PARENT_NOT_DENSE`, :data:`PARENT_OTHER` or
        :data:`PARENT_MISSING`.
    """
    source = Path(source)
    spec = _parent_spec(source)
    method, sparsity = spec.get("method", "gmp"), spec["prune"].get("sparsity")
    if method != "gmp" or sparsity != 0:
        raise ConfigError(
            PARENT_NOT_DENSE.format(path=source, method=method, sparsity=sparsity, derived=derived)
        )
    if spec.get("dataset") != dataset.name:
        raise ConfigError(PARENT_OTHER.format(path=source, what="dataset", theirs=spec.get("dataset"), ours=dataset.name))
    if spec.get("target") != dataset.target:
        # Said before the hash, which differs too: the target is what to fix.
        raise ConfigError(PARENT_OTHER.format(path=source, what="the target", theirs=spec.get("target"), ours=dataset.target))
    ours = dataset.test_hash
    if spec.get("dataset_hash") != ours:
        raise ConfigError(PARENT_OTHER.format(path=source, what="test data of hash", theirs=spec.get("dataset_hash"), ours=ours))
    if spec.get("arch") != arch:
        raise ConfigError(PARENT_OTHER.format(path=source, what="architecture", theirs=spec.get("arch"), ours=arch))
    if seeds is not None:
        missing = [s for s in seeds if incomplete_reason(source / model_dir_name(s), seed=s) is not None]
        if missing:
            raise ConfigError(PARENT_MISSING.format(path=source, seeds=", ".join(map(str, missing))))


def load_parent(source: str | Path, seed: int) -> tuple[dict[str, torch.Tensor], dict]:
    """The finished parent model of ``seed``: its weights and the ``parent`` record.

    The weights are read with ``torch.load(weights_only=True)``: tensors only, no pickled code.

    Returns
    -------
    state_dict : dict of str to Tensor
    record : dict
        ``{"seed", "path", "model_sha256"}``, as ``run.json`` states the parent.

    Raises
    ------
    ConfigError
        :data:`PARENT_MISSING`: no finished model of ``seed`` (checked against its run.json).
    """
    directory = Path(source) / model_dir_name(seed)
    if incomplete_reason(directory, seed=seed) is not None:
        raise ConfigError(PARENT_MISSING.format(path=source, seeds=seed))
    run = read_json_object(directory / RUN_FILE)
    state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
    record = {"seed": seed, "path": str(directory.resolve()),
              "model_sha256": run["files"][MODEL_FILE]["sha256"]}  # fmt: skip
    return state, record
