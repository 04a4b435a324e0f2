"""A population directory: its checks, its lock, and the writer of its models.

The directory holds ``population.json`` (the configuration every model shares), for a dataset
with attributes (CelebA) ``groups.parquet`` (its test examples' attributes, for the audit's
groups), and one ``seed-XXXX`` sub-directory per finished model, each written atomically with
``run.json`` last: it records the size and SHA-256 of the model's other files, so a directory whose files do not
match it is not a finished model (:func:`pie_audit.interchange.incomplete_reason`). A run of the
same configuration skips finished models and trains the rest, so a killed run resumes where it
stopped; a directory holding a different configuration is refused rather than mixed. One process
writes a population at a time: :func:`open_population` holds
:func:`pie_audit._atomic.exclusive_lock` on it while its :class:`PopulationWriter` is in use.

The records are built and read by :mod:`pie_audit.interchange`; which models to train, and how
many at once, is the driver's (:mod:`._driver`).
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
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._atomic import atomic_directory, exclusive_lock, remove_stale_temporaries, resolve_output, write_json
from .._version import __version__
from ..data import Dataset
from ..errors import ConfigError, OutputError
from ..interchange import (
    GROUPS_FILE,
    MODEL_FILE,
    POPULATION_FILE,
    PREDICTIONS_FILE,
    RUN_FILE,
    RecordError,
    file_records,
    incomplete_reason,
    population_record,
    read_population_spec,
    run_record,
    write_groups,
    write_predictions,
)
from ._cost import saved_model_cost
from ._loop import TrainConfig, TrainedModel, check_training

if TYPE_CHECKING:  # the methods read parent populations through this module
    from .methods import Method

logger = logging.getLogger(__name__)

__all__ = [
    "POPULATION_FILE",
    "PopulationSpec",
    "PopulationWriter",
    "open_population",
    "population_spec",
    "population_status",
    "model_dir_name",
    "check_output_dir",
    "check_population_size",
    "model_seeds",
    "MAX_MODELS",
    "TOO_MANY_MODELS",
    "BROKEN_LINK",
    "INCOMPLETE_PREFIX",
    "OUT_NOT_A_DIRECTORY",
    "CANNOT_CREATE",
    "NOT_WRITABLE",
    "FOREIGN_DIRECTORY",
    "DIFFERENT_CONFIGURATION",
    "BAD_POPULATION_FILE",
    "OLD_DATASET_HASH",
    "WRITE_FAILED",
    "MOVED_ASIDE",
]

#: The most models one population may hold: model directories are ``seed-XXXX``, and a study of
#: more would spend minutes before its first model only listing what it has to train.
MAX_MODELS = 10_000
TOO_MANY_MODELS = "{what} must be at most {most} models per population, not {models}"
OUT_NOT_A_DIRECTORY = "{path}: exists and is not a directory"
BROKEN_LINK = "{path}: a symbolic link to nothing; give a directory (or a path where one can be made)"
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


_MODEL_DIR = re.compile(r"seed-(\d{4,})\Z")


def check_population_size(models: int, *, what: str = "population") -> None:
    """Refuse a number of models beyond :data:`MAX_MODELS`, at once.

    Raises
    ------
    ConfigError
        :data:`TOO_MANY_MODELS`.
    """
    if models > MAX_MODELS:
        raise ConfigError(TOO_MANY_MODELS.format(what=what, most=f"{MAX_MODELS:,}", models=f"{models:,}"))


def model_seeds(out: str | Path) -> list[int]:
    """The seeds of the model directories a population directory holds, in order; nothing is read
    but the listing.

    A model directory counts when its name is :func:`model_dir_name` of its seed and it holds a
    ``run.json``; whether its files match it is not checked here (reading every model to say how
    many there are would be slow): the readers of each model check that. A missing or unreadable
    directory holds none.
    """
    out = Path(out)
    try:
        entries = list(out.iterdir())
    except OSError:
        return []
    seeds = []
    for entry in entries:
        match = _MODEL_DIR.match(entry.name)
        if match is None or model_dir_name(int(match.group(1))) != entry.name:
            continue
        if not entry.is_symlink() and (entry / RUN_FILE).is_file():
            seeds.append(int(match.group(1)))
    return sorted(seeds)


@dataclass(frozen=True)
class PopulationSpec:
    """What a population directory holds: every model shares all of this but its seed."""

    dataset: str
    dataset_hash: str  # the test split's ids, labels and images (run.json's dataset.hash)
    train_hash: str  # the training split's, so that data changed under a population shows
    arch: str
    train: TrainConfig
    prune: Method  # the compression method's configuration; PruneConfig is "gmp"
    target: str | None = None  # the dataset's task, for a dataset that has one (CelebA)

    def to_dict(self) -> dict:
        d = asdict(self)
        # As JSON has it (tuples become lists), so that a record read back compares equal.
        d["prune"] = json.loads(json.dumps(d["prune"]))
        d["method"] = self.prune.method
        if self.target is None:
            # Datasets with fixed classes record what they recorded before targets existed.
            del d["target"]
        return d


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


#: Compared last: a hash differs whenever the data does, so the key that says why (the dataset,
#: its target) is the one to name.
_HASHES = ("dataset_hash", "train_hash")


def _describe_difference(old: dict, new: dict, prefix: str = "") -> str:
    for key in sorted(set(old) | set(new), key=lambda k: (k in _HASHES, k)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diff = _describe_difference(a, b, f"{prefix}{key}.")
            if diff:
                return diff
        elif a != b:
            return f"{prefix}{key} is {a!r} there, {b!r} now"
    return ""


def check_output_dir(out: Path, spec: PopulationSpec | None = None) -> None:
    """Refuse an ``out`` that cannot be written or holds something other than this population.

    ``out`` may be missing, empty (hidden entries aside), or a population of ``spec``. Its
    ``population.json`` binds once a model directory sits beside it: with none, a run of another
    configuration may take the directory over (a run refused or diverged before its first model
    leaves only that record, and perhaps the ``groups.parquet`` written with it). Without
    ``spec``, all but the comparison with it is checked: what can be said before the data is
    loaded.

    Raises
    ------
    OutputError
        ``out`` is a file, a loop of symbolic links or a link to nothing, cannot be created or
        written, holds other files, holds a
        ``population.json`` that is not a pie-audit record, or holds models of another
        configuration (or of an older pie-audit, :data:`OLD_DATASET_HASH`).
    """
    out = Path(out)
    resolve_output(out)  # a loop of symbolic links is refused here, by name
    if out.is_symlink() and not out.exists():
        raise OutputError(BROKEN_LINK.format(path=out))
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
        if spec is not None and _holds_models(out):
            if "dataset_hash" in old and "train_hash" not in old:
                raise OutputError(OLD_DATASET_HASH.format(path=out))
            # Populations recorded before methods existed were all gradual magnitude pruning.
            from .methods import align_parent, recorded_spec  # here: the methods import this module

            new = recorded_spec(spec.to_dict(), out)
            difference = _describe_difference(align_parent({"method": "gmp"} | old, new, out), new)
            if difference:
                raise OutputError(DIFFERENT_CONFIGURATION.format(path=out, difference=difference))
    elif entries:
        raise OutputError(FOREIGN_DIRECTORY.format(path=out))
    if not os.access(out, os.W_OK):
        raise OutputError(NOT_WRITABLE.format(path=out))


def _holds_models(out: Path) -> bool:
    """Whether ``out`` holds anything but its records (hidden entries aside): what binds it."""
    records = (POPULATION_FILE, GROUPS_FILE)
    return any(not p.name.startswith(".") and p.name not in records for p in out.iterdir())


def _read_spec(marker: Path) -> dict[str, Any]:
    """The ``spec`` of a ``population.json``; ``{}`` when it has none (the audit's own records).

    Raises
    ------
    OutputError
        :data:`BAD_POPULATION_FILE`: the file is not a record that the directory can hold.
    """
    try:
        return read_population_spec(marker)
    except RecordError as e:
        raise OutputError(BAD_POPULATION_FILE.format(path=marker, reason=e.reason)) from e


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
    from .methods import recorded_spec  # here: the methods import this module

    # The parent's path relative to the population, so that a moved study still names it.
    record = population_record(spec=recorded_spec(spec.to_dict(), out))
    with _writing(out):
        if marker.is_file() and _read_spec(marker) == json.loads(json.dumps(record["spec"])):
            return
        if marker.is_file() and not _holds_models(out):
            # A configuration without models taken over (check_output_dir): the groups written
            # with it described its data, which may not be this run's.
            (out / GROUPS_FILE).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        write_json(marker, record)


def _write_groups(out: Path, dataset: Dataset) -> None:
    """Write the test split's attributes as ``out/groups.parquet``; nothing for a dataset without."""
    if dataset.attributes is None:
        return
    with _writing(out / GROUPS_FILE):
        write_groups(dataset.attributes, out / GROUPS_FILE)


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
            **({"target": dataset.target} if dataset.target is not None else {}),
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
    from .methods import recorded_run  # here: the methods import this module

    # The parent's paths relative to the population, so that a moved study still names them.
    run = recorded_run(run, out)
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
        # Measured on the model as saved, masks folded in, a compact model at the widths its
        # record states (docs/cost.md); a method that measures its own kind of model
        # (result.record) keeps its figures.
        if "cost" not in run:
            channels = (run.get("structure") or {}).get("channels")
            run["cost"] = saved_model_cost(result.state_dict, arch=spec.arch, image_shape=dataset.image_shape,
                                           num_classes=dataset.num_classes, model_file=tmp / MODEL_FILE,
                                           channels=channels)  # fmt: skip
        run["files"] = file_records(tmp, (PREDICTIONS_FILE, MODEL_FILE))
        # Last: its checksums are what make the directory a finished model.
        write_json(tmp / RUN_FILE, run)
    return final


def population_spec(dataset: Dataset, *, arch: str, train: TrainConfig, prune: Method) -> PopulationSpec:
    """What a population of ``arch`` trained on ``dataset`` with these configurations records."""
    return PopulationSpec(
        dataset=dataset.name,
        dataset_hash=dataset.test_hash,
        train_hash=dataset.train_hash,
        arch=arch,
        train=train,
        prune=prune,
        target=dataset.target,
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
    _groups_written: bool = field(default=False, init=False, repr=False)

    def missing(self, seeds: Sequence[int]) -> list[int]:
        """The seeds without a finished model; unfinished directories are moved aside first.

        Raises
        ------
        ConfigError
            More seeds than :data:`MAX_MODELS` (:func:`check_population_size`), before any is looked at.
        """
        check_population_size(len(seeds))
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
        if not self._groups_written:
            # Before the model, so that a population with a model has its groups; once a run.
            _write_groups(self.out, self.dataset)
            self._groups_written = True
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
    (:func:`._loop.check_training`, :func:`check_output_dir`); then the directory's
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
        As :func:`pie_audit.training.train_population`.
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
