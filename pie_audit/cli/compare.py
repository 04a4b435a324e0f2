"""``pie-audit compare``: audit a pruned population against its baseline, and gate CI on it.

Exit codes: 0 when the gate passes, 1 when it fails, 2 on bad input or usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import app

EXIT_GATE_FAILED = 1
DEFAULT_CONFIG = Path("pyproject.toml")


@app.command()
def compare(
    baseline: Annotated[Path, typer.Argument(help="Baseline population directory.", show_default=False)],
    pruned: Annotated[Path, typer.Argument(help="Pruned population directory.", show_default=False)],
    out: Annotated[
        Optional[Path], typer.Option(help="Report directory. Default: reports/<PRUNED's name>.")
    ] = None,
    alpha: Annotated[
        Optional[float], typer.Option(help="Significance level for q-values. [default: 0.05]")
    ] = None,
    correction: Annotated[
        Optional[str], typer.Option(help="fdr_bh (Benjamini-Hochberg) or none (raw p). [default: fdr_bh]")
    ] = None,
    tie_break: Annotated[
        Optional[str],
        typer.Option(help="Tied modal labels: lowest or highest class index. [default: lowest]"),
    ] = None,
    max_class_drop: Annotated[
        Optional[float],
        typer.Option(
            help="Fail when a class is significantly harmed by more than this "
            "(normalized recall, fraction). [default: 0.02]"
        ),
    ] = None,
    max_pie_fraction: Annotated[
        Optional[float], typer.Option(help="Fail when the PIE fraction exceeds this.")
    ] = None,
    max_accuracy_drop: Annotated[
        Optional[float], typer.Option(help="Fail when mean accuracy drops by more than this (fraction).")
    ] = None,
    max_harmed_classes: Annotated[
        Optional[int], typer.Option(help="Fail when more classes than this are significantly harmed.")
    ] = None,
    config: Annotated[
        Optional[Path],
        typer.Option(
            help="pyproject.toml with [tool.pie-audit] settings. Default: ./pyproject.toml if present."
        ),
    ] = None,
    junit: Annotated[Optional[Path], typer.Option(help="Also write the gate as JUnit XML here.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Bootstrap seed. [default: 0]")] = None,
    n_bootstrap: Annotated[Optional[int], typer.Option(help="Bootstrap resamples. [default: 1000]")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Compare a pruned population with its baseline: PIEs, per-class impact, CI gate.

    Exit 0 when the gate passes, 1 when it fails, 2 on bad input.
    """
    from ..compare import compare as run_compare
    from ..compare import write_outputs
    from ..gate import junit_xml, read_settings, rules_from
    from ..store import atomic_file

    settings = read_settings(config or DEFAULT_CONFIG, required=config is not None)
    given = {
        "alpha": alpha,
        "correction": correction,
        "tie_break": tie_break,
        "seed": seed,
        "n_bootstrap": n_bootstrap,
        "max_class_drop": max_class_drop,
        "max_pie_fraction": max_pie_fraction,
        "max_accuracy_drop": max_accuracy_drop,
        "max_harmed_classes": max_harmed_classes,
    }
    # Command-line options win over [tool.pie-audit], which wins over the defaults.
    settings.update({k: v for k, v in given.items() if v is not None})
    rules = rules_from(settings)
    names = ("alpha", "correction", "tie_break", "seed", "n_bootstrap")
    options = {k: settings[k] for k in names if k in settings}

    result = run_compare(baseline, pruned, rules=rules, **options)
    out = out if out is not None else Path("reports") / Path(pruned).resolve().name
    write_outputs(result, out)
    if junit is not None:
        with atomic_file(junit) as fh:
            fh.write(junit_xml(result.gate))
    if not quiet:
        _print_verdict(result, out)
    if not result.gate.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


def _print_verdict(result, out: Path) -> None:  # noqa: ANN001 - CompareResult, imported lazily
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    gate = result.gate
    pies = result.pies
    base, pruned = result.baseline_accuracy, result.pruned_accuracy
    if gate.passed:
        console.print("[bold green]gate PASSED[/]")
    else:
        console.print(f"[bold red]gate FAILED[/] ({len(gate.failures)} rule(s))")
        for failure in gate.failures:
            console.print(f"  - {failure.message}", markup=False)
    harmed = int((result.classes["direction"] == "harmed").sum())
    helped = int((result.classes["direction"] == "helped").sum())
    console.print(
        f"accuracy {base.mean():.2%} ({len(base)} baseline models) -> "
        f"{pruned.mean():.2%} ({len(pruned)} pruned models); "
        f"PIEs {pies.count} of {len(result.examples)} ({pies.fraction:.2%}), {pies.n_tied} tied; "
        f"classes harmed {harmed}, helped {helped}",
        markup=False,
    )
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    console.print(f"report: {out}", markup=False)
