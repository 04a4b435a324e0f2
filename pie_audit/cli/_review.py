"""``pie-audit review``: the blinded human review of PIEs against controls (``docs/review.md``).

``review export AUDIT_DIR --out DIR`` writes the sheet, its key, the images and a page;
``review tally SHEET`` checks a filled sheet against its key and writes ``tally.csv``.
Exit codes: 0 on success, 2 on bad input or usage (nothing is written then).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import app
from ._options import DEFAULT_DATA_ROOT, Quiet, check_data_root

review_app = typer.Typer(
    name="review",
    help="A blinded human review: export a sheet of PIEs and controls, tally the filled sheet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(review_app, name="review")


@review_app.command()
def export(
    audit_dir: Annotated[
        Path, typer.Argument(help="A report directory of `pie-audit compare` (summary.json, examples.parquet).", show_default=False)
    ],
    out: Annotated[Path, typer.Option(help="Review directory: sheet.csv, key.csv, images/, index.html.")],
    top: Annotated[int, typer.Option(help="PIEs on the sheet: the highest-scoring.")] = 50,
    controls: Annotated[int, typer.Option(help="Controls on the sheet: non-PIEs drawn at random.")] = 50,
    seed: Annotated[int, typer.Option(help="Draws the controls and shuffles the rows.")] = 0,
    images: Annotated[
        Optional[Path],
        typer.Option(help="Images of your own test set: an .npz of example_id and images (docs/interchange-format.md)."),
    ] = None,
    data_root: Annotated[Path, typer.Option(help="Where to find the dataset named in run.json, for the images.", callback=check_data_root)] = DEFAULT_DATA_ROOT,
    quiet: Quiet = False,
) -> None:
    """Write a blinded review sheet: the top PIEs and random controls, shuffled together.

    Hand the reviewer sheet.csv, images/ and index.html; keep key.csv until the sheet comes back.
    """
    from ..interchange import KEY_FILE, SHEET_FILE
    from ..report import check_images_file, export_review

    if images is not None:
        check_images_file(images)
    written = export_review(audit_dir, out, top=top, controls=controls, seed=seed, images=images, data_root=data_root)
    if quiet:
        return
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    n = written.n_pies + written.n_controls
    console.print(
        f"review sheet: {written.directory / SHEET_FILE} ({n} rows: {written.n_pies} PIEs and "
        f"{written.n_controls} controls, shuffled with seed {seed})",
        markup=False,
    )
    console.print(
        f"key: {written.directory / KEY_FILE} (keep it from the reviewer until the sheet is filled)", markup=False
    )
    if written.image_note is not None:
        console.print(f"no images: {written.image_note}", markup=False)


@review_app.command()
def tally(
    sheet: Annotated[Path, typer.Argument(help="A filled sheet.csv, with its key.csv beside it.", show_default=False)],
    quiet: Quiet = False,
) -> None:
    """Tally a filled review sheet against its key: per category, PIEs against controls.

    Writes tally.csv beside the sheet: counts, Fisher's exact test (two-sided) and BH q-values.
    """
    from ..interchange import TALLY_FILE
    from ..report import tally_review

    table = tally_review(sheet)
    if quiet:
        return
    from rich.console import Console
    from rich.table import Table

    shown = Table(title="PIEs against controls, per category", title_justify="left")
    for column in ("category", "pies", "controls", "odds ratio", "p", "q"):
        shown.add_column(column, justify="left" if column == "category" else "right")
    for r in table.itertuples(index=False):
        shown.add_row(r.category, str(r.pies), str(r.controls), _number(r.odds_ratio), _number(r.p_value), _number(r.q_value))
    console = Console(highlight=False, soft_wrap=True)
    console.print(shown)
    console.print(f"tally: {Path(sheet).parent / TALLY_FILE}", markup=False)


def _number(value: float) -> str:
    if value != value:  # NaN: an odds ratio of 0 / 0
        return "\u2014"
    if value == float("inf"):
        return "inf"
    return "<0.0001" if 0 < value < 1e-4 else f"{value:.3g}"
