"""The Ray executor: a study's units run as Ray tasks on a cluster, driven and written here.

Each unit is one task (:func:`_train_unit`): its worker loads the dataset from its own
``data_root`` and returns the unit's finished models; :func:`._driver.drive` writes them on this
machine, as for the local executor, and halves K there when a unit runs out of device memory.
A task whose worker process dies is retried by Ray (:data:`RAY_RETRIES`).

Every wait is bounded (docs/study.md): a cluster named by address must answer within
:data:`CONNECT_TIMEOUT_S` (:data:`TIMEOUT_ENV` changes it) before ``ray.init`` is called, since
``ray.init`` on an address where nothing answers retries for minutes in C++ that no signal
interrupts; a unit whose resources no node of the cluster has is refused before any is submitted;
and the local instance started here is shut down whatever ends the study (an error, Ctrl-C,
SIGTERM). Ray's own log lines stay off the terminal unless :data:`DEBUG_ENV` is set (the CLI's
``--debug`` sets it).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ._device import resolve_device
from ._driver import Unit, UnitEvents, drive
from ._loop import TrainConfig, TrainedModel
from ._population import PopulationWriter

__all__ = [
    "RAY_MISSING",
    "RAY_RETRIES",
    "BAD_RESOURCES",
    "BAD_ADDRESS",
    "BAD_TIMEOUT",
    "CONNECT_TIMEOUT_S",
    "DEBUG_ENV",
    "TIMEOUT_ENV",
    "UNPLACEABLE",
    "UNREACHABLE",
    "RayExecution",
    "connect_timeout",
    "ray_available",
    "run_ray",
]

RAY_MISSING = (
    "the ray executor needs Ray, which is an optional extra: pip install 'pie-audit[ray]' "
    "(or pip install ray)"
)
BAD_RESOURCES = "{what} must be a number > 0, not {value!r}"
BAD_ADDRESS = "--ray-address must be auto, HOST:PORT or ray://HOST:PORT, not {address!r}"
BAD_TIMEOUT = "{env} must be a number of seconds > 0, not {value!r}"
UNREACHABLE = "the Ray cluster at {address} {reason} (is it running, and is the address right? {env} sets the wait)"
UNPLACEABLE = (
    "a unit asks Ray for {amount:g} {resource} but no node of the Ray cluster ({where}) has that many "
    "(the most is {most:g}); set {option} to what a node has"
)
#: A unit whose worker dies is tried again this many times before the study stops.
RAY_RETRIES = 3
#: Seconds a cluster named by address has to answer (a TCP connection and gRPC's first frame).
CONNECT_TIMEOUT_S = 30.0
#: Set to a number of seconds, it replaces :data:`CONNECT_TIMEOUT_S`.
TIMEOUT_ENV = "PIE_AUDIT_RAY_TIMEOUT"
#: Set (to anything but ``0``), Ray's own log lines reach the terminal; the CLI's ``--debug`` sets it.
DEBUG_ENV = "PIE_AUDIT_DEBUG"
# What an HTTP/2 client sends first (RFC 9113, 3.4): the preface and an empty SETTINGS frame. A
# gRPC server, Ray's GCS and Ray Client's server among them, answers with a SETTINGS frame.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_H2_SETTINGS = 4
# How many times ray.init tries a cluster's GCS (about 35 s each), unless the user said: Ray's
# default is 20. Our probe has already seen the address answer, so one try is enough.
_GCS_TRIES_ENV = "RAY_gcs_server_port_wait_time_s"


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


def connect_timeout() -> float:
    """Seconds a Ray cluster named by address has to answer: :data:`TIMEOUT_ENV`, else :data:`CONNECT_TIMEOUT_S`."""
    value = os.environ.get(TIMEOUT_ENV)
    if value is None or not value.strip():
        return CONNECT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(BAD_TIMEOUT.format(env=TIMEOUT_ENV, value=value))
    return seconds


def _ray_logs_shown() -> bool:
    return os.environ.get(DEBUG_ENV, "0").strip() not in ("", "0")


def _endpoint(address: str) -> tuple[str, int] | None:
    """The host and port ``ray.init(address=address)`` connects to; ``None`` when Ray finds none."""
    if address.startswith("ray://"):
        resolved: str | None = address[len("ray://") :]
    else:
        from ray._private.services import canonicalize_bootstrap_address

        try:
            # "auto" and RAY_ADDRESS resolved, and localhost replaced by this node's address, as
            # ray.init does: the probe must knock where Ray will.
            resolved = canonicalize_bootstrap_address(address)
        except ConnectionError:
            return None  # "auto" and no cluster: ray.init says so at once
        except ValueError:
            resolved = ""
    if resolved is None:
        return None
    host, _, port = resolved.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(BAD_ADDRESS.format(address=address))
    return host, int(port)


def _probe(address: str, timeout: float) -> None:
    """Raise :class:`ConfigError` unless the cluster at ``address`` answers within ``timeout`` seconds."""
    endpoint = _endpoint(address)
    if endpoint is None:
        return
    reason = _no_answer(*endpoint, timeout=timeout)
    if reason is not None:
        raise ConfigError(UNREACHABLE.format(address=address, reason=reason, env=TIMEOUT_ENV))


def _no_answer(host: str, port: int, *, timeout: float) -> str | None:
    """Why nothing that speaks gRPC answers at ``host:port`` within ``timeout`` seconds; ``None`` if it does."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            if os.environ.get("RAY_USE_TLS", "0").strip() not in ("", "0"):
                return None  # TLS first: the connection is all a probe can see
            conn.sendall(_H2_PREFACE)
            head = b""
            while len(head) < 9:
                conn.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except ConnectionRefusedError:
        return "refused the connection"
    except TimeoutError:
        return f"did not answer within {timeout:g} s"
    except OSError as e:
        return f"cannot be reached ({e.strerror or e})"
    if len(head) < 9 or head[3] != _H2_SETTINGS:
        return "answered, but not as a Ray cluster does (no gRPC)"
    return None


@contextlib.contextmanager
def _ray_quiet(shown: bool, *, address: str | None) -> Iterator[None]:
    """While ``ray.init`` runs: its C++ log lines (written to fd 2) kept off the terminal, unless ``shown``."""
    tries = os.environ.get(_GCS_TRIES_ENV)
    if address is not None and tries is None:
        os.environ[_GCS_TRIES_ENV] = "1"
    saved = None
    if not shown:
        sys.stderr.flush()
        saved = os.dup(2)
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
        if address is not None and tries is None:
            os.environ.pop(_GCS_TRIES_ENV, None)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """While ``ray.init`` runs, SIGINT and SIGTERM are held, then given to the caller's handlers.

    Interrupted mid-start, ``ray.init`` stops what it has started so far but leaves the raylet's
    agents running; and it installs SIGTERM handlers of its own (one that exits 1, a C++ one that
    prints a stack). So a signal that comes while it runs is held and delivered once it has
    returned (seconds; bounded, see :func:`_probe`), to an instance whole enough for
    ``ray.shutdown``, through the caller's handler (the CLI's: one line, exit 130 or 143), which
    is put back over Ray's. A signal without a Python handler (a library call) is left alone.
    """
    import ray._private.utils as ray_utils

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    handlers = {signum: handler for signum, handler in handlers.items() if callable(handler)}
    held: list[int] = []
    install = ray_utils.set_sigterm_handler
    if signal.SIGTERM in handlers:
        ray_utils.set_sigterm_handler = lambda handler: None
    for signum in handlers:
        signal.signal(signum, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = install
        for signum, handler in handlers.items():
            signal.signal(signum, handler)  # over Ray's C++ SIGTERM handler too
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


def _init(address: str | None, *, timeout: float) -> None:
    """``ray.init``, bounded and quiet; a local instance half started is shut down again."""
    import ray

    shown = _ray_logs_shown()
    if address is not None:
        _probe(address, timeout)
    options: dict[str, Any] = dict(log_to_driver=shown, logging_level=logging.INFO if shown else logging.ERROR)
    try:
        with _signals_held(), _ray_quiet(shown, address=address):
            if address is None:
                ray.init(include_dashboard=False, **options)
            else:
                ray.init(address=address, **options)
    except ConnectionError as e:
        ray.shutdown()
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(UNREACHABLE.format(address=address, reason=f"cannot be joined ({reason})", env=TIMEOUT_ENV)) from e
    except BaseException:
        # KeyboardInterrupt (a signal held above included), or Ray's own error.
        ray.shutdown()
        raise


@contextlib.contextmanager
def _connected(address: str | None, *, timeout: float) -> Iterator[str]:
    """Ray, initialised: the running instance, the cluster at ``address``, or a local one for now.

    Yields the cluster's description, for messages ("at HOST:PORT", "started on this machine").
    """
    import ray

    if ray.is_initialized():
        yield "in use"
        return
    _init(address, timeout=timeout)
    try:
        yield f"at {address}" if address is not None else "started on this machine"
    finally:
        ray.shutdown()


def _largest_node() -> dict[str, float]:
    """Per resource (``CPU``, ``GPU``, ...), the most that one live node of the cluster has."""
    import ray

    most: dict[str, float] = {}
    for node in ray.nodes():
        if node.get("Alive"):
            for resource, amount in node["Resources"].items():
                most[resource] = max(most.get(resource, 0.0), float(amount))
    return most


def _check_placeable(gpus: float, cpus: float, *, largest: Mapping[str, float], where: str) -> None:
    """Refuse a unit that no node of the cluster could ever run: Ray would wait for it for ever."""
    for resource, amount, option in (("GPU", gpus, "--gpus-per-unit"), ("CPU", cpus, "--cpus-per-unit")):
        most = largest.get(resource, 0.0)
        if amount > most:
            raise ConfigError(UNPLACEABLE.format(amount=amount, resource=resource, where=where, most=most, option=option))


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
    then: Sequence[Unit] = (),
) -> None:
    """Train the units as Ray tasks; each finished unit's models are written here, on the driver.

    Ray starts every unit at once, each where its resources are free; :func:`._driver.drive`
    writes the units' models in the order they finish. The units of ``then`` start once every
    unit of ``units`` is written, on the same Ray instance.

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
        ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT`` of a running cluster, which must answer
        within :func:`connect_timeout` seconds; without it a local Ray instance is started for
        the study and shut down after it.
    gpus_per_unit, cpus_per_unit : float, optional
        Resources each unit's task asks for (fractions allowed). Default: one GPU when the
        driver's ``device`` is CUDA, else as many CPUs as the driver's torch uses threads, or
        as the cluster's largest node has if that is fewer.
    events : UnitEvents, optional
    then : sequence of Unit, optional
        A second wave: units that need the first wave's models (a derived method's units need
        their parents). A local instance is started once for both waves: starting one takes
        seconds (about 6 s on 2 cores).

    Raises
    ------
    ConfigError
        Ray is missing (:data:`RAY_MISSING`); bad resources or :data:`TIMEOUT_ENV`; the cluster
        at ``address`` does not answer in time or cannot be joined (:data:`UNREACHABLE`); a unit
        asks for more than any node of the cluster has (:data:`UNPLACEABLE`), found before any
        unit is submitted.

    Notes
    -----
    A unit whose worker process dies is retried (:data:`RAY_RETRIES` times); only a returned
    result is written, so a retried unit's models are written once. On ``KeyboardInterrupt`` the
    pending units are cancelled and the interrupt propagates; what was written is kept. Whatever
    ends the call, a local instance started here is shut down. A SIGTERM handler installed by the
    caller (the CLI's) stays in place across ``ray.init``, which installs Ray's own.
    """
    _check_resources(gpus_per_unit, cpus_per_unit)
    timeout = connect_timeout()
    if not ray_available():
        raise ConfigError(RAY_MISSING)
    import ray

    with _connected(address, timeout=timeout) as where:
        largest = _largest_node()
        if gpus_per_unit is None and cpus_per_unit is None:
            gpus_per_unit = 1.0 if device.startswith("cuda") else None
            # A CPU unit parallelises inside (torch's threads), so it asks for as many CPUs as
            # the driver's torch uses: measured on 2 cores, two 1-CPU units at once took 1.48x
            # the local executor's time, one 2-CPU unit at a time 1.17x.
            # On a cluster whose nodes have fewer, as many as the largest has.
            threads = max(1, torch.get_num_threads())
            cpus_per_unit = None if gpus_per_unit else float(min(threads, max(1.0, largest.get("CPU", 0.0))))
        num_gpus = gpus_per_unit or 0
        num_cpus = cpus_per_unit if cpus_per_unit is not None else 0 if gpus_per_unit else 1
        _check_placeable(num_gpus, num_cpus, largest=largest, where=where)
        task = ray.remote(
            num_gpus=num_gpus,
            num_cpus=num_cpus,
            max_retries=RAY_RETRIES,
            retry_exceptions=False,
        )(_train_unit)
        execution = RayExecution(
            task, dataset=dataset, data_root=data_root, arch=arch, train=train, device=device, target=target
        )
        for wave in (units, then):
            if wave:
                drive(wave, execution=execution, writers=writers, jointly=jointly, events=events)
