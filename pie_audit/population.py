"""Training a population: N independently seeded models written to a population directory.

The directory holds ``population.json`` (the configuration every model shares) and one
``seed-XXXX`` sub-directory per finished model, each written atomically. Re-running the same
command skips finished models, so a killed run resumes where it stopped; a directory holding a
different configuration is refused rather than mixed.

The models are trained in groups of K by the one training loop
(:func:`pie_audit.training.train_models`); this module decides K (:func:`default_jointly`, and
halving K when a group runs out of device memory). K changes the speed, not the models.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import torch

from ._atomic import atomic_directory, remove_stale_temporaries, write_json
from ._version import __version__
from .data import DATASETS, Dataset, dataset_hash
from .errors import ConfigError, OutputError
from .models import ARCHITECTURES, UNKNOWN_ARCHITECTURE, forward_flops
from .store import MODEL_FILE, PREDICTIONS_FILE, RUN_FILE, write_predictions
from .training import (
    PruneConfig,
    TrainConfig,
    TrainedModel,
    init_model,
    resolve_device,
    train_models,
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
]

POPULATION_FILE = "population.json"

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


def model_dir_name(seed: int) -> str:
    """Name of the sub-directory holding the model trained with ``seed``."""
    return f"seed-{seed:04d}"


@dataclass(frozen=True)
class PopulationSpec:
    """What a population directory holds: every model shares all of this but its seed."""

    dataset: str
    dataset_hash: str
    arch: str
    train: TrainConfig
    prune: PruneConfig

    def to_dict(self) -> dict:
        d = asdict(self)
        d["prune"]["exclude"] = list(self.prune.exclude)
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
) -> None:
    """Refuse arguments a population run cannot use, cheaply, before any data is loaded.

    :func:`train_population` calls it; a command line calls it first so that a typo fails
    before a dataset is read.

    Parameters
    ----------
    arch : str
        Must be in :data:`pie_audit.models.ARCHITECTURES`.
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

    Raises
    ------
    ConfigError
        On the first argument that is out of range or unknown.
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


def check_output_dir(out: Path, spec: PopulationSpec) -> None:
    """Refuse an ``out`` that cannot be written or holds something other than this population."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    if out.is_dir():
        marker = out / POPULATION_FILE
        if marker.is_file():
            try:
                old = json.loads(marker.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise OutputError(f"{marker}: unreadable ({e})") from e
            diff = _describe_difference(old.get("spec", {}), spec.to_dict())
            if diff:
                raise OutputError(
                    f"{out}: holds runs of a different configuration ({diff}); "
                    "choose another output directory"
                )
        elif any(not p.name.startswith(".") for p in out.iterdir()):
            raise OutputError(f"{out}: not empty and not a pie-audit population; choose another output directory")
        if not os.access(out, os.W_OK):
            raise OutputError(f"{out}: not writable")
    else:
        parent = next((p for p in out.absolute().parents if p.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
            raise OutputError(f"{out}: cannot be created ({parent} is not a writable directory)")


def _write_model(out: Path, result: TrainedModel, *, dataset: Dataset, spec: PopulationSpec,
                 command: Sequence[str] | None) -> Path:
    labels = dataset.y_test.numpy()
    run = {
        "format": "pie-audit/run/1",
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
    }
    final = out / model_dir_name(result.seed)
    with atomic_directory(final) as tmp:
        write_predictions(tmp / PREDICTIONS_FILE, dataset.example_ids, labels, result.probabilities)
        torch.save(result.state_dict, tmp / MODEL_FILE)
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
    prune: PruneConfig,
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
    prune : PruneConfig
        ``prune.sparsity == 0`` trains the dense baseline.
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
    """
    # Before anything is written.
    check_arguments(
        arch=arch, population=population, seed_start=seed_start, jointly=jointly, device=device
    )
    torch_device = resolve_device(device)
    out = Path(out)
    callback = callback or _Silent()
    spec = PopulationSpec(
        dataset=dataset.name,
        dataset_hash=dataset_hash(dataset.example_ids, dataset.y_test.numpy()),
        arch=arch,
        train=train,
        prune=prune,
    )
    check_output_dir(out, spec)

    out.mkdir(parents=True, exist_ok=True)
    # Left by a run that was killed mid-write; never a finished model.
    remove_stale_temporaries(out)
    if not (out / POPULATION_FILE).is_file():
        write_json(out / POPULATION_FILE, {"format": "pie-audit/population/1", "spec": spec.to_dict()})

    seeds = list(range(seed_start, seed_start + population))
    callback.started(len(seeds))
    todo = []
    for seed in seeds:
        if (out / model_dir_name(seed)).is_dir():
            callback.model_done(seed, None)
        else:
            todo.append(seed)
    if jointly is None:
        jointly = default_jointly(arch, dataset, torch_device, len(todo) or 1)

    while todo:
        group = todo[:jointly]
        callback.group_started(group)
        try:
            results = train_models(
                dataset, arch=arch, seeds=group, config=train, prune=prune,
                device=torch_device, on_epoch=callback.epoch_done,
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
            _write_model(out, result, dataset=dataset, spec=spec, command=command)
            callback.model_done(result.seed, result)
        todo = todo[len(group):]
    return [out / model_dir_name(seed) for seed in seeds]

