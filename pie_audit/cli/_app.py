"""The ``pie-audit`` application and its exit codes.

Each command lives in its own module and registers itself on :data:`app`. :func:`main` owns the
exit codes, so that a CI pipeline can always tell them apart:

- 0: success, the gate passed;
- 1: the gate failed (and nothing else ever exits 1);
- 2: bad input or usage, with one line naming the file or option and the problem;
- 3: an internal error, that is a bug: one line, the traceback written to a log file
  (``--debug`` prints it instead);
- 130: interrupted (Ctrl-C, SIGINT), 143: terminated (SIGTERM, as ``kill`` and CI runners send):
  outputs are written atomically, so whatever was finished is kept whole, and a Ray instance
  started for the command is shut down.

SIGTERM takes the path of Ctrl-C (:func:`_terminate` raises ``KeyboardInterrupt``), so that every
``finally`` runs; only the exit code and the line differ. A second SIGTERM while that cleanup runs
is ignored (SIGKILL is what stops a process without it).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
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
EXIT_TERMINATED = 143
#: Also what lets Ray's own log lines through (pie_audit.training._ray.DEBUG_ENV); --debug sets it.
DEBUG_ENV = "PIE_AUDIT_DEBUG"
INTERRUPTED = (
    "pie-audit: interrupted; finished outputs are kept and nothing half-written is left "
    "(re-run the command to resume)"
)
TERMINATED = (
    "pie-audit: terminated (SIGTERM); finished outputs are kept and nothing half-written is left "
    "(re-run the command to resume)"
)
INTERNAL_ERROR = (
    "pie-audit: internal error (this is a bug in pie-audit, please report it): {error}; "
    "the traceback is in {log} (or re-run with --debug to print it)"
)
SYSTEM_ERROR = "pie-audit: error: {path}{reason}"

_debug = False
_terminated = False


def _terminate(signum: int, frame: object) -> None:
    global _terminated
    if _terminated:
        return  # the first one's cleanup is running: let it finish
    _terminated = True
    raise KeyboardInterrupt


def _version(value: bool) -> None:
    if value:
        from .._version import __version__

        typer.echo(f"pie-audit {__version__}")
        raise typer.Exit()


def _set_debug(value: bool) -> None:
    global _debug
    _debug = _debug or value
    if value:
        # For the library, which reads the environment (Ray's log lines, pie_audit.training._ray).
        os.environ[DEBUG_ENV] = "1"


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", callback=_set_debug, is_eager=True,
        help=f"Print the full traceback of an internal error, and Ray's own log lines (or set {DEBUG_ENV}=1).",
    ),  # fmt: skip
) -> None:
    """Audit what pruning does to a neural network, class by class and example by example."""


def _error(message: str) -> None:
    # One line, whatever a file or directory name smuggled in: a line break would split the
    # message (and fake a second one).
    typer.echo(message.replace("\r", "\\r").replace("\n", "\\n"), err=True)


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
    global _debug, _terminated
    _debug = _terminated = False
    debug_env = os.environ.get(DEBUG_ENV)
    here = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if here else None
    try:
        code = _run(argv)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED  # a signal while an error was being reported
    finally:
        if here and previous is not None:  # None: a handler not installed from Python
            signal.signal(signal.SIGTERM, previous)
        if debug_env is None:
            os.environ.pop(DEBUG_ENV, None)  # what --debug set, for this command only
    if code == EXIT_INTERRUPTED and _terminated:
        code = EXIT_TERMINATED
    if code == EXIT_INTERRUPTED:
        # typer turns Ctrl-C into a silent exit 130 before any handler of ours could run.
        _error(INTERRUPTED)
    elif code == EXIT_TERMINATED:
        _error(TERMINATED)
    sys.exit(code if code is not None else EXIT_OK)


_argv: list[str] | None = None


def current_argv() -> list[str] | None:
    """The arguments :func:`main` was called with, or ``None`` when it reads ``sys.argv``."""
    return _argv


def _run(argv: list[str] | None) -> int | None:
    """The command's exit code: the exceptions of the command turned into codes."""
    global _argv
    _argv = None if argv is None else [str(a) for a in argv]
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
    return code
