"""The driver: units of work trained, halved when they run out of memory, and their models written.

A *unit* is a group of models of one population trained jointly on one device, by the
population's method (:meth:`.methods.Method.train`). Units never mix populations: measured on a
2-core CPU, the joint trainer's throughput peaks at about 16 digits models
(``bench/train_population.py``: K=16 trains 28,453 images/s, K=32 26,946), so packing two
populations of 16 into one unit of 32 is slower, not faster (``docs/study.md``).

:func:`drive` is the one loop over units, whatever runs them. An *execution* (:class:`Execution`)
starts units and hands back each finished one: :class:`LocalExecution` trains them one after
another on this process's device (:func:`run_local`), :mod:`._ray` runs them as Ray tasks. When a
unit runs out of device memory, K, the most models a unit may hold, is halved for the rest of
the run, and the unit's seeds are cut again with those of the units still waiting; anything else
a unit raises stops the run.

Only the driver writes: a unit returns its finished models (weights and test probabilities) and
the driver writes each atomically into its population directory, through the
:class:`~._population.PopulationWriter` that holds the directory's lock. Workers therefore need
no shared filesystem, and a unit whose worker dies and is retried can never leave a model
written twice or half written.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..data import Dataset
from ..errors import ConfigError
from ._device import resolve_device
from ._loop import EpochCallback, TrainConfig, TrainedModel, init_model
from ._models import forward_flops
from ._population import PopulationWriter

logger = logging.getLogger(__name__)

__all__ = [
    "EXECUTORS",
    "Unit",
    "UnitEvents",
    "Execution",
    "LocalExecution",
    "plan_units",
    "consecutive_units",
    "default_jointly",
    "drive",
    "run_local",
    "CPU_JOINT_MAX_MFLOPS",
    "MAX_JOINTLY",
    "OUT_OF_MEMORY",
]

#: Where units can run: ``local`` (:func:`run_local`) or ``ray`` (:func:`._ray.run_ray`).
EXECUTORS = ("local", "ray")
#: On a CPU, training models jointly pays off only for models whose forward pass costs less than
#: this per image (MFLOP): bigger models are compute-bound and gain nothing from batching models
#: (bench/train_population.py; docs/joint-training.md).
CPU_JOINT_MAX_MFLOPS = 2.0
#: Most models trained at once: beyond this the gains flatten and memory grows linearly.
MAX_JOINTLY = 32
#: Logged (a warning) when a unit ran out of device memory and K was halved.
OUT_OF_MEMORY = "out of device memory; training %d models at a time"


@dataclass(frozen=True)
class Unit:
    """Models of one population trained together on one device.

    Attributes
    ----------
    population : str
        The population's name: the key of its writer.
    prune : Method
        Its compression method (:class:`.methods.Method`, shared by the unit's models), which
        trains it.
    seeds : tuple of int
    """

    population: str
    prune: Any
    seeds: tuple[int, ...]


class UnitEvents:
    """What the driver reports while it runs; every event does nothing unless a subclass says."""

    def unit_started(self, unit: Unit) -> None:
        """``unit`` is handed to the execution."""

    def model_written(self, unit: Unit, result: TrainedModel) -> None:
        """One of ``unit``'s models is written, finished, in its population directory."""

    def unit_written(self, unit: Unit) -> None:
        """The last of ``unit``'s models is written."""


class Execution(Protocol):
    """Where units run: started by :meth:`submit`, handed back finished by :meth:`next_finished`."""

    #: How many units may run at once; ``None``: every unit submitted (the cluster schedules).
    capacity: int | None

    def submit(self, unit: Unit) -> None:
        """Start ``unit`` (or queue it)."""

    def next_finished(self) -> tuple[Unit, Callable[[], list[TrainedModel]]]:
        """The next unit to finish, and a call that returns its models or raises its error."""

    def cancel(self) -> None:
        """Stop every unit submitted and not yet handed back."""


def plan_units(todo: Mapping[str, tuple[Any, Sequence[int]]], *, jointly: int) -> list[Unit]:
    """Cut each population's missing seeds into units of at most ``jointly`` models, of equal size.

    Parameters
    ----------
    todo : mapping of str to (Method, sequence of int)
        Per population, in the study's order: its compression method and its missing seeds.
    jointly : int
        K, the most models per unit.

    Returns
    -------
    list of Unit
        Population by population, seeds in order; units of one population are as equal in size
        as K allows (so that 17 models at K=16 become 9 + 8, not 16 + 1).
    """
    if jointly < 1:
        raise ConfigError(f"jointly must be >= 1, got {jointly}")
    units = []
    for name, (prune, seeds) in todo.items():
        seeds = list(seeds)
        if not seeds:
            continue
        size = math.ceil(len(seeds) / math.ceil(len(seeds) / jointly))
        units += consecutive_units(name, prune, seeds, jointly=size)
    return units


def consecutive_units(population: str, prune: Any, seeds: Sequence[int], *, jointly: int) -> list[Unit]:
    """``seeds`` in order, in units of ``jointly`` models (the last one may hold fewer)."""
    seeds = tuple(seeds)
    return [Unit(population, prune, seeds[first : first + jointly]) for first in range(0, len(seeds), jointly)]


def default_jointly(arch: str, dataset: Dataset, device: torch.device, population: int) -> int:
    """How many models to train at once when the user does not say (``jointly=None``).

    The rule (docs/joint-training.md): on CUDA, up to :data:`MAX_JOINTLY` models (:func:`drive`
    halves K if a unit runs out of memory); on CPU and MPS, :data:`MAX_JOINTLY` // 2 models only
    when one image's forward pass costs under :data:`CPU_JOINT_MAX_MFLOPS` MFLOP, else one at a
    time, because a compute-bound CPU gains nothing from batching models.
    """
    if device.type == "cuda":
        return max(1, min(population, MAX_JOINTLY))
    mflops = forward_flops(init_model(arch, dataset, 0), dataset.image_shape) / 1e6
    if mflops < CPU_JOINT_MAX_MFLOPS:
        return max(1, min(population, MAX_JOINTLY // 2))
    return 1


def drive(
    units: Sequence[Unit],
    *,
    execution: Execution,
    writers: Mapping[str, PopulationWriter],
    jointly: int,
    events: UnitEvents | None = None,
) -> None:
    """Run ``units`` on ``execution`` and write every model they return, as each unit finishes.

    Parameters
    ----------
    units : sequence of Unit
        In the order they are started.
    execution : Execution
    writers : mapping of str to PopulationWriter
        Each unit's population's writer, by :attr:`Unit.population`.
    jointly : int
        K, at least the size of every unit: what out-of-memory halves.
    events : UnitEvents, optional

    Raises
    ------
    torch.cuda.OutOfMemoryError
        A unit of one model ran out of device memory.
    Exception
        Whatever a unit or a write raised: the units not yet handed back are cancelled first,
        and the models written before are kept.
    """
    events = events or UnitEvents()
    waiting = deque(units)
    running = 0
    try:
        while waiting or running:
            while waiting and (execution.capacity is None or running < execution.capacity):
                unit = waiting.popleft()
                events.unit_started(unit)
                execution.submit(unit)
                running += 1
            unit, outcome = execution.next_finished()
            running -= 1
            try:
                results = outcome()
            except torch.cuda.OutOfMemoryError:
                if len(unit.seeds) == 1:
                    raise
                # Too many models for the device's memory: fewer at a time from now on, the same
                # seeds first.
                while jointly >= len(unit.seeds):
                    jointly = max(1, jointly // 2)
                logger.warning(OUT_OF_MEMORY, jointly)
                torch.cuda.empty_cache()
                waiting = deque(_cut_again([unit, *waiting], jointly=jointly))
                continue
            for result in results:
                writers[unit.population].write(result)
                events.model_written(unit, result)
            events.unit_written(unit)
    except BaseException:
        execution.cancel()
        raise


def _cut_again(units: Sequence[Unit], *, jointly: int) -> list[Unit]:
    """The same seeds in the same order, in consecutive units of at most ``jointly`` per population."""
    out = []
    for (population, prune), group in itertools.groupby(units, key=lambda u: (u.population, u.prune)):
        out += consecutive_units(population, prune, [seed for u in group for seed in u.seeds], jointly=jointly)
    return out


class LocalExecution:
    """Units trained one after another on this process's device, when the driver asks for them."""

    capacity = 1

    def __init__(self, dataset: Dataset, *, arch: str, train: TrainConfig, device: torch.device | str,
                 on_epoch: EpochCallback | None = None) -> None:  # fmt: skip
        self._train = functools.partial(
            _train_here, dataset, arch=arch, config=train, on_epoch=on_epoch,
            device=resolve_device(device) if isinstance(device, str) else device,
        )  # fmt: skip
        self._queue: deque[Unit] = deque()

    def submit(self, unit: Unit) -> None:
        self._queue.append(unit)

    def next_finished(self) -> tuple[Unit, Callable[[], list[TrainedModel]]]:
        # Trained when the driver calls for the models, so that it sees the unit's own errors.
        unit = self._queue.popleft()
        return unit, functools.partial(self._train, unit)

    def cancel(self) -> None:
        self._queue.clear()


def _train_here(dataset: Dataset, unit: Unit, **kwargs: Any) -> list[TrainedModel]:
    # The unit's method trains it (.methods.Method): gmp, random, oneshot, ...
    return unit.prune.train(dataset, seeds=unit.seeds, **kwargs)


def run_local(
    units: Sequence[Unit],
    *,
    dataset: Dataset,
    arch: str,
    train: TrainConfig,
    device: torch.device | str,
    writers: Mapping[str, PopulationWriter],
    jointly: int,
    on_epoch: EpochCallback | None = None,
    events: UnitEvents | None = None,
) -> None:
    """Train the units one after another on this machine's device, in order, and write their models.

    Parameters
    ----------
    units : sequence of Unit
    dataset : Dataset
    arch : str
    train : TrainConfig
    device : str or torch.device
        As on ``pie-audit train`` (``auto``: CUDA, then MPS, then the CPU).
    writers : mapping of str to PopulationWriter
        By population name.
    jointly : int
        K, at least the size of every unit: halved when a unit runs out of device memory
        (:func:`drive`).
    on_epoch : callable(epoch, epochs), optional
        Called after each epoch of each unit (progress display).
    events : UnitEvents, optional
    """
    execution = LocalExecution(dataset, arch=arch, train=train, device=device, on_epoch=on_epoch)
    drive(units, execution=execution, writers=writers, jointly=jointly, events=events)
