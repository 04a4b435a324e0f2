"""``pie-audit report``: audit several pruned populations against one baseline, with a sweep page.

Writes ``OUT/<pruned name>/`` (the files of ``pie-audit compare``) per pruned population and
``OUT/index.html``, the sweep page. Exit codes: 0 when every gate passes, 1 when any fails,
2 on bad input or usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import EXIT_GATE_FAILED, app
from ._options import (
    Alpha,
    Config,
    Correction,
    DataRoot,
    Detect,
    Images,
    MaxAccuracyDrop,
    MaxClassDrop,
    MaxClassRecallDrop,
    MaxHarmedClasses,
    MaxPieFraction,
    MinPower,
    NBootstrap,
    NoImages,
    Quiet,
    Seed,
    StablePiesOnly,
    Test,
    TieBreak,
    command_line,
    rules_source,
    settings_from,
)


@app.command()
def report(
    ctx: typer.Context,
    baseline: Annotated[Path, typer.Argument(help="Baseline population directory.", show_default=False)],
    pruned: Annotated[
        list[Path], typer.Argument(help="Pruned population directories, e.g. one per sparsity.", show_default=False)
    ],
    out: Annotated[Path, typer.Option(help="Sweep directory: OUT/index.html and OUT/<PRUNED name>/.")],
    alpha: Alpha = None,
    correction: Correction = None,
    tie_break: TieBreak = None,
    test: Test = None,
    detect: Detect = None,
    max_class_drop: MaxClassDrop = None,
    max_class_recall_drop: MaxClassRecallDrop = None,
    max_pie_fraction: MaxPieFraction = None,
    stable_pies_only: StablePiesOnly = None,
    max_accuracy_drop: MaxAccuracyDrop = None,
    max_harmed_classes: MaxHarmedClasses = None,
    min_power: MinPower = None,
    config: Config = None,
    seed: Seed = None,
    n_bootstrap: NBootstrap = None,
    data_root: DataRoot = Path("data"),
    images: Images = None,
    no_images: NoImages = False,
    quiet: Quiet = False,
) -> None:
    """Compare each pruned population with the baseline and write a sweep page linking the reports.

    Exit 0 when every gate passes, 1 when any fails, 2 on bad input.
    """
    from ..report import pie_gallery, write_sweep
    from .._compare import sweep

    settings = settings_from(ctx.params)
    results = sweep(baseline, pruned, settings=settings)
    galleries = [
        pie_gallery(result, data_root=None if no_images else data_root, images=None if no_images else images)
        for _, result in results
    ]
    write_sweep(results, out, baseline=baseline, galleries=galleries, command=command_line())
    if not quiet:
        _print_summary(results, out, rules_source(settings))
    if not all(result.gate.passed for _, result in results):
        raise typer.Exit(EXIT_GATE_FAILED)


def _print_summary(results, out: Path, source: str) -> None:  # noqa: ANN001 - CompareResults, imported lazily
    from rich.console import Console

    from ..report import SWEEP_PAGE

    console = Console(highlight=False, soft_wrap=True)
    for name, result in results:
        status = "[green]PASSED[/]" if result.gate.passed else "[red]FAILED[/]"
        if result.gate.passed and result.power.underpowered:
            status = "[yellow]PASSED (underpowered)[/]"
        console.print(f"{status} ", end="")
        console.print(
            f"{name}: accuracy {result.pruned.accuracy_mean:.2%}, PIEs {result.pies.fraction:.2%}, "
            f"classes harmed {result.n_harmed}",
            markup=False,
        )
    console.print(source, markup=False)
    console.print(f"sweep: {out / SWEEP_PAGE}", markup=False)
