"""Fault injection: kill -9 at random points, two writers at once, a disk that fills up.

Each test drives the real command line in a subprocess, as a user (or CI) would, and checks the
promise of docs/training.md: a finished output is complete, an unfinished one is invisible, and a
re-run finishes the job without losing or duplicating anything. The kill tests print their
figures (``pytest -s`` shows them).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pie_audit._atomic import LOCKED, TMP_PREFIX
from pie_audit.cli import main
from pie_audit.training._models import build_model
from pie_audit.report._outputs import OUTPUT_FILES
from pie_audit.interchange import incomplete_reason
from pie_audit.training._population import INCOMPLETE_PREFIX, WRITE_FAILED
from pie_audit.interchange import POPULATION_FILE, load_population

from synthetic import planted_predictions, write_population

PIE = [sys.executable, "-m", "pie_audit"]
#: `pie-audit` whose model writes pause for 50 ms once the predictions are written, so that a
#: kill can be aimed at a half-written model directory.
SLOW_WRITES = [sys.executable, "-c", """
import time
import pie_audit.training._population as population
write = population.write_predictions
def slow(*args, **kwargs):
    write(*args, **kwargs)
    time.sleep(0.05)
population.write_predictions = slow
from pie_audit.cli import main
main()
"""]  # fmt: skip
SEEDS = range(6)
#: Generous: the machine running the tests may be busy with other work.
DEADLINE_S = 180


def train_command(out: Path, *extra: str, slow: bool = False) -> list[str]:
    return [
        *(SLOW_WRITES if slow else PIE), "train", "--out", str(out), "--quiet", "--device", "cpu",
        "--epochs", "1", "--population", str(len(SEEDS)), "--jointly", "2", *extra,
    ]  # fmt: skip


def seed_entries(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("seed-")) if out.is_dir() else []


def temporaries(directory: Path, name: str = "") -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(TMP_PREFIX + name))


def run_json_digest(directory: Path) -> str:
    return (directory / "run.json").read_text()


def check_finished_models(out: Path) -> dict[int, str]:
    """Every visible model directory is complete; returns seed -> its run.json."""
    found = {}
    for name in seed_entries(out):
        seed = int(name.removeprefix("seed-"))
        reason = incomplete_reason(out / name, seed=seed)
        assert reason is None, f"{name} looks finished but is not: {reason}"
        found[seed] = run_json_digest(out / name)
    return found


def wait_until(condition, proc: subprocess.Popen, poll_s: float = 0.001) -> bool:
    """Poll ``condition`` until it holds (True) or ``proc`` exits (False)."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "nothing happened in time"
        time.sleep(poll_s)
    return True


def kill_9(proc: subprocess.Popen) -> bool:
    """SIGKILL ``proc`` if it still runs; whether a kill was delivered."""
    alive = proc.poll() is None
    if alive:
        proc.kill()
    proc.wait()
    return alive


# ---- kill -9 during `pie-audit train` --------------------------------------------------------


@pytest.mark.slow
def test_train_killed_at_random_points_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(20261126)
    kills, modes, attempts, mid_write = 0, [], 0, 0
    rounds: list[Path] = []
    seen: dict[Path, dict[int, str]] = {}  # each finished model's run.json, when first seen
    rewritten = 0
    while kills < 6 and attempts < 20:
        attempts += 1
        if not rounds or len(seed_entries(rounds[-1])) == len(SEEDS):
            rounds.append(tmp_path / f"pop-{len(rounds)}")  # finished: kill the next one
            seen[rounds[-1]] = {}
        out = rounds[-1]
        finished = len(seed_entries(out))
        proc = subprocess.Popen(
            train_command(out, slow=True), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        c = rng.randrange(finished, len(SEEDS))
        if attempts % 3 == 1:
            # At a random moment: starting up, loading data, taking the lock, training, writing.
            mode = "random time"
            time.sleep(rng.uniform(0.2, 3.5))
        elif attempts % 3 == 2:
            # While a model is half-written: its temporary directory holds some of its files.
            mode = f"writing model {c}"
            names: set[str] = set()

            def writing_c() -> bool:
                names.update(temporaries(out, "seed-"))
                return len(names) > c - finished

            wait_until(writing_c, proc)
            time.sleep(rng.uniform(0.0, 0.04))
        else:
            # Just after a model is renamed into place.
            mode = f"after model {c}"
            wait_until(lambda: len(seed_entries(out)) > c, proc)
            time.sleep(rng.uniform(0.0, 0.005))
        if kill_9(proc):
            kills += 1
            modes.append(mode)
            mid_write += bool(temporaries(out))
        # At rest after the kill: whatever looks finished is complete, and nothing finished
        # before was written again.
        for seed, record in check_finished_models(out).items():
            rewritten += seed in seen[out] and seen[out][seed] != record
            seen[out].setdefault(seed, record)

    done = subprocess.run(train_command(rounds[-1]), capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr
    lost = duplicated = 0
    for out in rounds:
        final = check_finished_models(out)
        rewritten += sum(seen[out][s] != final[s] for s in seen[out])
        lost += len(set(SEEDS) - set(final))
        runs = [json.loads((out / n / "run.json").read_text())["seed"] for n in seed_entries(out)]
        duplicated += len(runs) - len(set(runs))
    duplicated += rewritten
    print(
        f"\ntrain, kill -9: {kills} kills tried ({', '.join(modes)}; {mid_write} left a "
        f"half-written .tmp-* behind) over {len(rounds)} population(s) of {len(SEEDS)}: "
        f"models lost {lost}, duplicated {duplicated}"
    )
    assert kills == 6
    assert lost == 0 and duplicated == 0
    for out in rounds:
        assert seed_entries(out) == [f"seed-{s:04d}" for s in SEEDS]
        assert temporaries(out) == [] and not list(out.glob(INCOMPLETE_PREFIX + "*"))
        assert load_population(out).predictions.shape == (len(SEEDS), 450)
        for name in seed_entries(out):
            model = build_model("small-cnn", in_channels=1, image_size=8, num_classes=10)
            model.load_state_dict(torch.load(out / name / "model.pt", weights_only=True))


# ---- kill -9 during `pie-audit compare` ------------------------------------------------------


@pytest.fixture(scope="module")
def populations(tmp_path_factory):
    root = tmp_path_factory.mktemp("populations")
    labels = np.random.default_rng(7).permutation(np.arange(400) % 5)
    base = planted_predictions(8, labels, accuracy=0.9, n_classes=5, seed=1)
    pruned = planted_predictions(8, labels, accuracy=0.88, n_classes=5, seed=2, class_accuracy={2: 0.6})
    return write_population(root / "base", base, labels), write_population(root / "pruned", pruned, labels)


def compare_command(populations, out: Path) -> list[str]:
    base, pruned = populations
    return [*PIE, "compare", str(base), str(pruned), "--out", str(out), "--quiet", "--no-images",
            "--n-bootstrap", "50"]  # fmt: skip


def check_complete_report(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    json.loads((out / "summary.json").read_text())
    assert len(pd.read_parquet(out / "examples.parquet")) == 400
    assert len(pd.read_csv(out / "classes.csv")) == 5
    assert (out / "report.html").read_text().rstrip().endswith("</html>")


@pytest.mark.slow
def test_compare_killed_at_random_points_leaves_the_old_report_or_the_new(tmp_path, populations):
    out = tmp_path / "report"
    command = compare_command(populations, out)
    rng = random.Random(7)
    kills, modes, existed, attempts, mid_write = 0, [], False, 0, 0
    while kills < 5 and attempts < 15:
        attempts += 1
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if attempts % 2:
            mode = "random time"
            time.sleep(rng.uniform(0.3, 2.5))
        else:
            # While the new report is being written beside the old one.
            mode = "writing the report"
            wait_until(lambda: bool(temporaries(tmp_path, "report-")), proc)
            time.sleep(rng.uniform(0.0, 0.005))
        if kill_9(proc):
            kills += 1
            modes.append(mode)
            mid_write += bool(temporaries(tmp_path))
        if out.exists() or existed:
            assert out.is_dir(), "the report went missing"
            check_complete_report(out)
            existed = True
    done = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode in (0, 1), done.stderr  # 1: this pruned population fails the gate
    check_complete_report(out)
    assert temporaries(tmp_path) == []
    print(
        f"\ncompare, kill -9: {kills} kills tried ({', '.join(modes)}; {mid_write} left a "
        "half-written .tmp-* behind): report missing or partial 0"
    )
    assert kills == 5


# ---- two writers ------------------------------------------------------------------------------


def lock_is_held(lock: Path) -> bool:
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases it, if this probe got it
    return False


@pytest.mark.slow
def test_a_second_train_on_the_same_population_is_refused_and_the_first_finishes(tmp_path):
    out = tmp_path / "pop"
    lock = tmp_path / ".pop.pie-audit.lock"
    command = train_command(out)
    first = subprocess.Popen(
        train_command(out, slow=True), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        # Freeze the first writer in the middle of writing a model, lock held, so that the
        # second arrives while its temporary directory exists.
        while True:
            assert wait_until(lambda: bool(temporaries(out, "seed-")), first), first.communicate()
            first.send_signal(signal.SIGSTOP)
            in_progress = temporaries(out, "seed-")
            if in_progress:
                break
            first.send_signal(signal.SIGCONT)  # renamed before it stopped: try the next model
        assert lock_is_held(lock)
        second = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE_S)
        assert second.returncode == 2
        assert second.stderr.strip() == "pie-audit: error: " + LOCKED.format(path=out, lock=lock)
        assert temporaries(out, "seed-") == in_progress  # the first one's work, untouched
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=DEADLINE_S)
    assert first.returncode == 0, err
    assert sorted(check_finished_models(out)) == list(SEEDS)
    assert temporaries(out) == []


# ---- a full disk ------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A small RAM disk at ``path`` (root only; the test is skipped elsewhere)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pie-audit: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


@pytest.mark.slow
def test_train_on_a_disk_that_fills_up(tmp_path):
    """A 1 MiB disk holds four of the six models (~250 kB each)."""
    with tmpfs(tmp_path / "disk", "1m") as disk:
        out = disk / "pop"
        command = train_command(out)
        full = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE_S)
        assert full.returncode == 2, full.stderr
        assert_one_line_error(full.stderr, "No space left on device", "nothing of it was kept")
        finished = check_finished_models(out)
        assert 1 <= len(finished) < len(SEEDS)
        assert temporaries(out) == [] and (out / POPULATION_FILE).is_file()
        resize(disk, "4m")
        done = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE_S)
        assert done.returncode == 0, done.stderr
        after = check_finished_models(out)
        assert sorted(after) == list(SEEDS)
        assert all(after[s] == finished[s] for s in finished)  # kept, not trained again


@pytest.mark.slow
def test_compare_on_a_disk_that_fills_up_keeps_the_previous_report(tmp_path, populations):
    """150 kB holds one report (~100 kB) but not a second beside it while it is replaced."""
    with tmpfs(tmp_path / "disk", "150k") as disk:
        out = disk / "report"
        command = compare_command(populations, out)
        first = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE_S)
        assert first.returncode in (0, 1), first.stderr
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        again = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE_S)
        assert again.returncode == 2, again.stderr
        assert_one_line_error(again.stderr, "No space left on device")
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        assert temporaries(disk) == []


# The same failures, injected in-process, for machines where a tmpfs cannot be mounted.


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


def test_train_whose_model_write_fails(tmp_path, monkeypatch, capsys):
    out = tmp_path / "pop"
    args = ["train", "--out", str(out), "--quiet", "--epochs", "1", "--jointly", "1"]
    assert run_cli([*args, "--population", "1"], capsys)[0] == 0
    before = run_json_digest(out / "seed-0000")

    def writer_fails(*a, **k):
        raise RuntimeError(
            "[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file "
            "data/0: file write failed"
        )

    monkeypatch.setattr(torch, "save", writer_fails)
    code, err = run_cli([*args, "--population", "2"], capsys)
    assert code == 2
    message = WRITE_FAILED.format(
        path=out / "seed-0001", reason="PytorchStreamWriter failed writing file data/0: file write failed"
    )
    assert err.strip() == f"pie-audit: error: {message}"
    assert seed_entries(out) == ["seed-0000"] and temporaries(out) == []
    assert run_json_digest(out / "seed-0000") == before


def test_compare_whose_report_write_fails(tmp_path, monkeypatch, capsys, populations):
    out = tmp_path / "report"
    base, pruned = populations
    args = ["compare", str(base), str(pruned), "--out", str(out), "--quiet", "--no-images",
            "--n-bootstrap", "20"]  # fmt: skip
    assert run_cli(args, capsys)[0] in (0, 1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(self, path, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    code, err = run_cli(args, capsys)
    assert code == 2
    assert_one_line_error(err, "No space left on device")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert temporaries(tmp_path) == []
