"""``pie-audit compare``: audit a pruned population against its baseline, and gate CI on it.

Exit codes: 0 when the gate passes, 1 when it fails, 2 on bad input or usage.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import app

EXIT_GATE_FAILED = 1
DEFAULT_CONFIG = Path("pyproject.toml")


# Options shared with ``pie-audit report`` (the sweep), declared once.
Alpha = Annotated[Optional[float], typer.Option(help="Significance level for q-values. \\[default: 0.05]")]
Correction = Annotated[
    Optional[str], typer.Option(help="fdr_bh (Benjamini-Hochberg) or none (raw p). \\[default: fdr_bh]")
]
TieBreak = Annotated[
    Optional[str], typer.Option(help="Tied modal labels: lowest or highest class index. \\[default: lowest]")
]
MaxClassDrop = Annotated[
    Optional[float],
    typer.Option(help="Fail when a class is significantly harmed by more than this (normalized recall, fraction). \\[default: 0.02]"),
]
MaxPieFraction = Annotated[Optional[float], typer.Option(help="Fail when the PIE fraction exceeds this.")]
MaxAccuracyDrop = Annotated[
    Optional[float], typer.Option(help="Fail when mean accuracy drops by more than this (fraction).")
]
MaxHarmedClasses = Annotated[
    Optional[int], typer.Option(help="Fail when more classes than this are significantly harmed.")
]
Config = Annotated[
    Optional[Path],
    typer.Option(help="pyproject.toml with \\[tool.pie-audit] settings. Default: ./pyproject.toml if present."),
]
Seed = Annotated[Optional[int], typer.Option(help="Bootstrap seed. \\[default: 0]")]
NBootstrap = Annotated[Optional[int], typer.Option(help="Bootstrap resamples. \\[default: 1000]")]
DataRoot = Annotated[
    Path, typer.Option(help="Where to find the dataset named in run.json, for the report's PIE images.")
]
NoImages = Annotated[bool, typer.Option("--no-images", help="Show PIEs as ids and labels, without images.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]


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
    from ..compare import compare as run_compare
    from ..compare import write_outputs
    from ..gate import junit_xml
    from ..store import atomic_file

    rules, options = compare_settings(ctx.params)
    result = run_compare(baseline, pruned, rules=rules, **options)
    out = out if out is not None else Path("reports") / Path(pruned).resolve().name
    write_outputs(result, out, thumbnails=thumbnails(result, data_root, no_images), command=command_line())
    if junit is not None:
        with atomic_file(junit) as fh:
            fh.write(junit_xml(result.gate))
    if not quiet:
        _print_verdict(result, out)
    if not result.gate.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


SETTINGS = (
    "alpha",
    "correction",
    "tie_break",
    "seed",
    "n_bootstrap",
    "max_class_drop",
    "max_pie_fraction",
    "max_accuracy_drop",
    "max_harmed_classes",
)


def compare_settings(params: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The gate rules and :func:`pie_audit.compare.compare` options of a command's parameters.

    Command-line options win over ``[tool.pie-audit]`` in ``params["config"]`` (default
    ``./pyproject.toml`` if present), which wins over the defaults.
    """
    from ..gate import read_settings, rules_from

    config = params["config"]
    settings = read_settings(config or DEFAULT_CONFIG, required=config is not None)
    settings.update({k: params[k] for k in SETTINGS if params[k] is not None})
    rules = rules_from(settings)
    options = {k: settings[k] for k in ("alpha", "correction", "tie_break", "seed", "n_bootstrap") if k in settings}
    return rules, options


def thumbnails(result, data_root: Path, no_images: bool):  # noqa: ANN001, ANN201 - lazy imports
    """The report gallery's images, or the reason there are none."""
    from ..thumbnails import IMAGES_OFF, Thumbnails, pie_thumbnails

    return Thumbnails(note=IMAGES_OFF) if no_images else pie_thumbnails(result, data_root=data_root)


def command_line() -> list[str]:
    """This process's command line, for the report's provenance."""
    return ["pie-audit", *sys.argv[1:]]


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
