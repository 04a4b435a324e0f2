"""Running a study's training as work units, on the local device or on a Ray cluster.

A *unit* is a group of models of one population trained jointly on one device
(:func:`pie_audit.training.train_models`). Units never mix populations: measured on a 2-core
CPU, the joint trainer's throughput peaks at about 16 digits models
(``bench/train_population.py``: K=16 trains 28,453 images/s, K=32 26,946), so packing two
populations of 16 into one unit of 32 is slower, not faster (``docs/study.md``).

Only the driver writes: a unit returns its finished models (weights and test probabilities) and
the driver writes each atomically into its population directory, holding that directory's lock.
Workers therefore need no shared filesystem, and a unit whose worker dies and is retried can
never leave a model written twice or half written.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["EXECUTORS", "Unit", "plan_units", "run_local", "run_ray", "RAY_MISSING"]

EXECUTORS = ("local", "ray")
RAY_MISSING = (
    "the ray executor needs Ray, which is an optional extra: pip install 'pie-audit[ray]' "
    "(or pip install ray)"
)
BAD_RESOURCES = "{what} must be a number > 0, not {value!r}"
#: A unit whose worker dies is tried again this many times before the study stops.
RAY_RETRIES = 3
# The logger of Ray's notice that a local instance uses token authentication.
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


@dataclass(frozen=True)
class Unit:
    """Models of one population trained together on one device.

    Attributes
    ----------
    population : str
        The population's name in the study.
    prune : Method
        Its compression method (:class:`pie_audit.training.Method`, shared by the unit's models),
        which trains it.
    seeds : tuple of int
    """

    population: str
    prune: Any
    seeds: tuple[int, ...]


def plan_units(todo: Mapping[str, tuple[Any, Sequence[int]]], *, jointly: int) -> list[Unit]:
    """Cut each population's missing seeds into units of at most ``jointly`` models.

    Parameters
    ----------
    todo : mapping of str to (PruneConfig, sequence of int)
        Per population, in the study's order: its pruning configuration and its missing seeds.
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
        count = math.ceil(len(seeds) / jointly)
        size = math.ceil(len(seeds) / count)
        for first in range(0, len(seeds), size):
            units.append(Unit(population=name, prune=prune, seeds=tuple(seeds[first : first + size])))
    return units


class UnitSink(Protocol):
    """Receives a finished unit's models; the study writes them and draws progress."""

    def __call__(self, unit: Unit, results: list) -> None: ...


def run_local(
    units: Sequence[Unit],
    *,
    dataset: Any,
    arch: str,
    train: Any,
    device: str,
    done: UnitSink,
    started: Callable[[Unit], None] | None = None,
) -> None:
    """Train the units one after another on this machine's device, in order.

    A unit that runs out of device memory is split in two and both halves are trained (down to
    one model, which then fails as it would alone).
    """
    from ._loop import resolve_device

    torch_device = resolve_device(device)
    queue = list(units)
    while queue:
        unit = queue.pop(0)
        if started is not None:
            started(unit)
        try:
            # The unit's method trains it (pie_audit.training.Method): gmp, random, oneshot, ...
            results = unit.prune.train(dataset, arch=arch, seeds=unit.seeds, config=train, device=torch_device)
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled; the rest re-raised
            if not _out_of_memory(e) or len(unit.seeds) == 1:
                raise
            half = len(unit.seeds) // 2
            logger.warning("out of device memory; training %d models at a time", half)
            queue[:0] = [
                Unit(unit.population, unit.prune, unit.seeds[:half]),
                Unit(unit.population, unit.prune, unit.seeds[half:]),
            ]
            continue
        done(unit, results)


def _out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError)


@functools.lru_cache(maxsize=2)
def _dataset(name: str, data_root: str):  # noqa: ANN202 - a Dataset
    # Loaded once per worker process, whatever number of units it runs.
    from ..data import load_dataset

    return load_dataset(name, data_root=data_root, download=False)


def _train_unit(dataset: str, data_root: str, arch: str, train: Any, prune: Any, seeds: tuple[int, ...], device: str) -> list:
    """A Ray task: train one unit on the worker and return its models to the driver."""
    from ._loop import resolve_device

    return prune.train(_dataset(dataset, data_root), arch=arch, seeds=seeds, config=train, device=resolve_device(device))


def _torch_threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


def _check_resources(gpus_per_unit: float | None, cpus_per_unit: float | None) -> None:
    for what, value in (("gpus-per-unit", gpus_per_unit), ("cpus-per-unit", cpus_per_unit)):
        if value is not None and (isinstance(value, bool) or not value > 0 or not math.isfinite(value)):
            raise ConfigError(BAD_RESOURCES.format(what=what, value=value))


def ray_available() -> bool:
    """Whether the optional Ray extra is installed."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def run_ray(
    units: Sequence[Unit],
    *,
    dataset: str,
    data_root: str | Path,
    arch: str,
    train: Any,
    device: str,
    done: UnitSink,
    address: str | None = None,
    gpus_per_unit: float | None = None,
    cpus_per_unit: float | None = None,
    started: Callable[[Unit], None] | None = None,
) -> None:
    """Train the units as Ray tasks; each finished unit is handed to ``done`` on the driver.

    Parameters
    ----------
    units : sequence of Unit
    dataset : str
        Its name: each worker loads it from ``data_root`` on its own machine.
    data_root : str or Path
    arch : str
    train : TrainConfig
    device : str
        As on ``pie-audit train``, resolved on each worker (``auto``: its GPU if it has one).
    done : callable(unit, results)
        Called on the driver, in completion order, for every unit that finished.
    address : str, optional
        ``auto`` or ``HOST:PORT`` of a running cluster; without it a local Ray instance is
        started for the study and shut down after it.
    gpus_per_unit, cpus_per_unit : float, optional
        Resources each unit's task asks for (fractions allowed). Default: one GPU when the
        driver's ``device`` is CUDA, else as many CPUs as the driver's torch uses threads.
    started : callable(unit), optional

    Notes
    -----
    A unit whose worker process dies is retried (:data:`RAY_RETRIES` times); only a returned
    result is written, so a retried unit's models are written once. On ``KeyboardInterrupt`` the
    pending units are cancelled and the interrupt propagates; what ``done`` wrote is kept.
    """
    _check_resources(gpus_per_unit, cpus_per_unit)
    if not ray_available():
        raise ConfigError(RAY_MISSING)
    import ray

    started_here = False
    if not ray.is_initialized():
        if address is None:
            # Ray's local instance, started and stopped here, turns on token authentication by
            # default and says so on every start; that is the safe setting, not news. A cluster
            # named by address keeps every warning (one running without a token matters).
            auth = logging.getLogger(_RAY_AUTH_LOGGER)
            level = auth.level
            auth.setLevel(logging.ERROR)
            try:
                ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            finally:
                auth.setLevel(level)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        started_here = True
    try:
        if gpus_per_unit is None and cpus_per_unit is None:
            gpus_per_unit = 1.0 if device.startswith("cuda") else None
            # A CPU unit parallelises inside (torch's threads), so it asks for as many CPUs as
            # the driver's torch uses: measured on 2 cores, two 1-CPU units at once took 1.48x
            # the local executor's time, one 2-CPU unit at a time 1.17x.
            cpus_per_unit = None if gpus_per_unit else float(_torch_threads())
        task = ray.remote(
            num_gpus=gpus_per_unit or 0,
            num_cpus=cpus_per_unit if cpus_per_unit is not None else 0 if gpus_per_unit else 1,
            max_retries=RAY_RETRIES,
            retry_exceptions=False,
        )(_train_unit)
        pending = {}
        for unit in units:
            ref = task.remote(dataset, str(data_root), arch, train, unit.prune, unit.seeds, device)
            pending[ref] = unit
            if started is not None:
                started(unit)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    unit = pending.pop(ref)
                    done(unit, ray.get(ref))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started_here:
            ray.shutdown()
