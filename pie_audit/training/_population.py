"""Training a population: N independently seeded models written to a population directory.

The directory holds ``population.json`` (the configuration every model shares) and one
``seed-XXXX`` sub-directory per finished model, each written atomically with ``run.json`` last:
it records the size and SHA-256 of the model's other files, so a directory whose files do not
match it is not a finished model (:func:`pie_audit.interchange.incomplete_reason`). Re-running the same command skips
finished models and trains the rest, so a killed run resumes where it stopped; a directory holding
a different configuration is refused rather than mixed. One process writes a population at a
time: :func:`train_population` holds :func:`pie_audit._atomic.exclusive_lock` on it throughout.

The models are trained in groups of K by the one training loop
(:func:`pie_audit.training.train_models`); this module decides K (:func:`default_jointly`, and
halving K when a group runs out of device memory). K changes the speed, not the models.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .._atomic import atomic_directory, exclusive_lock, remove_stale_temporaries, write_json
from .._version import __version__
from ..data import DATASETS, Dataset
from ..errors import ConfigError, OutputError
from ._models import ARCHITECTURES, UNKNOWN_ARCHITECTURE, forward_flops
from ..interchange import (
    MODEL_FILE,
    POPULATION_FILE,
    PREDICTIONS_FILE,
    RUN_FILE,
    file_records,
    incomplete_reason,
    json_kind,
    population_record,
    run_record,
    write_predictions,
)
from ._loop import (
    Method,
    TrainConfig,
    TrainedModel,
    check_training,
    init_model,
    resolve_device,
)

logger = logging.getLogger(__name__)

__all__ = [
    "POPULATION_FILE",
    "PopulationSpec",
    "TrainingCallback",
    "train_population",
    "check_arguments",
    "default_jointly",
    "model_dir_name",
    "check_output_dir",
    "CPU_JOINT_MAX_MFLOPS",
    "MAX_JOINTLY",
    "INCOMPLETE_PREFIX",
]

#: On a CPU, training models jointly pays off only for models whose forward pass costs less than
#: this per image (MFLOP): bigger models are compute-bound and gain nothing from batching models
#: (bench/train_population.py; docs/joint-training.md).
CPU_JOINT_MAX_MFLOPS = 2.0
#: Most models trained at once: beyond this the gains flatten and memory grows linearly.
MAX_JOINTLY = 32

POPULATION_TOO_SMALL = "population must be >= 1, got {population}"
NEGATIVE_SEED_START = "seed-start must be >= 0, got {seed_start}"
JOINTLY_TOO_SMALL = "jointly must be >= 1, got {jointly}"
# The same words as pie_audit.data.load_dataset's, said before any data is read.
UNKNOWN_DATASET = "unknown dataset {dataset!r}; choose one of {choices}"
OUT_NOT_A_DIRECTORY = "{path}: exists and is not a directory"
CANNOT_CREATE = "{path}: cannot be created ({parent} is not a writable directory)"
NOT_WRITABLE = "{path}: not writable"
FOREIGN_DIRECTORY = (
    "{path}: not empty and not a pie-audit population; choose another output directory"
)
DIFFERENT_CONFIGURATION = (
    "{path}: holds runs of a different configuration ({difference}); "
    "choose another output directory"
)
BAD_POPULATION_FILE = (
    "{path}: not a pie-audit population record ({reason}); move it away or choose another "
    "output directory"
)
OLD_DATASET_HASH = (
    "{path}: trained by an older pie-audit, whose dataset hash covers example ids and labels but "
    "not the images, so its models cannot be checked against today's data; train into another "
    "output directory"
)
WRITE_FAILED = "{path}: could not be written ({reason}); nothing of it was kept"
#: Logged (a warning) when a resumed run finds a model directory it cannot trust.
MOVED_ASIDE = "%s: not a finished model (%s); moved to %s, and the model is trained again"
#: Prefix of a model directory moved aside: hidden, so every reader ignores it.
INCOMPLETE_PREFIX = ".incomplete-"


def model_dir_name(seed: int) -> str:
    """Name of the sub-directory holding the model trained with ``seed``."""
    return f"seed-{seed:04d}"


@dataclass(frozen=True)
class PopulationSpec:
    """What a population directory holds: every model shares all of this but its seed."""

    dataset: str
    dataset_hash: str  # the test split's ids, labels and images (run.json's dataset.hash)
    train_hash: str  # the training split's, so that data changed under a population shows
    arch: str
    train: TrainConfig
    prune: Method  # the compression method's configuration; PruneConfig is "gmp"

    def to_dict(self) -> dict:
        d = asdict(self)
        # As JSON has it (tuples become lists), so that a record read back compares equal.
        d["prune"] = json.loads(json.dumps(d["prune"]))
        d["method"] = self.prune.method
        return d


class TrainingCallback(Protocol):
    """Receives progress events; the CLI draws them with rich."""

    def started(self, total: int) -> None: ...
    def group_started(self, seeds: Sequence[int]) -> None: ...
    def epoch_done(self, epoch: int, epochs: int) -> None: ...
    def model_done(self, seed: int, result: TrainedModel | None) -> None: ...


class _Silent:
    def started(self, total: int) -> None:
        pass

    def group_started(self, seeds: Sequence[int]) -> None:
        pass

    def epoch_done(self, epoch: int, epochs: int) -> None:
        pass

    def model_done(self, seed: int, result: TrainedModel | None) -> None:
        pass


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    import numpy
    import pandas
    import pyarrow

    return {
        "pie_audit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pyarrow.__version__,
    }


def _describe_difference(old: dict, new: dict, prefix: str = "") -> str:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diff = _describe_difference(a, b, f"{prefix}{key}.")
            if diff:
                return diff
        elif a != b:
            return f"{prefix}{key} is {a!r} there, {b!r} now"
    return ""


def check_arguments(
    *,
    arch: str,
    population: int,
    seed_start: int = 0,
    jointly: int | None = None,
    device: str = "auto",
    dataset: str | None = None,
    out: str | Path | None = None,
) -> None:
    """Refuse arguments a population run cannot use, cheaply, before any data is loaded.

    :func:`train_population` calls it; a command line calls it first so that a typo fails
    before a dataset is read.

    Parameters
    ----------
    arch : str
        Must be in :data:`pie_audit.training._models.ARCHITECTURES`.
    population : int
        Must be >= 1.
    seed_start : int, default 0
        Must be >= 0.
    jointly : int, optional
        Must be >= 1 when given.
    device : str, default "auto"
        Must be available (:func:`pie_audit.training.resolve_device`).
    dataset : str, optional
        A dataset name, which must be in :data:`pie_audit.data.DATASETS`; not checked when
        ``None`` (a :class:`~pie_audit.data.Dataset` built in code may have any name).
    out : path, optional
        The population directory, checked as far as it can be without the data
        (:func:`check_output_dir` with no ``spec``).

    Raises
    ------
    ConfigError
        On the first argument that is out of range or unknown.
    OutputError
        ``out`` is refused.
    """
    if population < 1:
        raise ConfigError(POPULATION_TOO_SMALL.format(population=population))
    if seed_start < 0:
        raise ConfigError(NEGATIVE_SEED_START.format(seed_start=seed_start))
    if jointly is not None and jointly < 1:
        raise ConfigError(JOINTLY_TOO_SMALL.format(jointly=jointly))
    if arch not in ARCHITECTURES:
        raise ConfigError(UNKNOWN_ARCHITECTURE.format(arch=arch, choices=", ".join(ARCHITECTURES)))
    if dataset is not None and dataset not in DATASETS:
        raise ConfigError(UNKNOWN_DATASET.format(dataset=dataset, choices=", ".join(DATASETS)))
    resolve_device(device)
    if out is not None:
        check_output_dir(Path(out))


def default_jointly(arch: str, dataset: Dataset, device: torch.device, population: int) -> int:
    """How many models to train at once when the user does not say (``jointly=None``).

    The rule (docs/joint-training.md): on CUDA, up to :data:`MAX_JOINTLY` models
    (:func:`train_population` halves K if a group runs out of memory); on CPU and MPS,
    :data:`MAX_JOINTLY` // 2 models only when one image's forward pass costs under
    :data:`CPU_JOINT_MAX_MFLOPS` MFLOP, else one at a time, because a compute-bound CPU gains
    nothing from batching models.
    """
    if device.type == "cuda":
        return max(1, min(population, MAX_JOINTLY))
    mflops = forward_flops(init_model(arch, dataset, 0), dataset.image_shape) / 1e6
    if mflops < CPU_JOINT_MAX_MFLOPS:
        return max(1, min(population, MAX_JOINTLY // 2))
    return 1


def check_output_dir(out: Path, spec: PopulationSpec | None = None) -> None:
    """Refuse an ``out`` that cannot be written or holds something other than this population.

    ``out`` may be missing, empty (hidden entries aside), or a population of ``spec``. Its
    ``population.json`` binds once a model directory sits beside it: with none, a run of another
    configuration may take the directory over (a run refused or diverged before its first model
    leaves only that record). Without ``spec``, all but the comparison with it is checked: what
    can be said before the data is loaded.

    Raises
    ------
    OutputError
        ``out`` is a file, cannot be created or written, holds other files, holds a
        ``population.json`` that is not a pie-audit record, or holds models of another
        configuration (or of an older pie-audit, :data:`OLD_DATASET_HASH`).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(OUT_NOT_A_DIRECTORY.format(path=out))
    if not out.is_dir():
        parent = next((p for p in out.absolute().parents if p.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
            raise OutputError(CANNOT_CREATE.format(path=out, parent=parent))
        return
    entries = [p for p in out.iterdir() if not p.name.startswith(".")]
    marker = out / POPULATION_FILE
    if marker in entries:
        old = _read_spec(marker)
        if spec is not None and any(p != marker for p in entries):
            if "dataset_hash" in old and "train_hash" not in old:
                raise OutputError(OLD_DATASET_HASH.format(path=out))
            # Populations recorded before methods existed were all gradual magnitude pruning.
            difference = _describe_difference({"method": "gmp"} | old, spec.to_dict())
            if difference:
                raise OutputError(DIFFERENT_CONFIGURATION.format(path=out, difference=difference))
    elif entries:
        raise OutputError(FOREIGN_DIRECTORY.format(path=out))
    if not os.access(out, os.W_OK):
        raise OutputError(NOT_WRITABLE.format(path=out))


def _read_spec(marker: Path) -> dict[str, Any]:
    """The ``spec`` of a ``population.json``; ``{}`` when it has none (the audit's own records)."""
    try:
        with open(marker, encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else f"not UTF-8 JSON: {e}"
        raise OutputError(BAD_POPULATION_FILE.format(path=marker, reason=reason)) from e
    if not isinstance(record, dict):
        reason = f"expected a JSON object, found {json_kind(record)}"
        raise OutputError(BAD_POPULATION_FILE.format(path=marker, reason=reason))
    spec = record.get("spec", {})
    if not isinstance(spec, dict):
        reason = f"'spec' is {json_kind(spec)}, expected an object"
        raise OutputError(BAD_POPULATION_FILE.format(path=marker, reason=reason))
    return spec


def _move_aside(directory: Path, reason: str) -> Path:
    """Rename a model directory that cannot be trusted to a hidden name beside it.

    Moved, not deleted: it is ours by name, but it may hold the only copy of something a person
    put there by hand.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = directory.with_name(f"{INCOMPLETE_PREFIX}{directory.name}-{stamp}")
    n = 1
    # rename() would silently replace an empty directory of that name.
    while os.path.lexists(target):
        n += 1
        target = directory.with_name(f"{INCOMPLETE_PREFIX}{directory.name}-{stamp}-{n}")
    os.rename(directory, target)
    logger.warning(MOVED_ASIDE, directory, reason, target.name)
    return target


#: torch.save reports a failed write as a RuntimeError from its C++ stream writer.
_TORCH_WRITER = re.compile(r"PytorchStreamWriter|inline_container|file write failed")
_TORCH_PREFIX = re.compile(r"^\[enforce fail at [^\]]*\]\s*\.?\s*")


def _write_failure(error: BaseException) -> str | None:
    """The reason a write failed, or ``None`` when ``error`` is not a failed write."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    if isinstance(error, RuntimeError) and _TORCH_WRITER.search(str(error)):
        return _TORCH_PREFIX.sub("", str(error).strip().splitlines()[-1])
    return None


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn a failed write under ``path`` (full disk, lost permission) into an OutputError."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        reason = _write_failure(e)
        if reason is None:
            raise
        raise OutputError(WRITE_FAILED.format(path=path, reason=reason)) from e


def _write_spec(out: Path, spec: PopulationSpec) -> None:
    """Create ``out`` and its ``population.json``, unless it already records ``spec``."""
    marker = out / POPULATION_FILE
    record = population_record(spec=spec.to_dict())
    with _writing(out):
        if marker.is_file() and _read_spec(marker) == json.loads(json.dumps(record["spec"])):
            return
        out.mkdir(parents=True, exist_ok=True)
        write_json(marker, record)


def _write_model(out: Path, result: TrainedModel, *, dataset: Dataset, spec: PopulationSpec,
                 command: Sequence[str] | None) -> Path:
    labels = dataset.y_test.numpy()
    run = run_record({
        "seed": result.seed,
        "arch": spec.arch,
        "dataset": {
            "name": dataset.name,
            "split": "test",
            "split_description": dataset.split,
            "n_examples": int(len(labels)),
            "hash": spec.dataset_hash,
        },
        "classes": list(dataset.classes),
        "sparsity": result.sparsity,
        "method": spec.prune.method,
        "method_params": spec.to_dict()["prune"],
        "pruning": {"config": spec.to_dict()["prune"], "schedule": result.schedule},
        "config": asdict(spec.train),
        "accuracy": result.accuracy,
        "steps": result.steps,
        "wall_time_s": result.wall_time_s,
        "device": result.device,
        "jointly": result.jointly,
        "versions": _versions(),
        "git_commit": _git_commit(),
        "command": list(command) if command is not None else None,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **result.record,
    })  # fmt: skip
    final = out / model_dir_name(result.seed)
    # atomic_directory removes the temporary directory on any error: nothing half-written stays.
    with _writing(final), atomic_directory(final) as tmp:
        write_predictions(tmp / PREDICTIONS_FILE, dataset.example_ids, labels, result.probabilities)
        # Serialised in memory, then written by Python: a full disk then raises OSError with its
        # errno, not torch's writer's RuntimeError.
        buffer = io.BytesIO()
        torch.save(result.state_dict, buffer)
        with open(tmp / MODEL_FILE, "wb") as fh:
            fh.write(buffer.getbuffer())
        run["files"] = file_records(tmp, (PREDICTIONS_FILE, MODEL_FILE))
        # Last: its checksums are what make the directory a finished model.
        write_json(tmp / RUN_FILE, run)
    return final


def train_population(
    dataset: Dataset,
    *,
    arch: str,
    out: str | Path,
    population: int,
    seed_start: int = 0,
    train: TrainConfig,
    prune: Method,
    device: str = "auto",
    jointly: int | None = None,
    callback: TrainingCallback | None = None,
    command: Sequence[str] | None = None,
) -> list[Path]:
    """Train the models of a population that ``out`` does not hold yet.

    Parameters
    ----------
    dataset : Dataset
    arch : str
    out : path
        Population directory; created if missing.
    population : int
        Number of models; model ``i`` uses seed ``seed_start + i``.
    seed_start : int, default 0
    train : TrainConfig
    prune : Method
        The compression method: a :class:`~pie_audit.training.PruneConfig` (gradual magnitude
        pruning; ``sparsity == 0`` trains the dense baseline) or one of
        :mod:`pie_audit.training._methods`. A method that derives from a parent population must find a
        finished parent model for every seed (:meth:`~pie_audit.training.Method.check`).
    device : {"auto", "cpu", "cuda", "mps"}
    jointly : int, optional
        Models trained at once (1: one at a time); the models are the same whatever K, up to
        floating-point rounding. Default: chosen from the device and the model by
        :func:`default_jointly`.
    callback : TrainingCallback, optional
        Progress events.
    command : sequence of str, optional
        The command line, recorded in each ``run.json``.

    Returns
    -------
    list of Path
        Every model directory of the population, finished before or now, in seed order.

    Raises
    ------
    ConfigError
        An argument or configuration the run cannot use (:func:`check_arguments`,
        :func:`pie_audit.training.check_training`), found before anything is written; or
        training diverged (:data:`pie_audit.training.DIVERGED`), in which case the group's
        models are not written.
    OutputError
        ``out`` is refused (:func:`check_output_dir`), another process is writing it
        (:data:`pie_audit._atomic.LOCKED`), or a write failed (:data:`WRITE_FAILED`); models
        finished before are kept, and nothing half-written is left.
    """
    # Everything that can be refused is refused before anything is written.
    check_arguments(
        arch=arch, population=population, seed_start=seed_start, jointly=jointly, device=device
    )
    torch_device = resolve_device(device)
    callback = callback or _Silent()
    seeds = list(range(seed_start, seed_start + population))
    prune.check(dataset, arch=arch, seeds=seeds)
    with open_population(
        dataset, arch=arch, out=out, train=train, prune=prune, seed=seed_start, command=command
    ) as writer:
        return _train_locked(
            dataset, writer, seeds=seeds, device=torch_device, jointly=jointly, callback=callback
        )


def population_spec(dataset: Dataset, *, arch: str, train: TrainConfig, prune: Method) -> PopulationSpec:
    """What a population of ``arch`` trained on ``dataset`` with these configurations records."""
    return PopulationSpec(
        dataset=dataset.name,
        dataset_hash=dataset.test_hash,
        train_hash=dataset.train_hash,
        arch=arch,
        train=train,
        prune=prune,
    )


def population_status(out: str | Path, seeds: Sequence[int], spec: PopulationSpec) -> tuple[list[int], list[int]]:
    """Which of ``seeds`` ``out`` holds as finished models, and which it lacks; nothing is written.

    Raises
    ------
    OutputError
        ``out`` holds another configuration (:func:`check_output_dir`).
    """
    out = Path(out)
    check_output_dir(out, spec)
    finished, missing = [], []
    for seed in seeds:
        directory = out / model_dir_name(seed)
        complete = os.path.lexists(directory) and incomplete_reason(directory, seed=seed) is None
        (finished if complete else missing).append(seed)
    return finished, missing


@dataclass
class PopulationWriter:
    """A population directory held for writing (:func:`open_population`): checked and locked."""

    out: Path
    spec: PopulationSpec
    dataset: Dataset
    command: Sequence[str] | None = None

    def missing(self, seeds: Sequence[int]) -> list[int]:
        """The seeds without a finished model; unfinished directories are moved aside first."""
        todo = []
        for seed in seeds:
            directory = self.out / model_dir_name(seed)
            if os.path.lexists(directory):
                reason = incomplete_reason(directory, seed=seed)
                if reason is None:
                    continue
                with _writing(directory):
                    _move_aside(directory, reason)
            todo.append(seed)
        return todo

    def write(self, result: TrainedModel) -> Path:
        """Write one finished model, atomically (and the population's record with the first)."""
        # Written with the first model, not before: a run that fails before it (diverged,
        # interrupted) leaves nothing that would bind the directory to its configuration.
        _write_spec(self.out, self.spec)
        return _write_model(self.out, result, dataset=self.dataset, spec=self.spec, command=self.command)


@contextlib.contextmanager
def open_population(
    dataset: Dataset,
    *,
    arch: str,
    out: str | Path,
    train: TrainConfig,
    prune: Method,
    seed: int = 0,
    command: Sequence[str] | None = None,
) -> Iterator[PopulationWriter]:
    """Check a population directory for this configuration and hold it for writing.

    Everything that can be refused is refused before anything is written
    (:func:`pie_audit.training.check_training`, :func:`check_output_dir`); then the directory's
    lock is held (one writer at a time: a second would take the first's temporary directories
    for stale ones), and the temporaries a killed writer left are removed.

    Yields
    ------
    PopulationWriter
        ``missing(seeds)`` and ``write(result)``; ``pie-audit train`` and studies both write
        through it, so their populations are interchangeable.

    Raises
    ------
    ConfigError, OutputError
        As :func:`train_population`.
    """
    check_training(dataset, arch=arch, config=train, prune=prune, seed=seed)
    out = Path(out)
    spec = population_spec(dataset, arch=arch, train=train, prune=prune)
    check_output_dir(out, spec)
    with exclusive_lock(out):
        # Again, now that no other writer can change the directory.
        check_output_dir(out, spec)
        if out.is_dir():
            with _writing(out):
                # Left by a writer that was killed mid-write (the lock says none is running
                # now): never a finished model.
                remove_stale_temporaries(out)
        yield PopulationWriter(out=out, spec=spec, dataset=dataset, command=command)


def _train_locked(
    dataset: Dataset,
    writer: PopulationWriter,
    *,
    seeds: list[int],
    device: torch.device,
    jointly: int | None,
    callback: TrainingCallback,
) -> list[Path]:
    spec = writer.spec
    callback.started(len(seeds))
    todo = writer.missing(seeds)
    for seed in seeds:
        if seed not in todo:
            callback.model_done(seed, None)
    if jointly is None:
        jointly = default_jointly(spec.arch, dataset, device, len(todo) or 1)

    while todo:
        group = todo[:jointly]
        callback.group_started(group)
        try:
            results = spec.prune.train(
                dataset, arch=spec.arch, seeds=group, config=spec.train, device=device,
                on_epoch=callback.epoch_done,
            )  # fmt: skip
        except torch.cuda.OutOfMemoryError:
            if jointly == 1:
                raise
            # Too many models for this device's memory: halve K and retry the same seeds.
            jointly = max(1, jointly // 2)
            logger.warning("out of device memory; training %d models at a time", jointly)
            torch.cuda.empty_cache()
            continue
        for result in results:
            writer.write(result)
            callback.model_done(result.seed, result)
        todo = todo[len(group):]
    return [writer.out / model_dir_name(seed) for seed in seeds]
