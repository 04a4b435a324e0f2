"""The sweep page's trade-off figure: what each compression harms against what it saves.

Harm (the PIE fraction, and the largest significant class drop) against cost (CPU latency at
batch 1, and the model file's size), one point per pruned population, one series per method in
the sweep figure's colours and markers, the baseline a reference point at no harm. Drawn like
every figure of the report (:mod:`._plots`: inline SVG, text in the page's colour, ids
prefixed); it only draws the columns :func:`pie_audit.audit.sweep_table` computed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._plots import COLORS, _draw, _method_order, _method_styles, _tick_name, sweep_methods

__all__ = ["TRADEOFF_PREFIX", "TRADEOFF_HARMS", "TRADEOFF_COSTS", "MAX_NAMED_POINTS", "tradeoff_costs", "tradeoff_svg"]

#: The SVG id prefix of the figure's data artists.
TRADEOFF_PREFIX = "tradeoff"
#: (panel key, sweep column, axis label) of each harm, a row of panels; plotted in percent.
TRADEOFF_HARMS = (
    ("pies", "pie_fraction", "PIEs (% of test examples)"),
    ("drop", "max_class_drop", "largest class drop (points)"),
)
#: (panel key, sweep column, the baseline's column, axis label) of each cost, a column of panels.
TRADEOFF_COSTS = (
    ("latency", "latency_batch_1_ms", "baseline_latency_batch_1_ms", "CPU latency, batch of 1 (ms)"),
    ("size", "file_bytes", "baseline_file_bytes", "model file size"),
)
#: With more populations than this, points are not named (the names would cover each other).
MAX_NAMED_POINTS = 12
_BASELINE_MARKER = "*"
# A cost axis spanning this factor or more is drawn on a log scale, so that the small models
# are not all crowded at its left end.
_LOG_SPAN = 10.0


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A column as floats, all NaN when the table has none (tables from before costs)."""
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def _size_unit(values: np.ndarray) -> tuple[float, str]:
    """Bytes shown in kB, or in MB once a model reaches one."""
    return (1e6, "MB") if float(values.max()) >= 1e6 else (1e3, "kB")


def tradeoff_costs(sweep: pd.DataFrame) -> list[str]:
    """The cost panels a sweep table can draw: those of :data:`TRADEOFF_COSTS` some population records."""
    return [key for key, column, _, _ in TRADEOFF_COSTS if np.isfinite(_column(sweep, column)).any()]


def tradeoff_svg(sweep: pd.DataFrame) -> str:
    """Harm against cost of each pruned population: PIE fraction and largest class drop, against
    latency and file size.

    A grid of panels: a row per harm (:data:`TRADEOFF_HARMS`: the PIE fraction, and
    ``max_class_drop``, 0 where no class is significantly harmed), a column per cost that some
    population records (:data:`TRADEOFF_COSTS`: median CPU latency of a batch of 1, median
    file size). One point per population that records the cost, one series per method
    (:func:`~._plots.sweep_methods`) in the colour and marker the sweep figure gives it (one
    method: the pruned population's orange), and the baseline a reference point (a blue star)
    at no harm and its own cost. Points are named when there are at most
    :data:`MAX_NAMED_POINTS` populations. A cost axis spanning 10x or more is logarithmic.

    For tests and styling, the data artists carry SVG ids (prefixed with ``tradeoff-``):
    ``{harm}-{cost}-points-{k}`` for the ``k``-th method in legend order and
    ``{harm}-{cost}-baseline``, ``harm`` being ``pies`` or ``drop`` and ``cost`` ``latency``
    or ``size``.

    Parameters
    ----------
    sweep : DataFrame
        :func:`pie_audit.audit.sweep_table`'s rows: ``name``, ``pie_fraction``,
        ``max_class_drop``, ``latency_batch_1_ms``, ``file_bytes`` and the baseline's
        ``baseline_latency_batch_1_ms``, ``baseline_file_bytes`` (NaN where not recorded);
        ``method`` optional.

    Returns
    -------
    str
        An ``<svg>`` element; empty when no population records a latency or a file size.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    frame = sweep.reset_index(drop=True)
    costs = [c for c in TRADEOFF_COSTS if c[0] in tradeoff_costs(frame)]
    if not costs:
        return ""
    methods = sweep_methods(frame).to_numpy()
    order = _method_order(methods)
    looks = {order[0]: (COLORS["pruned"], "o")} if len(order) == 1 else _method_styles(order)
    named = len(frame) <= MAX_NAMED_POINTS
    names = [_tick_name(str(n)) for n in frame["name"]] if "name" in frame.columns else [""] * len(frame)
    harms = {key: 100 * _column(frame, column) for key, column, _ in TRADEOFF_HARMS}

    def draw(fig) -> None:  # noqa: ANN001
        axes = fig.subplots(len(TRADEOFF_HARMS), len(costs), squeeze=False)
        for j, (cost, column, baseline_column, xlabel) in enumerate(costs):
            xs = _column(frame, column)
            base = _column(frame, baseline_column)
            base_x = float(base[np.isfinite(base)][0]) if np.isfinite(base).any() else None
            everything = np.append(xs[np.isfinite(xs)], [] if base_x is None else [base_x])
            scale, unit = _size_unit(everything) if cost == "size" else (1.0, "")
            shown, everything = xs / scale, everything / scale
            logarithmic = everything.min() > 0 and everything.max() / everything.min() >= _LOG_SPAN
            for i, (harm, _, ylabel) in enumerate(TRADEOFF_HARMS):
                ax = axes[i][j]
                ys = harms[harm]
                if base_x is not None:
                    ax.plot([base_x / scale], [0.0], linestyle="none", marker=_BASELINE_MARKER, markersize=10,
                            color=COLORS["baseline"], zorder=4, gid=f"{harm}-{cost}-baseline")  # fmt: skip
                for k, method in enumerate(order):
                    rows = (methods == method) & np.isfinite(shown) & np.isfinite(ys)
                    if not rows.any():
                        continue
                    color, marker = looks[method]
                    ax.plot(shown[rows], ys[rows], linestyle="none", marker=marker, markersize=6, color=color,
                            zorder=3, gid=f"{harm}-{cost}-points-{k}")  # fmt: skip
                    if named:
                        for x, y, name in zip(shown[rows], ys[rows], np.asarray(names, dtype=object)[rows]):
                            ax.annotate(name, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=6)
                if logarithmic:
                    ax.set_xscale("log")
                    # Ticks at 1, 2 and 5 of each decade, written as plain numbers: the default
                    # labels are mathtext ("10^{-1}"), which the report's text-only figures show raw.
                    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                    ax.xaxis.set_minor_formatter(NullFormatter())
                ax.margins(0.12)  # room for the markers and names at the edges
                ax.grid(True)
                ax.set_ylabel(ylabel, fontsize=8)
                if i == len(TRADEOFF_HARMS) - 1:
                    ax.set_xlabel(f"{xlabel} ({unit})" if unit else xlabel)
        # Labels are given explicitly: an implicit legend would drop a method named "_x".
        handles = [Line2D([], [], linestyle="none", marker=_BASELINE_MARKER, markersize=10, color=COLORS["baseline"])]
        handles += [Line2D([], [], linestyle="none", marker=looks[m][1], color=looks[m][0]) for m in order]
        fig.legend(handles, ["baseline", *order], loc="outside upper center", ncols=min(len(order) + 1, 4))

    legend_rows = -(-(len(order) + 1) // min(len(order) + 1, 4))
    words = " and ".join("latency" if c[0] == "latency" else "file size" for c in costs)
    title = f"PIE fraction and largest significant class drop against {words}"
    return _draw(draw, 4.4 + 0.25 * legend_rows, TRADEOFF_PREFIX, title)
