"""Figures: which classes are drawn, and SVG fit for inline embedding in a light/dark page."""

import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from pie_audit.report._plots import (
    COLORS,
    METHOD_STYLES,
    class_change_svg,
    group_change_svg,
    intersection_frame,
    intersection_svg,
    plotted_groups,
    most_affected,
    pies_per_class_svg,
    sweep_methods,
    sweep_svg,
)


def classes(changes, significant):
    n = len(changes)
    changes = np.asarray(changes, dtype=float)
    return pd.DataFrame(
        {
            "label": np.arange(n),
            "normalized_change": changes,
            "ci_low": changes - 0.01,
            "ci_high": changes + 0.01,
            "significant": significant,
            "direction": np.where(significant, np.where(changes < 0, "harmed", "helped"), "none"),
            "n_pies": np.arange(n),
        }
    )


def test_most_affected_keeps_significant_classes_first():
    frame = classes([-0.01, 0.5, -0.4, 0.02, np.nan], [True, False, False, True, False])
    # Both significant classes, then the largest other change; drawn in order of change.
    assert most_affected(frame, limit=3)["label"].tolist() == [0, 3, 1]
    assert most_affected(frame, limit=10)["label"].tolist() == [2, 0, 3, 1]  # NaN left out


def test_class_change_svg_is_inline_ready():
    frame = classes([-0.2, 0.1, 0.0], [True, True, False])
    svg = class_change_svg(frame, class_labels=["<b>", "$5 bill", "c"], limit=40)
    assert svg.startswith('<svg role="img" aria-label="Normalized recall change per class" class="figure"')
    assert 'width="' not in svg.split(">", 1)[0]  # scales with the page
    assert "&lt;b&gt;" in svg and "$5 bill" in svg  # text, not markup or mathtext
    assert "currentColor" in svg and "#0a0b0c" not in svg
    assert 'id="change-' in svg and "<style" not in svg and "<metadata" not in svg
    assert "#d1495b" in svg and "#2e86de" in svg  # harmed and helped colours


def test_empty_inputs_give_no_figure():
    assert class_change_svg(classes([np.nan], [False]), class_labels=["a"]) == ""
    assert pies_per_class_svg(classes([0.0], [False]), class_labels=["a"]) == ""


# --- the sweep figure ---------------------------------------------------------------------------

SVG_NS = "{http://www.w3.org/2000/svg}"
PANELS = ("accuracy", "pies", "harmed", "helped")


def sweep_rows(*populations):
    """A sweep table (the columns of ``sweep_table``) from (name, method, target, accuracy) rows."""
    n = len(populations)
    names, methods, targets, accuracy = zip(*populations, strict=True)
    return pd.DataFrame(
        {
            "name": names,
            "position": np.arange(1, n + 1),
            "method": methods,
            "sparsity_target": np.asarray(targets, dtype=float),
            "sparsity_achieved": np.asarray(targets, dtype=float),
            "n_models": 4,
            "accuracy_mean": accuracy,
            "accuracy_std": np.full(n, 0.01),
            "baseline_accuracy_mean": 0.9,
            "pie_count": np.arange(n),
            "pie_fraction": np.arange(n) / 400,
            "harmed": np.arange(n) % 3,
            "helped": np.arange(n) % 2,
            "gate_passed": True,
        }
    )


class Figure:
    """The parts of a sweep figure its reader tells apart: each method's markers and line per panel."""

    def __init__(self, svg, x):
        self.root = ET.fromstring(svg)
        prefix = f"sweep-{x}-"
        self.groups = {
            g.get("id").removeprefix(prefix): g for g in self.root.iter(f"{SVG_NS}g") if g.get("id", "").startswith(prefix)
        }

    def markers(self, panel, k):
        """(x, y) of each marker of the ``k``-th method, in SVG coordinates (y grows downwards)."""
        uses = self.groups[f"{panel}-points-{k}"].iter(f"{SVG_NS}use")
        return [(float(u.get("x")), float(u.get("y"))) for u in uses]

    def lines(self, panel):
        """{k: vertices} of every joined line in ``panel``."""
        found = {}
        for gid, group in self.groups.items():
            if gid.startswith(f"{panel}-line-"):
                (path,) = group.iter(f"{SVG_NS}path")
                points = re.findall(r"[ML] ([-\d.]+) ([-\d.]+)", path.get("d"))
                found[int(gid.rsplit("-", 1)[1])] = [(float(x), float(y)) for x, y in points]
        return found

    def n_series(self, panel):
        return sum(gid.startswith(f"{panel}-points-") for gid in self.groups)

    def legends(self):
        """The entries of each legend, in order."""
        return [
            [t.text for t in group.iter(f"{SVG_NS}text")]
            for gid, group in self.groups.items()
            if re.fullmatch(r"legend_\d+", gid)
        ]

    def ticks(self):
        """The text of every tick label, all panels."""
        labels = (g for gid, g in self.groups.items() if re.fullmatch(r"text_\d+", gid))
        return [t.text for g in labels for t in g.iter(f"{SVG_NS}text")]


def sweep_figure(sweep, *, x="sparsity_target", **kwargs):
    return Figure(sweep_svg(sweep, x=x, xlabel="target sparsity", **kwargs), x)


def test_sweep_draws_one_series_per_method_and_joins_only_a_trend():
    # Methods side by side at 90%, int8 at 0, and gmp also at 50%: only gmp has a trend.
    sweep = sweep_rows(
        ("gmp-90", "gmp", 0.9, 0.85), ("random-90", "random", 0.9, 0.70), ("oneshot-90", "oneshot", 0.9, 0.80),
        ("lottery-90", "lottery", 0.9, 0.86), ("structured-90", "structured", 0.9, 0.75), ("int8", "int8", 0.0, 0.89),
        ("gmp-50", "gmp", 0.5, 0.88), ("old", None, 0.9, 0.84),
    )  # fmt: skip
    figure = sweep_figure(sweep)
    order = ["gmp", "random", "oneshot", "lottery", "structured", "int8", "unknown"]
    assert ["baseline", *order] in figure.legends()
    assert ["harmed", "helped"] in figure.legends()
    for panel in PANELS:
        assert figure.n_series(panel) == len(order)
        assert [len(figure.markers(panel, k)) for k in range(len(order))] == [2, 1, 1, 1, 1, 1, 1]
        assert list(figure.lines(panel)) == [0]  # gmp's line, through its 50% and 90% points
        assert figure.lines(panel)[0] == sorted(figure.markers(panel, 0))
    # Every method takes its own colour: int8 its brown, unknown grey.
    assert METHOD_STYLES["int8"][0] in ET.tostring(figure.groups["accuracy-points-5"], encoding="unicode")
    assert "#8c8c8c" in ET.tostring(figure.groups["accuracy-points-6"], encoding="unicode")
    # Six populations at 90%: six markers, nudged apart, none hiding another.
    at_90 = [xy for k in range(len(order)) for xy in figure.markers("accuracy", k)]
    assert len({round(x, 3) for x, _ in at_90}) == len(sweep)


def test_no_line_joins_two_points_at_one_x():
    sweep = sweep_rows(
        ("gmp-50", "gmp", 0.5, 0.88), ("gmp-90-a", "gmp", 0.9, 0.84), ("gmp-90-b", "gmp", 0.9, 0.80),
        ("random-90-a", "random", 0.9, 0.70), ("random-90-b", "random", 0.9, 0.72),
    )  # fmt: skip
    figure = sweep_figure(sweep)
    for panel in PANELS:
        lines = figure.lines(panel)
        assert list(lines) == [0]  # random's two populations share 90%: markers only
        xs = [x for x, _ in lines[0]]
        assert len(xs) == 2 and xs[0] < xs[1]
        # The line passes through the mean of gmp's two populations at 90%.
        (_, a), (_, b) = sorted(figure.markers(panel, 0))[1:]
        assert lines[0][1][1] == pytest.approx((a + b) / 2, abs=1e-3)
    # Each population is its own marker: four at 90%, at four distinct x, gmp's left of random's.
    gmp, random = figure.markers("accuracy", 0)[1:], figure.markers("accuracy", 1)
    assert len({round(x, 3) for x, _ in gmp + random}) == 4
    assert max(x for x, _ in gmp) < min(x for x, _ in random)


def test_a_single_method_sweep_keeps_one_joined_line_and_the_report_colours():
    sweep = sweep_rows(("p98", "gmp", 0.98, 0.70), ("p50", "gmp", 0.5, 0.89), ("p90", "gmp", 0.9, 0.85))
    svg = sweep_svg(sweep, x="sparsity_target", xlabel="target sparsity")
    figure = Figure(svg, "sparsity_target")
    line = figure.lines("accuracy")[0]
    assert len(line) == 3 and line == sorted(line)  # joined in order of sparsity, not as given
    assert line == sorted(figure.markers("accuracy", 0))
    assert figure.legends() == [["baseline", "gmp"], ["harmed", "helped"]]  # no figure-wide legend
    style = {panel: ET.tostring(figure.groups[f"{panel}-line-0"], encoding="unicode") for panel in PANELS}
    assert COLORS["pruned"] in style["accuracy"] and COLORS["pruned"] in style["pies"]
    assert COLORS["harmed"] in style["harmed"] and COLORS["helped"] in style["helped"]
    # A table from before methods (no method column) is one series too, named unknown.
    legacy = sweep_figure(sweep.drop(columns="method"))
    assert legacy.legends()[0] == ["baseline", "unknown"] and len(legacy.lines("accuracy")[0]) == 3


def test_side_by_side_names_each_population_and_joins_nothing():
    long = "structured-channels-at-ninety-percent"
    sweep = sweep_rows(("gmp-90", "gmp", 0.9, 0.85), (long, "structured", 0.9, 0.75), ("int8", "int8", 0.0, 0.89))
    figure = sweep_figure(sweep, x="position", side_by_side=True)
    assert all(not figure.lines(panel) for panel in PANELS)
    assert figure.ticks().count("gmp-90") == 3  # one axis of names under each panel
    assert figure.ticks().count(long[:19] + "\u2026") == 3 and "int8" in figure.ticks()
    assert [len(figure.markers("accuracy", k)) for k in range(3)] == [1, 1, 1]


def test_sweep_methods_labels_missing_methods_unknown():
    rows = [("a", "gmp"), ("b", None), ("c", ""), ("d", "gmp, random")]
    sweep = sweep_rows(*[(name, method, 0.5, 0.9) for name, method in rows])
    sweep.loc[1, "method"] = np.nan
    assert sweep_methods(sweep).tolist() == ["gmp", "unknown", "unknown", "gmp, random"]


# --- groups -------------------------------------------------------------------------------------


def groups(rows):
    """A groups table (the columns the figures read) from (attributes, tested, change, significant) rows."""
    names = [" & ".join(f"{a}={v}" for a, v in attributes.items()) for attributes, *_ in rows]
    changes = np.array([change for _, _, change, _ in rows], dtype=float)
    significant = [sig for *_, sig in rows]
    return pd.DataFrame(
        {
            "group": names,
            "attributes": [attributes for attributes, *_ in rows],
            "tested": [tested for _, tested, _, _ in rows],
            "normalized_change": changes,
            "ci_low": changes - 0.01,
            "ci_high": changes + 0.01,
            "significant": significant,
            "direction": np.where(significant, np.where(changes < 0, "harmed", "helped"), "none"),
        }
    )


TWO_BY_TWO = [
    ({"sex": "F"}, True, -0.05, True),
    ({"sex": "M"}, True, 0.01, False),
    ({"age": "old"}, True, -0.02, False),
    ({"age": "<b>young</b>"}, True, 0.0, False),
    ({"sex": "F", "age": "old"}, True, -0.12, True),
    ({"sex": "F", "age": "<b>young</b>"}, True, 0.03, True),
    ({"sex": "M", "age": "old"}, False, -0.3, False),
]


def test_plotted_groups_leave_out_untested_groups_and_keep_significant_ones_first():
    frame = groups(TWO_BY_TWO)
    assert plotted_groups(frame)["group"].tolist() == [
        "sex=F & age=old", "sex=F", "age=old", "age=<b>young</b>", "sex=M", "sex=F & age=<b>young</b>",
    ]  # fmt: skip
    # Three at most: the three significant ones, however small the change.
    assert plotted_groups(frame, limit=3)["group"].tolist() == ["sex=F & age=old", "sex=F", "sex=F & age=<b>young</b>"]


def test_group_change_svg_is_inline_ready_and_escapes_names():
    svg = group_change_svg(groups(TWO_BY_TWO))
    assert svg.startswith('<svg role="img" aria-label="Normalized accuracy change per group" class="figure"')
    assert "&lt;b&gt;young&lt;/b&gt;" in svg and "<b>" not in svg
    assert "sex=M &amp; age=old" not in svg  # not tested: listed, not drawn
    assert COLORS["harmed"] in svg and COLORS["helped"] in svg and 'id="groups-' in svg
    assert group_change_svg(groups([({"sex": "F"}, False, 0.0, False)])) == ""


def test_intersection_frame_needs_exactly_two_attributes():
    frame = groups(TWO_BY_TWO)
    matrix = intersection_frame(frame, ["sex", "age"])
    assert matrix.index.tolist() == ["F", "M"] and matrix.columns.tolist() == ["old", "<b>young</b>"]
    assert (matrix.index.name, matrix.columns.name) == ("sex", "age")
    assert matrix.loc["F", "old"] == -0.12 and matrix.loc["F", "<b>young</b>"] == 0.03
    # Not tested and not observed: no value; the attrs tell them apart.
    assert np.isnan(matrix.loc["M", "old"]) and np.isnan(matrix.loc["M", "<b>young</b>"])
    assert matrix.attrs["observed"].loc["M", "old"] and not matrix.attrs["tested"].loc["M", "old"]
    assert not matrix.attrs["observed"].loc["M", "<b>young</b>"]
    assert matrix.attrs["significant"].loc["F", "old"] and not matrix.attrs["significant"].loc["M", "old"]
    assert intersection_frame(frame, ["sex"]) is None
    assert intersection_frame(frame, ["sex", "age", "site"]) is None
    assert intersection_frame(groups(TWO_BY_TWO[:4]), ["sex", "age"]) is None  # no intersection


def test_intersection_svg_labels_cells():
    svg = intersection_svg(intersection_frame(groups(TWO_BY_TWO), ["sex", "age"]))
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    assert {"-12.0*", "+3.0*", "not tested", "F", "M", "old", "<b>young</b>", "sex", "age"} <= set(texts)
    assert "currentColor" in svg and "<style" not in svg


def _volcano_table(n, seed=0):
    rng = np.random.default_rng(seed)
    change = rng.normal(0, 0.03, n)
    q = np.clip(rng.random(n) ** 3, 0, 1)
    q[:3] = [0.0, 1e-8, np.nan]  # q = 0 (every model agrees), tiny, untested
    direction = np.where((q <= 0.05) & (change < 0), "harmed", np.where((q <= 0.05) & (change > 0), "helped", "none"))
    return pd.DataFrame({"label": np.arange(n), "normalized_change": change, "q_value": q, "direction": direction})


def test_volcano_draws_every_tested_class_and_rasterizes_many():
    from pie_audit.report._plots import RASTER_POINTS, class_volcano_svg

    few = _volcano_table(300)
    svg = class_volcano_svg(few, class_labels=[f"c{i}" for i in range(300)], alpha=0.05)
    ET.fromstring(svg)
    assert "<image" not in svg
    # One marker per class with a q-value (matplotlib draws each scatter point as a <use>).
    groups = re.findall(r'<g id="volcano-PathCollection_\d+">(.*?)</g>', svg, flags=re.S)
    assert sum(g.count("<use ") for g in groups) == 299 + 3  # and one legend marker per kind
    many = _volcano_table(RASTER_POINTS + 10)
    svg = class_volcano_svg(many, class_labels=[str(i) for i in range(len(many))], alpha=0.05)
    assert "<image" in svg and len(svg) < 300_000
    assert class_volcano_svg(few.assign(q_value=np.nan), class_labels=[""] * 300, alpha=0.05) == ""
