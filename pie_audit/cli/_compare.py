"""``pie-audit compare``: audit a pruned population against its baseline, and gate CI on it.

Exit codes: 0 when the gate passes, 1 when it fails, 2 on bad input or usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ._app import EXIT_GATE_FAILED, app
from ._options import OUTCOME_COLOURS, audit_options, command_line, gallery_of, rules_source, settings_from


@app.command()
@audit_options
def compare(
    baseline: Annotated[Path, typer.Argument(help="Baseline population directory.", show_default=False)],
    pruned: Annotated[Path, typer.Argument(help="Pruned population directory.", show_default=False)],
    out: Annotated[
        Optional[Path], typer.Option(help="Report directory. Default: reports/<PRUNED's name>.")
    ] = None,
    *,
    junit: Annotated[Optional[Path], typer.Option(help="Also write the gate as JUnit XML here.")] = None,
    **options: Any,
) -> None:
    """Compare a pruned population with its baseline: PIEs, per-class impact, CI gate.

    Exit 0 when the gate passes, 1 when it fails, 2 on bad input.
    """
    from .._compare import compare_populations
    from ..report import write_outputs

    settings = settings_from(options)
    result = compare_populations(baseline, pruned, settings=settings)
    out = out if out is not None else Path("reports") / Path(pruned).resolve().name
    write_outputs(result, out, gallery=gallery_of(result, options), junit=junit, command=command_line())
    if not options["quiet"]:
        _print_verdict(result, out, rules_source(settings))
    if not result.gate.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


def _print_verdict(result, out: Path, source: str) -> None:  # noqa: ANN001 - CompareResult, imported lazily
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    gate = result.gate
    pies = result.pies
    console.print(f"[bold {OUTCOME_COLOURS[result.outcome]}]{result.verdict}[/]")
    for failure in gate.failures:
        console.print(f"  - {failure.message}", markup=False)
    console.print(
        f"accuracy {result.baseline.accuracy_mean:.2%} ({result.baseline.n_models} baseline models) -> "
        f"{result.pruned.accuracy_mean:.2%} ({result.pruned.n_models} pruned models); "
        f"PIEs {pies.count} of {len(result.examples)} ({pies.fraction:.2%}), {pies.n_stable} stable, "
        f"{pies.n_tied} tied",
        markup=False,
    )
    console.print(f"classes ({result.test} test): {_impact(result)}", markup=False)
    console.print(f"power: {result.power_sentence()}", markup=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    console.print(source, markup=False)
    console.print(f"report: {out}", markup=False)


def _impact(result) -> str:  # noqa: ANN001 - CompareResult
    """Per-class findings in words that say what was measured."""
    names = result.classes["name"]
    parts = []
    for rows, verb in ((result.harmed, "lost"), (result.helped, "gained")):
        shown = [
            f"{names[r.label]} ({verb} {abs(100 * r.recall_change):.1f} points of recall"
            + (f", {abs(100 * r.normalized_change):.1f} more than the models' average)" if result.test != "mcnemar" else ")")
            for r in rows.head(5).itertuples()
        ]
        if shown:
            more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
            label = "significantly harmed" if verb == "lost" else "significantly helped"
            parts.append(f"{len(rows)} {label}: " + "; ".join(shown) + more)
    return "; ".join(parts) if parts else "none significantly harmed or helped"
