"""Running the CLI in-process from a test: its exit code, and the one error line it printed."""

import pytest

from pie_audit.cli import main

ERROR_PREFIX = "pie-audit: error: "


def run(*args):
    """Run the CLI in-process; return its exit code."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code


def error_line(capsys) -> str:
    """The one line on stderr, without its prefix: no traceback, no second line."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(ERROR_PREFIX) and "Traceback" not in err, err
    return err.removeprefix(ERROR_PREFIX).rstrip("\n")
