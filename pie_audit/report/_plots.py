"""The report's figures, drawn with matplotlib and returned as inline SVG strings.

Every function takes results computed elsewhere (:class:`pie_audit.audit.AuditResult`'s
frames and series, or the sweep table) and only draws them. The SVG is made for embedding in
an HTML page that has light and dark modes:

- text, axes and ticks are drawn in a sentinel colour that is rewritten to ``currentColor``,
  so they follow the page's text colour;
- backgrounds are transparent, and text stays text (``svg.fonttype: none``), which keeps a
  figure small and crisp;
- element ids get a per-figure prefix, so several figures can share one document.

Figures never go through pyplot's global state: each is a :class:`matplotlib.figure.Figure`
rendered by the SVG canvas, so no GUI backend is involved. Nor through seaborn: importing it
costs about two seconds a process (it pulls in ``scipy.stats`` and pyplot), more than the whole
audit of a thousand classes, for three plots that are a few matplotlib calls each.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "MAX_FLOW_CLASSES",
    "pie_flows_svg",
    "COLORS",
    "MAX_PLOTTED_CLASSES",
    "most_affected",
    "class_change_svg",
    "pies_per_class_svg",
    "accuracy_svg",
    "METHOD_STYLES",
    "UNKNOWN_METHOD",
    "sweep_methods",
    "sweep_svg",
    "MAX_PLOTTED_GROUPS",
    "plotted_groups",
    "group_change_svg",
    "intersection_frame",
    "intersection_svg",
]

_DIRECTION_LABELS = {"harmed": "harmed", "helped": "helped", "none": "none"}
# Readable on white and on a dark grey page alike.
COLORS = {
    "harmed": "#d1495b",
    "helped": "#2e86de",
    "none": "#8c8c8c",
    "baseline": "#2e86de",
    "pruned": "#e07b39",
}
MAX_PLOTTED_CLASSES = 40
# Rewritten to currentColor after rendering; no plot uses it as a data colour.
_FOREGROUND = "#0a0b0c"
_RC = {
    "svg.fonttype": "none",
    # Class names are text, never mathtext: "$5 bill" must not be parsed.
    "text.parse_math": False,
    "svg.hashsalt": "pie-audit",
    "font.family": "sans-serif",
    "font.size": 9,
    "text.color": _FOREGROUND,
    "axes.labelcolor": _FOREGROUND,
    "axes.edgecolor": _FOREGROUND,
    "xtick.color": _FOREGROUND,
    "ytick.color": _FOREGROUND,
    "grid.color": _FOREGROUND,
    "grid.alpha": 0.15,
    "axes.facecolor": "none",
    "figure.facecolor": "none",
    "savefig.transparent": True,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_WIDTH_IN = 7.0


def most_affected(classes: pd.DataFrame, *, limit: int = MAX_PLOTTED_CLASSES) -> pd.DataFrame:
    """The ``limit`` classes with the largest absolute normalized change, most harmed first.

    Significant classes come before non-significant ones of larger change, so a plot of a
    thousand classes never leaves out a class the audit flagged (unless more than ``limit``
    are flagged). Classes without a defined change (no support) are left out.

    Parameters
    ----------
    classes : DataFrame
        :attr:`AuditResult.classes`: needs ``label``, ``normalized_change`` and
        ``significant``.
    limit : int
        At most this many rows.

    Returns
    -------
    DataFrame
        At most ``limit`` rows of ``classes``, sorted by ``normalized_change`` then ``label``.
    """
    defined = classes[np.isfinite(classes["normalized_change"].to_numpy(dtype=float))]
    ranked = defined.assign(_abs=defined["normalized_change"].abs()).sort_values(
        ["significant", "_abs", "label"], ascending=[False, False, True]
    )
    return ranked.head(limit).drop(columns="_abs").sort_values(["normalized_change", "label"])


def _figure(height: float):  # noqa: ANN202 - matplotlib types only exist after the lazy import
    from matplotlib.figure import Figure

    return Figure(figsize=(_WIDTH_IN, height), layout="constrained")


def _svg(fig, prefix: str, title: str) -> str:  # noqa: ANN001
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML declaration and DOCTYPE: the page is HTML
    svg = svg.replace(_FOREGROUND, "currentColor")
    # The RDF metadata is noise, and a <style> inside inline SVG would style the whole page
    # (the report's stylesheet sets the same line joins for its figures).
    svg = re.sub(r"<metadata>.*?</metadata>|<style[^>]*>.*?</style>", "", svg, flags=re.S)
    # Scale with the page: keep the viewBox, drop the fixed size in points.
    svg = re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"', r"<svg\1", svg, count=1)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{html.escape(title)}" class="figure" ', 1)
    # Ids are unique per figure but not across figures: prefix them.
    svg = re.sub(r'id="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', svg)
    # Comments and indentation are matplotlib's: they only cost bytes.
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    svg = re.sub(r">\s+<", "><", svg)
    return svg.strip()


def _draw(draw, height: float, prefix: str, title: str) -> str:  # noqa: ANN001
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = _figure(height)
        draw(fig)
        return _svg(fig, prefix, title)


def _class_height(n: int) -> float:
    return max(1.6, 0.5 + 0.17 * n)


def class_change_svg(
    classes: pd.DataFrame, *, class_labels: Sequence[str], limit: int = MAX_PLOTTED_CLASSES
) -> str:
    """Normalized recall change per class, with its confidence interval, significant classes coloured.

    Parameters
    ----------
    classes : DataFrame
        :attr:`AuditResult.classes`: needs ``label``, ``normalized_change``, ``ci_low``,
        ``ci_high``, ``significant`` and ``direction``.
    class_labels : sequence of str
        The text to show for each class, indexed by label (names may repeat; the label tells
        them apart).
    limit : int
        With more classes than this, only :func:`most_affected` are drawn.

    Returns
    -------
    str
        An ``<svg>`` element; empty string when no class has a defined change.
    """
    rows = most_affected(classes, limit=limit)
    if rows.empty:
        return ""
    frame = pd.DataFrame(
        {
            "class": [class_labels[label] for label in rows["label"]],
            "change": 100 * rows["normalized_change"].to_numpy(dtype=float),
            "low": 100 * rows["ci_low"].to_numpy(dtype=float),
            "high": 100 * rows["ci_high"].to_numpy(dtype=float),
            "direction": rows["direction"].to_numpy(),
        }
    )

    def draw(fig) -> None:  # noqa: ANN001
        ax = fig.add_subplot()
        y = np.arange(len(frame))
        for direction, color in (("none", COLORS["none"]), ("harmed", COLORS["harmed"]), ("helped", COLORS["helped"])):
            part = frame["direction"].to_numpy() == direction
            if part.any():
                ax.hlines(y[part], frame["low"][part], frame["high"][part], color=color, linewidth=1.5)
        for direction in ("harmed", "helped", "none"):
            part = frame["direction"].to_numpy() == direction
            if part.any():
                ax.scatter(frame["change"][part], y[part], s=28, color=COLORS[direction], zorder=3,
                           label=_DIRECTION_LABELS[direction])  # fmt: skip
        ax.axvline(0, color=_FOREGROUND, linewidth=0.8)
        ax.set_yticks(y, frame["class"])
        ax.set_ylim(len(frame) - 0.3, -0.7)  # most harmed at the top
        ax.set_xlabel("normalized recall change (points), with confidence interval")
        ax.set_ylabel("")
        ax.grid(axis="x")
        ax.legend(loc="lower right", ncols=3, bbox_to_anchor=(1, 1.0))

    return _draw(draw, _class_height(len(frame)) + 0.4, "change", "Normalized recall change per class")


#: From this many classes the scatter plots' points are one embedded image, not an SVG element
#: each: 21,843 circles would make a 3 MB figure, and 1,000 made 124 KB where the image is 16 KB.
RASTER_POINTS = 500
#: Classes named beside their point in the volcano plot: the most harmed, by normalized change.
VOLCANO_LABELS = 5


def class_volcano_svg(
    classes: pd.DataFrame, *, class_labels: Sequence[str], alpha: float, q_column: str = "q_value"
) -> str:
    """Every class as one point: normalized recall change against -log10 of its q-value.

    The forest plot (:func:`class_change_svg`) shows the classes that matter; this one shows all
    of them, so that a thousand or twenty thousand classes still read as one picture: harmed
    classes up and to the left of the dashed significance line, helped ones up and to the right.

    Parameters
    ----------
    classes : DataFrame
        :attr:`AuditResult.classes`: ``label``, ``normalized_change``, ``direction`` and ``q_column``.
    class_labels : sequence of str
        Each class's text, indexed by label; the :data:`VOLCANO_LABELS` most harmed are named.
    alpha : float
        The significance level, drawn as a horizontal line.
    q_column : str, default="q_value"
        The q-values to plot (the relative test's; McNemar audits pass the absolute test's).

    Returns
    -------
    str
        An ``<svg>`` element; empty string when no class has a q-value.
    """
    change = 100 * classes["normalized_change"].to_numpy(dtype=float)
    q = classes[q_column].to_numpy(dtype=float)
    shown = np.isfinite(change) & np.isfinite(q)
    if not shown.any():
        return ""
    with np.errstate(divide="ignore"):
        height = -np.log10(q[shown])
    finite = height[np.isfinite(height)]
    # q = 0 (every model agrees on a shift): drawn at the top, above the largest finite height.
    top = max(float(finite.max()) if finite.size else 1.0, -np.log10(alpha)) * 1.08
    height = np.where(np.isfinite(height), height, top)
    x = change[shown]
    direction = classes["direction"].to_numpy()[shown]
    labels = classes["label"].to_numpy()[shown]
    raster = int(shown.sum()) >= RASTER_POINTS

    def draw(fig) -> None:  # noqa: ANN001
        ax = fig.add_subplot()
        for kind in ("none", "helped", "harmed"):
            part = direction == kind
            if part.any():
                ax.scatter(x[part], height[part], s=9 if raster else 16, color=COLORS[kind], alpha=0.7 if kind == "none" else 0.9,
                           linewidths=0, label=_DIRECTION_LABELS[kind], rasterized=raster, zorder=3 if kind != "none" else 2)  # fmt: skip
        ax.axhline(-np.log10(alpha), color=_FOREGROUND, linewidth=0.8, linestyle="--")
        ax.axvline(0, color=_FOREGROUND, linewidth=0.8)
        harmed = np.flatnonzero(direction == "harmed")
        span_x = float(np.ptp(x)) or 1.0
        span_y = float(np.ptp(height)) or 1.0
        named: list[int] = []
        for i in harmed[np.argsort(x[harmed], kind="stable")]:
            if len(named) == VOLCANO_LABELS:
                break
            # A name only where it cannot cover another: classes tied on one spot get one.
            if any(abs(x[i] - x[j]) < span_x / 8 and abs(height[i] - height[j]) < span_y / 12 for j in named):
                continue
            named.append(i)
            ax.annotate(_tick_name(str(class_labels[int(labels[i])])), (x[i], height[i]), xytext=(4, 2),
                        textcoords="offset points", fontsize=7)  # fmt: skip
        ax.set_xlabel("normalized recall change (points)")
        ax.set_ylabel("\u2212log10 q-value")
        ax.grid(True)
        ax.legend(loc="lower right", ncols=3, bbox_to_anchor=(1, 1.0))

    return _draw(draw, 3.2, "volcano", "Every class: normalized recall change against significance")


def intensification_svg(table: pd.DataFrame, *, baseline_accuracy: float, rate: str = "recall") -> str:
    """Each class (group): its dense deficit against its normalized change.

    Intensification (Good et al. 2022) shows as points rising from lower left to upper right: the
    classes the dense models found hard (left of 0) lost the most (below 0).

    Parameters
    ----------
    table : DataFrame
        Classes (``baseline_recall_mean``) or groups (``rate="accuracy"``), with
        ``normalized_change`` and ``direction``.
    baseline_accuracy : float
        The baseline's mean accuracy, subtracted to give the deficit.
    rate : {"recall", "accuracy"}

    Returns
    -------
    str
        An ``<svg>`` element; empty string with fewer than 3 defined points.
    """
    deficit = 100 * (table[f"baseline_{rate}_mean"].to_numpy(dtype=float) - baseline_accuracy)
    change = 100 * table["normalized_change"].to_numpy(dtype=float)
    shown = np.isfinite(deficit) & np.isfinite(change)
    if shown.sum() < 3:
        return ""
    x, y, direction = deficit[shown], change[shown], table["direction"].to_numpy()[shown]
    raster = int(shown.sum()) >= RASTER_POINTS

    def draw(fig) -> None:  # noqa: ANN001
        ax = fig.add_subplot()
        for kind in ("none", "helped", "harmed"):
            part = direction == kind
            if part.any():
                ax.scatter(x[part], y[part], s=9 if raster else 18, color=COLORS[kind], linewidths=0,
                           alpha=0.7 if kind == "none" else 0.9, label=_DIRECTION_LABELS[kind], rasterized=raster)  # fmt: skip
        ax.axhline(0, color=_FOREGROUND, linewidth=0.8)
        ax.axvline(0, color=_FOREGROUND, linewidth=0.8)
        what = "class recall" if rate == "recall" else "group accuracy"
        ax.set_xlabel(f"dense deficit: baseline {what} minus baseline accuracy (points)")
        ax.set_ylabel("normalized change (points)")
        ax.grid(True)
        ax.legend(loc="lower right", ncols=3, bbox_to_anchor=(1, 1.0))

    return _draw(draw, 3.0, f"intensification-{rate}", "Dense deficit against normalized change")


def pies_per_class_svg(
    classes: pd.DataFrame, *, class_labels: Sequence[str], limit: int = MAX_PLOTTED_CLASSES
) -> str:
    """Bar chart of the number of PIEs per class; with many classes, the ``limit`` with most PIEs.

    Parameters
    ----------
    classes : DataFrame
        :attr:`AuditResult.classes`: needs ``label`` and ``n_pies``.
    class_labels : sequence of str
        Text for each class, indexed by label.
    limit : int

    Returns
    -------
    str
        An ``<svg>`` element; empty string when there is no PIE.
    """
    rows = classes[classes["n_pies"] > 0].sort_values(["n_pies", "label"], ascending=[False, True]).head(limit)
    if rows.empty:
        return ""
    frame = pd.DataFrame(
        {"class": [class_labels[label] for label in rows["label"]], "pies": rows["n_pies"].to_numpy()}
    )

    def draw(fig) -> None:  # noqa: ANN001
        ax = fig.add_subplot()
        ax.barh(np.arange(len(frame)), frame["pies"], height=0.6, color=COLORS["pruned"])
        ax.set_yticks(np.arange(len(frame)), frame["class"])
        ax.set_ylim(len(frame) - 0.5, -0.5)  # most PIEs at the top
        ax.set_xlabel("PIEs (test examples)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("")
        ax.grid(axis="x")

    return _draw(draw, _class_height(len(frame)) - 0.3, "pies", "PIEs per class")


#: Most classes a side of the PIE-flow matrix shows: the ones most PIEs come from or go to.
MAX_FLOW_CLASSES = 15


def pie_flows_svg(flows: pd.DataFrame, *, class_labels: Sequence[str], limit: int = MAX_FLOW_CLASSES) -> str:
    """Where the PIEs went: a matrix of PIE counts, baseline modal class by pruned modal class.

    Parameters
    ----------
    flows : DataFrame
        :attr:`AuditResult.pie_flows`: ``baseline_modal``, ``pruned_modal``, ``count``.
    class_labels : sequence of str
        Text for each class, indexed by label.
    limit : int
        Classes shown on each axis: those with most PIEs on that side (the rest are summed
        into nothing; the caption says how many PIEs the matrix leaves out).

    Returns
    -------
    str
        An ``<svg>`` element; empty string when there is no PIE.
    """
    if flows.empty:
        return ""
    rows = flows.groupby("baseline_modal")["count"].sum().sort_values(ascending=False, kind="stable").head(limit)
    cols = flows.groupby("pruned_modal")["count"].sum().sort_values(ascending=False, kind="stable").head(limit)
    shown = flows[flows["baseline_modal"].isin(rows.index) & flows["pruned_modal"].isin(cols.index)]
    matrix = (
        shown.pivot_table(index="baseline_modal", columns="pruned_modal", values="count", aggfunc="sum", fill_value=0)
        .reindex(index=rows.index, columns=cols.index, fill_value=0)
    )

    def draw(fig) -> None:  # noqa: ANN001
        ax = fig.add_subplot()
        values = matrix.to_numpy()
        image = ax.imshow(values, cmap="Reds", aspect="auto", vmin=0)
        ax.set_xticks(np.arange(len(cols)), [class_labels[c] for c in cols.index], rotation=45, ha="right")
        ax.set_yticks(np.arange(len(rows)), [class_labels[c] for c in rows.index])
        ax.set_xlabel("pruned population's modal class")
        ax.set_ylabel("baseline population's modal class")
        if values.size <= 400:
            threshold = values.max() / 2
            for (i, j), value in np.ndenumerate(values):
                if value:
                    ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                            color="white" if value > threshold else "black")  # fmt: skip
        fig.colorbar(image, ax=ax, label="PIEs", shrink=0.8)

    side = 1.2 + 0.28 * max(len(rows), len(cols))
    return _draw(draw, min(side, 7.0), "flows", "Where the PIEs went: baseline modal class by pruned modal class")


def accuracy_svg(baseline: pd.Series, pruned: pd.Series) -> str:
    """Per-model top-1 accuracy of both populations: a box per population and one dot per model.

    Parameters
    ----------
    baseline, pruned : Series
        Accuracy of each model (fraction), as in :attr:`AuditResult.baseline_accuracy`.

    Returns
    -------
    str
        An ``<svg>`` element.
    """
    palette = {"baseline": COLORS["baseline"], "pruned": COLORS["pruned"]}

    def draw(fig) -> None:  # noqa: ANN001
        ax = fig.add_subplot()
        for position, (name, values) in enumerate((("baseline", baseline), ("pruned", pruned))):
            ax.boxplot(
                100 * values.to_numpy(dtype=float),
                positions=[position],
                orientation="horizontal",
                widths=0.5,
                showfliers=False,
                boxprops={"color": palette[name]},
                whiskerprops={"color": palette[name]},
                capprops={"color": palette[name]},
                medianprops={"color": palette[name]},
            )
            # One dot per model, spread across the box's height by a fixed low-discrepancy
            # sequence: a strip plot whose SVG is the same on every run.
            spread = ((np.arange(len(values)) * 0.6180339887) % 1 - 0.5) * 0.3
            ax.scatter(100 * values.to_numpy(dtype=float), position + spread, s=16, color=palette[name], zorder=3)
        ax.set_yticks([0, 1], ["baseline", "pruned"])
        ax.set_ylim(1.5, -0.5)  # baseline on top
        ax.set_xlabel("top-1 accuracy of each model (%)")
        ax.set_ylabel("")
        ax.grid(axis="x")

    return _draw(draw, 1.8, "accuracy", "Per-model accuracy in both populations")


#: The label of a population whose method is not recorded (no run.json).
UNKNOWN_METHOD = "unknown"
#: A colour and a marker per compression method, so that a method looks the same in every
#: sweep; the marker tells methods apart where colours do not (print, colour blindness).
#: Gradual magnitude pruning, the default, keeps the colour of the pruned population.
METHOD_STYLES = {
    "gmp": (COLORS["pruned"], "o"),
    "random": ("#8e6cbf", "s"),
    "oneshot": ("#2a9d8f", "^"),
    "lottery": ("#c44e9b", "D"),
    "structured": ("#59a14f", "v"),
    "int8": ("#9c755f", "P"),
    "onnx-int8": ("#e15759", "p"),
}
# Methods this module does not know (or models that disagree, "a, b") take these in turn.
_OTHER_STYLES = (("#4e79a7", "<"), ("#17becf", ">"), ("#bcbd22", "h"), ("#ff9da7", "*"))
_UNKNOWN_STYLE = (COLORS["none"], "X")
_MAX_TICK_NAME = 20


def sweep_methods(sweep: pd.DataFrame) -> pd.Series:
    """The method label of each population in a sweep table: its ``method``, else ``"unknown"``.

    Parameters
    ----------
    sweep : DataFrame
        :func:`pie_audit.audit.sweep_table`'s rows; a table without a ``method`` column (written
        before methods were recorded) is all unknown.

    Returns
    -------
    Series of str
        One label per row, on the table's index.
    """
    raw = sweep["method"] if "method" in sweep.columns else pd.Series(None, index=sweep.index, dtype=object)
    return raw.map(lambda m: m if isinstance(m, str) and m else UNKNOWN_METHOD).astype(object)


def _method_order(methods: Sequence[str]) -> list[str]:
    """Known methods in :data:`METHOD_STYLES` order, then others as they come, unknown last."""
    present = dict.fromkeys(methods)
    known = [m for m in METHOD_STYLES if m in present]
    others = [m for m in present if m not in METHOD_STYLES and m != UNKNOWN_METHOD]
    return known + others + ([UNKNOWN_METHOD] if UNKNOWN_METHOD in present else [])


def _method_styles(order: Sequence[str]) -> dict[str, tuple[str, str]]:
    others = iter(_OTHER_STYLES * (1 + len(order) // len(_OTHER_STYLES)))
    return {
        m: METHOD_STYLES.get(m) or (_UNKNOWN_STYLE if m == UNKNOWN_METHOD else next(others)) for m in order
    }


def _dodge(xs: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """``xs`` with the populations that share a value spread a little sideways, in ``rank`` order.

    The spread is 2% of the axis per population, and never more than half the gap to the next
    value, so a nudged marker stays nearer its own x than any other.
    """
    distinct = np.unique(xs)
    counts = np.array([(xs == v).sum() for v in distinct])
    if counts.max(initial=1) <= 1:
        return xs.astype(float)
    step = 0.02 * (float(np.ptp(xs)) or 1.0)
    if len(distinct) > 1:
        step = min(step, 0.5 * float(np.diff(distinct).min()) / (counts.max() - 1))
    dodged = xs.astype(float)
    for value in distinct:
        shared = np.flatnonzero(xs == value)
        shared = shared[np.argsort(rank[shared], kind="stable")]
        dodged[shared] = value + (np.arange(len(shared)) - (len(shared) - 1) / 2) * step
    return dodged


def _trend(xs: np.ndarray, shown: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The line of one method: a vertex per distinct x, through the mean of the populations there.

    None when the method has a single x: a line would be a vertical stroke through populations
    that the axis cannot tell apart, which reads as a trend that is not there.
    """
    distinct = np.unique(xs)
    if len(distinct) < 2:
        return None
    return (
        np.array([shown[xs == v].mean() for v in distinct]),
        np.array([values[xs == v].mean() for v in distinct]),
    )


def _tick_name(name: str) -> str:
    return name if len(name) <= _MAX_TICK_NAME else name[: _MAX_TICK_NAME - 1] + "\u2026"


def sweep_svg(sweep: pd.DataFrame, *, x: str, xlabel: str, side_by_side: bool = False) -> str:
    """Accuracy, PIE fraction and impacted classes of each pruned population against ``x``.

    One series per compression method (:func:`sweep_methods`), each with its colour and marker
    (:data:`METHOD_STYLES`) and a legend naming the methods; a sweep of one method keeps the
    report's colours (pruned orange; harmed red, helped blue). A method's points are joined by a
    line, in order of ``x``, only when it has two or more distinct ``x``: where several of its
    populations share an ``x``, the line passes through their mean. Populations that share an
    ``x`` (of any method) are drawn as separate markers nudged apart sideways, in legend order
    then table order; no line ever joins two points at one ``x``.

    With several methods, harmed classes are drawn with solid lines and filled markers, helped
    classes with dashed lines and hollow markers, in the method's colour.

    For tests and styling, the data artists carry SVG ids (prefixed with ``sweep-{x}-``):
    ``{panel}-points-{k}`` for the markers and ``{panel}-line-{k}`` for the line of the ``k``-th
    method in legend order, ``panel`` being ``accuracy``, ``pies``, ``harmed`` or ``helped``.

    Parameters
    ----------
    sweep : DataFrame
        One row per pruned population with columns ``x``, ``accuracy_mean``,
        ``accuracy_std`` (may be NaN), ``baseline_accuracy_mean``, ``pie_fraction``,
        ``harmed`` and ``helped``; ``method`` (optional, missing values are ``"unknown"``);
        ``name`` when ``side_by_side``. ``x`` must be finite.
    x : str
        The column for the horizontal axis (e.g. ``sparsity_target`` or ``position``).
    xlabel : str
        Its label.
    side_by_side : bool
        Set the populations side by side: ``x`` is taken as a position, each tick is labelled
        with the population's name, and no line joins points (populations that differ only in
        method are not a trend).

    Returns
    -------
    str
        An ``<svg>`` element with three panels side by side.
    """
    from matplotlib.lines import Line2D

    frame = sweep.reset_index(drop=True)
    methods = sweep_methods(frame).to_numpy()
    order = _method_order(methods)
    single = len(order) == 1
    # One method keeps the report's colours, and harmed/helped their red and blue; several
    # take a colour each, and harmed/helped are told apart by line and marker fill instead.
    looks = {order[0]: (COLORS["pruned"], "o")} if single else _method_styles(order)
    rank = np.array([order.index(m) for m in methods])
    at = frame[x].to_numpy(dtype=float)
    shown = at if side_by_side else _dodge(at, rank)
    accuracy = 100 * frame["accuracy_mean"].to_numpy(dtype=float)
    spread = 100 * frame["accuracy_std"].fillna(0).to_numpy(dtype=float)
    pies = 100 * frame["pie_fraction"].to_numpy(dtype=float)
    impacted = {d: frame[d].to_numpy(dtype=float) for d in ("harmed", "helped")}
    # The legend shows a line beside a method only where the figure draws one.
    joined = {m: not side_by_side and len(np.unique(at[methods == m])) > 1 for m in order}
    solid, dashed = ("-", "--") if any(joined.values()) else ("none", "none")
    ncols = min(len(order) + 1, 4)
    legend_rows = 0 if single else -(-(len(order) + 1) // ncols)

    def series(ax, panel, k, values, *, color, marker, err=None, hollow=False, line=solid):  # noqa: ANN001, ANN202
        rows = methods == order[k]
        trend = None if side_by_side else _trend(at[rows], shown[rows], values[rows])
        if trend is not None:
            ax.plot(*trend, color=color, linestyle=line, linewidth=1.5, gid=f"{panel}-line-{k}")
        if err is not None:
            ax.errorbar(
                shown[rows], values[rows], yerr=err[rows], fmt="none", ecolor=color, capsize=3, gid=f"{panel}-spread-{k}"
            )
        ax.plot(
            shown[rows], values[rows], linestyle="none", marker=marker, markersize=5, color=color,
            markerfacecolor="none" if hollow else color, zorder=3, gid=f"{panel}-points-{k}",
        )  # fmt: skip

    def draw(fig) -> None:  # noqa: ANN001
        axes = fig.subplots(1, 3)
        baseline = axes[0].axhline(
            100 * float(frame["baseline_accuracy_mean"].iloc[0]), color=COLORS["baseline"], linestyle="--", linewidth=1
        )
        for k, method in enumerate(order):
            color, marker = looks[method]
            series(axes[0], "accuracy", k, accuracy, err=spread, color=color, marker=marker)
            series(axes[1], "pies", k, pies, color=color, marker=marker)
            if single:
                series(axes[2], "harmed", k, impacted["harmed"], color=COLORS["harmed"], marker=marker)
                series(axes[2], "helped", k, impacted["helped"], color=COLORS["helped"], marker=marker)
            else:
                series(axes[2], "harmed", k, impacted["harmed"], color=color, marker=marker)
                series(axes[2], "helped", k, impacted["helped"], color=color, marker=marker, hollow=True, line=dashed)
        # Labels are given explicitly: an implicit legend would drop a method named "_x".
        handles = [
            Line2D([], [], color=looks[m][0], marker=looks[m][1], linestyle="-" if joined[m] else "none") for m in order
        ]
        if single:
            axes[0].legend([baseline, *handles], ["baseline", *order], loc="lower left")
            directions = [Line2D([], [], color=COLORS[d], marker="o", linestyle=solid) for d in ("harmed", "helped")]
        else:
            fig.legend([baseline, *handles], ["baseline", *order], loc="outside upper center", ncols=ncols)
            directions = [
                Line2D([], [], color=_FOREGROUND, marker="o", linestyle=solid),
                Line2D([], [], color=_FOREGROUND, marker="o", markerfacecolor="none", linestyle=dashed),
            ]
        axes[2].legend(directions, ["harmed", "helped"])
        axes[0].set_ylabel("mean accuracy (%)")
        axes[1].set_ylabel("PIEs (% of test examples)")
        axes[2].set_ylabel("significantly impacted classes")
        axes[2].yaxis.get_major_locator().set_params(integer=True)
        for ax in axes:
            ax.grid(True)
            if side_by_side:
                ax.set_xticks(at, [_tick_name(str(n)) for n in frame["name"]], rotation=45, ha="right",
                              rotation_mode="anchor", fontsize=7)  # fmt: skip
                ax.set_xlim(at.min() - 0.6, at.max() + 0.6)
                ax.grid(False, axis="x")
            else:
                ax.set_xlabel(xlabel)
        if side_by_side:
            fig.supxlabel(xlabel, fontsize=9)  # one axis of names, shared by the three panels

    height = 2.6 + 0.25 * legend_rows + (0.6 if side_by_side else 0)
    return _draw(draw, height, f"sweep-{x}", f"Accuracy, PIE fraction and impacted classes against {xlabel}")


# --- groups ---------------------------------------------------------------------------------------

#: Most groups the forest plot draws: the most affected tested ones (significant first).
MAX_PLOTTED_GROUPS = 40
_MAX_GROUP_LABEL = 48


def _group_label(name: str) -> str:
    return name if len(name) <= _MAX_GROUP_LABEL else name[: _MAX_GROUP_LABEL - 1] + "\u2026"


def plotted_groups(groups: pd.DataFrame, *, limit: int = MAX_PLOTTED_GROUPS) -> pd.DataFrame:
    """The tested groups the forest plot draws, most harmed first.

    Only tested groups with a defined ``normalized_change``: an untested group has means but no
    test, so it would read as a verdict it never got. With more than ``limit``, significant groups
    come first, then the largest absolute changes, as :func:`most_affected` does for classes.

    Parameters
    ----------
    groups : DataFrame
        :attr:`AuditResult.groups`: needs ``group``, ``tested``, ``normalized_change`` and
        ``significant``.
    limit : int

    Returns
    -------
    DataFrame
        At most ``limit`` rows of ``groups``, sorted by ``normalized_change`` (most negative
        first), then ``group``.
    """
    change = groups["normalized_change"].to_numpy(dtype=float)
    tested = groups["tested"].to_numpy(dtype=bool) & np.isfinite(change)
    defined = groups[tested]
    ranked = defined.assign(_abs=defined["normalized_change"].abs(), _sig=defined["significant"].astype(bool))
    ranked = ranked.sort_values(["_sig", "_abs", "group"], ascending=[False, False, True]).head(limit)
    return ranked.drop(columns=["_abs", "_sig"]).sort_values(["normalized_change", "group"])


def group_change_svg(groups: pd.DataFrame, *, limit: int = MAX_PLOTTED_GROUPS) -> str:
    """Forest plot: each tested group's normalized accuracy change with its bootstrap interval.

    Parameters
    ----------
    groups : DataFrame
        :attr:`AuditResult.groups`: needs ``group``, ``tested``, ``normalized_change``,
        ``ci_low``, ``ci_high``, ``significant`` and ``direction``.
    limit : int
        With more tested groups than this, only :func:`plotted_groups` are drawn.

    Returns
    -------
    str
        An ``<svg>`` element; empty string when no tested group has a defined change.
    """
    rows = plotted_groups(groups, limit=limit)
    if rows.empty:
        return ""
    change = 100 * rows["normalized_change"].to_numpy(dtype=float)
    low = 100 * rows["ci_low"].to_numpy(dtype=float)
    high = 100 * rows["ci_high"].to_numpy(dtype=float)
    directions = rows["direction"].to_numpy()
    names = [_group_label(str(n)) for n in rows["group"]]

    def draw(fig) -> None:  # noqa: ANN001
        from matplotlib.lines import Line2D

        ax = fig.add_subplot()
        y = np.arange(len(rows))
        present = []
        for direction in ("harmed", "helped", "none"):
            part = directions == direction
            if not part.any():
                continue
            present.append(direction)
            color = COLORS[direction]
            interval = part & np.isfinite(low) & np.isfinite(high)
            if interval.any():
                ax.hlines(y[interval], low[interval], high[interval], color=color, linewidth=1.5, gid=f"interval-{direction}")
            ax.plot(change[part], y[part], linestyle="none", marker="o", markersize=5, color=color, zorder=3,
                    gid=f"points-{direction}")  # fmt: skip
        ax.axvline(0, color=_FOREGROUND, linewidth=0.8)
        ax.set_yticks(y, names)
        ax.set_ylim(len(rows) - 0.3, -0.7)  # most harmed at the top
        ax.set_xlabel("normalized accuracy change (points), with confidence interval")
        ax.grid(axis="x")
        handles = [Line2D([], [], color=COLORS[d], marker="o", linestyle="none") for d in present]
        ax.legend(handles, ["not significant" if d == "none" else d for d in present], loc="lower right", ncols=3,
                  bbox_to_anchor=(1, 1.0))  # fmt: skip

    return _draw(draw, _class_height(len(rows)) + 0.4, "groups", "Normalized accuracy change per group")


def intersection_frame(groups: pd.DataFrame, attributes: Sequence[str]) -> pd.DataFrame | None:
    """The intersections of two attributes as a matrix of normalized changes.

    Parameters
    ----------
    groups : DataFrame
        :attr:`AuditResult.groups`: needs ``attributes`` (dict per row), ``tested``,
        ``normalized_change`` and ``significant``.
    attributes : sequence of str
        :attr:`AuditResult.group_attributes`; only exactly two give a matrix (with three the
        audit forms only the three-way intersections, which a plane cannot show).

    Returns
    -------
    DataFrame or None
        Rows: the first attribute's values, columns: the second's, in the order the groups list
        them; cells: the intersection's ``normalized_change`` (NaN where the intersection was
        not observed or not tested). ``attrs["significant"]`` holds a boolean frame of the same
        shape and ``attrs["tested"]`` which cells were tested, ``attrs["observed"]`` which exist.
        ``None`` without exactly two attributes or without any intersection group.
    """
    if len(attributes) != 2:
        return None
    first, second = attributes
    rows: list = []
    columns: list = []
    cells = {}
    for r in groups.itertuples(index=False):
        values = dict(r.attributes)
        if len(values) == 1:
            ((attribute, value),) = values.items()
            target = rows if attribute == first else columns if attribute == second else None
            if target is not None and value not in target:
                target.append(value)
        elif set(values) == {first, second}:
            cells[(values[first], values[second])] = r
    if not cells:
        return None
    for a, b in cells:
        if a not in rows:
            rows.append(a)
        if b not in columns:
            columns.append(b)
    shape = (len(rows), len(columns))
    change = np.full(shape, np.nan)
    significant = np.zeros(shape, dtype=bool)
    tested = np.zeros(shape, dtype=bool)
    observed = np.zeros(shape, dtype=bool)
    for (a, b), r in cells.items():
        i, j = rows.index(a), columns.index(b)
        observed[i, j] = True
        tested[i, j] = bool(r.tested)
        if r.tested:
            change[i, j] = float(r.normalized_change)
            significant[i, j] = bool(r.significant)
    frame = pd.DataFrame(change, index=pd.Index(rows, name=first), columns=pd.Index(columns, name=second))
    frame.attrs.update(
        significant=pd.DataFrame(significant, index=frame.index, columns=frame.columns),
        tested=pd.DataFrame(tested, index=frame.index, columns=frame.columns),
        observed=pd.DataFrame(observed, index=frame.index, columns=frame.columns),
    )
    return frame


def intersection_svg(matrix: pd.DataFrame) -> str:
    """Heatmap of :func:`intersection_frame`: normalized change per combination of two attributes.

    Red for losses, blue for gains, on a scale symmetric around zero; each cell names its value
    in points, with ``*`` when significant, "not tested" below the support threshold, and nothing
    where the combination was never observed.

    Parameters
    ----------
    matrix : DataFrame
        As :func:`intersection_frame` returns it.

    Returns
    -------
    str
        An ``<svg>`` element.
    """
    values = 100 * matrix.to_numpy(dtype=float)
    significant = matrix.attrs["significant"].to_numpy()
    tested = matrix.attrs["tested"].to_numpy()
    observed = matrix.attrs["observed"].to_numpy()
    finite = np.isfinite(values)
    bound = float(np.abs(values[finite]).max()) if finite.any() else 1.0
    bound = bound or 1.0

    def draw(fig) -> None:  # noqa: ANN001
        import matplotlib

        ax = fig.add_subplot()
        cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="none")
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-bound, vmax=bound, aspect="auto")
        ax.set_xticks(np.arange(values.shape[1]), [_tick_name(str(v)) for v in matrix.columns], rotation=30, ha="right",
                      rotation_mode="anchor")  # fmt: skip
        ax.set_yticks(np.arange(values.shape[0]), [_tick_name(str(v)) for v in matrix.index])
        ax.set_xlabel(str(matrix.columns.name))
        ax.set_ylabel(str(matrix.index.name))
        ax.spines[:].set_visible(False)
        if values.size <= 400:
            for (i, j), value in np.ndenumerate(values):
                if np.isfinite(value):
                    text, color = f"{value:+.1f}" + ("*" if significant[i, j] else ""), (
                        "white" if abs(value) > 0.6 * bound else "black"
                    )
                elif observed[i, j] and not tested[i, j]:
                    text, color = "not tested", _FOREGROUND
                else:
                    continue
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
        fig.colorbar(image, ax=ax, label="points", shrink=0.8)

    height = min(1.4 + 0.45 * values.shape[0], 7.0)
    return _draw(draw, height, "intersection", "Normalized accuracy change per combination of two attributes")
