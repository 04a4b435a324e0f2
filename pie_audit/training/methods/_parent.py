"""Parent populations: the trained dense models that ``oneshot`` and ``int8`` derive from, seed by seed.

A derived method names its parent population (``--from``); :func:`check_parent` refuses one that
is not a dense population of the same data and architecture, or whose weights do not fit it,
before anything is written, and :func:`load_parent` reads one finished parent model. The records
are read through :mod:`pie_audit.interchange`; a problem with them is reported as
:data:`PARENT_NOT_A_POPULATION`.

Where a population records its parent, the path is relative to the population's own directory
(:func:`recorded_spec`, :func:`recorded_run`), so that a study moved or restored elsewhere still
names it; a record of another path (an absolute one, written before) names the same parent when
it is the same directory or when the models record the digests of the parent's models
(:func:`align_parent`), and the population resumes.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from ...data import Dataset
from ...errors import ConfigError, FormatError, PieAuditError
from ...interchange import MAX_MODEL_BYTES, MODEL_FILE, POPULATION_FILE, RUN_FILE, incomplete_reason
from ...interchange import read_bounded, read_json_object, read_population_spec
from .._compact import recorded_channels
from .._models import build_model, state_dict_mismatch
from .._population import model_dir_name

__all__ = [
    "FromParent",
    "check_parent",
    "load_parent",
    "recorded_spec",
    "recorded_run",
    "align_parent",
    "PARENT_NOT_A_POPULATION",
    "PARENT_NOT_DENSE",
    "PARENT_OTHER",
    "PARENT_MISSING",
    "PARENT_UNREADABLE",
    "PARENT_DOES_NOT_FIT",
    "PARENT_COMPACT",
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
PARENT_UNREADABLE = "{path}: the parent's weights cannot be read ({reason})"
PARENT_DOES_NOT_FIT = "{path}: the parent's weights do not fit {arch} for {dataset} ({reason})"
PARENT_COMPACT = (
    "{path}: a compact model (structured pruning cut its channels out, as {run} records); "
    "a derived method starts from a dense parent of the full architecture"
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
        for s in seeds:
            _check_size(source / model_dir_name(s) / MODEL_FILE)
        missing = [s for s in seeds if incomplete_reason(source / model_dir_name(s), seed=s) is not None]
        if missing:
            raise ConfigError(PARENT_MISSING.format(path=source, seeds=", ".join(map(str, missing))))
        for s in seeds:
            # One at a time: each is read, checked against the architecture and let go.
            _read_weights(source / model_dir_name(s) / MODEL_FILE, arch=arch, dataset=dataset)


def _check_size(path: Path) -> None:
    """Refuse a parent model file beyond :data:`MAX_MODEL_BYTES`, by its size alone (nothing is read)."""
    try:
        size = path.stat().st_size
    except OSError:
        return  # missing: said as a missing model (PARENT_MISSING)
    if size > MAX_MODEL_BYTES:
        reason = f"{size} bytes, more than the {MAX_MODEL_BYTES} bytes pie-audit reads from a model file"
        raise FormatError(PARENT_UNREADABLE.format(path=path, reason=reason))


def _read_weights(path: Path, *, arch: str, dataset: Dataset) -> dict[str, torch.Tensor]:
    """A parent's ``model.pt``: bounded, read with ``weights_only``, and fitting ``arch`` for ``dataset``.

    Raises
    ------
    FormatError
        :data:`PARENT_UNREADABLE` (too large, not a regular file, not weights) or
        :data:`PARENT_DOES_NOT_FIT` (missing or unexpected keys, other shapes).
    """
    _check_size(path)
    try:
        content = read_bounded(path, limit=MAX_MODEL_BYTES, what="a model file")
        state = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except PieAuditError as e:  # not a regular file, or grown past the bound since it was checked
        raise FormatError(PARENT_UNREADABLE.format(path=path, reason=getattr(e, "reason", e))) from e
    except OSError as e:
        raise FormatError(PARENT_UNREADABLE.format(path=path, reason=e.strerror or e)) from e
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError) as e:  # fmt: skip
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise FormatError(PARENT_UNREADABLE.format(path=path, reason=reason)) from e
    channels, height, _ = dataset.image_shape
    model = build_model(arch, in_channels=channels, image_size=height, num_classes=dataset.num_classes)
    mismatch = state_dict_mismatch(model, state)
    if mismatch is not None:
        raise FormatError(PARENT_DOES_NOT_FIT.format(path=path, arch=arch, dataset=dataset.name, reason=mismatch))
    return state


def load_parent(
    source: str | Path, seed: int, *, arch: str, dataset: Dataset
) -> tuple[dict[str, torch.Tensor], dict]:
    """The finished parent model of ``seed``: its weights, checked against ``arch``, and the ``parent`` record.

    The weights are read with ``torch.load(weights_only=True)`` (tensors only, no pickled code),
    from a file of at most :data:`pie_audit.interchange.MAX_MODEL_BYTES`, and must fit ``arch``
    built for ``dataset`` key for key and shape for shape.

    Returns
    -------
    state_dict : dict of str to Tensor
    record : dict
        ``{"seed", "path", "model_sha256"}``, as ``run.json`` states the parent; ``path`` is
        absolute here, and the population writing the model records it relative to itself
        (:func:`recorded_run`).

    Raises
    ------
    ConfigError
        :data:`PARENT_MISSING`: no finished model of ``seed`` (checked against its run.json).
    FormatError
        :data:`PARENT_UNREADABLE`, :data:`PARENT_DOES_NOT_FIT` or :data:`PARENT_COMPACT` (its
        ``run.json`` records a compact structure: derived methods start from dense models),
        naming the file.
    """
    directory = Path(source) / model_dir_name(seed)
    _check_size(directory / MODEL_FILE)
    if incomplete_reason(directory, seed=seed) is not None:
        raise ConfigError(PARENT_MISSING.format(path=source, seeds=seed))
    run = read_json_object(directory / RUN_FILE)
    # check_parent refuses a structured population as not dense; this is the model's own word,
    # for a compact model found in a population that says it is dense.
    if recorded_channels(run, path=directory / RUN_FILE, arch=arch) is not None:
        raise FormatError(PARENT_COMPACT.format(path=directory / MODEL_FILE, run=directory / RUN_FILE))
    state = _read_weights(directory / MODEL_FILE, arch=arch, dataset=dataset)
    record = {"seed": seed, "path": str(directory.resolve()),
              "model_sha256": run["files"][MODEL_FILE]["sha256"]}  # fmt: skip
    return state, record


# ---- where populations record their parent: relative to themselves -------------------------


def _relative(path: str, out: str | Path) -> str:
    """``path`` (absolute, or relative to the working directory) relative to the directory ``out``."""
    return os.path.relpath(os.path.realpath(path), os.path.realpath(out))


def _located(recorded: str, out: str | Path) -> str:
    """The directory a recorded path names: relative to ``out``, or absolute as it is."""
    return os.path.realpath(os.path.join(os.path.realpath(out), recorded))


def recorded_spec(spec: Mapping[str, Any], out: str | Path) -> dict[str, Any]:
    """A population's spec (``PopulationSpec.to_dict()``) as ``out/population.json`` records it.

    A derived method's ``prune.source`` (a path as given: absolute, or relative to the working
    directory) becomes relative to ``out``; every other spec is returned as it is (a copy).

    Examples
    --------
    >>> recorded_spec({"prune": {"source": "/runs/study/dense"}}, "/runs/study/oneshot")
    {'prune': {'source': '../dense'}}
    """
    spec = dict(spec)
    prune = spec.get("prune")
    if isinstance(prune, Mapping) and isinstance(prune.get("source"), str):
        spec["prune"] = {**prune, "source": _relative(prune["source"], out)}
    return spec


def recorded_run(run: Mapping[str, Any], out: str | Path) -> dict[str, Any]:
    """A model's ``run.json`` as the population at ``out`` records it: its parent's paths relative to ``out``.

    ``method_params.source``, ``pruning.config.source`` and ``parent.path`` are made relative to
    ``out``; a record without them is returned as it is (a copy).
    """
    run = dict(run)
    if isinstance(run.get("method_params"), Mapping):
        run["method_params"] = recorded_spec({"prune": run["method_params"]}, out)["prune"]
    pruning = run.get("pruning")
    if isinstance(pruning, Mapping) and isinstance(pruning.get("config"), Mapping):
        run["pruning"] = {**pruning, "config": recorded_spec({"prune": pruning["config"]}, out)["prune"]}
    parent = run.get("parent")
    if isinstance(parent, Mapping) and isinstance(parent.get("path"), str):
        run["parent"] = {**parent, "path": _relative(parent["path"], out)}
    return run


def align_parent(old: Mapping[str, Any], new: Mapping[str, Any], out: str | Path) -> dict[str, Any]:
    """``old`` (the spec ``out/population.json`` records) with ``new``'s parent where both name the same one.

    Two records name the same parent population when their ``prune.source`` is the same
    directory (a relative record read against ``out``, an absolute one as it is), or when every
    model of ``out`` records the digest of the model of its seed in ``new``'s parent
    (``run.json`` ``parent.model_sha256`` against the parent's ``files``): a population, or the
    study holding it, moved since, or an old absolute record. Otherwise ``old`` is returned as
    it is, and the difference is the caller's to report.

    Parameters
    ----------
    old, new : mapping
        Specs in the form ``population.json`` records (:func:`recorded_spec`).
    out : path
        The population directory.

    Returns
    -------
    dict
    """
    old = dict(old)
    before, now = old.get("prune"), new.get("prune")
    if not (isinstance(before, Mapping) and isinstance(now, Mapping)):
        return old
    recorded, source = before.get("source"), now.get("source")
    if not (isinstance(recorded, str) and isinstance(source, str)) or recorded == source:
        return old
    parent = _located(source, out)
    if _located(recorded, out) == parent or _models_derive_from(Path(out), Path(parent)):
        old["prune"] = {**before, "source": source}
    return old


def _models_derive_from(out: Path, parent: Path) -> bool:
    """Whether every model of ``out`` records the digest of its parent's model in ``parent`` (one at least)."""
    found = False
    for directory in sorted(out.iterdir()):
        if directory.name.startswith(".") or not directory.is_dir() or not (directory / RUN_FILE).is_file():
            continue
        try:
            run = read_json_object(directory / RUN_FILE)
        except FormatError:
            continue  # not a finished model: moved aside and trained again
        recorded = run.get("parent")
        seed = recorded.get("seed") if isinstance(recorded, Mapping) else None
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            return False
        try:
            theirs = read_json_object(parent / model_dir_name(seed) / RUN_FILE)
        except FormatError:
            return False
        files = theirs.get("files")
        model = files.get(MODEL_FILE) if isinstance(files, Mapping) else None
        digest = model.get("sha256") if isinstance(model, Mapping) else None
        if not isinstance(digest, str) or recorded.get("model_sha256") != digest:
            return False
        found = True
    return found
