"""Command-line interface: parses arguments and calls the library, nothing more.

Each command lives in its own module and registers itself on :data:`app`.
"""

from __future__ import annotations

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

EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _version(value: bool) -> None:
    if value:
        from .._version import __version__

        typer.echo(f"pie-audit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Audit what pruning does to a neural network, class by class and example by example."""


# Commands register themselves on ``app`` when imported.
from . import compare, report, train  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pie-audit`` console script."""
    try:
        app(args=argv, prog_name="pie-audit")
    except PieAuditError as e:
        typer.echo(f"pie-audit: error: {e}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        typer.echo("pie-audit: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
