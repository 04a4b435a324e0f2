"""``pie-audit risk``: which examples and classes a baseline population puts at risk, before pruning.

Writes ``OUT/risk.parquet``, ``OUT/risk.csv`` and ``OUT/index.html`` (docs/risk.md). Exit codes: 0
when written, 2 on bad input or usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import app
from ._options import Quiet, command_line

#: Classes named in the printed summary.
SHOWN_CLASSES = 3


@app.command()
def risk(
    baseline: Annotated[Path, typer.Argument(help="Baseline (dense) population directory.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Risk directory: OUT/risk.parquet, OUT/risk.csv, OUT/index.html.", show_default=False)],
    # pie_audit.audit.RISK_TOP, written out: the audit wing is imported only when the command runs.
    top: Annotated[float, typer.Option(help="Fraction of the riskiest examples called high-risk, in (0, 1].")] = 0.05,
    quiet: Quiet = False,
) -> None:
    """Rank the test examples and classes by their risk of being hurt by pruning, from the baseline alone.

    Exit 0 when written, 2 on bad input.
    """
    from ..audit import baseline_risk
    from ..report import check_risk_output, write_risk

    # Refused now, before the population is read.
    check_risk_output(out, populations=[baseline])
    result = baseline_risk(baseline, top=top)
    write_risk(
        out, result.table, result.classes, baseline_name=result.name, n_models=result.n_models,
        populations=[baseline], top=result.top, notes=result.notes, command=command_line(),
    )  # fmt: skip
    if not quiet:
        _print_summary(result, out)


def _print_summary(result, out: Path) -> None:  # noqa: ANN001 - BaselineRisk, imported lazily
    from rich.console import Console

    from ..report import RISK_PAGE

    console = Console(highlight=False, soft_wrap=True)
    table, classes = result.table, result.classes
    made_of = "vote and probability margins" if result.has_probabilities else "vote margin"
    high = int(classes["high_risk"].sum())
    console.print(
        f"risk of {result.n_examples} examples from {result.n_models} baseline models ({made_of}): "
        f"mean {table['risk'].mean():.3f}, {int((table['vote_margin'] == 0).sum())} tied votes; "
        f"high-risk: the riskiest {100 * result.top:.6g}% ({high} examples)",
        markup=False,
    )
    ranked = classes[classes["n_examples"] > 0].sort_values(["high_risk_share", "dense_deficit"], ascending=[False, True], kind="stable")
    shown = [f"{r.name} ({r.high_risk_share:.0%} high-risk, dense deficit {100 * r.dense_deficit:+.1f} points)" for r in ranked.head(SHOWN_CLASSES).itertuples()]
    if shown:
        console.print("classes most at risk: " + "; ".join(shown), markup=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    console.print(f"risk: {out / RISK_PAGE}", markup=False)
