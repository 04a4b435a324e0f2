"""Training a population: N independently seeded models, written into a population directory.

:func:`train_population` is ``pie-audit train``: it checks its arguments before any data is read
(:func:`check_arguments`), holds the directory (:func:`._population.open_population`), skips the
models it already holds, and trains the rest locally in groups of K (:func:`._driver.run_local`;
K from :func:`._driver.default_jointly` unless given). K changes the speed, not the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..data import DATASETS, Dataset, resolve_target
from ..errors import ConfigError
from ._device import resolve_device
from ._driver import Unit, UnitEvents, consecutive_units, default_jointly, run_local
from ._loop import TrainConfig, TrainedModel
from ._models import ARCHITECTURES, UNKNOWN_ARCHITECTURE
from ._population import check_output_dir, check_population_size, model_dir_name, open_population

if TYPE_CHECKING:
    from .methods import Method

__all__ = [
    "TrainingCallback",
    "check_arguments",
    "train_population",
    "POPULATION_TOO_SMALL",
    "NEGATIVE_SEED_START",
    "JOINTLY_TOO_SMALL",
    "UNKNOWN_DATASET",
]

POPULATION_TOO_SMALL = "population must be >= 1, got {population}"
NEGATIVE_SEED_START = "seed-start must be >= 0, got {seed_start}"
JOINTLY_TOO_SMALL = "jointly must be >= 1, got {jointly}"
# The same words as pie_audit.data.load_dataset's, said before any data is read.
UNKNOWN_DATASET = "unknown dataset {dataset!r}; choose one of {choices}"


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


class _Reported(UnitEvents):
    """The driver's events, told to a :class:`TrainingCallback`."""

    def __init__(self, callback: TrainingCallback) -> None:
        self.callback = callback

    def unit_started(self, unit: Unit) -> None:
        self.callback.group_started(list(unit.seeds))

    def model_written(self, unit: Unit, result: TrainedModel) -> None:
        self.callback.model_done(result.seed, result)


def check_arguments(
    *,
    arch: str,
    population: int,
    seed_start: int = 0,
    jointly: int | None = None,
    device: str = "auto",
    dataset: str | None = None,
    target: str | None = None,
    out: str | Path | None = None,
) -> None:
    """Refuse arguments a population run cannot use, cheaply, before any data is loaded.

    :func:`train_population` calls it; a command line calls it first so that a typo fails
    before a dataset is read.

    Parameters
    ----------
    arch : str
        Must be in :data:`pie_audit.training.ARCHITECTURES`.
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
    target : str, optional
        The dataset's target attribute (CelebA's ``--target``), checked with ``dataset``
        (:func:`pie_audit.data.resolve_target`): one of its attributes, and only for a dataset
        that takes one.
    out : path, optional
        The population directory, checked as far as it can be without the data
        (:func:`._population.check_output_dir` with no ``spec``).

    Raises
    ------
    ConfigError
        On the first argument that is out of range or unknown.
    OutputError
        ``out`` is refused.
    """
    if population < 1:
        raise ConfigError(POPULATION_TOO_SMALL.format(population=population))
    # Beyond the documented maximum, at once: 20,000,000 models otherwise run silently for minutes.
    check_population_size(population)
    if seed_start < 0:
        raise ConfigError(NEGATIVE_SEED_START.format(seed_start=seed_start))
    if jointly is not None and jointly < 1:
        raise ConfigError(JOINTLY_TOO_SMALL.format(jointly=jointly))
    if arch not in ARCHITECTURES:
        raise ConfigError(UNKNOWN_ARCHITECTURE.format(arch=arch, choices=", ".join(ARCHITECTURES)))
    if dataset is not None and dataset not in DATASETS:
        raise ConfigError(UNKNOWN_DATASET.format(dataset=dataset, choices=", ".join(DATASETS)))
    if dataset is not None:
        resolve_target(dataset, target)
    resolve_device(device)
    if out is not None:
        check_output_dir(Path(out))


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
        :mod:`pie_audit.training.methods`. A method that derives from a parent population must find
        a finished parent model for every seed (its ``check``).
    device : {"auto", "cpu", "cuda", "mps"}
    jointly : int, optional
        Models trained at once (1: one at a time); the models are the same whatever K, up to
        floating-point rounding. Default: chosen from the device and the model by
        :func:`._driver.default_jointly`.
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
        :func:`._loop.check_training`), found before anything is written; or
        training diverged (:data:`._loop.DIVERGED`), in which case the group's
        models are not written.
    OutputError
        ``out`` is refused (:func:`._population.check_output_dir`), another process is writing it
        (:data:`pie_audit._atomic.LOCKED`), or a write failed (:data:`._population.WRITE_FAILED`); models
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
        callback.started(len(seeds))
        todo = writer.missing(seeds)
        for seed in seeds:
            if seed not in todo:
                callback.model_done(seed, None)
        if jointly is None:
            jointly = default_jointly(arch, dataset, torch_device, len(todo) or 1)
        name = str(writer.out)
        run_local(
            consecutive_units(name, prune, todo, jointly=jointly), dataset=dataset, arch=arch, train=train,
            device=torch_device, writers={name: writer}, jointly=jointly, on_epoch=callback.epoch_done,
            events=_Reported(callback),
        )  # fmt: skip
    return [writer.out / model_dir_name(seed) for seed in seeds]
