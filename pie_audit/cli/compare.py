"""``pie-audit compare``: audit a pruned population against its baseline, and gate CI on it.

Exit codes: 0 when the gate passes, 1 when it fails, 2 on bad input or usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import EXIT_GATE_FAILED, app
from ._options import (
    Alpha,
    Config,
    Correction,
    DataRoot,
    MaxAccuracyDrop,
    MaxClassDrop,
    MaxHarmedClasses,
    MaxPieFraction,
    NBootstrap,
    NoImages,
    Quiet,
    Seed,
    TieBreak,
    command_line,
    settings_from,
)


@app.command()
def compare(
    ctx: typer.Context,
    baseline: Annotated[Path, typer.Argument(help="Baseline population directory.", show_default=False)],
    pruned: Annotated[Path, typer.Argument(help="Pruned population directory.", show_default=False)],
    out: Annotated[
        Optional[Path], typer.Option(help="Report directory. Default: reports/<PRUNED's name>.")
    ] = None,
    alpha: Alpha = None,
    correction: Correction = None,
    tie_break: TieBreak = None,
    max_class_drop: MaxClassDrop = None,
    max_pie_fraction: MaxPieFraction = None,
    max_accuracy_drop: MaxAccuracyDrop = None,
    max_harmed_classes: MaxHarmedClasses = None,
    config: Config = None,
    junit: Annotated[Optional[Path], typer.Option(help="Also write the gate as JUnit XML here.")] = None,
    seed: Seed = None,
    n_bootstrap: NBootstrap = None,
    data_root: DataRoot = Path("data"),
    no_images: NoImages = False,
    quiet: Quiet = False,
) -> None:
    """Compare a pruned population with its baseline: PIEs, per-class impact, CI gate.

    Exit 0 when the gate passes, 1 when it fails, 2 on bad input.
    """
    from ..compare import compare_populations
    from ..outputs import pie_gallery, write_outputs

    result = compare_populations(baseline, pruned, settings=settings_from(ctx.params))
    out = out if out is not None else Path("reports") / Path(pruned).resolve().name
    gallery = pie_gallery(result, data_root=None if no_images else data_root)
    write_outputs(result, out, gallery=gallery, junit=junit, command=command_line())
    if not quiet:
        _print_verdict(result, out)
    if not result.gate.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


def _print_verdict(result, out: Path) -> None:  # noqa: ANN001 - CompareResult, imported lazily
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    gate = result.gate
    pies = result.pies
    if gate.passed:
        console.print("[bold green]gate PASSED[/]")
    else:
        console.print(f"[bold red]gate FAILED[/] ({len(gate.failures)} rule(s))")
        for failure in gate.failures:
            console.print(f"  - {failure.message}", markup=False)
    console.print(
        f"accuracy {result.baseline.accuracy_mean:.2%} ({result.baseline.n_models} baseline models) -> "
        f"{result.pruned.accuracy_mean:.2%} ({result.pruned.n_models} pruned models); "
        f"PIEs {pies.count} of {len(result.examples)} ({pies.fraction:.2%}), {pies.n_tied} tied; "
        f"classes harmed {result.n_harmed}, helped {result.n_helped}",
        markup=False,
    )
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    console.print(f"report: {out}", markup=False)
