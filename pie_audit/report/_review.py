"""The blinded human review (``docs/review.md``): export a review sheet from an audit, tally a filled one.

:func:`export_review` reads a report directory of ``pie-audit compare`` (``summary.json``,
``examples.parquet``, ``classes.csv``), takes the top PIEs by score and as many controls drawn at
random from the non-PIEs, shuffles them together and writes a review directory::

    sheet.csv      row, example_id, label, baseline_modal, image, category (empty), note (empty)
    key.csv        row, example_id, pie            (kept from the reviewer)
    images/        row-0001.png, ...               (named by row, never by PIE status)
    index.html     the sheet with its images, self-contained, for reading offline

Everything the reviewer sees is in the sheet's order and says nothing of PIE status; only the
key does. The same audit and seed write the same files, byte for byte (no timestamp). The
directory is written into a temporary one that then replaces ``out``, which may be missing or
hold a previous export that no one has started filling in.

:func:`tally_review` checks a filled sheet against its key (:func:`pie_audit.interchange.read_review`),
tallies it (:func:`pie_audit.audit.review_tally`) and writes ``tally.csv`` beside it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._atomic import IS_A_LINK, NOT_A_DIRECTORY, check_unlocked, exclusive_lock, replace_directory, resolve_output
from .._version import __version__
from ..audit import review_tally
from ..errors import ConfigError, FormatError, OutputError
from ..interchange import (
    CATEGORY_DEFINITIONS,
    KEY_FILE,
    RUN_FILE,
    SHEET_FILE,
    TALLY_FILE,
    read_json_object,
    read_review,
    read_run,
    write_review,
    write_tally,
)
from ._outputs import CLASSES_FILE, EXAMPLES_FILE, SUMMARY_FILE
from ._thumbnails import Thumbnails, dataset_thumbnails, file_thumbnails

__all__ = [
    "REVIEW_SIZE",
    "REVIEW_IMAGE_SIZE",
    "REVIEW_PAGE",
    "IMAGES_DIR",
    "ReviewExport",
    "export_review",
    "tally_review",
    "NOT_AN_AUDIT",
    "BAD_AUDIT_FILE",
    "NO_PIES",
    "NO_CONTROLS",
    "BAD_COUNT",
    "BAD_SEED",
    "OUT_AND_AUDIT",
    "NOT_A_REVIEW",
    "REVIEW_STARTED",
    "OTHER_AUDIT",
    "NO_IMAGES_ASKED",
    "NO_POPULATIONS",
]

#: PIEs, and controls, on a sheet by default (Hooker et al. reviewed a few dozen of each).
REVIEW_SIZE = 50
#: Largest side of a review image in pixels: larger than the gallery's, for a person to judge.
REVIEW_IMAGE_SIZE = 256
REVIEW_PAGE = "index.html"
IMAGES_DIR = "images"
_REVIEW_FILES = frozenset({SHEET_FILE, KEY_FILE, TALLY_FILE, REVIEW_PAGE})
_EXAMPLE_COLUMNS = ("example_id", "label", "baseline_modal", "pie", "score")

NOT_AN_AUDIT = "{path}: not a report directory of `pie-audit compare` (no {file}); give the --out of a compare"
BAD_AUDIT_FILE = "{path}: cannot be read as the audit's {what} ({reason})"
NO_PIES = "{path}: the audit found no PIE, so there is nothing to review"
NO_CONTROLS = "{path}: every example is a PIE, so there is no control to review them against"
BAD_COUNT = "{name} must be a whole number of at least 1, not {value!r}"
BAD_SEED = "seed must be a whole number of at least 0, not {value!r}"
OUT_AND_AUDIT = "{out}: the review would {relation} the audit {audit}; choose a directory outside it"
NOT_A_REVIEW = "{path}: exists and holds {entry!r}, which is not part of a pie-audit review; refusing to replace it"
REVIEW_STARTED = (
    "{path}: {count} row(s) of its {sheet} already have a category; refusing to replace a reviewer's "
    "work (move it away, or choose another --out)"
)
OTHER_AUDIT = (
    "{key}: example {example_id} is {said} there but {found} in this audit; the sheet was exported "
    "from another audit"
)
NO_IMAGES_ASKED = "no images were asked for (neither a data root nor an images file), so the sheet shows ids and labels only"
NO_POPULATIONS = (
    "the populations that {file} names ({paths}) are not found from here, so the dataset they were "
    "evaluated on is unknown; the sheet shows ids and labels only (give --images, or run from where "
    "the audit ran)"
)


@dataclass(frozen=True)
class ReviewExport:
    """What :func:`export_review` wrote.

    Attributes
    ----------
    directory : Path
        The review directory.
    n_pies, n_controls : int
        PIEs and controls on the sheet (fewer than asked when the audit has fewer).
    image_note : str or None
        Why the sheet has no images; ``None`` when every row has one.
    """

    directory: Path
    n_pies: int
    n_controls: int
    image_note: str | None


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(BAD_COUNT.format(name=name, value=value))
    return int(value)


def _read_audit(audit: Path) -> tuple[pd.DataFrame, dict[int, str], dict[str, Any]]:
    """The examples, class names by label, and summary of a report directory."""
    summary = read_json_object(audit / SUMMARY_FILE)
    try:
        examples = pd.read_parquet(audit / EXAMPLES_FILE, columns=list(_EXAMPLE_COLUMNS))
    except Exception as e:  # noqa: BLE001 - pyarrow raises many kinds for a file that is not the audit's
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FormatError(BAD_AUDIT_FILE.format(path=audit / EXAMPLES_FILE, what="examples", reason=reason)) from e
    names: dict[int, str] = {}
    classes = audit / CLASSES_FILE
    if classes.is_file():
        try:
            table = pd.read_csv(classes, usecols=["label", "name"], dtype={"name": str}, keep_default_na=False)
            names = {int(label): str(name) for label, name in zip(table["label"], table["name"], strict=True)}
        except (ValueError, KeyError, pd.errors.ParserError, UnicodeDecodeError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise FormatError(BAD_AUDIT_FILE.format(path=classes, what="classes", reason=reason)) from e
    return examples, names, summary


def _choose(examples: pd.DataFrame, *, top: int, controls: int, seed: int, audit: Path) -> pd.DataFrame:
    """The sheet's rows, shuffled, numbered from 1: the top PIEs by score (ties by id) and
    ``controls`` non-PIEs drawn at random."""
    is_pie = examples["pie"].to_numpy(dtype=bool)
    pies = examples[is_pie].sort_values(["score", "example_id"], ascending=[False, True], kind="stable").head(top)
    if pies.empty:
        raise ConfigError(NO_PIES.format(path=audit))
    others = examples[~is_pie].sort_values("example_id", kind="stable")
    if others.empty:
        raise ConfigError(NO_CONTROLS.format(path=audit))
    rng = np.random.default_rng(seed)
    drawn = np.sort(rng.choice(len(others), size=min(controls, len(others)), replace=False))
    chosen = pd.concat([pies, others.iloc[drawn]], ignore_index=True)
    rows = chosen.iloc[rng.permutation(len(chosen))].reset_index(drop=True)
    rows.insert(0, "row", np.arange(1, len(rows) + 1, dtype=np.int64))
    return rows


def _image_names(rows: pd.DataFrame) -> list[str]:
    width = max(4, len(str(len(rows))))
    return [f"{IMAGES_DIR}/row-{row:0{width}d}.png" for row in rows["row"].tolist()]


def _population_runs(summary: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The ``run.json`` of each model of the populations the summary names, and those paths."""
    paths = []
    for role in ("baseline", "pruned"):
        record = summary.get(role)
        path = record.get("path") if isinstance(record, dict) else None
        if isinstance(path, str):
            paths.append(path)
    runs = []
    for path in paths:
        population = Path(path)
        if not population.is_dir():
            continue
        for model in sorted(p for p in population.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if (model / RUN_FILE).is_file():
                runs.append(read_run(model / RUN_FILE))
    return runs, paths


def _thumbnails(
    rows: pd.DataFrame, summary: dict[str, Any], *, images: str | Path | None, data_root: str | Path | None
) -> Thumbnails:
    ids = rows["example_id"].to_numpy()
    if images is not None:
        return file_thumbnails(images, ids, size=REVIEW_IMAGE_SIZE)
    if data_root is None:
        return Thumbnails(note=NO_IMAGES_ASKED)
    runs, paths = _population_runs(summary)
    if not runs and not any(Path(p).is_dir() for p in paths):
        shown = ", ".join(paths) if paths else "none"
        return Thumbnails(note=NO_POPULATIONS.format(file=SUMMARY_FILE, paths=shown))
    return dataset_thumbnails(runs, ids, rows["label"].to_numpy(), data_root=data_root, size=REVIEW_IMAGE_SIZE)


def _png(uri: str) -> bytes:
    return base64.b64decode(uri.split(",", 1)[1])


def _is_review_entry(entry: Path) -> bool:
    if entry.name == IMAGES_DIR:
        return entry.is_dir() and not entry.is_symlink() and all(
            e.is_file() and e.name.startswith("row-") and e.suffix == ".png" for e in entry.iterdir()
        )
    return entry.name in _REVIEW_FILES and entry.is_file() and not entry.is_symlink()


def _check_out(out: Path, audit: Path) -> None:
    """Refuse, before anything is written, an ``out`` that the export must not replace."""
    target, source = resolve_output(out), resolve_output(audit)
    if target == source or source in target.parents or target in source.parents:
        relation = "replace" if target == source else "lie inside" if source in target.parents else "contain"
        raise OutputError(OUT_AND_AUDIT.format(out=out, relation=relation, audit=audit))
    if out.is_symlink():
        raise OutputError(IS_A_LINK.format(path=out))
    if out.exists():
        if not out.is_dir():
            raise OutputError(NOT_A_DIRECTORY.format(path=out))
        for entry in sorted(out.iterdir()):
            if not _is_review_entry(entry):
                raise OutputError(NOT_A_REVIEW.format(path=out, entry=entry.name))
        if (out / SHEET_FILE).is_file():
            filled = _filled_categories(out / SHEET_FILE)
            if filled is None:
                raise OutputError(NOT_A_REVIEW.format(path=out, entry=SHEET_FILE))
            if filled:
                raise OutputError(REVIEW_STARTED.format(path=out, sheet=SHEET_FILE, count=filled))
    check_unlocked(out)


def _filled_categories(sheet: Path) -> int | None:
    """How many rows of an existing sheet have a category; ``None`` when it cannot be read as one."""
    import csv

    try:
        with open(sheet, encoding="utf-8-sig", newline="") as fh:
            return sum(1 for record in csv.DictReader(fh) if (record.get("category") or "").strip())
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def _render(rows: pd.DataFrame, thumbnails: Thumbnails, *, audit: Path, seed: int) -> str:
    from ._render import _environment

    cards = [
        {
            "row": int(r.row),
            "example_id": int(r.example_id),
            "label": r.label_name,
            "baseline": r.baseline_name,
            "image": thumbnails.images.get(int(r.example_id)),
            "file": r.image,
        }
        for r in rows.itertuples(index=False)
    ]
    template = _environment().get_template("review.html")
    return template.render(
        title=f"pie-audit review: {len(rows)} examples",
        version=__version__,
        # No timestamp: the same audit and seed must write the same page.
        created_at=f"a seeded draw (seed {seed}; no timestamp, so that the same seed writes the same files)",
        audit=audit.name or str(audit),
        seed=seed,
        rows=cards,
        note=thumbnails.note,
        categories=[{"name": name, "definition": text} for name, text in CATEGORY_DEFINITIONS.items()],
        sheet_file=SHEET_FILE,
        key_file=KEY_FILE,
    )


def export_review(
    audit_dir: str | Path,
    out: str | Path,
    *,
    top: int = REVIEW_SIZE,
    controls: int = REVIEW_SIZE,
    seed: int = 0,
    images: str | Path | None = None,
    data_root: str | Path | None = None,
) -> ReviewExport:
    """Write a blinded review directory: the top PIEs and random controls, shuffled together.

    Parameters
    ----------
    audit_dir : str or Path
        A report directory written by ``pie-audit compare`` (:func:`pie_audit.write_outputs`):
        ``summary.json``, ``examples.parquet`` and, for class names, ``classes.csv``.
    out : str or Path
        The review directory. Missing, or a previous export none of whose rows has a category
        yet; it must neither be, lie inside nor contain ``audit_dir``.
    top : int, default=REVIEW_SIZE
        How many PIEs: the highest ``score`` (ties by ``example_id``), as the report's gallery.
    controls : int, default=REVIEW_SIZE
        How many non-PIEs, drawn without replacement with ``numpy.random.default_rng(seed)``.
    seed : int, default=0
        Draws the controls, then shuffles the rows; the same seed writes the same files.
    images : str or Path, optional
        An images file of one's own (:func:`pie_audit.report.read_images`); wins over ``data_root``.
    data_root : str or Path, optional
        Where the dataset named in the populations' ``run.json`` is looked for (never downloaded):
        the populations are those ``summary.json`` names, found from the working directory.
        Images are shown only when the dataset's hash and labels match the audit's, as in the
        report. ``None`` (and no ``images``): no images.

    Returns
    -------
    ReviewExport

    Raises
    ------
    FormatError
        ``audit_dir`` is not a report directory, or ``images`` cannot be read.
    ConfigError
        A count below 1, a negative seed, an audit without PIEs or without non-PIEs.
    OutputError
        ``out`` is refused (above), or cannot be written.
    """
    audit, out = Path(audit_dir), Path(out)
    top, controls = _count("top", top), _count("controls", controls)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(BAD_SEED.format(value=seed))
    for file in (SUMMARY_FILE, EXAMPLES_FILE):
        if not (audit / file).is_file():
            raise FormatError(NOT_AN_AUDIT.format(path=audit, file=file))
    _check_out(out, audit)
    examples, names, summary = _read_audit(audit)
    rows = _choose(examples, top=top, controls=controls, seed=int(seed), audit=audit)
    rows["label_name"] = [names.get(int(label), str(int(label))) for label in rows["label"].tolist()]
    rows["baseline_name"] = [names.get(int(label), str(int(label))) for label in rows["baseline_modal"].tolist()]
    thumbnails = _thumbnails(rows, summary, images=images, data_root=data_root)
    has_images = thumbnails.note is None
    rows["image"] = _image_names(rows) if has_images else [""] * len(rows)
    html = _render(rows, thumbnails, audit=audit, seed=int(seed))
    sheet = rows[["row", "example_id", "label_name", "baseline_name", "image", "pie"]].rename(
        columns={"label_name": "label", "baseline_name": "baseline_modal"}
    )
    with exclusive_lock(out), replace_directory(out, accept=_is_review_entry, what="review") as tmp:
        write_review(tmp, sheet)
        if has_images:
            (tmp / IMAGES_DIR).mkdir()
            for example_id, name in zip(rows["example_id"].tolist(), rows["image"].tolist(), strict=True):
                (tmp / name).write_bytes(_png(thumbnails.images[int(example_id)]))
        (tmp / REVIEW_PAGE).write_text(html, encoding="utf-8")
    n_pies = int(rows["pie"].sum())
    return ReviewExport(directory=out, n_pies=n_pies, n_controls=len(rows) - n_pies, image_note=thumbnails.note)


def tally_review(sheet: str | Path, *, write: bool = True, examples: pd.DataFrame | None = None) -> pd.DataFrame:
    """Tally a filled review sheet against the ``key.csv`` beside it, and write ``tally.csv`` there.

    Parameters
    ----------
    sheet : str or Path
        The ``sheet.csv`` of :func:`export_review`, its ``category`` column filled in.
    write : bool, default=True
        Write the table as ``tally.csv`` beside the sheet (atomically); ``False`` only returns it.
    examples : DataFrame, optional
        An audit's examples (:attr:`pie_audit.audit.AuditResult.examples`: ``example_id``,
        ``pie``): the key must flag each of its examples as this audit does, so that a sheet
        exported from another audit is refused (:data:`OTHER_AUDIT`).

    Returns
    -------
    DataFrame
        :func:`pie_audit.audit.review_tally`'s table: ``category``, ``pies``, ``controls``,
        ``odds_ratio``, ``p_value``, ``q_value``, one row per category.

    Raises
    ------
    FormatError
        The sheet or its key is refused (:func:`pie_audit.interchange.read_review`), or the key
        disagrees with ``examples``; then nothing is written.
    OutputError
        ``tally.csv`` cannot be written.
    """
    sheet = Path(sheet)
    review = read_review(sheet)
    if examples is not None:
        _check_same_audit(review, examples, key=sheet.parent / KEY_FILE)
    tally = review_tally(review["category"].to_numpy(), review["pie"].to_numpy())
    if write:
        write_tally(sheet.parent / TALLY_FILE, tally)
    return tally


def _check_same_audit(review: pd.DataFrame, examples: pd.DataFrame, *, key: Path) -> None:
    flags = dict(zip(examples["example_id"].tolist(), examples["pie"].astype(bool).tolist(), strict=True))
    for example_id, pie in zip(review["example_id"].tolist(), review["pie"].tolist(), strict=True):
        found = flags.get(int(example_id))
        if found is None or found != pie:
            said = "a PIE" if pie else "a control"
            shown = "missing" if found is None else "a PIE" if found else "not a PIE"
            raise FormatError(OTHER_AUDIT.format(key=key, example_id=example_id, said=said, found=shown))
