"""Command-line interface: parses arguments and calls the library, nothing more.

Each command lives in its own module and registers itself on :data:`app`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import typer

from ..errors import PieAuditError

app = typer.Typer(
    name="pie-audit",
    help="Audit what pruning does to a neural network, class by class and example by example.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

EXIT_BAD_INPUT = 2


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"pie-audit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Audit what pruning does to a neural network, class by class and example by example."""


def fail(message: str) -> "typer.Exit":
    """Print a one-line error and return the exit to raise (code 2)."""
    typer.echo(f"pie-audit: error: {message}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


# Commands register themselves on import; a command module not written yet is simply absent.
for _command in ("train", "compare", "report"):
    if importlib.util.find_spec(f"{__name__}.{_command}") is not None:
        importlib.import_module(f"{__name__}.{_command}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pie-audit`` console script."""
    try:
        app(args=argv, prog_name="pie-audit")
    except PieAuditError as e:
        typer.echo(f"pie-audit: error: {e}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        typer.echo("pie-audit: interrupted", err=True)
        sys.exit(130)
