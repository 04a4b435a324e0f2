"""The HTML report of one audit and the sweep page over several: they render, never compute.

:func:`render_report` turns a :class:`pie_audit.audit.AuditResult` into one
self-contained HTML file (inline styles, figures, thumbnails and a small table sorter; no
network access, see the Content-Security-Policy in the template). :func:`render_sweep` does
the same for the table of :func:`pie_audit.audit.sweep_table`.

The functions here only select and format values for the Jinja2 templates under
``pie_audit/report/templates``; the templates only lay them out. Autoescaping is on, so every string
from the inputs (class names, paths, configs, commands) reaches the page as text. The figures
are the only markup passed through unescaped: matplotlib writes them and escapes their text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from .._version import __version__
from ..audit import STABLE, AuditResult, PopulationSummary
from ._thumbnails import Thumbnails

__all__ = ["GALLERY_SIZE", "Gallery", "render_report", "render_summary_html", "render_sweep", "class_labels"]

#: PIEs shown in the report's gallery.
GALLERY_SIZE = 64

_MAX_LABEL = 40
NO_IMAGES = "no images were requested, so the gallery shows ids and labels only"
_DASH = "\u2014"
RULE_TEXT = {
    "max-class-drop": "largest significant loss of a class's recall beyond the models' average",
    "max-class-recall-drop": "largest significant loss of a class's recall",
    "max-pie-fraction": "fraction of test examples that are PIEs",
    "max-accuracy-drop": "drop in mean top-1 accuracy",
    "max-harmed-classes": "classes significantly harmed",
    "min-power": "power to detect a class drop of the size of interest (median class)",
}
#: The gate's group rules, shown in the rules table only when the audit has groups (without
#: groups the gate calls them not applicable).
GROUP_RULE_TEXT = {
    "max-group-drop": "largest significant loss of a group's accuracy beyond the models' average",
    "max-group-accuracy-drop": "largest significant loss of a group's accuracy",
}
TEST_WORDS = {
    "welch": "Welch t-tests between the two populations of models",
    "paired": "paired t-tests, each pruned model against the baseline model it was derived from",
    "mcnemar": "an exact McNemar test on the class's examples, one model against one",
}


@dataclass(frozen=True, eq=False)
class Gallery:
    """The PIEs a report's gallery shows and their images.

    Attributes
    ----------
    rows : DataFrame
        Rows of :attr:`AuditResult.examples`, in the order shown
        (:meth:`AuditResult.top_pies`).
    thumbnails : Thumbnails
        Images of those examples by id, or the reason there are none.
    """

    rows: pd.DataFrame
    thumbnails: Thumbnails


def _environment():  # noqa: ANN202 - jinja2 is imported lazily
    from jinja2 import Environment, PackageLoader, StrictUndefined

    # autoescape=True for every template (also .css/.js includes, which hold no variables).
    return Environment(
        loader=PackageLoader("pie_audit.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _pct(value: Any, digits: int = 1) -> str:
    value = _finite(value)
    return _DASH if value is None else f"{100 * value:.{digits}f}%"


def _points(value: Any, digits: int = 2) -> str:
    value = _finite(value)
    return _DASH if value is None else f"{100 * value:+.{digits}f}"


def _p(value: Any) -> str:
    value = _finite(value)
    if value is None:
        return _DASH
    return "<0.0001" if value < 1e-4 else f"{value:.2g}" if value < 0.01 else f"{value:.3f}"


def _count(value: Any) -> tuple[str, str]:
    """A count that may be undefined, as shown and as sorted."""
    value = _finite(value)
    return (_DASH, "") if value is None else (str(int(value)), str(int(value)))


def _relation(value: Any) -> str:
    """A p- or q-value to follow its symbol in prose: ``= 0.012`` or ``< 0.0001``."""
    text = _p(value)
    return f"< {text[1:]}" if text.startswith("<") else f"= {text}"


def _sort_key(value: Any) -> str:
    """A cell's ``data-v``: the raw number, or empty for an undefined value (sorted last)."""
    value = _finite(value)
    return "" if value is None else repr(value)


def class_labels(names: Sequence[str]) -> list[str]:
    """How a class is shown in figures: its name, with the label when the name is not the label."""
    shown = []
    for label, name in enumerate(names):
        name = name if len(name) <= _MAX_LABEL else name[: _MAX_LABEL - 1] + "\u2026"
        shown.append(name if name == str(label) else f"{name} [{label}]")
    return shown


def _significance(row: Any, *, absolute: str = "recall_p_value", untested: str = "not tested") -> str:
    """A class's (or group's) verdict in a word, from its direction and its two tests."""
    if _finite(row.p_value) is None and _finite(getattr(row, absolute)) is None:
        return untested
    if row.direction != "none":
        return row.direction
    # Significant, but the rate moved the other way (or not at all): not harm, not help.
    return "relative only" if row.significant else "no"


#: Up to this many classes the report's class table lists every class; beyond, it lists the
#: classes that matter (:func:`table_classes`), and ``classes.csv`` holds them all. At 21,843
#: classes a row per class made a 14 MB page that took Chromium 18 s to open.
MAX_TABLE_CLASSES = 500
#: Rows per page of the class table in the browser (pager.js); a table this long or shorter has no pager.
TABLE_PAGE_SIZE = 100
#: Beyond the significant ones, the table's share of the most extreme classes.
EXTREME_TABLE_CLASSES = 200


def table_classes(classes: pd.DataFrame, *, limit: int = MAX_TABLE_CLASSES) -> pd.DataFrame:
    """The classes the report's table lists: all of them up to ``limit``, else those that matter.

    Parameters
    ----------
    classes : DataFrame
        :attr:`AuditResult.classes`.
    limit : int, default=500

    Returns
    -------
    DataFrame
        Rows of ``classes`` in label order: with more than ``limit`` classes, every class that
        is significant by either test and the :data:`EXTREME_TABLE_CLASSES` with the largest
        absolute normalized change.
    """
    if len(classes) <= limit:
        return classes
    change = classes["normalized_change"].abs().fillna(-1.0).to_numpy()
    extreme = np.zeros(len(classes), dtype=bool)
    extreme[np.argsort(-change, kind="stable")[:EXTREME_TABLE_CLASSES]] = True
    keep = classes["significant"].to_numpy() | classes["recall_significant"].to_numpy() | extreme
    return classes[keep]


def _class_rows(classes: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for r in classes.itertuples(index=False):
        rows.append(
            {
                "label": int(r.label),
                "name": r.name,
                "support": int(r.support),
                "n_pies": int(r.n_pies),
                "cells": [
                    (_pct(r.baseline_recall_mean), _sort_key(r.baseline_recall_mean)),
                    (_pct(r.pruned_recall_mean), _sort_key(r.pruned_recall_mean)),
                    (_points(r.recall_change), _sort_key(r.recall_change)),
                    (_points(r.normalized_change), _sort_key(r.normalized_change)),
                ],
                "ci": (
                    f"[{_points(r.ci_low)}, {_points(r.ci_high)}]" if _finite(r.ci_low) is not None else _DASH,
                    _sort_key(r.ci_low),
                ),
                "p": (_p(r.p_value), _sort_key(r.p_value)),
                "q": (_p(r.q_value), _sort_key(r.q_value)),
                "recall_q": (_p(r.recall_q_value), _sort_key(r.recall_q_value)),
                "mde": (_points(r.mde).lstrip("+"), _sort_key(r.mde)),
                "significance": _significance(r),
                "robustness": _robustness(r),
                "direction": r.direction,
            }
        )
    return rows


def _robustness(row: Any) -> tuple[str, Any]:
    """A harmed class's (group's) robustness as text and sort key; a dash for the others."""
    value = _finite(getattr(row, "robustness", float("nan")))
    return (_DASH, "") if value is None else (f"{value:.2f}", value)


def _impacted(frame: pd.DataFrame, names: Sequence[str], test: str) -> list[dict[str, str]]:
    rows = []
    for r in frame.itertuples(index=False):
        verb = "lost" if r.recall_change < 0 else "gained"
        words = f"{verb} {abs(100 * r.recall_change):.2f} points of recall"
        if test != "mcnemar":
            relation = "more" if (r.normalized_change < 0) == (r.recall_change < 0) else "less"
            words += f", {abs(100 * r.normalized_change):.2f} {relation} than the models' average"
        mcnemar = test == "mcnemar"
        rows.append(
            {
                "name": names[int(r.label)],
                "words": words,
                "ci": "" if mcnemar else f"[{_points(r.ci_low)}, {_points(r.ci_high)}]",
                "q": _relation(r.recall_q_value if mcnemar else r.q_value),
            }
        )
    return rows


#: (key, column header) of the cost columns of the populations table and the sweep table, in order.
COST_HEADERS = (
    ("parameters", "parameters (nonzero of stored)"),
    ("flops", "FLOPs / example"),
    ("file", "file size"),
    ("latency_1", "latency, batch 1"),
    ("latency_64", "latency, batch 64"),
)


def _si(value: Any, unit: str = "") -> str:
    """A quantity with an SI prefix and 4 significant digits: ``694.8 k``, ``215.4 kB``."""
    value = _finite(value)
    if value is None:
        return _DASH
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.4g} {prefix}{unit}".rstrip()
    return f"{value:.4g} {unit}".rstrip()


def _ms(value: Any) -> str:
    value = _finite(value)
    return _DASH if value is None else f"{value:.3g} ms"


def _whole(value: Any) -> str:
    """A median count (a half for an even number of models), with thousands separators."""
    value = _finite(value)
    return _DASH if value is None else f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _cost_cells(parameters_nonzero: Any, parameters_stored: Any, flops: Any, file_bytes: Any,
                latency_1: Any, latency_64: Any) -> dict[str, tuple[str, str]]:  # fmt: skip
    """The cost columns of one population, each ``(shown, sort key)``; a dash where not recorded."""
    parameters = _DASH
    if _finite(parameters_nonzero) is not None or _finite(parameters_stored) is not None:
        parameters = f"{_whole(parameters_nonzero)} of {_whole(parameters_stored)}"
    return {
        "parameters": (parameters, _sort_key(parameters_nonzero)),
        "flops": (_si(flops), _sort_key(flops)),
        "file": (_si(file_bytes, "B"), _sort_key(file_bytes)),
        "latency_1": (_ms(latency_1), _sort_key(latency_1)),
        "latency_64": (_ms(latency_64), _sort_key(latency_64)),
    }


def _class_drop(value: Any) -> str:
    """The largest significant class drop in points, ``none`` when no class is harmed."""
    value = _finite(value)
    return _DASH if value is None else "none" if value == 0 else f"{100 * value:.1f}"


def _cost_columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """The cost columns some row records, as ``(key, header)``: the others are left out."""
    return [(key, header) for key, header in COST_HEADERS if any(r["cost"][key][0] != _DASH for r in rows)]


def _population(role: str, summary: PopulationSummary, provenance: Any) -> dict[str, Any]:
    cost = provenance.cost
    return {
        "role": role,
        "path": str(summary.path) if summary.path is not None else "(in memory)",
        # run.json's method; records from before methods say none and were gmp.
        "method": provenance.method if provenance.method is not None else "not recorded",
        "n_models": str(summary.n_models),
        "mean": _pct(summary.accuracy_mean, 2),
        "std": _pct(summary.accuracy_std, 2),
        "range": f"{_pct(summary.accuracy_min, 2)} \u2013 {_pct(summary.accuracy_max, 2)}",
        "target": _pct(provenance.sparsity_target) if provenance.sparsity_target is not None else "not recorded",
        "achieved": _pct(provenance.sparsity_achieved, 2)
        if provenance.sparsity_achieved is not None
        else "not recorded",
        # Medians over the models' run.json cost; a dash where none records it.
        "cost": _cost_cells(cost.parameters_nonzero, cost.parameters_stored, cost.flops, cost.file_bytes,
                            cost.latency_batch_1_ms, cost.latency_batch_64_ms),  # fmt: skip
        "threads": ", ".join(map(str, cost.threads)),
    }


def _drop(value: float) -> str:
    """A drop as unsigned percentage points with one decimal, as the gate's messages write it."""
    return f"{abs(100 * value):.1f} points"


def _gate_rows(result: AuditResult) -> list[dict[str, str]]:
    """One row per rule: what it measures, its limit and what the gate observed, as the messages write them."""
    gate = result.gate
    limits = gate.rules.limits()
    failed = {f.rule for f in gate.failures}
    word = "inconclusive (allowed)" if gate.rules.allow_inconclusive else "inconclusive"
    unsettled = {i.rule: word for i in gate.inconclusive}
    observed = gate.observed
    harmed, fell = observed["max-class-drop"], observed["max-class-recall-drop"]
    lost, power = observed["max-accuracy-drop"], observed["min-power"]
    shown = {
        "max-class-drop": "no class significantly harmed" if harmed is None else _drop(harmed),
        "max-class-recall-drop": "no class's recall fell significantly" if fell is None else _drop(fell),
        "max-pie-fraction": _pct(observed["max-pie-fraction"], 2)
        + (" (stable PIEs only)" if gate.rules.stable_pies_only else ""),
        "max-accuracy-drop": _drop(lost) if lost >= 0 else f"none (accuracy rose {_drop(lost)})",
        "max-harmed-classes": str(observed["max-harmed-classes"]),
        "min-power": "undefined" if power is None else f"{power:.2f} at {_drop(result.power.detect)}",
    }
    limit_texts = {
        "max-class-drop": _drop,
        "max-class-recall-drop": _drop,
        "max-pie-fraction": lambda v: _pct(v, 2),
        "max-accuracy-drop": _drop,
        "max-harmed-classes": str,
        "min-power": lambda v: f"{v:.2f}",
    }
    texts = dict(RULE_TEXT)
    if result.groups is not None:
        # The group rules beside the class rules they mirror.
        order = [*list(RULE_TEXT)[:2], *GROUP_RULE_TEXT, *list(RULE_TEXT)[2:]]
        texts = {rule: {**RULE_TEXT, **GROUP_RULE_TEXT}[rule] for rule in order}
        texts["min-power"] = "power to detect a drop of the size of interest (median class or median group, the lower)"
        group_drop, group_fell = observed.get("max-group-drop"), observed.get("max-group-accuracy-drop")
        shown["max-group-drop"] = "no group significantly harmed" if group_drop is None else _drop(group_drop)
        shown["max-group-accuracy-drop"] = (
            "no group's accuracy fell significantly" if group_fell is None else _drop(group_fell)
        )
        limit_texts.update({"max-group-drop": _drop, "max-group-accuracy-drop": _drop})
    for entry in gate.inconclusive:
        # The drop the status is about, not only that nothing was significant.
        shown[entry.rule] = f"{shown[entry.rule]}; {_drop(entry.value)} not significant"
    return [
        {
            "rule": rule,
            "what": text,
            "limit": "off" if limits.get(rule) is None else limit_texts[rule](limits[rule]),
            "observed": shown[rule],
            "status": "off"
            if limits.get(rule) is None
            else "failed"
            if rule in failed
            else unsettled.get(rule, "passed"),
        }
        for rule, text in texts.items()
    ]


def _gallery(gallery: Gallery, names: Sequence[str], attributes: Sequence[str] = ()) -> list[dict[str, Any]]:
    thumbnails = gallery.thumbnails
    rows = gallery.rows
    # The gallery filter (groups) matches a card's data-a{k} to the k-th attribute's value, as text.
    present = [(k, a) for k, a in enumerate(attributes) if a in rows.columns]
    values = [rows[a].map(str).tolist() for _, a in present]
    return [
        {
            "id": int(r.example_id),
            "image": thumbnails.images.get(int(r.example_id)),
            "label": names[int(r.label)],
            "baseline": names[int(r.baseline_modal)],
            "baseline_share": _pct(r.baseline_share, 0) + (", tied" if r.baseline_tied else ""),
            "pruned": names[int(r.pruned_modal)],
            "pruned_share": _pct(r.pruned_share, 0) + (", tied" if r.pruned_tied else ""),
            "stability": _pct(r.stability, 0) + (" (stable)" if r.stability >= STABLE else ""),
            "score": f"{r.score:.2f}",
            # cleanlab's flag (pd.NA without probabilities): a likely wrong label, shown on the card.
            "label_issue": _flag(getattr(r, "label_issue", False)),
            "label_quality": _finite(getattr(r, "label_quality", float("nan"))),
            "baseline_right": bool(r.baseline_modal == r.label),
            "pruned_right": bool(r.pruned_modal == r.label),
            "data": {f"data-a{k}": column[i] for (k, _), column in zip(present, values, strict=True)},
            "attributes": " \u00b7 ".join(f"{a}={column[i]}" for (_, a), column in zip(present, values, strict=True)),
        }
        for i, r in enumerate(rows.itertuples(index=False))
    ]


def _why_pies(pies: Any) -> list[str]:
    """What the label issues and the dense-only risk score say of the PIEs, in words (none if unknown)."""
    lines = []
    if pies.label_issue_fraction is not None:
        test = "" if pies.label_issue_p_value is None else (
            f" (odds ratio {_number(pies.label_issue_odds_ratio)}, Fisher's exact test p {_relation(pies.label_issue_p_value)})"
        )
        lines.append(
            f"Label issues: cleanlab flags {_pct(pies.label_issue_fraction)} of the PIEs as likely label errors, "
            f"against {_pct(pies.non_pie_label_issue_fraction)} of the other examples{test}. "
            "Flagged PIEs are marked in the gallery."
        )
    if pies.risk_auc is not None:
        lines.append(
            f"Dense-only risk: the risk score, computed from the baseline alone (pie-audit risk), ranks the PIEs "
            f"with ROC AUC {pies.risk_auc:.2f}; PIEs are {_pct(pies.risk_top_1_percent)} of the 1% riskiest examples "
            f"and {_pct(pies.risk_top_5_percent)} of the 5% riskiest (against {_pct(pies.fraction)} of all)."
        )
    return lines


def _review_rows(review: pd.DataFrame) -> list[dict[str, Any]]:
    """The human review's tally (``docs/review.md``), one row per category, as the report shows it."""
    return [
        {
            "category": str(r.category),
            "pies": int(r.pies),
            "controls": int(r.controls),
            "odds": (_number(r.odds_ratio), _sort_key(r.odds_ratio)),
            "p": (_p(r.p_value), _sort_key(r.p_value)),
            "q": (_p(r.q_value), _sort_key(r.q_value)),
        }
        for r in review.itertuples(index=False)
    ]


def _number(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "infinite" if value is not None else "\u2014"
    return f"{value:.2f}"


def _flag(value: Any) -> bool:
    """A nullable boolean as a plain one: missing (``pd.NA``) is False."""
    return False if value is pd.NA or value is None else bool(value)


def _group_significance(row: Any) -> str:
    if not row.tested:
        return "not tested"
    return _significance(row, absolute="accuracy_p_value", untested="no test")


def _group_rows(groups: pd.DataFrame) -> list[dict[str, Any]]:
    """The groups table's rows: every group, tested or not, with raw sort values."""
    rows = []
    for r in groups.itertuples(index=False):
        rows.append(
            {
                "group": r.group,
                "support": int(r.support),
                "tested": bool(r.tested),
                "cells": [
                    (_pct(r.baseline_accuracy_mean), _sort_key(r.baseline_accuracy_mean)),
                    (_pct(r.pruned_accuracy_mean), _sort_key(r.pruned_accuracy_mean)),
                    (_points(r.accuracy_change), _sort_key(r.accuracy_change)),
                    (_points(r.normalized_change), _sort_key(r.normalized_change)),
                    (
                        f"[{_points(r.ci_low)}, {_points(r.ci_high)}]" if _finite(r.ci_low) is not None else _DASH,
                        _sort_key(r.ci_low),
                    ),
                    (_p(r.p_value), _sort_key(r.p_value)),
                    (_p(r.q_value), _sort_key(r.q_value)),
                    (_p(r.accuracy_q_value), _sort_key(r.accuracy_q_value)),
                    (_points(r.mde).lstrip("+"), _sort_key(r.mde)),
                ],
                "significance": _group_significance(r),
                "robustness": _robustness(r),
                "direction": r.direction,
                "n_pies": int(r.n_pies),
            }
        )
    return rows


def _harmed_groups(frame: pd.DataFrame, test: str) -> list[dict[str, str]]:
    """Verdict lines of the groups harmed beyond the models' average, in words."""
    mcnemar = test == "mcnemar"
    rows = []
    for r in frame.itertuples(index=False):
        words = f"accuracy {_pct(r.baseline_accuracy_mean)} \u2192 {_pct(r.pruned_accuracy_mean)}, "
        words += f"{'lost' if r.accuracy_change < 0 else 'gained'} {abs(100 * r.accuracy_change):.2f} points"
        if not mcnemar:
            relation = "more" if (r.normalized_change < 0) == (r.accuracy_change < 0) else "less"
            words += f", {abs(100 * r.normalized_change):.2f} {relation} than the models' average"
        rows.append(
            {
                "group": r.group,
                "words": words,
                "ci": "" if mcnemar or _finite(r.ci_low) is None else f"[{_points(r.ci_low)}, {_points(r.ci_high)}]",
                "q": _relation(r.accuracy_q_value if mcnemar else r.q_value),
            }
        )
    return rows


def _fallen_groups(frame: pd.DataFrame) -> list[dict[str, str]]:
    """Verdict lines of the groups whose accuracy fell significantly (the absolute test)."""
    return [
        {
            "group": r.group,
            "words": f"accuracy {_pct(r.baseline_accuracy_mean)} \u2192 {_pct(r.pruned_accuracy_mean)}, "
            f"lost {abs(100 * r.accuracy_change):.2f} points",
            "q": _relation(r.accuracy_q_value),
        }
        for r in frame.itertuples(index=False)
    ]


def _pie_concentration_rows(groups: pd.DataFrame, n_examples: int, n_pies: int) -> list[dict[str, Any]]:
    """Each group's share of the PIEs against its share of the examples, with Fisher's test."""
    rows = []
    for r in groups.itertuples(index=False):
        example_share = r.support / n_examples if n_examples else math.nan
        pie_share = r.n_pies / n_pies if n_pies else math.nan
        rows.append(
            {
                "group": r.group,
                "cells": [
                    (str(int(r.support)), repr(int(r.support))),
                    (_pct(example_share), _sort_key(example_share)),
                    (str(int(r.n_pies)), repr(int(r.n_pies))),
                    (_pct(pie_share), _sort_key(pie_share)),
                    (_pct(r.pie_fraction), _sort_key(r.pie_fraction)),
                    _odds(r.pie_odds_ratio),
                    (_p(r.pie_p_value), _sort_key(r.pie_p_value)),
                    (_p(r.pie_q_value), _sort_key(r.pie_q_value)),
                ],
            }
        )
    return rows


def _odds(value: Any) -> tuple[str, str]:
    """An odds ratio as shown and as sorted: infinite when the group's complement has no PIE."""
    value = float(value)
    if math.isinf(value):
        return "\u221e", "Infinity"  # what the sorter's parseFloat reads as infinite
    return (_DASH, "") if math.isnan(value) else (f"{value:.2f}", repr(value))


def _concentrated(groups: pd.DataFrame, alpha: float) -> list[dict[str, str]]:
    """Verdict lines of the groups whose examples are significantly more often PIEs than the others'."""
    q = groups["pie_q_value"].to_numpy(dtype=float)
    odds = groups["pie_odds_ratio"].to_numpy(dtype=float)
    picked = groups[np.isfinite(q) & (q <= alpha) & (odds > 1)]
    picked = picked.assign(_odds=odds[np.isfinite(q) & (q <= alpha) & (odds > 1)])
    picked = picked.sort_values(["_odds", "group"], ascending=[False, True])
    return [
        {
            "group": r.group,
            "words": f"{r.n_pies} PIEs among {r.support} examples ({_pct(r.pie_fraction)} of them), "
            f"odds ratio {_odds(r.pie_odds_ratio)[0]}",
            "q": _relation(r.pie_q_value),
        }
        for r in picked.itertuples(index=False)
    ]


def _cell_significance(row: Any) -> str:
    if not row.tested:
        return "not tested"
    if _finite(row.p_value) is None and _finite(row.recall_p_value) is None:
        return "no test"
    if row.direction != "none":
        # The cell's recall fell: its error rate rose.
        return row.direction
    return "relative only" if row.significant else "no"


def _error_rate_rows(cells: pd.DataFrame, groups: pd.DataFrame, test: str) -> list[dict[str, Any]]:
    """Two-class tasks: each group's false-positive and false-negative rates, from its cells.

    Label 0's recall in a group is its true-negative rate, so its false-positive rate is one
    minus it; label 1's recall is the true-positive rate, and the false-negative rate one minus
    it. A rate's change is minus the recall's; its significance is the cell's.
    """
    by_key = {(r.group, int(r.label)): r for r in cells.itertuples(index=False)}
    rows = []
    for group in groups["group"]:
        entry: dict[str, Any] = {"group": group, "rates": []}
        for label in (0, 1):
            c = by_key.get((group, label))
            if c is None:
                entry["rates"].append(None)
                continue
            base, pruned = 1 - float(c.baseline_recall_mean), 1 - float(c.pruned_recall_mean)
            change = -float(c.recall_change)
            q = c.recall_q_value if test == "mcnemar" else c.q_value
            entry["rates"].append(
                {
                    "support": (str(int(c.support)), repr(int(c.support))),
                    "cells": [
                        (_pct(base), _sort_key(base)),
                        (_pct(pruned), _sort_key(pruned)),
                        (_points(change), _sort_key(change)),
                        (_p(q), _sort_key(q)),
                    ],
                    "significance": _cell_significance(c),
                    "direction": c.direction,
                }
            )
        rows.append(entry)
    return rows


def _gallery_options(groups: pd.DataFrame, attributes: Sequence[str]) -> list[dict[str, Any]]:
    """The gallery filter's choices: one per group, carrying the attribute values it requires."""
    index = {a: k for k, a in enumerate(attributes)}
    return [
        {
            "value": str(i),
            "label": r.group,
            "data": {f"data-a{index[a]}": str(v) for a, v in r.attributes.items() if a in index},
        }
        for i, r in enumerate(groups.itertuples(index=False))
    ]


def _groups_context(result: AuditResult, *, filter_gallery: bool) -> dict[str, Any] | None:
    """Everything the groups section shows, or None without groups."""
    from markupsafe import Markup

    from ._plots import MAX_PLOTTED_GROUPS, group_change_svg, intersection_frame, intersection_svg, plotted_groups

    groups = result.groups
    if groups is None:
        return None
    attributes = tuple(result.group_attributes)
    alpha = float(result.settings["alpha"])
    tested = groups["tested"].to_numpy(dtype=bool)
    plotted = plotted_groups(groups)
    untested = groups.loc[~tested, "group"].tolist()
    not_plotted = groups.loc[tested & ~groups["group"].isin(plotted["group"]), "group"].tolist()
    matrix = intersection_frame(groups, attributes)
    cells = result.group_cells
    two_class = len(result.classes) == 2 and cells is not None
    names = [str(n) for n in result.classes["name"]]
    min_support = result.settings.get("min_group_support")
    n_intersections = sum(len(a) > 1 for a in groups["attributes"])
    return {
        "attributes": attributes,
        "source": str(result.group_source) if result.group_source is not None else None,
        "test_words": TEST_WORDS[result.test].replace("class's", "group's"),
        "n_groups": len(groups),
        "n_tested": int(tested.sum()),
        "n_intersections": n_intersections,
        "min_support": min_support,
        "harmed": _harmed_groups(result.harmed_groups, result.test),
        # McNemar's test is the absolute one: no claim about the models' average.
        "harmed_title": "Groups significantly harmed" if result.test == "mcnemar" else "Groups harmed beyond the models' average",
        "fell": _fallen_groups(result.groups_accuracy_fell),
        "power_sentence": result.group_power_sentence(),
        "concentrated": _concentrated(groups, alpha),
        "untested": untested,
        "rows": _group_rows(groups),
        "change_svg": Markup(group_change_svg(groups)),
        "max_plotted": MAX_PLOTTED_GROUPS,
        "not_plotted": len(not_plotted),
        "pie_rows": _pie_concentration_rows(groups, len(result.examples), result.pies.count),
        "heatmap_svg": Markup(intersection_svg(matrix)) if matrix is not None else "",
        "heatmap_axes": (str(matrix.index.name), str(matrix.columns.name)) if matrix is not None else None,
        "three_attributes": len(attributes) == 3,
        "two_class": two_class,
        "negative": names[0] if two_class else None,
        "positive": names[1] if two_class else None,
        "error_rows": _error_rate_rows(cells, groups, result.test) if two_class else [],
        "options": _gallery_options(groups, attributes) if filter_gallery else [],
    }


def _provenance(role: str, path: Any, provenance: Any) -> dict[str, Any]:
    return {
        "role": role,
        "path": str(path) if path is not None else "(in memory)",
        "models": f"{provenance.n_models} ({provenance.n_records} with run.json)",
        "seeds": ", ".join(map(str, provenance.seeds)) or "not recorded",
        "finished": " \u2013 ".join(dict.fromkeys(provenance.finished)) or "not recorded",
        "fields": [{"label": label, "texts": values} for label, values in provenance.fields],
    }


def render_report(
    result: AuditResult,
    *,
    gallery: Gallery | None = None,
    command: Sequence[str] | None = None,
    created_at: datetime | None = None,
    sweep_link: str | None = None,
    review: pd.DataFrame | None = None,
) -> str:
    """The audit as one self-contained HTML page.

    Parameters
    ----------
    result : AuditResult
    gallery : Gallery, optional
        The PIEs to show and their images (:func:`pie_audit.report.pie_gallery`); without
        images the gallery shows ids and labels, and the thumbnails' ``note`` says why.
        Default: the top :data:`GALLERY_SIZE` PIEs, without images.
    command : sequence of str, optional
        The command line that made the report, for its provenance.
    created_at : datetime, optional
        Shown as the report's time; default now (UTC).
    sweep_link : str, optional
        Relative link back to a sweep page this report belongs to.

    Returns
    -------
    str
        An HTML document.
    """
    from markupsafe import Markup

    from ._plots import (
        MAX_PLOTTED_CLASSES,
        accuracy_svg,
        class_change_svg,
        class_volcano_svg,
        intensification_svg,
        pie_flows_svg,
        pies_per_class_svg,
    )
    from ..interchange import population_provenance

    if gallery is None:
        gallery = Gallery(rows=result.top_pies(GALLERY_SIZE), thumbnails=Thumbnails(note=NO_IMAGES))
    created_at = created_at or datetime.now(timezone.utc)
    names = [str(n) for n in result.classes["name"]]
    shown = class_labels(names)
    base_prov = population_provenance(result.baseline_runs.values())
    pruned_prov = population_provenance(result.pruned_runs.values())
    cards = _gallery(gallery, names, result.group_attributes if result.groups is not None else ())
    groups = _groups_context(result, filter_gallery=bool(cards))
    n_classes = len(result.classes)
    n_pie_classes = int((result.classes["n_pies"] > 0).sum())
    pies = result.pies
    populations = [_population("baseline", result.baseline, base_prov), _population("pruned", result.pruned, pruned_prov)]
    context = {
        "title": f"pie-audit: {result.pruned_name} vs {result.baseline_name}",
        "baseline_name": result.baseline_name,
        "pruned_name": result.pruned_name,
        "created_at": created_at.isoformat(timespec="seconds"),
        "version": __version__,
        "sweep_link": sweep_link,
        "passed": result.gate.passed,
        "underpowered": result.outcome == "underpowered",
        "outcome": result.outcome,
        "badge": result.verdict_line(rules=False, power=False),
        "inconclusive": [(i.rule, i.message) for i in result.gate.inconclusive],
        "inconclusive_allowed": result.gate.rules.allow_inconclusive,
        "power_sentence": result.power_sentence(),
        "power_target": f"{result.power.target:g}",
        "test_words": TEST_WORDS[result.test],
        "significance_words": (
            "a class is significant when the absolute test's q-value is at most "
            f"{result.settings['alpha']}."
            if result.test == "mcnemar"
            else "a class is significant when the normalized change's q-value is at most "
            f"{result.settings['alpha']} (the paper's test)."
        ),
        "failures": [f.message for f in result.gate.failures],
        "gate_rows": _gate_rows(result),
        "populations": populations,
        "cost_columns": _cost_columns(populations),
        "n_examples": len(result.examples),
        "n_classes": n_classes,
        "pie_count": pies.count,
        "pie_fraction": _pct(pies.fraction, 2),
        "n_stable": pies.n_stable,
        "why_pies": _why_pies(pies),
        "review": None if review is None else _review_rows(review),
        "n_tied": pies.n_tied,
        "harmed": _impacted(result.harmed, names, result.test),
        "helped": _impacted(result.helped, names, result.test),
        "settings": {
            "alpha": result.settings.get("alpha"),
            "correction": result.settings.get("correction"),
        },
        "settings_items": [(k, str(v)) for k, v in result.settings.items()],
        "class_rows": _class_rows(table_classes(result.classes)),
        "table_limited": len(result.classes) > MAX_TABLE_CLASSES,
        "page_size": TABLE_PAGE_SIZE,
        "extreme_table": EXTREME_TABLE_CLASSES,
        "change_svg": Markup(class_change_svg(result.classes, class_labels=shown)),
        "change_limited": n_classes > MAX_PLOTTED_CLASSES,
        "intensification": None
        if result.intensification is None
        else result.intensification.sentence(alpha=result.settings["alpha"]),
        "intensification_svg": Markup(
            intensification_svg(result.classes, baseline_accuracy=result.baseline.accuracy_mean)
        ),
        # Beyond what the forest plot shows, every class as one point.
        "volcano_svg": Markup(
            class_volcano_svg(
                result.classes, class_labels=shown, alpha=result.settings["alpha"],
                q_column="recall_q_value" if result.test == "mcnemar" else "q_value",
            )
        )
        if n_classes > MAX_PLOTTED_CLASSES
        else "",
        "max_plotted": MAX_PLOTTED_CLASSES,
        "pies_svg": Markup(pies_per_class_svg(result.classes, class_labels=shown)),
        "flows_svg": Markup(pie_flows_svg(result.pie_flows, class_labels=shown)),
        "flows": [
            {
                "from": names[int(r.baseline_modal)],
                "to": names[int(r.pruned_modal)],
                "count": int(r.count),
                "right": _pct(r.true_label_share, 0),
            }
            for r in result.pie_flows.head(10).itertuples(index=False)
        ],
        "pies_limited": n_pie_classes > MAX_PLOTTED_CLASSES,
        "n_pie_classes": n_pie_classes,
        "accuracy_svg": Markup(accuracy_svg(result.baseline_accuracy, result.pruned_accuracy)),
        "pie_accuracy": [
            {
                "role": role,
                "all": _pct(acc.mean(), 2),
                "pies": _pct(on_pies, 2),
                "non_pies": _pct(on_rest, 2),
            }
            for role, acc, on_pies, on_rest in (
                ("baseline", result.baseline_accuracy, pies.baseline_accuracy_pies, pies.baseline_accuracy_non_pies),
                ("pruned", result.pruned_accuracy, pies.pruned_accuracy_pies, pies.pruned_accuracy_non_pies),
            )
        ],
        "gallery": cards,
        "gallery_note": None if any(c["image"] for c in cards) or not cards else gallery.thumbnails.note,
        "models": [
            {"role": role, "name": name, "accuracy": _pct(a, 2), "v": _sort_key(a)}
            for role, series in (("baseline", result.baseline_accuracy), ("pruned", result.pruned_accuracy))
            for name, a in series.items()
        ],
        "provenance": [
            _provenance("baseline", result.baseline_dir, base_prov),
            _provenance("pruned", result.pruned_dir, pruned_prov),
        ],
        "command": " ".join(command) if command else None,
        "notes": list(result.notes),
        "groups": groups,
        "gallery_filter": bool(groups and groups["options"]),
    }
    return _environment().get_template("report.html").render(context)


def render_summary_html(result: AuditResult, *, classes: int = 5, pies: int = 5) -> str:
    """A compact HTML summary of an audit for a notebook: verdict, worst classes, top PIEs.

    Parameters
    ----------
    result : AuditResult
    classes, pies : int
        How many of the most harmed classes and of the top PIEs to list.

    Returns
    -------
    str
        An HTML fragment (no page, no script), every string escaped.
    """
    names = [str(n) for n in result.classes["name"]]
    worst = result.classes[result.classes["support"] > 0].sort_values(["recall_change", "label"]).head(classes)
    context = {
        "passed": result.gate.passed,
        "verdict": result.verdict,
        "failures": [f.message for f in result.gate.failures],
        "accuracy": (
            f"{_pct(result.baseline.accuracy_mean, 2)} ({result.baseline.n_models} models) \u2192 "
            f"{_pct(result.pruned.accuracy_mean, 2)} ({result.pruned.n_models} models)"
        ),
        "pies": f"{result.pies.count} of {len(result.examples)} ({_pct(result.pies.fraction, 2)}), {result.pies.n_stable} stable",
        "power": result.power_sentence(),
        "test": result.test,
        "classes": [
            {
                "name": names[int(r.label)],
                "base": _pct(r.baseline_recall_mean),
                "pruned": _pct(r.pruned_recall_mean),
                "change": _points(r.recall_change),
                "normalized": _points(r.normalized_change),
                "q": _p(r.q_value if result.test != "mcnemar" else r.recall_q_value),
                "direction": r.direction,
            }
            for r in worst.itertuples(index=False)
        ],
        "top": [
            {
                "id": int(r.example_id),
                "label": names[int(r.label)],
                "baseline": names[int(r.baseline_modal)],
                "pruned": names[int(r.pruned_modal)],
                "stability": _pct(r.stability, 0),
            }
            for r in result.top_pies(pies).itertuples(index=False)
        ],
        "groups": _groups_line(result),
        "notes": list(result.notes),
    }
    return _environment().get_template("summary.html").render(context)


def _groups_line(result: AuditResult, *, named: int = 3) -> str | None:
    """One sentence on the groups harmed beyond the models' average, or None without groups."""
    if result.groups is None:
        return None
    tested = int(result.groups["tested"].sum())
    harmed = result.harmed_groups
    attributes = ", ".join(result.group_attributes)
    beyond = "" if result.test == "mcnemar" else " beyond the models' average"
    if harmed.empty:
        return f"Groups ({attributes}): none of {tested} tested groups significantly harmed{beyond}."
    change = "accuracy_change" if result.test == "mcnemar" else "normalized_change"
    worst = [f"{r.group} ({_points(getattr(r, change))} points)" for r in harmed.head(named).itertuples(index=False)]
    more = f" and {len(harmed) - named} more" if len(harmed) > named else ""
    return (
        f"Groups ({attributes}): {len(harmed)} of {tested} tested groups significantly harmed{beyond}: "
        f"{', '.join(worst)}{more}."
    )


def render_sweep(
    sweep: pd.DataFrame,
    *,
    links: Sequence[str],
    baseline: str,
    command: Sequence[str] | None = None,
    created_at: datetime | None = None,
) -> str:
    """The sweep page: accuracy, PIE fraction and impacted classes against sparsity, harm against
    cost, and a table linking each population's report.

    The figure is drawn against target sparsity when some compression method was run at two
    or more targets (a trend to follow). When none was (methods set side by side at one
    sparsity, with int8 at 0, say), every method would be a lone column of markers, so the
    populations are set side by side instead, in the order given and named under the axis.
    Without a target sparsity for every population, they are placed in the order given.

    When some population records its cost (``run.json`` ``cost``), the table gains its cost
    columns (those recorded) and the page a trade-off figure
    (:func:`~._tradeoff.tradeoff_svg`): PIE fraction and largest significant class drop
    against latency and file size, the baseline a reference point.

    Parameters
    ----------
    sweep : DataFrame
        :func:`pie_audit.audit.sweep_table`'s rows, in the order the populations were given.
    links : sequence of str
        Relative link to each row's report, in the same order.
    baseline : str
        The baseline population's path, as given.
    command : sequence of str, optional
        The command line that made the page.
    created_at : datetime, optional
        Default now (UTC).

    Returns
    -------
    str
        An HTML document.
    """
    from markupsafe import Markup

    from ._plots import sweep_methods, sweep_svg
    from ._tradeoff import tradeoff_costs, tradeoff_svg

    created_at = created_at or datetime.now(timezone.utc)
    methods = sweep_methods(sweep)
    targets = sweep["sparsity_target"]
    has_target = bool(targets.notna().all())
    has_achieved = bool(sweep["sparsity_achieved"].notna().all())
    side_by_side = has_target and len(sweep) > 1 and not bool((targets.groupby(methods).nunique() > 1).any())
    if side_by_side:
        common = targets.unique()
        xlabel = (
            f"population (all at target sparsity {_pct(common[0])})"
            if len(common) == 1
            else "population (target sparsity in the table)"
        )
        # The achieved sparsities sit near the targets, so a second figure would stack the
        # same lone columns again; the table lists them.
        axes = [("position", xlabel)]
    else:
        axes = [("sparsity_target", "target sparsity")] if has_target else [("position", "population (in the order given)")]
        if has_achieved:
            axes.append(("sparsity_achieved", "achieved sparsity"))
    figures = [Markup(sweep_svg(sweep, x=x, xlabel=xlabel, side_by_side=side_by_side)) for x, xlabel in axes]
    rows = [
        {
            "name": r.name,
            "href": link,
            # Tables written before the method column have none; NaN or None: no run.json.
            "method": m if isinstance(m := getattr(r, "method", None), str) else _DASH,
            "target": _pct(r.sparsity_target) if _finite(r.sparsity_target) is not None else _DASH,
            "target_v": _sort_key(r.sparsity_target),
            "achieved": _pct(r.sparsity_achieved, 2),
            "achieved_v": _sort_key(r.sparsity_achieved),
            "n_models": int(r.n_models),
            "accuracy": _pct(r.accuracy_mean, 2),
            "accuracy_v": _sort_key(r.accuracy_mean),
            "std": _pct(r.accuracy_std, 2),
            "std_v": _sort_key(r.accuracy_std),
            "pies": int(r.pie_count),
            "pie_fraction": _pct(r.pie_fraction, 2),
            "pie_fraction_v": _sort_key(r.pie_fraction),
            "harmed": int(r.harmed),
            "helped": int(r.helped),
            # NaN (or a missing column): that audit had no groups.
            "harmed_groups": _count(getattr(r, "harmed_groups", None)),
            "passed": bool(r.gate_passed),
            # Tables written before gate_outcome existed say only passed or not.
            "outcome": str(getattr(r, "gate_outcome", "passed" if r.gate_passed else "failed")),
            # Tables written before costs have none: dashes, and the columns are left out.
            "drop": _class_drop(getattr(r, "max_class_drop", None)),
            "drop_v": _sort_key(getattr(r, "max_class_drop", None)),
            "cost": _cost_cells(*(getattr(r, c, None) for c in (
                "parameters_nonzero", "parameters_stored", "flops", "file_bytes", "latency_batch_1_ms", "latency_batch_64_ms"
            ))),  # fmt: skip
        }
        for r, link in zip(sweep.itertuples(index=False), links, strict=True)
    ]
    costs = tradeoff_costs(sweep)
    context = {
        "title": f"pie-audit sweep: {len(rows)} pruned population(s) vs {baseline}",
        "baseline": baseline,
        "baseline_accuracy": _pct(sweep["baseline_accuracy_mean"].iloc[0], 2),
        "created_at": created_at.isoformat(timespec="seconds"),
        "version": __version__,
        "all_passed": all(r["passed"] for r in rows),
        "n_failed": sum(not r["passed"] for r in rows),
        "fallback_x": not has_target,
        "side_by_side": side_by_side,
        "many_methods": methods.nunique() > 1,
        "has_groups": any(r["harmed_groups"][1] != "" for r in rows),
        # Markers at one x are nudged apart and may still be hard to tell apart: the table decides.
        "shared_x": any(sweep[x].duplicated().any() for x, _ in axes),
        "figures": figures,
        "rows": rows,
        "has_drop": "max_class_drop" in sweep.columns,
        "cost_columns": _cost_columns(rows),
        "tradeoff_svg": Markup(tradeoff_svg(sweep)) if costs else None,
        "tradeoff_costs": " and ".join("latency at batch 1" if c == "latency" else "file size" for c in costs),
        "command": " ".join(command) if command else None,
    }
    return _environment().get_template("sweep.html").render(context)
