"""The ``pie-audit`` application and its exit codes.

Each command lives in its own module and registers itself on :data:`app`. :func:`main` owns the
exit codes, so that a CI pipeline can always tell them apart:

- 0: success, the gate passed;
- 1: the gate failed (and nothing else ever exits 1);
- 2: bad input or usage, with one line naming the file or option and the problem;
- 3: an internal error, that is a bug: one line, the traceback written to a log file
  (``--debug`` prints it instead);
- 130: interrupted; outputs are written atomically, so whatever was finished is kept whole.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback

import typer

from ..errors import PieAuditError

app = typer.Typer(
    name="pie-audit",
    help="Audit what pruning does to a neural network, class by class and example by example.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130
DEBUG_ENV = "PIE_AUDIT_DEBUG"
INTERRUPTED = (
    "pie-audit: interrupted; finished outputs are kept and nothing half-written is left "
    "(re-run the command to resume)"
)
INTERNAL_ERROR = (
    "pie-audit: internal error (this is a bug in pie-audit, please report it): {error}; "
    "the traceback is in {log} (or re-run with --debug to print it)"
)
SYSTEM_ERROR = "pie-audit: error: {path}{reason}"

_debug = False


def _version(value: bool) -> None:
    if value:
        from .._version import __version__

        typer.echo(f"pie-audit {__version__}")
        raise typer.Exit()


def _set_debug(value: bool) -> None:
    global _debug
    _debug = _debug or value


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", callback=_set_debug, is_eager=True,
        help=f"Print the full traceback of an internal error (or set {DEBUG_ENV}=1).",
    ),  # fmt: skip
) -> None:
    """Audit what pruning does to a neural network, class by class and example by example."""


def _error(message: str) -> None:
    typer.echo(message, err=True)


def _internal_error() -> int:
    """Report the exception being handled as a bug: one line, the traceback kept in a log file."""
    error = sys.exc_info()[1]
    summary = f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
    if _debug or os.environ.get(DEBUG_ENV):
        traceback.print_exc()
        _error(f"pie-audit: internal error (this is a bug in pie-audit, please report it): {summary}")
        return EXIT_INTERNAL_ERROR
    fd, log = tempfile.mkstemp(prefix="pie-audit-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"pie-audit {' '.join(sys.argv[1:])}\n\n")
        traceback.print_exc(file=fh)
    _error(INTERNAL_ERROR.format(error=summary, log=log))
    return EXIT_INTERNAL_ERROR


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pie-audit`` console script; exits with one of the codes above."""
    global _debug
    _debug = False
    try:
        code = app(args=argv, prog_name="pie-audit", standalone_mode=False)
    except PieAuditError as e:
        _error(f"pie-audit: error: {e}")
        code = EXIT_BAD_INPUT
    except typer.TyperException as e:
        # A usage error (unknown option, missing argument, a value of the wrong type): typer's
        # own message, and exit 2 whatever code it carries, since 1 means "gate failed".
        show = getattr(e, "show", None)
        show() if show is not None else _error(f"pie-audit: error: {e}")
        code = EXIT_BAD_INPUT
    except (KeyboardInterrupt, typer.Abort):
        code = EXIT_INTERRUPTED
    except OSError as e:
        # The machine refused (disk full, permission denied, read-only filesystem): not a bug,
        # and not something a traceback would help with.
        path = f"{e.filename}: " if e.filename else ""
        _error(SYSTEM_ERROR.format(path=path, reason=e.strerror or e))
        code = EXIT_BAD_INPUT
    except Exception:
        code = _internal_error()
    if code == EXIT_INTERRUPTED:
        # typer turns Ctrl-C into a silent exit 130 before any handler of ours could run.
        _error(INTERRUPTED)
    sys.exit(code if code is not None else EXIT_OK)
