"""``pie-audit report``: audit several pruned populations against one baseline, with a sweep page.

Writes ``OUT/<pruned name>/`` (the files of ``pie-audit compare``) per pruned population and
``OUT/index.html``, the sweep page. Exit codes: 0 when every gate passes, 1 when any fails,
2 on bad input or usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import EXIT_GATE_FAILED, app
from ._options import OUTCOME_COLOURS, audit_options, command_line, gallery_of, groups_from, rules_source, settings_from


@app.command()
@audit_options
def report(
    baseline: Annotated[Path, typer.Argument(help="Baseline population directory.", show_default=False)],
    pruned: Annotated[
        list[Path], typer.Argument(help="Pruned population directories, e.g. one per sparsity.", show_default=False)
    ],
    out: Annotated[Path, typer.Option(help="Sweep directory: OUT/index.html and OUT/<PRUNED name>/.")],
    **options: Any,
) -> None:
    """Compare each pruned population with the baseline and write a sweep page linking the reports.

    Exit 0 when every gate passes, 1 when any fails, 2 on bad input.
    """
    from ..report import check_images_file, check_outputs, write_sweep
    from .._compare import sweep

    settings = settings_from(options)
    # Every output and input file checked before any audit is computed: a refusal is at once.
    check_outputs(out, populations=[baseline, *pruned], what="sweep")
    if options["images"] is not None and not options["no_images"]:
        check_images_file(options["images"])
    results = sweep(baseline, pruned, settings=settings, **groups_from(options))
    galleries = [gallery_of(result, options) for _, result in results]
    write_sweep(results, out, baseline=baseline, galleries=galleries, command=command_line())
    if not options["quiet"]:
        _print_summary(results, out, rules_source(settings))
    if not all(result.gate.passed for _, result in results):
        raise typer.Exit(EXIT_GATE_FAILED)


def _print_summary(results, out: Path, source: str) -> None:  # noqa: ANN001 - CompareResults, imported lazily
    from rich.console import Console

    from ..report import SWEEP_PAGE

    console = Console(highlight=False, soft_wrap=True)
    for name, result in results:
        colour = OUTCOME_COLOURS[result.outcome]
        console.print(f"[{colour}]{result.verdict_line(rules=False, power=False)}[/] ", end="")
        console.print(
            f"{name}: accuracy {result.pruned.accuracy_mean:.2%}, PIEs {result.pies.fraction:.2%}, "
            f"classes harmed {result.n_harmed}"
            + (f", groups harmed {len(result.harmed_groups)}" if result.groups is not None else ""),
            markup=False,
        )
    console.print(source, markup=False)
    console.print(f"sweep: {out / SWEEP_PAGE}", markup=False)
