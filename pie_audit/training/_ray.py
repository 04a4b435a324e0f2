"""The Ray executor: a study's units run as Ray tasks on a cluster, driven and written here.

Each unit is one task (:func:`_train_unit`): its worker loads the dataset from its own
``data_root`` and returns the unit's finished models; :func:`._driver.drive` writes them on this
machine, as for the local executor, and halves K there when a unit runs out of device memory.
A task whose worker process dies is retried by Ray (:data:`RAY_RETRIES`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ._device import resolve_device
from ._driver import Unit, UnitEvents, drive
from ._loop import TrainConfig, TrainedModel
from ._population import PopulationWriter

__all__ = ["RAY_MISSING", "RAY_RETRIES", "BAD_RESOURCES", "RayExecution", "ray_available", "run_ray"]

RAY_MISSING = (
    "the ray executor needs Ray, which is an optional extra: pip install 'pie-audit[ray]' "
    "(or pip install ray)"
)
BAD_RESOURCES = "{what} must be a number > 0, not {value!r}"
#: A unit whose worker dies is tried again this many times before the study stops.
RAY_RETRIES = 3
# The logger of Ray's notice that a local instance uses token authentication.
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def ray_available() -> bool:
    """Whether the optional Ray extra is installed."""
    return importlib.util.find_spec("ray") is not None


@functools.lru_cache(maxsize=2)
def _dataset(name: str, data_root: str, target: str | None = None):  # noqa: ANN202 - a Dataset
    # Loaded once per worker process, whatever number of units it runs.
    from ..data import load_dataset

    return load_dataset(name, data_root=data_root, download=False, target=target)


def _train_unit(dataset: tuple[str, str | None], data_root: str, arch: str, train: Any, prune: Any, seeds: tuple[int, ...],
                device: str) -> list:  # fmt: skip
    """A Ray task: train one unit on the worker and return its models to the driver.

    ``dataset`` is the dataset's name and target (CelebA's task; ``None`` for the others).
    """
    name, target = dataset
    return prune.train(_dataset(name, data_root, target), arch=arch, seeds=seeds, config=train, device=resolve_device(device))


class RayExecution:
    """Units submitted as Ray tasks at once; Ray schedules them on the cluster's resources."""

    capacity = None

    def __init__(self, task: Any, *, dataset: str, data_root: str | Path, arch: str, train: TrainConfig,
                 device: str, target: str | None = None) -> None:  # fmt: skip
        self._task = task
        self._arguments = ((dataset, target), str(data_root), arch, train)
        self._device = device
        self._pending: dict[Any, Unit] = {}

    def submit(self, unit: Unit) -> None:
        ref = self._task.remote(*self._arguments, unit.prune, unit.seeds, self._device)
        self._pending[ref] = unit

    def next_finished(self) -> tuple[Unit, Callable[[], list[TrainedModel]]]:
        import ray

        [ref], _ = ray.wait(list(self._pending), num_returns=1)
        # ray.get raises the task's error as an instance of its own class (out of memory too).
        return self._pending.pop(ref), functools.partial(ray.get, ref)

    def cancel(self) -> None:
        import ray

        for ref in self._pending:
            ray.cancel(ref, force=True)
        self._pending.clear()


def _check_resources(gpus_per_unit: float | None, cpus_per_unit: float | None) -> None:
    for what, value in (("gpus-per-unit", gpus_per_unit), ("cpus-per-unit", cpus_per_unit)):
        if value is not None and (isinstance(value, bool) or not value > 0 or not math.isfinite(value)):
            raise ConfigError(BAD_RESOURCES.format(what=what, value=value))


@contextlib.contextmanager
def _connected(address: str | None) -> Iterator[None]:
    """Ray, initialised: the running instance, the cluster at ``address``, or a local one for now."""
    import ray

    if ray.is_initialized():
        yield
        return
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
    try:
        yield
    finally:
        ray.shutdown()


def run_ray(
    units: Sequence[Unit],
    *,
    dataset: str,
    data_root: str | Path,
    arch: str,
    train: TrainConfig,
    device: str,
    writers: Mapping[str, PopulationWriter],
    jointly: int,
    target: str | None = None,
    address: str | None = None,
    gpus_per_unit: float | None = None,
    cpus_per_unit: float | None = None,
    events: UnitEvents | None = None,
) -> None:
    """Train the units as Ray tasks; each finished unit's models are written here, on the driver.

    Ray starts every unit at once, each where its resources are free; :func:`._driver.drive`
    writes the units' models in the order they finish.

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
    writers : mapping of str to PopulationWriter
        By population name.
    jointly : int
        K, at least the size of every unit: halved when a unit runs out of device memory
        (:func:`._driver.drive`).
    target : str, optional
        The dataset's target attribute (CelebA's task), loaded by each worker with it.
    address : str, optional
        ``auto`` or ``HOST:PORT`` of a running cluster; without it a local Ray instance is
        started for the study and shut down after it.
    gpus_per_unit, cpus_per_unit : float, optional
        Resources each unit's task asks for (fractions allowed). Default: one GPU when the
        driver's ``device`` is CUDA, else as many CPUs as the driver's torch uses threads.
    events : UnitEvents, optional

    Notes
    -----
    A unit whose worker process dies is retried (:data:`RAY_RETRIES` times); only a returned
    result is written, so a retried unit's models are written once. On ``KeyboardInterrupt`` the
    pending units are cancelled and the interrupt propagates; what was written is kept.
    """
    _check_resources(gpus_per_unit, cpus_per_unit)
    if not ray_available():
        raise ConfigError(RAY_MISSING)
    import ray

    with _connected(address):
        if gpus_per_unit is None and cpus_per_unit is None:
            gpus_per_unit = 1.0 if device.startswith("cuda") else None
            # A CPU unit parallelises inside (torch's threads), so it asks for as many CPUs as
            # the driver's torch uses: measured on 2 cores, two 1-CPU units at once took 1.48x
            # the local executor's time, one 2-CPU unit at a time 1.17x.
            cpus_per_unit = None if gpus_per_unit else float(max(1, torch.get_num_threads()))
        task = ray.remote(
            num_gpus=gpus_per_unit or 0,
            num_cpus=cpus_per_unit if cpus_per_unit is not None else 0 if gpus_per_unit else 1,
            max_retries=RAY_RETRIES,
            retry_exceptions=False,
        )(_train_unit)
        execution = RayExecution(
            task, dataset=dataset, data_root=data_root, arch=arch, train=train, device=device, target=target
        )
        drive(units, execution=execution, writers=writers, jointly=jointly, events=events)
