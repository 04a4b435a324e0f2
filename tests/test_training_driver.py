"""The driver: units planned, run by an execution, halved on out-of-memory, their models written."""

import logging
import os
from types import SimpleNamespace

import pytest
import torch

from pie_audit.training._driver import OUT_OF_MEMORY, Unit, UnitEvents, drive, plan_units


class Execution:
    """Runs a unit when the driver asks for its models; a unit of more than ``fits`` models runs out of memory."""

    def __init__(self, *, capacity, fits=99, fail_seed=None):
        self.capacity = capacity
        self.fits, self.fail_seed = fits, fail_seed
        self.pending, self.ran, self.most_pending = [], [], 0
        self.cancelled = False

    def submit(self, unit):
        self.pending.append(unit)
        self.most_pending = max(self.most_pending, len(self.pending))

    def next_finished(self):
        unit = self.pending.pop(0)

        def outcome():
            self.ran.append((unit.population, unit.seeds))
            if len(unit.seeds) > self.fits:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            if self.fail_seed in unit.seeds:
                raise RuntimeError("a bug")
            return [SimpleNamespace(seed=s) for s in unit.seeds]

        return unit, outcome

    def cancel(self):
        self.cancelled = True


class Writer:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def write(self, result):
        self.log.append(("write", self.name, result.seed))


class Events(UnitEvents):
    def __init__(self, log):
        self.log = log

    def unit_started(self, unit):
        self.log.append(("started", unit.population, unit.seeds))

    def model_written(self, unit, result):
        self.log.append(("written", unit.population, result.seed))

    def unit_written(self, unit):
        self.log.append(("done", unit.population, unit.seeds))


def writers(log, *names):
    return {name: Writer(name, log) for name in names}


def test_plan_units_cuts_each_population_into_equal_units():
    units = plan_units({"a": ("gmp", range(17)), "b": ("random", []), "c": ("lottery", [5, 6])}, jointly=16)
    assert [(u.population, len(u.seeds)) for u in units] == [("a", 9), ("a", 8), ("c", 2)]
    assert [s for u in units if u.population == "a" for s in u.seeds] == list(range(17))
    assert units[-1] == Unit("c", "lottery", (5, 6))


def test_every_model_is_written_with_its_events_in_order():
    log = []
    units = [Unit("a", "gmp", (0, 1)), Unit("b", "gmp", (0,))]
    drive(units, execution=Execution(capacity=1), writers=writers(log, "a", "b"), jointly=2, events=Events(log))
    assert log == [
        ("started", "a", (0, 1)), ("write", "a", 0), ("written", "a", 0), ("write", "a", 1), ("written", "a", 1),
        ("done", "a", (0, 1)), ("started", "b", (0,)), ("write", "b", 0), ("written", "b", 0), ("done", "b", (0,)),
    ]  # fmt: skip


def test_out_of_memory_halves_k_for_the_rest_of_the_run(caplog):
    log = []
    execution = Execution(capacity=1, fits=2)
    units = [Unit("a", "gmp", (0, 1, 2, 3)), Unit("a", "gmp", (4, 5, 6, 7)), Unit("b", "gmp", (0, 1))]
    with caplog.at_level(logging.WARNING, logger="pie_audit.training._driver"):
        drive(units, execution=execution, writers=writers(log, "a", "b"), jointly=4)
    # The failed unit and those waiting are cut again at K = 2; the unit that fits is left whole.
    assert execution.ran == [("a", (0, 1, 2, 3)), ("a", (0, 1)), ("a", (2, 3)), ("a", (4, 5)), ("a", (6, 7)), ("b", (0, 1))]
    assert [entry[1:] for entry in log] == [("a", s) for s in range(8)] + [("b", 0), ("b", 1)]
    assert [r.getMessage() for r in caplog.records] == [OUT_OF_MEMORY % 2]


def test_k_halves_until_it_is_below_the_unit_that_failed():
    execution = Execution(capacity=1, fits=1)
    drive([Unit("a", "gmp", (0, 1, 2))], execution=execution, writers=writers([], "a"), jointly=8)
    # 8 -> 4 -> 2: the first K below three models; a retry of the same three would fail again.
    assert execution.ran == [("a", (0, 1, 2)), ("a", (0, 1)), ("a", (0,)), ("a", (1,)), ("a", (2,))]


def test_a_unit_of_one_model_out_of_memory_stops_the_run():
    execution = Execution(capacity=1, fits=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        drive([Unit("a", "gmp", (0, 1))], execution=execution, writers=writers([], "a"), jointly=2)
    assert execution.ran == [("a", (0, 1)), ("a", (0,))]
    assert execution.cancelled


def test_another_error_cancels_what_runs_and_keeps_what_was_written():
    log = []
    execution = Execution(capacity=None, fail_seed=2)
    units = [Unit("a", "gmp", (0, 1)), Unit("a", "gmp", (2, 3)), Unit("a", "gmp", (4, 5))]
    with pytest.raises(RuntimeError, match="a bug"):
        drive(units, execution=execution, writers=writers(log, "a"), jointly=2)
    assert execution.most_pending == 3  # an execution without a capacity gets every unit at once
    assert execution.cancelled
    assert log == [("write", "a", 0), ("write", "a", 1)]


@pytest.mark.slow
def test_out_of_memory_on_a_ray_worker_is_halved_by_the_driver():
    ray = pytest.importorskip("ray") if os.environ.get("CI") is None else __import__("ray")
    from pie_audit.training._ray import RayExecution

    def train(dataset, data_root, arch, config, prune, seeds, device):
        if len(seeds) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return [SimpleNamespace(seed=s) for s in seeds]

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(train)
        log = []
        execution = RayExecution(task, dataset="digits", data_root="data", arch="small-cnn", train=None, device="cpu")
        drive([Unit("a", "gmp", (0, 1))], execution=execution, writers=writers(log, "a"), jointly=2)
        assert sorted(log) == [("write", "a", 0), ("write", "a", 1)]
    finally:
        if started_here:
            ray.shutdown()
