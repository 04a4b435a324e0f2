"""``pie-audit compare``: audit a pruned population against its baseline, and gate CI on it.

Exit codes: 0 when the gate passes, 1 when it fails, 2 on bad input or usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ._app import EXIT_GATE_FAILED, app
from ._options import OUTCOME_COLOURS, audit_options, command_line, gallery_of, groups_from, rules_source, settings_from


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
    review: Annotated[
        Optional[Path],
        typer.Option(help="A filled review sheet (pie-audit review export, docs/review.md): its tally goes into the report."),
    ] = None,
    **options: Any,
) -> None:
    """Compare a pruned population with its baseline: PIEs, per-class impact, CI gate.

    Exit 0 when the gate passes, 1 when it fails, 2 on bad input.
    """
    from .._atomic import resolve_output
    from .._compare import compare_populations
    from ..report import check_images_file, check_outputs, tally_review, write_outputs

    settings = settings_from(options)
    out = out if out is not None else Path("reports") / resolve_output(pruned).name
    # Every output refused now, before the audit is computed, not after.
    inputs = [p for p in (settings.source, options["groups"], options["images"], review) if p is not None]
    check_outputs(out, populations=[baseline, pruned], junit=junit, inputs=inputs)
    if options["images"] is not None and not options["no_images"]:
        check_images_file(options["images"])
    result = compare_populations(baseline, pruned, settings=settings, **groups_from(options))
    # The sheet is checked against this audit's PIEs (a sheet of another audit is refused).
    tally = tally_review(review, write=False, examples=result.examples) if review is not None else None
    write_outputs(result, out, gallery=gallery_of(result, options), junit=junit, command=command_line(), review=tally)
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
    for unsettled in gate.inconclusive:
        word = "allowed" if gate.rules.allow_inconclusive else "inconclusive"
        console.print(f"  - {unsettled.rule} {word}: {unsettled.message}", markup=False)
    console.print(
        f"accuracy {result.baseline.accuracy_mean:.2%} ({result.baseline.n_models} baseline models) -> "
        f"{result.pruned.accuracy_mean:.2%} ({result.pruned.n_models} pruned models); "
        f"PIEs {pies.count} of {len(result.examples)} ({pies.fraction:.2%}), {pies.n_stable} stable, "
        f"{pies.n_tied} tied",
        markup=False,
    )
    console.print(f"classes ({result.test} test): {_impact(result)}", markup=False)
    if result.groups is not None:
        console.print(f"groups ({', '.join(result.group_attributes)}): {_group_impact(result)}", markup=False)
        for line in _error_rates(result):
            console.print(f"  {line}", markup=False)
    if result.intensification is not None:
        console.print(f"intensification: {result.intensification.sentence(alpha=result.settings['alpha'])}", markup=False)
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
            + (f", {abs(100 * r.normalized_change):.1f} more than the models' average" if result.test != "mcnemar" else "")
            + (f", robustness {r.robustness:.2f})" if verb == "lost" and r.robustness == r.robustness else ")")
            for r in rows.head(5).itertuples()
        ]
        if shown:
            more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
            label = "significantly harmed" if verb == "lost" else "significantly helped"
            parts.append(f"{len(rows)} {label}: " + "; ".join(shown) + more)
    return "; ".join(parts) if parts else "none significantly harmed or helped"


def _group_impact(result) -> str:  # noqa: ANN001 - CompareResult
    """Per-group findings in words: who lost accuracy, and by how much beyond everyone."""
    groups = result.groups
    tested = int(groups["tested"].sum())
    harmed = result.harmed_groups
    fell = groups[groups["accuracy_significant"] & (groups["accuracy_change"] < 0) & (groups["direction"] != "harmed")]
    parts = []
    if len(harmed):
        shown = [
            f"{r.group} (lost {abs(100 * r.accuracy_change):.1f} points of accuracy"
            + (f", {abs(100 * r.normalized_change):.1f} more than the models' average)" if result.test != "mcnemar" else ")")
            for r in harmed.head(5).itertuples()
        ]
        more = f" and {len(harmed) - 5} more" if len(harmed) > 5 else ""
        parts.append(f"{len(harmed)} significantly harmed: " + "; ".join(shown) + more)
    if len(fell):
        shown = [f"{r.group} ({100 * r.accuracy_change:+.1f} points)" for r in fell.head(5).itertuples()]
        parts.append(f"{len(fell)} more lost accuracy as everyone did: " + ", ".join(shown))
    found = "; ".join(parts) if parts else "none significantly harmed"
    return f"{tested} of {len(groups)} tested; {found}"


def _error_rates(result) -> list[str]:  # noqa: ANN001 - CompareResult
    """For a two-class task, the harmed cells as the CIE paper speaks of them: error rates that rose."""
    if len(result.classes) != 2 or result.group_cells is None:
        return []
    cells = result.group_cells
    lines = []
    for r in cells[cells["direction"] == "harmed"].sort_values("normalized_change").head(5).itertuples():
        rate = "false-negative" if r.label == 1 else "false-positive"
        lines.append(
            f"{r.group}: {rate} rate {1 - r.baseline_recall_mean:.1%} -> {1 - r.pruned_recall_mean:.1%} "
            f"(positive class {result.classes['name'].iloc[1]}; significant)"
        )
    return lines
