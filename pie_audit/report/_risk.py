"""The risk directory: a baseline's risk ranking on disk, and its small self-contained page.

A risk directory holds :data:`RISK_FILES`: ``risk.parquet`` (one row per example: ``example_id``,
``label``, ``risk`` and the parts it is made of, :func:`pie_audit.audit.risk_scores`), ``risk.csv``
(one row per class, :func:`pie_audit.audit.class_risk`) and ``index.html``. It is written into a
temporary directory that then replaces the old one (:mod:`pie_audit._atomic`); an output holding
anything else, or lying inside or around the population it ranks, is refused before anything is
written. The page renders, never computes; autoescaping is on, so class names reach it as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._atomic import IS_A_LINK, NOT_A_DIRECTORY, NOT_REPLACEABLE, check_unlocked, exclusive_lock, replace_directory
from .._version import __version__
from ..audit import RISK_TOP
from ..errors import ConfigError, OutputError
from ._outputs import _check_apart_from_inputs
from ._render import _DASH, MAX_TABLE_CLASSES, _environment, _finite, _pct, _points, _sort_key

__all__ = [
    "RISK_TABLE",
    "RISK_CLASSES",
    "RISK_PAGE",
    "RISK_FILES",
    "RISK_EXAMPLES",
    "check_risk_output",
    "render_risk",
    "write_risk",
]

RISK_TABLE = "risk.parquet"
RISK_CLASSES = "risk.csv"
RISK_PAGE = "index.html"
#: What a risk directory may hold; anything else there is the user's and is never replaced.
RISK_FILES = frozenset({RISK_TABLE, RISK_CLASSES, RISK_PAGE})
#: Riskiest examples listed on the page (``risk.parquet`` has them all).
RISK_EXAMPLES = 50
MISSING_COLUMNS = "{what} lacks the columns {columns}"

_TABLE_COLUMNS = ("example_id", "label", "baseline_modal", "risk", "vote_margin", "prob_margin", "label_vote", "label_prob")
_CLASS_COLUMNS = ("label", "name", "n_examples", "baseline_recall_mean", "dense_deficit", "risk_mean", "high_risk", "high_risk_share")


def _is_risk_file(entry: Path) -> bool:
    return entry.name in RISK_FILES and not entry.is_dir()


def check_risk_output(out: str | Path, *, populations: Sequence[str | Path] = ()) -> None:
    """Refuse now, before anything is computed, an ``out`` that :func:`write_risk` would refuse.

    Parameters
    ----------
    out : str or Path
        The risk directory: missing, or holding only :data:`RISK_FILES` (a previous one).
    populations : sequence of str or Path
        The population directories read: ``out`` must neither be, lie inside, nor contain one.

    Raises
    ------
    OutputError
        Naming ``out`` and what is wrong with it.
    """
    out = Path(out)
    _check_apart_from_inputs(out, populations)
    if out.is_symlink():
        raise OutputError(IS_A_LINK.format(path=out))
    if out.exists():
        if not out.is_dir():
            raise OutputError(NOT_A_DIRECTORY.format(path=out))
        for entry in out.iterdir():
            if not _is_risk_file(entry):
                raise OutputError(NOT_REPLACEABLE.format(path=out, entry=entry.name, what="risk directory"))
    check_unlocked(out)


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(MISSING_COLUMNS.format(what=what, columns=", ".join(missing)))


def _fixed(value: Any, digits: int = 3) -> str:
    value = _finite(value)
    return _DASH if value is None else f"{value:.{digits}f}"


def _class_rows(classes: pd.DataFrame, limit: int) -> list[dict[str, Any]]:
    if len(classes) > limit:
        # The classes that matter here: the most over-represented among the riskiest, then the hardest.
        share = classes["high_risk_share"].fillna(-1.0).to_numpy()
        deficit = classes["dense_deficit"].fillna(np.inf).to_numpy()
        keep = np.lexsort((deficit, -share))[:limit]
        classes = classes.iloc[np.sort(keep)]
    return [
        {
            "name": str(r.name),
            "label": int(r.label),
            "n": int(r.n_examples),
            "cells": [
                (_pct(r.baseline_recall_mean), _sort_key(r.baseline_recall_mean)),
                (_points(r.dense_deficit, 1), _sort_key(r.dense_deficit)),
                (_fixed(r.risk_mean), _sort_key(r.risk_mean)),
                (str(int(r.high_risk)), _sort_key(r.high_risk)),
                (_pct(r.high_risk_share), _sort_key(r.high_risk_share)),
            ],
        }
        for r in classes.itertuples(index=False)
    ]


def _example_rows(table: pd.DataFrame, names: dict[int, str], n: int) -> list[dict[str, Any]]:
    order = np.argsort(-table["risk"].to_numpy(), kind="stable")[:n]
    rows = []
    for rank, r in enumerate(table.iloc[order].itertuples(index=False), start=1):
        rows.append(
            {
                "rank": rank,
                "example_id": int(r.example_id),
                "label": names.get(int(r.label), str(int(r.label))),
                "modal": names.get(int(r.baseline_modal), str(int(r.baseline_modal))),
                "cells": [
                    (_fixed(r.risk), _sort_key(r.risk)),
                    (_fixed(r.vote_margin), _sort_key(r.vote_margin)),
                    (_fixed(r.prob_margin), _sort_key(r.prob_margin)),
                    (_pct(r.label_vote, 0), _sort_key(r.label_vote)),
                    (_fixed(r.label_prob), _sort_key(r.label_prob)),
                ],
            }
        )
    return rows


def render_risk(
    table: pd.DataFrame,
    classes: pd.DataFrame,
    *,
    baseline_name: str,
    n_models: int,
    top: float = RISK_TOP,
    notes: Sequence[str] = (),
    command: Sequence[str] | None = None,
    examples: int = RISK_EXAMPLES,
    created_at: datetime | None = None,
) -> str:
    """The risk page: the classes in a sortable table, and the riskiest examples.

    Parameters
    ----------
    table : DataFrame
        One row per example: ``example_id`` and :data:`pie_audit.audit.RISK_COLUMNS`
        (:attr:`pie_audit.audit.BaselineRisk.table`).
    classes : DataFrame
        One row per class: ``label``, ``name`` and the rest of
        :data:`pie_audit.audit.CLASS_RISK_COLUMNS` (:attr:`pie_audit.audit.BaselineRisk.classes`).
    baseline_name : str
    n_models : int
        The baseline's models, shown.
    top : float, default=RISK_TOP
        The fraction of riskiest examples ``classes`` called high-risk.
    notes : sequence of str
        Shown as notes (:attr:`pie_audit.audit.BaselineRisk.notes`).
    command : sequence of str, optional
        The command line that made the page.
    examples : int, default=RISK_EXAMPLES
        How many of the riskiest examples the page lists.
    created_at : datetime, optional
        Default now (UTC).

    Returns
    -------
    str
        An HTML document that loads nothing from outside it.
    """
    _check_columns(table, _TABLE_COLUMNS, "the risk table")
    _check_columns(classes, _CLASS_COLUMNS, "the class table")
    created_at = created_at or datetime.now(timezone.utc)
    names = {int(label): str(name) for label, name in zip(classes["label"], classes["name"], strict=True)}
    has_probabilities = bool(table["prob_margin"].notna().any())
    context = {
        "title": f"pie-audit risk: {baseline_name}",
        "baseline_name": baseline_name,
        "created_at": created_at.isoformat(timespec="seconds"),
        "version": __version__,
        "n_examples": len(table),
        "n_models": int(n_models),
        "made_of": "the vote margin and the mean probability margin" if has_probabilities else "the vote margin",
        "has_probabilities": has_probabilities,
        "top": f"{100 * top:.6g}%",
        "n_high": int(classes["high_risk"].sum()),
        "n_contested": int((table["vote_margin"] == 0).sum()),
        "accuracy": _pct(table["label_vote"].mean(), 2),
        "notes": list(notes),
        "n_classes": len(classes),
        "classes_shown": min(len(classes), MAX_TABLE_CLASSES),
        "classes": _class_rows(classes, MAX_TABLE_CLASSES),
        "examples": _example_rows(table, names, examples),
        "command": " ".join(command) if command else None,
    }
    return _environment().get_template("risk.html").render(context)


def write_risk(
    out: str | Path,
    table: pd.DataFrame,
    classes: pd.DataFrame,
    *,
    baseline_name: str,
    n_models: int,
    populations: Sequence[str | Path] = (),
    top: float = RISK_TOP,
    notes: Sequence[str] = (),
    command: Sequence[str] | None = None,
    examples: int = RISK_EXAMPLES,
) -> Path:
    """Write ``risk.parquet``, ``risk.csv`` and ``index.html`` into ``out``, atomically.

    ``out`` may be missing or hold a previous risk directory (:data:`RISK_FILES`); it is replaced
    whole in one step. Anything else there, or an ``out`` inside or around one of
    ``populations``, is refused before anything is written (:func:`check_risk_output`).

    Parameters
    ----------
    out : str or Path
    table, classes : DataFrame
        As :func:`render_risk` takes them; written as they are.
    baseline_name : str
    n_models : int
    populations : sequence of str or Path
        The population directories the ranking read.
    top, notes, command, examples
        As :func:`render_risk` takes them.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    OutputError
        ``out`` is refused, or cannot be written.
    """
    out = Path(out)
    check_risk_output(out, populations=populations)
    # Rendered first: nothing is replaced if it fails.
    html = render_risk(
        table, classes, baseline_name=baseline_name, n_models=n_models, top=top, notes=notes, command=command,
        examples=examples,
    )  # fmt: skip
    with exclusive_lock(out), replace_directory(out, accept=_is_risk_file, what="risk directory") as tmp:
        table.to_parquet(tmp / RISK_TABLE, index=False)
        classes.to_csv(tmp / RISK_CLASSES, index=False)
        (tmp / RISK_PAGE).write_text(html, encoding="utf-8")
    return out
