"""Every executor bounded: a dead Ray address, a unit no node can run, and SIGTERM mid-study.

Each test injects the fault into a real run (a real local Ray instance over loopback, no mock)
and checks the exit code, the one line on stderr, what is left on disk, and that no Ray process
of ours outlives the command. Ray processes are told apart from anyone else's by their session
directory: each test gives Ray its own ``RAY_TMPDIR``, which every raylet and GCS server names on
its command line.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import pie_audit
from pie_audit.cli import main
from pie_audit.cli._app import TERMINATED
from pie_audit.interchange import incomplete_reason

ray = pytest.importorskip("ray") if os.environ.get("CI") is None else __import__("ray")

from pie_audit.training._ray import TIMEOUT_ENV, UNPLACEABLE, UNREACHABLE  # noqa: E402

TINY = """
[study]
name = "tiny"
dataset = "digits"
arch = "small-cnn"
models = 2
out = "runs/tiny"

[train]
epochs = {epochs}

[[population]]
name = "dense"
sparsity = 0.0

[[population]]
name = "gmp-90"
sparsity = 0.9
"""
# Far more than any test needs: reaching it means the wait was not bounded.
HANG = 90


def tiny_spec(directory, epochs=1):
    path = directory / "study.toml"
    path.write_text(textwrap.dedent(TINY.format(epochs=epochs)))
    return path


def run_cli(*args):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code


def written(out):
    """Every file and directory the study left, the population directories' locks excepted."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.name.endswith(".pie-audit.lock"))


def closed_port():
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_tmpdir():
    """A Ray temp directory of this test's own (short: Ray's socket paths must fit 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="pa-ray-", dir="/tmp"))
    yield path
    for pid in ray_processes_of(path):  # left by a failing test: ours, so stopped here
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


def ray_processes_of(tmpdir):
    """Pids of live (not zombie) processes of the Ray session under ``tmpdir``.

    A raylet or GCS server names the session on its command line; its agents and workers rename
    themselves (``ray::DashboardAgent``) but hold the session's log files open.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            files = [os.readlink(fd) for fd in (entry / "fd").iterdir()] if str(tmpdir) not in cmdline else []
        except OSError:
            continue
        if str(tmpdir) in cmdline or any(f.startswith(str(tmpdir)) for f in files):
            found.append(int(entry.name))
    return found


def children_of(pids):
    """Pids of live processes whose parent is one of ``pids`` (a raylet's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) in pids:
            found.append(int(entry.name))
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def no_ray_of_ours_left(tmpdir, also=()):
    """Wait (a little: shutdown stops workers asynchronously) until none of our Ray processes lives."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        left = sorted(set(ray_processes_of(tmpdir)) | {pid for pid in also if alive(pid)})
        if not left:
            return []
        time.sleep(0.2)
    return left


def study(spec, *options, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "pie_audit", "study", "run", str(spec), "--quiet", "--no-report", *options],
        cwd=spec.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )  # fmt: skip


# ---- a Ray address that does not answer -------------------------------------------------------


def test_a_ray_address_that_refuses_is_one_line_and_exit_2(tmp_path, capsys):
    assert not ray.is_initialized()  # else the study would use that instance and probe nothing
    address = f"127.0.0.1:{closed_port()}"
    spec = tiny_spec(tmp_path)
    assert run_cli("study", "run", spec, "--executor", "ray", "--ray-address", address, "--quiet") == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "pie-audit: error: " + UNREACHABLE.format(address=address, reason="refused the connection", env=TIMEOUT_ENV)
    ]
    assert written(tmp_path / "runs" / "tiny") == []  # no model, no population record
    assert not ray.is_initialized()


@pytest.mark.slow
def test_a_ray_address_that_never_answers_is_given_up_after_the_timeout(tmp_path):
    # A port that accepts connections (the kernel does, for the backlog) and never says a word:
    # a wedged server, or a firewall that swallows. ray.init would retry here for minutes.
    with socket.socket() as silent:
        silent.bind(("0.0.0.0", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        proc = study(tiny_spec(tmp_path), "--executor", "ray", "--ray-address", address, env={TIMEOUT_ENV: "1"})
        started = time.monotonic()
        _, err = proc.communicate(timeout=HANG)
        took = time.monotonic() - started
    assert proc.returncode == 2, err
    assert err.splitlines() == [
        "pie-audit: error: "
        + UNREACHABLE.format(address=address, reason="did not answer within 1 s", env=TIMEOUT_ENV)
    ]
    assert written(tmp_path / "runs" / "tiny") == []
    print(f"a silent Ray address given up after {took:.1f} s (process start and dataset load included)")


def test_a_bad_timeout_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    spec = tiny_spec(tmp_path)
    assert run_cli("study", "run", spec, "--executor", "ray", "--ray-address", "127.0.0.1:6379", "--quiet") == 2
    assert capsys.readouterr().err.splitlines() == [
        f"pie-audit: error: {TIMEOUT_ENV} must be a number of seconds > 0, not 'soon'"
    ]


# ---- a unit that no node can run --------------------------------------------------------------


@pytest.mark.slow
def test_a_unit_no_node_can_run_is_refused_and_the_local_instance_stopped(tmp_path, ray_tmpdir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: a unit asking for one can be placed")
    proc = study(tiny_spec(tmp_path), "--executor", "ray", "--gpus-per-unit", "1", "--device", "cpu",
                 env={"RAY_TMPDIR": str(ray_tmpdir)})  # fmt: skip
    started = time.monotonic()
    _, err = proc.communicate(timeout=HANG)
    took = time.monotonic() - started
    assert proc.returncode == 2, err
    expected = UNPLACEABLE.format(amount=1.0, resource="GPU", where="started on this machine", most=0.0, option="--gpus-per-unit")
    assert err.splitlines() == [f"pie-audit: error: {expected}"]
    # A local instance was started (its session is there) and nothing of it is left running.
    assert list((ray_tmpdir / "ray").glob("session_*")), "no Ray instance was started"
    assert no_ray_of_ours_left(ray_tmpdir) == []
    assert written(tmp_path / "runs" / "tiny") == []
    print(f"an unplaceable unit refused after {took:.1f} s (Ray's start and stop included)")


# ---- SIGTERM in the middle of a study ---------------------------------------------------------


def wait_for(condition, proc, what):
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the study ended (exit {proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"never saw {what}")


def finished_models(out):
    return sorted(p.name for p in out.glob("*/seed-*") if p.is_dir())


def assert_nothing_half_written(out):
    for directory in out.glob("*/seed-*"):
        assert incomplete_reason(directory, seed=int(directory.name.split("-")[1])) is None, directory
    assert not [p for p in out.rglob(".tmp-*")], written(out)


@pytest.mark.slow
def test_sigterm_during_a_local_study_exits_143_keeping_finished_models(tmp_path):
    spec = tiny_spec(tmp_path, epochs=8)
    out = tmp_path / "runs" / "tiny"
    proc = study(spec, "--device", "cpu")
    # The baseline's unit is written; the pruned population's is training.
    wait_for(lambda: (out / "dense" / "seed-0001").is_dir(), proc, "the baseline's models written")
    proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    _, err = proc.communicate(timeout=HANG)
    print(f"a local study stopped {time.monotonic() - stopped:.1f} s after SIGTERM")
    assert proc.returncode == 143, err
    assert err.splitlines() == [TERMINATED]
    assert finished_models(out) == ["seed-0000", "seed-0001"]  # the baseline's, whole
    assert_nothing_half_written(out)
    assert pie_audit.load_population(out / "dense").n_models == 2
    assert not (out / "gmp-90" / "seed-0000").exists()


@pytest.mark.slow
def test_sigterm_during_a_ray_study_exits_143_and_stops_every_ray_process(tmp_path, ray_tmpdir):
    spec = tiny_spec(tmp_path, epochs=30)
    out = tmp_path / "runs" / "tiny"
    proc = study(spec, "--executor", "ray", "--device", "cpu", env={"RAY_TMPDIR": str(ray_tmpdir)})

    def training():
        raylets = [pid for pid in ray_processes_of(ray_tmpdir) if "raylet" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]  # fmt: skip
        workers = [pid for pid in children_of(raylets) if "ray::_train_unit" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]  # fmt: skip
        return (raylets, workers) if workers else None

    raylets, workers = wait_for(training, proc, "a Ray worker training a unit")
    everything = ray_processes_of(ray_tmpdir) + children_of(raylets)
    proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    _, err = proc.communicate(timeout=HANG)
    print(f"a Ray study stopped {time.monotonic() - stopped:.1f} s after SIGTERM")
    assert proc.returncode == 143, err
    assert err.splitlines() == [TERMINATED]
    assert no_ray_of_ours_left(ray_tmpdir, also=everything) == []
    assert_nothing_half_written(out)


@pytest.mark.slow
def test_sigterm_while_ray_starts_is_held_until_it_can_be_stopped_whole(tmp_path, ray_tmpdir):
    # Interrupted mid-start, ray.init stops what it has started but leaves the raylet's agents
    # running, and its own SIGTERM handler exits 1 ("gate failed"): the signal is held instead.
    spec = tiny_spec(tmp_path, epochs=30)
    proc = study(spec, "--executor", "ray", "--device", "cpu", env={"RAY_TMPDIR": str(ray_tmpdir)})
    wait_for(lambda: list(ray_tmpdir.glob("ray/session_*/logs/raylet*")), proc, "the raylet starting")
    proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    _, err = proc.communicate(timeout=HANG)
    print(f"a Ray study stopped {time.monotonic() - stopped:.1f} s after a SIGTERM during ray.init")
    assert proc.returncode == 143, err
    assert err.splitlines() == [TERMINATED]
    assert no_ray_of_ours_left(ray_tmpdir) == []
    assert finished_models(tmp_path / "runs" / "tiny") == []
