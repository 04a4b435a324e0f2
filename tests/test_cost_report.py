"""Cost beside harm: population medians of ``run.json`` ``cost`` (``interchange/_provenance.py``), the
report's populations table, the sweep table's cost columns and its trade-off figure (``report/_tradeoff.py``)."""

import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from html_page import parse
from synthetic import planted_predictions, write_population

import pie_audit
from pie_audit.audit import sweep_table
from pie_audit.audit._sweep import COST_COLUMNS
from pie_audit.interchange._provenance import CostSummary, cost_summary, population_provenance
from pie_audit.report._plots import COLORS, METHOD_STYLES
from pie_audit.report._render import render_report, render_sweep
from pie_audit.report._tradeoff import TRADEOFF_COSTS, TRADEOFF_HARMS, tradeoff_svg

WHEN = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
EVIL = "<script>alert(1)</script>"
SVG = "{http://www.w3.org/2000/svg}"
TRADEOFF = "PIE fraction and largest significant class drop against "


def cost(*, nonzero, stored=53_002, flops=694_784, file_bytes=215_000, batch_1=0.08, batch_64=1.4, threads=2):
    return {
        "parameters": {"stored": stored, "nonzero": nonzero},
        "flops": flops,
        "note": None,
        "file_bytes": file_bytes,
        "latency_ms": {"batch_1": batch_1, "batch_64": batch_64},
        "timing": {"device": "cpu", "threads": threads, "runs": 5, "warmup": 2, "statistic": "median"},
    }


def add_costs(population, costs, **fields):
    """Give each model's run.json (in name order) its cost, and ``fields``."""
    runs = sorted(population.glob("*/run.json"))
    assert len(runs) == len(costs)
    for run, value in zip(runs, costs, strict=True):
        record = json.loads(run.read_text())
        run.write_text(json.dumps({**record, **fields, "cost": value}))


# --- the medians -----------------------------------------------------------------------------------


def test_cost_summary_takes_each_fields_median_over_the_records_that_give_it():
    runs = [
        {"cost": cost(nonzero=10, file_bytes=100, batch_1=0.1, batch_64=2.0)},
        {"cost": cost(nonzero=30, file_bytes=300, batch_1=0.3, batch_64=4.0, threads=1)},
        # An int8 model: torch counts no FLOPs; and one model timed nowhere.
        {"cost": {**cost(nonzero=50, file_bytes=200, batch_1=0.2, batch_64=3.0), "flops": None}},
        {"cost": {"parameters": None, "flops": None, "file_bytes": 400, "latency_ms": None, "timing": None}},
        {"seed": 4},  # written before costs
        None,  # no run.json
    ]
    summary = population_provenance(runs).cost
    assert summary == CostSummary(
        n_records=4, parameters_stored=53_002.0, parameters_nonzero=30.0, flops=694_784.0,
        file_bytes=250.0, latency_batch_1_ms=0.2, latency_batch_64_ms=3.0, threads=(2, 1),
    )  # fmt: skip
    assert summary.recorded
    nothing = cost_summary([{"seed": 0}, {"cost": "broken"}, {"cost": {"flops": float("nan"), "file_bytes": True}}])
    assert nothing == CostSummary(n_records=1) and not nothing.recorded


# --- the report's populations table ----------------------------------------------------------------


@pytest.fixture
def costed(harmed_populations):
    """The harmed populations, the baseline's models dense small-cnns, the pruned ones 90% zeros."""
    base, pruned = harmed_populations
    for population in (base, pruned):  # the fixture writes no run.json: one per model
        for model in sorted(population.iterdir()):
            (model / "run.json").write_text(json.dumps({"seed": int(model.name[-3:])}))
    add_costs(base, [cost(nonzero=53_002, batch_1=0.08 + 0.01 * m) for m in range(8)])
    add_costs(pruned, [cost(nonzero=6_000 + m, file_bytes=215_400, batch_1=0.05, batch_64=1.25) for m in range(8)])
    return base, pruned


def populations_table(result):
    return parse(render_report(result, created_at=WHEN)).table("Populations")


def test_the_populations_table_shows_each_populations_median_cost(costed):
    table = populations_table(pie_audit.compare(*costed, n_bootstrap=50))
    cost_headers = ["parameters (nonzero of stored)", "FLOPs / example", "file size", "latency, batch 1", "latency, batch 64"]
    assert table.headers[-5:] == cost_headers
    base, pruned = table.records
    # Medians over 8 models: nonzero 6,003.5 (6,003 and 6,004); latency 0.115 (0.11 and 0.12).
    assert [base[h].text for h in cost_headers] == ["53,002 of 53,002", "694.8 k", "215 kB", "0.115 ms", "1.4 ms"]
    assert [pruned[h].text for h in cost_headers] == ["6,003.5 of 53,002", "694.8 k", "215.4 kB", "0.05 ms", "1.25 ms"]
    # Beside the accuracy of the same population.
    assert base["mean accuracy"].text.endswith("%") and table.headers.index("mean accuracy") < table.headers.index("file size")
    note = parse(render_report(pie_audit.compare(*costed, n_bootstrap=50), created_at=WHEN)).text
    assert "Cost: the median over each population's models" in note and "(threads: baseline 2, pruned 2)" in note


def test_cost_columns_are_left_out_when_nothing_records_them(harmed_populations):
    plain = parse(render_report(pie_audit.compare(*harmed_populations, n_bootstrap=50), created_at=WHEN))
    assert plain.table("Populations").headers[-1] == "achieved sparsity"
    assert "Cost: the median" not in plain.text


def test_a_population_recording_some_costs_shows_those(costed):
    # A population that records only some fields shows those, dashes where the other lacks them.
    base, pruned = costed
    for run in pruned.glob("*/run.json"):
        record = json.loads(run.read_text())
        run.write_text(json.dumps({**record, "cost": {"file_bytes": 60_000, "latency_ms": None}}))
    table = populations_table(pie_audit.compare(base, pruned, n_bootstrap=50))
    assert "file size" in table.headers and "latency, batch 64" in table.headers
    _, pruned_row = table.records
    assert pruned_row["file size"].text == "60 kB" and pruned_row["latency, batch 1"].text == "\u2014"
    assert pruned_row["parameters (nonzero of stored)"].text == "\u2014"


# --- the sweep ---------------------------------------------------------------------------------------


@pytest.fixture
def sweep_populations(tmp_path, audit_labels):
    """A dense baseline; gmp at 50% and 90% (class 2 harmed at 90%); int8 beside them; all costed."""
    def make(name, *, seed, accuracy, method, target, costs, harm=None):
        predictions = planted_predictions(4, audit_labels, accuracy=accuracy, n_classes=5, seed=seed, class_accuracy=harm)
        path = write_population(tmp_path / name, predictions, audit_labels, run={"method": method})
        add_costs(path, costs, sparsity={"target": target, "achieved": target})
        return path

    base = make("dense", seed=1, accuracy=0.9, method="dense", target=0.0,
                costs=[cost(nonzero=53_002, batch_1=0.09)] * 4)  # fmt: skip
    gmp50 = make("gmp-50", seed=1, accuracy=0.9, method="gmp", target=0.5,
                 costs=[cost(nonzero=26_500, batch_1=0.085)] * 4)  # fmt: skip
    gmp90 = make("gmp-90", seed=3, accuracy=0.87, method="gmp", target=0.9, harm={2: 0.5},
                 costs=[cost(nonzero=5_300 + m, batch_1=0.08) for m in range(4)])  # fmt: skip
    int8 = make("int8", seed=4, accuracy=0.89, method="int8", target=0.0,
                costs=[{**cost(nonzero=53_000, stored=53_020, file_bytes=62_000, batch_1=0.05), "flops": None}] * 4)  # fmt: skip
    return base, [gmp50, gmp90, int8]


def test_the_sweep_table_holds_each_populations_cost_and_largest_class_drop(sweep_populations):
    base, pruned = sweep_populations
    results = pie_audit.sweep(base, pruned)
    table = sweep_table(results)
    assert list(table["name"]) == ["gmp-50", "gmp-90", "int8"]
    assert list(table["parameters_nonzero"]) == [26_500, 5_301.5, 53_000]
    assert list(table["flops"].fillna(-1)) == [694_784, 694_784, -1]  # int8: NaN, torch counts no FLOPs
    assert list(table["file_bytes"]) == [215_000, 215_000, 62_000]
    assert list(table["latency_batch_1_ms"]) == [0.085, 0.08, 0.05] and set(table["latency_batch_64_ms"]) == {1.4}
    assert set(table["baseline_file_bytes"]) == {215_000} and set(table["baseline_latency_batch_1_ms"]) == {0.09}
    assert all(table[c].dtype == np.float64 for c in COST_COLUMNS)
    for (_, result), drop in zip(results, table["max_class_drop"], strict=True):
        changes = result.classes.loc[result.classes["significant"] & (result.classes["direction"] == "harmed"), "normalized_change"]
        assert drop == (-changes.min() if len(changes) else 0.0)
    assert table["max_class_drop"].iloc[1] > 0.2 and table["max_class_drop"].iloc[0] == 0.0


def test_the_sweep_page_shows_cost_columns_and_the_tradeoff_figure(sweep_populations):
    base, pruned = sweep_populations
    table = sweep_table(pie_audit.sweep(base, pruned))
    page = parse(render_sweep(table, links=["a", "b", "c"], baseline=str(base), created_at=WHEN))
    rows = page.table("Pruned populations")
    assert [c.text for c in rows.column("file size")] == ["215 kB", "215 kB", "62 kB"]
    assert [c.key for c in rows.column("file size")] == ["215000.0", "215000.0", "62000.0"]
    assert [c.text for c in rows.column("FLOPs / example")] == ["694.8 k", "694.8 k", "\u2014"]
    assert [c.text for c in rows.column("latency, batch 1")] == ["0.085 ms", "0.08 ms", "0.05 ms"]
    assert [c.text for c in rows.column("parameters (nonzero of stored)")][1] == "5,301.5 of 53,002"
    drops = [c.text for c in rows.column("largest class drop (points)")]
    assert drops[0] == "none" and drops[1] == f"{100 * table['max_class_drop'].iloc[1]:.1f}"
    assert "Harm against cost" in page.headings
    figure = page.svg(TRADEOFF + "latency and file size")
    assert "baseline" in figure.text and "gmp" in figure.text and "int8" in figure.text


class Tradeoff:
    """The trade-off figure read back from its SVG: each panel's markers, by method, and the baseline."""

    def __init__(self, svg):
        self.root = ET.fromstring(svg)
        self.groups = {g.get("id").removeprefix("tradeoff-"): g for g in self.root.iter(f"{SVG}g") if g.get("id")}

    def markers(self, panel, k):
        group = self.groups.get(f"{panel}-points-{k}")
        return [] if group is None else [(float(u.get("x")), float(u.get("y"))) for u in group.iter(f"{SVG}use")]

    def baseline(self, panel):
        return [(float(u.get("x")), float(u.get("y"))) for u in self.groups[f"{panel}-baseline"].iter(f"{SVG}use")]

    def legend(self):
        (legend,) = [g for gid, g in self.groups.items() if re.fullmatch(r"legend_\d+", gid)]
        return [t.text for t in legend.iter(f"{SVG}text")]


def tradeoff_rows(*populations, baseline=(0.09, 215_000.0)):
    """A sweep table's trade-off columns from (name, method, pie_fraction, drop, latency, bytes) rows."""
    names, methods, pies, drops, latency, size = zip(*populations, strict=True)
    return pd.DataFrame({
        "name": names, "method": methods, "pie_fraction": pies, "max_class_drop": drops,
        "latency_batch_1_ms": np.asarray(latency, dtype=float), "file_bytes": np.asarray(size, dtype=float),
        "baseline_latency_batch_1_ms": baseline[0], "baseline_file_bytes": baseline[1],
    })  # fmt: skip


PANELS = [f"{harm}-{c}" for harm, _, _ in TRADEOFF_HARMS for c, _, _, _ in TRADEOFF_COSTS]


def test_one_marker_per_population_one_series_per_method_and_the_baseline_at_no_harm():
    sweep = tradeoff_rows(
        ("gmp-50", "gmp", 0.01, 0.0, 0.085, 215_000), ("gmp-90", "gmp", 0.05, 0.08, 0.08, 215_000),
        ("structured-50", "structured", 0.03, 0.02, 0.04, 110_000), ("int8", "int8", 0.02, 0.01, 0.05, 62_000),
    )  # fmt: skip
    figure = Tradeoff(tradeoff_svg(sweep))
    order = ["gmp", "structured", "int8"]
    assert figure.legend() == ["baseline", *order]
    for panel in PANELS:
        assert [len(figure.markers(panel, k)) for k in range(3)] == [2, 1, 1]
        assert len(figure.baseline(panel)) == 1
    # Every method in the sweep figure's colour; the baseline in the report's blue.
    assert METHOD_STYLES["structured"][0] in ET.tostring(figure.groups["pies-latency-points-1"], encoding="unicode")
    assert COLORS["baseline"] in ET.tostring(figure.groups["pies-size-baseline"], encoding="unicode")
    # Harm grows upwards (SVG y downwards): gmp-90's 5% PIEs above gmp-50's 1%, the baseline lowest, at 0.
    (_, y50), (_, y90) = figure.markers("pies-latency", 0)
    ((xb, yb),) = figure.baseline("pies-latency")
    assert y90 < y50 < yb
    # Cost grows rightwards: the baseline's 0.09 ms right of every population, int8's 62 kB left of all.
    assert all(x < xb for k in range(3) for x, _ in figure.markers("pies-latency", k))
    ((x_int8, _),) = figure.markers("drop-size", 2)
    assert all(x_int8 < x for k in (0, 1) for x, _ in figure.markers("drop-size", k))


def test_a_log_cost_axis_is_labelled_in_plain_numbers():
    # 0.02 to 0.2 ms: a tenfold span, so the latency axis is logarithmic. Its tick labels must be
    # text like "0.05", never the mathtext ("$\\mathdefault{10^{-1}}$") the report shows raw.
    sweep = tradeoff_rows(
        ("onnx-int8", "onnx-int8", 0.0, 0.0, 0.02, 66_000), ("int8", "int8", 0.002, 0.0, 0.2, 65_000),
        baseline=(0.087, 215_000.0),
    )  # fmt: skip
    svg = tradeoff_svg(sweep)
    root = ET.fromstring(svg)
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert not [t for t in texts if "$" in t or "mathdefault" in t]
    ticks = {t for t in texts if re.fullmatch(r"[0-9.]+", t)}
    assert {"0.02", "0.05", "0.1", "0.2"} <= ticks


def test_a_single_method_keeps_the_pruned_colour_and_a_missing_cost_drops_its_panels():
    sweep = tradeoff_rows(("p50", "gmp", 0.01, 0.0, 0.08, np.nan), ("p90", "gmp", 0.05, 0.08, np.nan, np.nan))
    svg = tradeoff_svg(sweep)
    figure = Tradeoff(svg)
    assert not any(gid.endswith("-size-baseline") for gid in figure.groups)  # no file size: no panels for it
    assert len(figure.markers("pies-latency", 0)) == 1  # p90 records no latency: left out
    assert COLORS["pruned"] in ET.tostring(figure.groups["pies-latency-points-0"], encoding="unicode")
    assert 'aria-label="PIE fraction and largest significant class drop against latency"' in svg
    assert tradeoff_svg(tradeoff_rows(("p", "gmp", 0.01, 0.0, np.nan, np.nan))) == ""
    # A table from before costs: no figure, no cost columns, no heading.
    legacy = sweep.drop(columns=["latency_batch_1_ms", "file_bytes", "max_class_drop"])
    assert tradeoff_svg(legacy) == ""


def test_the_sweep_page_without_costs_has_no_tradeoff_and_names_are_escaped(sweep_populations):
    base, pruned = sweep_populations
    table = sweep_table(pie_audit.sweep(base, pruned))
    bare = table.assign(**{c: np.nan for c in (*COST_COLUMNS, "baseline_file_bytes", "baseline_latency_batch_1_ms")})
    page = parse(render_sweep(bare, links=["a", "b", "c"], baseline="b", created_at=WHEN))
    assert "Harm against cost" not in page.headings and "file size" not in page.table("Pruned populations").headers
    assert all(not (s.label or "").startswith(TRADEOFF) for s in page.svgs)
    evil = table.assign(method=[EVIL, EVIL, "gmp"], name=[EVIL, "x", "y"])
    html = render_sweep(evil, links=["a", "b", "c"], baseline="b", created_at=WHEN)
    assert "<script>alert(1)" not in html and html.count("<script") == 1  # the page's own table sorter
    figure = parse(html).svg(TRADEOFF + "latency and file size")
    assert EVIL in figure.text  # the legend and the point's name, as text
