"""The blinded review's files: ``sheet.csv`` (what the reviewer sees and fills), ``key.csv`` (which
rows are PIEs) and ``tally.csv`` (the counts and tests per category), written and read here only.

A review directory (``docs/review.md``) is written by ``pie-audit review export``: the sheet
holds, per row, the example, its true label, the baseline's modal label, the image's file name
and two empty columns for the reviewer, ``category`` (one of :data:`CATEGORIES`) and ``note``;
the key, kept apart, holds the same rows and ids with the PIE flag. Nothing in the sheet tells a
PIE from a control: :func:`write_review` is the one place the rows are split into the two files.

:func:`read_review` checks a filled sheet against its key, which it finds beside it, and refuses
anything a tally could not trust: a row edited, duplicated, missing or added, an example id
changed, a category blank or unknown. Each refusal is one line naming the file and the row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from .._atomic import atomic_file
from ..errors import FormatError
from ._records import RecordError, read_bounded

__all__ = [
    "CATEGORIES",
    "CATEGORY_DEFINITIONS",
    "SHEET_FILE",
    "KEY_FILE",
    "TALLY_FILE",
    "SHEET_COLUMNS",
    "KEY_COLUMNS",
    "MAX_SHEET_BYTES",
    "normalise_category",
    "read_review",
    "write_review",
    "write_tally",
    "NO_SHEET",
    "NOT_A_SHEET",
    "NO_KEY",
    "BAD_KEY",
    "BAD_ROW_NUMBER",
    "UNKNOWN_ROW",
    "DUPLICATE_ROW",
    "MISSING_ROW",
    "CHANGED_ID",
    "BLANK_CATEGORY",
    "UNKNOWN_CATEGORY",
]

#: Why an example is hard, after the human study of Hooker et al. (arXiv 1911.05248, section 4):
#: the categories a reviewer chooses from, one per row, in the order the tally lists them.
CATEGORY_DEFINITIONS: Mapping[str, str] = MappingProxyType(
    {
        "label-incorrect": "the true label is wrong: the image shows another class",
        "ambiguous": "the image could fairly be given more than one label",
        "several-objects": "the image shows objects of several classes, any of which could be the label",
        "corrupted": "the image is damaged: cropped, blurred, over- or under-exposed, noisy, or not a picture of anything",
        "fine-grained": "the class is told apart from a similar one only by fine detail",
        "atypical": "a correct label on an unusual example of its class (pose, colour, style, viewpoint)",
        "fine": "none of the above: a clear, typical, correctly labelled example",
    }
)
#: The review's categories (``docs/review.md``); matched case-insensitively, spaces trimmed.
CATEGORIES: tuple[str, ...] = tuple(CATEGORY_DEFINITIONS)

SHEET_FILE = "sheet.csv"
KEY_FILE = "key.csv"
TALLY_FILE = "tally.csv"
#: The sheet's columns, as exported; the last two are the reviewer's.
SHEET_COLUMNS = ("row", "example_id", "label", "baseline_modal", "image", "category", "note")
KEY_COLUMNS = ("row", "example_id", "pie")
#: What a tally needs from a filled sheet (a reviewer may add columns, or drop the others).
_REQUIRED = ("row", "example_id", "category")
#: Largest sheet or key read: a review of a few hundred rows is a few tens of kilobytes.
MAX_SHEET_BYTES = 64 * 1024**2

NO_SHEET = "{path}: no such review sheet"
NOT_A_SHEET = (
    "{path}: not a review sheet ({reason}); expected the sheet.csv of `pie-audit review export`, "
    "a CSV file with columns row, example_id and category"
)
NO_KEY = (
    "{path}: no key beside the sheet ({key} is missing); the tally needs the key.csv that "
    "`pie-audit review export` wrote with this sheet, in the same directory"
)
BAD_KEY = "{path}: not a review key ({reason}); expected the key.csv of `pie-audit review export`"
BAD_ROW_NUMBER = "{path}: line {line}: row {value!r} is not a row number; the row column must stay as exported"
UNKNOWN_ROW = "{path}: row {row} is not in the key (its rows are 1 to {n}); the row column must stay as exported"
DUPLICATE_ROW = "{path}: row {row} appears twice (lines {first} and {line}); each row must appear exactly once"
MISSING_ROW = "{path}: row {row} is missing ({count} row(s) of the key are missing); each row must appear exactly once"
CHANGED_ID = "{path}: row {row}: example_id is {found!r}, but the key gives {expected}; example_id must stay as exported"
BLANK_CATEGORY = "{path}: row {row}: no category; every row needs one of: {categories}"
UNKNOWN_CATEGORY = "{path}: row {row}: category {value!r} is not one of: {categories}"

_CATEGORY_LIST = ", ".join(CATEGORIES)
_TRUE = {"true": True, "false": False}


def normalise_category(value: str) -> str:
    """A category as written by a reviewer, in its documented spelling (trimmed, lower case).

    Returns the spelling in :data:`CATEGORIES`, or the trimmed, lower-cased text when it is
    none of them (the caller refuses it).
    """
    return value.strip().lower()


#: A cell a spreadsheet would run as a formula starts with one of these (OWASP, "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(text: str) -> str:
    """A class name as a spreadsheet shows it but never runs it: a leading quote before a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def write_review(directory: str | Path, rows: pd.DataFrame) -> None:
    """Write ``sheet.csv`` and ``key.csv`` into ``directory`` (the caller makes it atomic).

    Parameters
    ----------
    directory : str or Path
        An existing directory, typically the temporary one of a review export.
    rows : DataFrame
        One row per sheet row, in the sheet's order: ``row`` (int, 1 to K), ``example_id`` (int),
        ``label`` and ``baseline_modal`` (class names, str), ``image`` (file name relative to the
        directory, or empty) and ``pie`` (bool). ``pie`` goes to the key only.
    """
    directory = Path(directory)
    sheet = [
        [int(r.row), int(r.example_id), _inert(str(r.label)), _inert(str(r.baseline_modal)), str(r.image), "", ""]
        for r in rows.itertuples(index=False)
    ]
    key = [[int(r.row), int(r.example_id), "true" if bool(r.pie) else "false"] for r in rows.itertuples(index=False)]
    for name, header, body in ((SHEET_FILE, SHEET_COLUMNS, sheet), (KEY_FILE, KEY_COLUMNS, key)):
        with open(directory / name, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(body)


def write_tally(path: str | Path, tally: pd.DataFrame) -> Path:
    """Write a tally (:func:`pie_audit.audit.review_tally`) as ``tally.csv``, atomically.

    Undefined odds ratios are empty cells; an infinite one is ``inf``.
    """
    path = Path(path)
    with atomic_file(path) as fh:
        tally.to_csv(fh, index=False, lineterminator="\n")
    return path


def _read_csv(path: Path, *, error: str, what: str, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """The ``(line, fields by column)`` of each non-blank record of a CSV file, for the columns
    it has; ``required`` must be among them, once each."""
    try:
        content = read_bounded(path, limit=MAX_SHEET_BYTES, what=what)
    except RecordError as e:
        raise FormatError(error.format(path=path, reason=e.reason)) from e
    except OSError as e:
        raise FormatError(error.format(path=path, reason=e.strerror or type(e).__name__)) from e
    try:
        # utf-8-sig: a spreadsheet saving "CSV UTF-8" puts a byte-order mark in front.
        text = content.decode("utf-8-sig")
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        header = next(reader, None)
        records = []
        for fields in reader:
            if any(f.strip() for f in fields):
                records.append((reader.line_num, fields))
    except (UnicodeDecodeError, csv.Error) as e:
        raise FormatError(error.format(path=path, reason=str(e).splitlines()[0] or type(e).__name__)) from e
    if header is None:
        raise FormatError(error.format(path=path, reason="it is empty"))
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise FormatError(error.format(path=path, reason=f"no column {missing[0]!r}"))
    repeated = [c for c in required if header.count(c) > 1]
    if repeated:
        raise FormatError(error.format(path=path, reason=f"column {repeated[0]!r} appears twice"))
    # The first of repeated extra columns wins; only the required ones matter.
    position: dict[str, int] = {}
    for k, h in enumerate(header):
        position.setdefault(h, k)
    return [
        (line, {name: fields[k] if k < len(fields) else "" for name, k in position.items()}) for line, fields in records
    ]


def _integer(text: str) -> int | None:
    text = text.strip()
    if not text or not (text.isdigit() or (text[0] in "+-" and text[1:].isdigit())):
        return None
    return int(text)


def _read_key(path: Path) -> pd.DataFrame:
    """The key, rows 1 to K each once, sorted by row."""
    records = _read_csv(path, error=BAD_KEY, what="a review key", required=KEY_COLUMNS)
    rows, ids, pies = [], [], []
    for line, fields in records:
        row, example_id, pie = _integer(fields["row"]), _integer(fields["example_id"]), fields["pie"].strip().lower()
        if row is None or example_id is None or pie not in _TRUE:
            raise FormatError(BAD_KEY.format(path=path, reason=f"line {line} is not a row number, an example id and true or false"))
        rows.append(row)
        ids.append(example_id)
        pies.append(_TRUE[pie])
    if not rows:
        raise FormatError(BAD_KEY.format(path=path, reason="it has no row"))
    key = pd.DataFrame({"row": rows, "example_id": ids, "pie": pies}).astype({"row": np.int64, "example_id": np.int64})
    key = key.sort_values("row", kind="stable").reset_index(drop=True)
    if not np.array_equal(key["row"].to_numpy(), np.arange(1, len(key) + 1)):
        raise FormatError(BAD_KEY.format(path=path, reason=f"its rows are not 1 to {len(key)}, each once"))
    return key


def read_review(sheet: str | Path) -> pd.DataFrame:
    """Read a filled review sheet and the ``key.csv`` beside it, and check one against the other.

    Parameters
    ----------
    sheet : str or Path
        The ``sheet.csv`` of a review directory, its ``category`` column filled in. Rows may be
        in any order (a reviewer may sort them) and columns may be added; ``row`` and
        ``example_id`` must be as exported. Categories are matched case-insensitively, spaces
        trimmed (:func:`normalise_category`).

    Returns
    -------
    DataFrame
        One row per sheet row, sorted by ``row``: ``row`` (int64), ``example_id`` (int64),
        ``category`` (str, as in :data:`CATEGORIES`), ``note`` (str, empty when the sheet has
        none) and ``pie`` (bool, from the key).

    Raises
    ------
    FormatError
        :data:`NO_SHEET`, :data:`NOT_A_SHEET` (not a regular file, unreadable, not UTF-8 CSV, a
        required column missing or repeated), :data:`NO_KEY`, :data:`BAD_KEY`, and for the first
        bad row in the sheet's order: :data:`BAD_ROW_NUMBER`, :data:`UNKNOWN_ROW`,
        :data:`DUPLICATE_ROW`, :data:`CHANGED_ID`, :data:`BLANK_CATEGORY`,
        :data:`UNKNOWN_CATEGORY`; then :data:`MISSING_ROW` for the first row of the key the
        sheet lacks.
    """
    sheet = Path(sheet)
    if not sheet.exists():
        raise FormatError(NO_SHEET.format(path=sheet))
    records = _read_csv(sheet, error=NOT_A_SHEET, what="a review sheet", required=_REQUIRED)
    key_path = sheet.parent / KEY_FILE
    if not key_path.exists():
        raise FormatError(NO_KEY.format(path=sheet, key=key_path))
    key = _read_key(key_path)
    expected = key["example_id"].to_numpy()
    seen: dict[int, int] = {}
    categories: dict[int, str] = {}
    notes: dict[int, str] = {}
    for line, fields in records:
        row = _integer(fields["row"])
        if row is None:
            raise FormatError(BAD_ROW_NUMBER.format(path=sheet, line=line, value=fields["row"]))
        if not 1 <= row <= len(key):
            raise FormatError(UNKNOWN_ROW.format(path=sheet, row=row, n=len(key)))
        if row in seen:
            raise FormatError(DUPLICATE_ROW.format(path=sheet, row=row, first=seen[row], line=line))
        seen[row] = line
        example_id = _integer(fields["example_id"])
        if example_id != int(expected[row - 1]):
            raise FormatError(
                CHANGED_ID.format(path=sheet, row=row, found=fields["example_id"], expected=int(expected[row - 1]))
            )
        category = normalise_category(fields["category"])
        if not category:
            raise FormatError(BLANK_CATEGORY.format(path=sheet, row=row, categories=_CATEGORY_LIST))
        if category not in CATEGORIES:
            raise FormatError(UNKNOWN_CATEGORY.format(path=sheet, row=row, value=fields["category"].strip(), categories=_CATEGORY_LIST))
        categories[row] = category
        notes[row] = fields.get("note", "")
    missing = [r for r in range(1, len(key) + 1) if r not in seen]
    if missing:
        raise FormatError(MISSING_ROW.format(path=sheet, row=missing[0], count=len(missing)))
    rows = key["row"].tolist()
    return pd.DataFrame(
        {
            "row": key["row"],
            "example_id": key["example_id"],
            "category": pd.Series([categories[r] for r in rows], dtype=object),
            "note": pd.Series([notes[r] for r in rows], dtype=object),
            "pie": key["pie"].astype(bool),
        }
    )
