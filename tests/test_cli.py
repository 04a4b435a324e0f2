"""The CLI's exit codes: a crash or an interrupt never reads as a failed gate (exit 1)."""

import errno
import importlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pie_audit.cli import (
    DEBUG_ENV,
    EXIT_BAD_INPUT,
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    INTERRUPTED,
)
from pie_audit.cli._options import DATA_ROOT_NOT_A_DIRECTORY

from cli_run import error_line, run


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the log goes


def _fail_with(monkeypatch, error):
    def compare_populations(*args, **kwargs):
        raise error

    monkeypatch.setattr(importlib.import_module("pie_audit._compare"), "compare_populations", compare_populations)


def test_a_bug_exits_3_with_one_line_and_a_log(identical_populations, tmp_path, monkeypatch, capsys):
    _fail_with(monkeypatch, ZeroDivisionError("division by zero"))
    assert run("compare", *identical_populations, "--out", tmp_path / "r") == EXIT_INTERNAL_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "internal error (this is a bug" in err and "ZeroDivisionError: division by zero" in err
    log = Path(re.search(r"the traceback is in (\S+) ", err).group(1))
    assert log.parent == tmp_path / "tmp"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "compare_populations" in text
    assert not (tmp_path / "r").exists()


def test_debug_prints_the_traceback(identical_populations, monkeypatch, capsys):
    _fail_with(monkeypatch, ZeroDivisionError("division by zero"))
    assert run("--debug", "compare", *identical_populations) == EXIT_INTERNAL_ERROR
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "the traceback is in" not in err
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert run("compare", *identical_populations) == EXIT_INTERNAL_ERROR
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_interrupt_exits_130_and_says_what_was_kept(identical_populations, monkeypatch, capsys):
    _fail_with(monkeypatch, KeyboardInterrupt())
    assert run("compare", *identical_populations) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip().splitlines() == [INTERRUPTED]


def test_a_refusal_of_the_machine_is_one_line_and_exit_2(identical_populations, monkeypatch, capsys):
    _fail_with(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "/data/report"))
    assert run("compare", *identical_populations) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip() == "pie-audit: error: /data/report: No space left on device"


def test_usage_errors_exit_2_never_1(capsys):
    assert run("compare") == EXIT_BAD_INPUT
    assert run("compare", "a", "b", "--alpha", "x") == EXIT_BAD_INPUT
    assert run("nonsense") == EXIT_BAD_INPUT
    assert "Invalid value for '--alpha'" in capsys.readouterr().err


def test_version_and_help_exit_0(capsys):
    assert run("--version") == 0
    assert capsys.readouterr().out.startswith("pie-audit ")
    assert run("compare", "--help") == 0


@pytest.mark.slow
def test_ctrl_c_in_a_real_process(identical_populations, tmp_path):
    """SIGINT to a running ``pie-audit`` process: exit 130 and the one-line message."""
    code = (
        "import importlib, time\n"
        "c = importlib.import_module('pie_audit._compare')\n"
        "def slow(*a, **k):\n"
        "    print('started', flush=True); time.sleep(60)\n"
        "c.compare_populations = slow\n"
        "from pie_audit.cli import main\n"
        f"main(['compare', {str(identical_populations[0])!r}, {str(identical_populations[1])!r}])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(subprocess.signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_INTERRUPTED
    assert err.strip().splitlines()[-1] == INTERRUPTED


def test_the_audit_commands_share_one_declaration_of_their_options():
    """compare and report take every setting as a flag, in the same order, with the same help."""
    import typer.main

    from pie_audit.audit import SETTINGS
    from pie_audit.cli import app

    group = typer.main.get_command(app)
    shapes = {}
    for name in ("compare", "report"):
        command = group.commands[name]
        # --junit and --review are compare's own: a sweep has one gate file per audit, and no sheet.
        shapes[name] = [(p.name, p.opts, p.secondary_opts, p.help) for p in command.params if p.name not in ("junit", "review")]
        assert set(SETTINGS) <= {p.name for p in command.params}
    # After each command's own baseline, pruned and --out, the same options, the same words.
    assert shapes["compare"][3:] == shapes["report"][3:] and len(shapes["report"]) > 3 + len(SETTINGS)
    flags = [p.opts[0] for p in group.commands["report"].params]
    assert flags.index("--min-power") < flags.index("--config") < flags.index("--seed") < flags.index("--quiet")


@pytest.mark.parametrize("command", ["compare", "report", "review"])
def test_a_data_root_for_images_that_is_not_a_directory_is_refused(command, tmp_path, capsys):
    # A typo must not leave the PIE gallery (or a review sheet) without images, silently.
    missing, a_file = tmp_path / "no-such-dir", tmp_path / "a-file"
    a_file.write_text("x")
    args = {
        "compare": ["compare", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "out"],
        "report": ["report", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "out"],
        "review": ["review", "export", tmp_path / "audit", "--out", tmp_path / "out"],
    }[command]
    for root, problem in ((missing, "does not exist"), (a_file, "is not a directory")):
        assert run(*args, "--data-root", root) == EXIT_BAD_INPUT
        assert error_line(capsys) == DATA_ROOT_NOT_A_DIRECTORY.format(path=root, problem=problem)
    assert not (tmp_path / "out").exists()
