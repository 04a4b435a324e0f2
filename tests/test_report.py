"""The HTML report: content, escaping, self-containment, the no-image case and the 1,000-class bound."""

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from html_page import parse
from synthetic import planted_predictions, write_population

import pie_audit
from pie_audit.report._plots import MAX_PLOTTED_CLASSES
from pie_audit.report._render import (
    EXTREME_TABLE_CLASSES,
    GALLERY_SIZE,
    Gallery,
    render_report,
    render_sweep,
    table_classes,
)
from pie_audit.interchange import Population
from pie_audit.report._thumbnails import NO_DATASET, Thumbnails, png_data_uri

MAX_BYTES = 5 * 1024 * 1024
WHEN = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
EVIL = "<script>alert(1)</script>"


def render(result, *, thumbnails=None, **kwargs):
    gallery = None if thumbnails is None else Gallery(result.top_pies(GALLERY_SIZE), thumbnails)
    return render_report(result, gallery=gallery, created_at=WHEN, **kwargs)


def class_table(page):
    """The per-class table: a row of cells per class, under its column headers."""
    return page.table("Per class")


def gallery(page):
    """The gallery: what the "Top N PIEs" heading introduces; its figures are the cards."""
    (heading,) = (h for h in page.headings if re.fullmatch(r"Top \d+ PIEs", h))
    return page.section(heading)


def add_run_fields(population: Path, **fields):
    """Add keys to every model's run.json (write_population writes seed and classes only)."""
    for run in sorted(population.glob("*/run.json")):
        record = json.loads(run.read_text())
        record.update(fields)
        run.write_text(json.dumps(record))


@pytest.fixture
def harmed_result(harmed_populations):
    return pie_audit.compare(*harmed_populations, n_bootstrap=200)


# --- content ------------------------------------------------------------------------------------


def test_verdict_populations_and_impacted_classes(harmed_result):
    page = parse(render(harmed_result))
    verdict = page.section("Verdict").text
    assert "Gate FAILED" in verdict
    # The planted class fails both the relative rule and the absolute one (on by default).
    failure, absolute = harmed_result.gate.failures
    assert absolute.rule == "max-class-recall-drop" and absolute.message in verdict
    assert failure.message in verdict
    assert failure.message.startswith("1 class(es) significantly harmed, losing more than 2.0 points")
    # Cards: PIE count and fraction, harmed and helped counts, both mean accuracies, each with its label.
    pies = harmed_result.pies
    assert f"{pies.count} PIEs ({100 * pies.fraction:.2f}% of 400 test examples; {pies.n_stable} stable)" in verdict
    assert f"Power: {harmed_result.power_sentence()}." in verdict
    assert f"{100 * harmed_result.baseline_accuracy.mean():.2f}% baseline mean accuracy (8 models)" in verdict
    assert "Significantly harmed (1)" in page.headings
    harmed = page.section("Significantly harmed (1)").text
    worst = harmed_result.harmed.iloc[0]
    change, recall = 100 * worst["normalized_change"], 100 * worst["recall_change"]
    # Words that say what was measured: the recall lost, and how much more than the average.
    assert f"2: lost {-recall:.2f} points of recall, {-change:.2f} more than the models' average" in harmed
    assert "q < 0.0001" in harmed
    # The gate table explains each rule: limit, observed value, status, as the messages write them.
    rules = {row["rule"].text: row for row in page.table("Gate rules").records}
    drop, fraction = rules["max-class-drop"], rules["max-pie-fraction"]
    assert [drop[c].text for c in ("limit", "observed", "status")] == ["2.0 points", f"{-change:.1f} points", "failed"]
    assert [fraction[c].text for c in ("limit", "status")] == ["off", "off"]
    assert set(rules) == {
        "max-class-drop", "max-class-recall-drop", "max-pie-fraction", "max-accuracy-drop",
        "max-harmed-classes", "min-power",
    }  # fmt: skip


def test_class_table_holds_every_class_with_raw_sort_values(harmed_result):
    table = class_table(parse(render(harmed_result)))
    assert table.headers == [
        "label", "class", "support", "baseline recall", "pruned recall", "change",
        "normalized change", "interval", "p", "q", "recall q", "MDE", "significant", "robustness", "PIEs",
    ]  # fmt: skip
    classes = harmed_result.classes
    rows = table.records
    assert len(rows) == len(classes) == 5
    # A cell's key is what the sorter sorts by: the raw value; None sorts by the text shown.
    for row, expected in zip(rows, classes.itertuples(), strict=True):
        assert (row["label"].key, row["label"].text) == (str(expected.label), str(expected.label))
        assert (row["class"].key, row["class"].text) == (None, expected.name)
        assert row["support"].key == str(expected.support)
        assert float(row["baseline recall"].key) == pytest.approx(expected.baseline_recall_mean)
        assert float(row["normalized change"].key) == expected.normalized_change  # exact: repr round-trips
        assert row["normalized change"].text == f"{100 * expected.normalized_change:+.2f}"
        assert float(row["q"].key) == expected.q_value
        assert float(row["recall q"].key) == expected.recall_q_value
        assert float(row["MDE"].key) == expected.mde
        # A significant normalized change whose recall moved the other way is neither harmed nor helped.
        shown = expected.direction if expected.direction != "none" else "relative only" if expected.significant else "no"
        assert row["significant"].text == shown
        assert row["PIEs"].key == str(expected.n_pies)
    assert rows[2]["significant"].text == "harmed"


def test_pie_accuracy_and_gallery(harmed_result):
    page = parse(render(harmed_result))
    pies = harmed_result.pies
    accuracy = {row["population"].text: row for row in page.table("Accuracy on PIEs").records}
    assert accuracy["pruned"]["PIEs"].text == f"{100 * pies.pruned_accuracy_pies:.2f}%"
    assert accuracy["pruned"]["non-PIEs (PIEs removed)"].text == f"{100 * pies.pruned_accuracy_non_pies:.2f}%"
    top = harmed_result.top_pies(GALLERY_SIZE)
    assert len(top) == min(pies.count, GALLERY_SIZE) > 0
    cards = gallery(page).figures
    assert len(cards) == len(top)
    first, card = top.iloc[0], dict(cards[0].definitions())
    assert card["example"] == f"#{first.example_id} \u00b7 {first.score:.2f}"
    assert f"({100 * first.pruned_share:.0f}%" in card["pruned"]
    assert card["stability"].startswith(f"{100 * first.stability:.0f}%")


def test_plots_are_inline_svg_with_unique_ids(harmed_result):
    page = parse(render(harmed_result))
    labels = [svg.label for svg in page.svgs]
    assert labels == [
        "Normalized recall change per class",
        "Dense deficit against normalized change",
        "PIEs per class",
        "Where the PIEs went: baseline modal class by pruned modal class",
        "Per-model accuracy in both populations",
    ]
    for svg in page.svgs:
        assert not svg.find_all("style")  # it would style the whole page
        # Axes and text follow the page's colour (dark mode).
        assert any("currentColor" in value for element in svg.find_all() for value in element.attrs.values())
    ids = [element.attrs["id"] for element in page.find_all() if "id" in element.attrs]
    assert len(ids) == len(set(ids))


def test_provenance_shows_runs_settings_and_command(tmp_path, audit_labels):
    base = write_population(
        tmp_path / "base", planted_predictions(3, audit_labels, accuracy=0.9, n_classes=5, seed=1), audit_labels, classes=list("abcde")
    )
    pruned = write_population(
        tmp_path / "pruned", planted_predictions(3, audit_labels, accuracy=0.85, n_classes=5, seed=2), audit_labels, classes=list("abcde")
    )
    common = {
        "dataset": {"name": "toy", "hash": "sha256:abc123", "n_examples": 400},
        "arch": "small-cnn",
        "config": {"epochs": 7, "lr": 0.05},
        "versions": {"torch": "2.14.1", "pie_audit": "0.1.0"},
        "git_commit": "deadbeef",
        "finished_at": "2026-11-26T10:41:00+00:00",
    }
    add_run_fields(base, **common, sparsity={"target": 0.0, "achieved": 0.0}, command=["pie-audit", "train", "--sparsity", "0"])
    add_run_fields(pruned, **common, sparsity={"target": 0.9, "achieved": 0.8995, "channels": {"achieved": 0.90625}},
                   command=["pie-audit", "train", "--sparsity", "0.9"], method="structured",
                   quantization={"backend": "x86"})  # fmt: skip
    page = parse(render(pie_audit.compare(base, pruned, n_bootstrap=50), command=["pie-audit", "compare", "base", "pruned"]))
    report = page.section("Provenance").definitions()
    assert ("command", "pie-audit compare base pruned") in report
    assert ("n_bootstrap", "50") in report
    assert dict(report)["report made"].startswith("2026-11-26T12:00:00+00:00")
    for heading, sparsity in ((f"Baseline: {base}", "0"), (f"Pruned: {pruned}", "0.9")):
        shown = dict(page.section(heading).definitions())
        assert {
            "seeds": "0, 1, 2",
            "trained": "2026-11-26T10:41:00+00:00",
            "architecture": "small-cnn",
            "dataset hash": "sha256:abc123",
            "training config": '{"epochs": 7, "lr": 0.05}',
            "command": f"pie-audit train --sparsity {sparsity}",
            "git commit": "deadbeef",
            "versions": '{"pie_audit": "0.1.0", "torch": "2.14.1"}',
        }.items() <= shown.items(), shown
    populations = {row["population"].text: row for row in page.table("Populations").records}
    assert populations["baseline"]["directory"].text == str(base)
    pruned_row = populations["pruned"]
    assert (pruned_row["target sparsity"].text, pruned_row["achieved sparsity"].text) == ("90.0%", "89.95%")
    # A record without a method is gmp's (written before methods existed).
    assert (populations["baseline"]["method"].text, pruned_row["method"].text) == ("gmp", "structured")
    shown = dict(page.section(f"Pruned: {pruned}").definitions())
    assert (shown["method"], shown["channel sparsity"], shown["quantization"]) == ("structured", "0.90625", '{"backend": "x86"}')


def test_provenance_values_that_differ_between_models_read_apart(tmp_path, audit_labels):
    commit = {"git_commit": "deadbeef"}
    base = write_population(tmp_path / "base", planted_predictions(2, audit_labels, accuracy=0.9, n_classes=5, seed=1), audit_labels, run=commit)
    pruned = write_population(tmp_path / "pruned", planted_predictions(2, audit_labels, accuracy=0.9, n_classes=5, seed=2), audit_labels, run=commit)
    run = sorted(pruned.glob("*/run.json"))[1]
    run.write_text(json.dumps(json.loads(run.read_text()) | {"git_commit": "cafef00d"}))
    page = parse(render(pie_audit.compare(base, pruned, n_bootstrap=20)))
    shown = dict(page.section(f"Pruned: {pruned}").definitions())
    # Two values, each its own line: not "deadbeefcafef00d" when read or copied.
    assert shown["git commit"] == "2 values: cafef00d deadbeef" or shown["git commit"] == "2 values: deadbeef cafef00d"


# --- escaping and self-containment -----------------------------------------------------------


def test_every_user_string_is_escaped(tmp_path, audit_labels):
    names = [EVIL, "b", 'q"uote', "$5 bill", "e"]
    base = write_population(
        tmp_path / "b<&>", planted_predictions(4, audit_labels, accuracy=0.9, n_classes=5, seed=1), audit_labels, classes=names
    )
    pruned = write_population(
        tmp_path / "p", planted_predictions(4, audit_labels, accuracy=0.9, n_classes=5, seed=2, class_accuracy={0: 0.3}), audit_labels
    )
    add_run_fields(base, config={"note": "<img src=x onerror=alert(2)>"}, command=["train", "<b>bold</b>"])
    result = pie_audit.compare(base, pruned, n_bootstrap=50)
    html = render(result, command=["pie-audit", "compare", "<i>x</i>"])
    assert "<script>alert(1)" not in html
    assert "<img src=x" not in html and "<b>bold" not in html and "<i>x" not in html
    assert html.count("<script") == 1  # the report's own table sorter
    assert "q&#34;uote" in html and "b&lt;&amp;&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    # ... and the reader sees every string as it was written, as text.
    page = parse(html)
    assert [cell.text for cell in class_table(page).column("class")] == names  # the class table
    assert EVIL in page.svg("Normalized recall change per class").text  # the figure
    assert f"Baseline: {base}" in page.headings
    shown = dict(page.section(f"Baseline: {base}").definitions())
    assert shown["training config"] == '{"note": "<img src=x onerror=alert(2)>"}'
    assert shown["command"] == "train <b>bold</b>"
    assert ("command", "pie-audit compare <i>x</i>") in page.section("Provenance").definitions()


def test_self_contained(harmed_result):
    html = render(harmed_result, thumbnails=Thumbnails(images={int(i): png_data_uri(np.eye(8)) for i in harmed_result.examples["example_id"]}))
    assert "default-src 'none'" in html  # the browser refuses any fetch
    assert re.findall(r'\bsrc="([^"]*)"', html) and all(
        src.startswith("data:image/png;base64,") for src in re.findall(r'\bsrc="([^"]*)"', html)
    )
    hrefs = set(re.findall(r'\bhref="([^"]*)"', html))
    assert all(h.startswith(("#", "data:")) for h in hrefs), hrefs
    assert not re.search(r"url\((?!#)", html)
    assert "@import" not in html and "<link rel=\"stylesheet\"" not in html
    assert "@media (prefers-color-scheme: dark)" in html and "@media print" in html


# --- images -------------------------------------------------------------------------------------


def test_gallery_without_images_shows_ids_labels_and_why(harmed_result):
    page = parse(render(harmed_result, thumbnails=Thumbnails(note=NO_DATASET)))
    assert page.images == []
    assert NO_DATASET in gallery(page).text
    first = harmed_result.top_pies(1).iloc[0]
    cards = gallery(page).figures
    assert dict(cards[0].definitions())["example"] == f"#{first.example_id} \u00b7 {first.score:.2f}"
    assert len(cards) == len(harmed_result.top_pies(GALLERY_SIZE))


def test_gallery_with_images(harmed_result):
    top = harmed_result.top_pies(GALLERY_SIZE)
    images = {int(i): png_data_uri(np.full((1, 8, 8), i)) for i in top["example_id"]}
    html = render(harmed_result, thumbnails=Thumbnails(images=images))
    page = parse(html)
    cards = gallery(page).figures
    first = int(top["example_id"].iloc[0])
    (image,) = cards[0].images
    assert image.src == images[first] and image.alt.startswith(f"test example {first}, labelled")
    assert len(page.images) == len(top)
    assert [card.images[0].src for card in cards] == [images[int(i)] for i in top["example_id"]]
    assert NO_DATASET not in html


# --- scale --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imagenet_like():
    """1,000 classes, 50 test examples each, 5 models per population; every 50th class harmed."""
    n_classes, labels = 1000, np.random.default_rng(0).permutation(np.repeat(np.arange(1000), 50))
    names = tuple(f"n{c:08d} a fairly long class name number {c}" for c in range(n_classes))
    ids = np.arange(labels.size)
    runs = tuple({"seed": s, "classes": list(names)} for s in range(5))

    def population(name, predictions):
        models = tuple(f"seed-{s:04d}" for s in range(5))
        return Population(Path(name), models, ids, labels, predictions, runs, names)

    base = planted_predictions(5, labels, accuracy=0.76, n_classes=n_classes, seed=1)
    pruned = planted_predictions(
        5, labels, accuracy=0.75, n_classes=n_classes, seed=2, class_accuracy={c: 0.3 for c in range(0, 1000, 50)}
    )
    return pie_audit.compare(population("base", base), population("pruned", pruned), n_bootstrap=100)


def test_1000_classes_with_a_64_image_gallery_stays_under_5_mb(imagenet_like):
    rng = np.random.default_rng(0)
    top = imagenet_like.top_pies(GALLERY_SIZE)
    assert len(top) == GALLERY_SIZE
    # Noise is the worst case for PNG: a real 64x64 photo compresses better.
    images = {int(i): png_data_uri(rng.random((3, 224, 224))) for i in top["example_id"]}
    html = render(imagenet_like, thumbnails=Thumbnails(images=images))
    assert len(html.encode()) <= MAX_BYTES
    page = parse(html)
    # The table lists the classes that matter, every significant one among them; classes.csv has all.
    listed = table_classes(imagenet_like.classes)
    assert len(class_table(page).rows) == len(listed) < 1000
    assert set(imagenet_like.harmed["label"]) | set(imagenet_like.helped["label"]) <= set(listed["label"])
    assert len(listed) >= EXTREME_TABLE_CLASSES
    assert "classes.csv holds all 1000" in page.section("Per class").text
    assert len(page.images) == GALLERY_SIZE
    # The figure shows the most affected classes, every harmed one among them.
    assert f"the {MAX_PLOTTED_CLASSES} most affected of 1000 classes" in page.section("Per class").text
    figure = page.svg("Normalized recall change per class")
    shown = {m.group(1) for text in figure.find_all("text") if (m := re.search(r"\[(\d+)\]$", text.text))}
    assert len(shown) == MAX_PLOTTED_CLASSES
    assert {str(label) for label in imagenet_like.harmed["label"]} <= shown


def test_degenerate_audit_renders_undefined_values_as_dashes(tmp_path):
    # One model per population (nothing can be tested) and a class without test examples.
    labels = np.arange(40) % 3
    names = ["a", "b", "c", "never seen"]
    base = write_population(tmp_path / "b", planted_predictions(1, labels, accuracy=0.9, n_classes=3, seed=1), labels, classes=names)
    pruned = write_population(tmp_path / "p", planted_predictions(1, labels, accuracy=0.6, n_classes=3, seed=2), labels, classes=names)
    result = pie_audit.compare(base, pruned, n_bootstrap=50)
    page = parse(render(result))
    rows = class_table(page).records
    assert len(rows) == 4
    # An undefined value shows a dash and sorts last (empty key); "not tested" sorts as text.
    assert (rows[3]["baseline recall"].key, rows[3]["baseline recall"].text) == ("", "\u2014")
    assert (rows[3]["significant"].key, rows[3]["significant"].text) == (None, "not tested")
    assert (rows[0]["interval"].key, rows[0]["interval"].text) == ("", "\u2014")  # no interval with one model
    verdict = page.section("Verdict").text
    assert result.notes
    for note in result.notes:
        assert f"Note: {' '.join(note.split())}" in verdict
    # Recall fell by 30 points where nothing could be tested: inconclusive, never a pass.
    assert "Gate INCONCLUSIVE" in verdict and "no t-test was possible" in verdict


def test_an_underpowered_pass_says_so(tmp_path, audit_labels):
    base = planted_predictions(2, audit_labels, accuracy=0.9, n_classes=5, seed=1)
    # Pruning changed nothing: no drop to be inconclusive about, and two models see little.
    b = write_population(tmp_path / "b", base, audit_labels)
    p = write_population(tmp_path / "p", base[::-1], audit_labels)
    result = pie_audit.compare(b, p, n_bootstrap=50)
    assert result.gate.passed and result.power.underpowered
    verdict = parse(render(result)).section("Verdict").text
    assert "Gate PASSED (underpowered)" in verdict
    assert "this audit can detect class drops of" in verdict and "needs about" in verdict
    assert result.verdict.startswith("gate PASSED (underpowered: this audit can detect class drops of")


def test_one_model_each_is_described_as_mcnemar(tmp_path, audit_labels):
    base = planted_predictions(1, audit_labels, accuracy=0.9, n_classes=5, seed=1)
    pruned = planted_predictions(1, audit_labels, accuracy=0.9, n_classes=5, seed=2, class_accuracy={2: 0.4})
    b = write_population(tmp_path / "b", base, audit_labels)
    p = write_population(tmp_path / "p", pruned, audit_labels)
    page = parse(render(pie_audit.compare(b, p)))
    assert "an exact McNemar test on the class's examples, one model against one" in page.section("Per class").text
    assert "these two models on this test set" in page.text


# --- the sweep page -----------------------------------------------------------------------------

AGAINST = "Accuracy, PIE fraction and impacted classes against "
LINKS = [f"p{k}/report.html" for k in range(8)]


def sweep_rows(*populations):
    """A sweep table (the columns of ``sweep_table``) from (name, method, target) rows."""
    n = len(populations)
    names, methods, targets = zip(*populations, strict=True)
    return pd.DataFrame(
        {
            "name": names,
            "position": np.arange(1, n + 1),
            "method": methods,
            "sparsity_target": np.asarray(targets, dtype=float),
            "sparsity_achieved": np.asarray(targets, dtype=float) - 0.001,
            "n_models": 4,
            "accuracy_mean": np.linspace(0.7, 0.88, n),
            "accuracy_std": 0.01,
            "baseline_accuracy_mean": 0.9,
            "pie_count": np.arange(n),
            "pie_fraction": np.arange(n) / 400,
            "harmed": np.arange(n) % 3,
            "helped": 0,
            "gate_passed": True,
        }
    )


def sweep_page(*populations):
    return parse(render_sweep(sweep_rows(*populations), links=LINKS[: len(populations)], baseline="b", created_at=WHEN))


def test_methods_side_by_side_are_named_under_the_axis_not_placed_on_sparsity():
    methods = ("gmp", "random", "oneshot", "lottery", "structured")
    page = sweep_page(*[(f"{m}-90", m, 0.9) for m in methods], ("int8", "int8", 0.0))
    assert "Side by side" in page.headings and "Against sparsity" not in page.headings
    (figure,) = page.svgs  # no second figure against the achieved sparsity
    assert figure.label == AGAINST + "population (target sparsity in the table)"
    assert all(f"{m}-90" in figure.text for m in methods)  # the populations' names on the axis
    plots = page.section("Side by side").text
    assert "No compression method was run at more than one target sparsity" in plots
    assert "one colour and marker per method (harmed: filled markers; helped: hollow markers)" in plots
    assert "nudged apart" not in plots  # side by side, no marker hides another
    # One target for all: the axis says which.
    (figure,) = sweep_page(*[(f"{m}-90", m, 0.9) for m in methods]).svgs
    assert figure.label == AGAINST + "population (all at target sparsity 90.0%)"


def test_a_shared_sparsity_sends_the_reader_to_the_table():
    page = sweep_page(("gmp-50", "gmp", 0.5), ("gmp-90", "gmp", 0.9), ("random-90", "random", 0.9))
    assert [svg.label for svg in page.svgs] == [AGAINST + "target sparsity", AGAINST + "achieved sparsity"]
    plots = page.section("Against sparsity").text
    assert "Some populations share a sparsity: their markers are nudged apart sideways" in plots
    assert "The table below lists every population; it is the reference" in plots
    assert "solid lines; helped: hollow markers, dashed lines" in plots
    assert "A method's points are joined only where it was run at more than one sparsity." in plots
    # One method at distinct sparsities: today's page, without notes.
    plain = sweep_page(("gmp-50", "gmp", 0.5), ("gmp-90", "gmp", 0.9)).section("Against sparsity").text
    assert "nudged apart" not in plain and "per method" not in plain and "Side by side" not in plain


def test_sweep_page_escapes_method_names():
    sweep = sweep_rows(("p50", EVIL, 0.5), ("p90", EVIL, 0.9), ("g90", "gmp", 0.9))
    page_html = render_sweep(sweep, links=LINKS[:3], baseline="b", created_at=WHEN)
    assert "<script>alert(1)" not in page_html
    assert page_html.count("<script") == 1  # the page's own table sorter
    page = parse(page_html)
    assert [row["method"].text for row in page.table("Pruned populations").records] == [EVIL, EVIL, "gmp"]
    assert EVIL in page.svg(AGAINST + "target sparsity").text  # the legend names it, as text



# --- groups -------------------------------------------------------------------------------------

QUOTES = "M\"&'"
HARMED_GROUP = "sex=F & age=old"


def grouped_result(*, n_classes=2, models=8, evil=EVIL, third=False, **settings):
    """Two populations of ``models`` models on 600 examples and their groups table.

    ``sex`` (``F`` or a value with quotes and an ampersand) and ``age`` (``old``, ``young`` or
    ``evil``) split the examples evenly, 100 per combination; pruning takes every model's
    accuracy on ``sex=F & age=old`` from 90% to 60%, and every pruned model misses examples 4, 5
    and 6 (of three other groups), so that not every PIE is in the harmed group. ``third`` adds
    a third attribute, ``site``.
    """
    n = 600
    ids = np.arange(n)
    labels = np.random.default_rng(3).permutation(ids % n_classes)
    table = pd.DataFrame(
        {
            "example_id": ids,
            "sex": np.where(ids % 2, "F", QUOTES),
            "age": np.array(["old", "young", evil], dtype=object)[ids // 2 % 3],
        }
    )
    if third:
        table["site"] = np.where(ids % 5 < 2, "north", "south")
    harmed = ((table["sex"] == "F") & (table["age"] == "old")).to_numpy()
    base = planted_predictions(models, labels, accuracy=0.9, n_classes=n_classes, seed=1)
    pruned = planted_predictions(models, labels, accuracy=0.9, n_classes=n_classes, seed=2)
    pruned[:, harmed] = planted_predictions(models, labels, accuracy=0.6, n_classes=n_classes, seed=3)[:, harmed]
    pruned[:, [4, 5, 6]] = (labels[[4, 5, 6]] + 1) % n_classes
    names = ["negative", "positive"] if n_classes == 2 else [f"c{k}" for k in range(n_classes)]
    populations = (
        Population.from_arrays(predictions, labels, classes=names, name=name)
        for predictions, name in ((base, "base"), (pruned, "pruned"))
    )
    return pie_audit.compare(*populations, groups=table, n_bootstrap=200, **settings)


@pytest.fixture(scope="module")
def grouped():
    return grouped_result()


def points(value):
    return f"{100 * value:+.2f}"


def test_without_groups_the_report_has_no_groups_section(harmed_result):
    html = render(harmed_result)
    page = parse(html)
    assert "Groups" not in page.headings and 'id="groups"' not in html
    assert "#groups" not in [link.href for link in page.links]
    assert "gallery-filter" not in html and "data-a0" not in html
    assert not any("group" in svg.label for svg in page.svgs)
    assert "group" not in gallery(page).text
    assert "groups significantly harmed" not in page.section("Verdict").text
    assert not any("group" in row["rule"].text for row in page.table("Gate rules").records)


def test_groups_section_reports_the_planted_harm(grouped):
    page = parse(render(grouped))
    assert "#groups" in [link.href for link in page.links]
    groups = grouped.groups
    harmed = grouped.harmed_groups
    assert harmed["group"].iloc[0] == HARMED_GROUP
    section = page.section("Groups")
    assert f"{len(groups)} groups, {int(groups['tested'].sum())} of them tested (a group needs at least 30 examples)" in section.text
    # The verdict lines, in words, with the numbers of the table.
    heading = f"Groups harmed beyond the models' average ({len(harmed)})"
    worst = harmed.iloc[0]
    line = (
        f"{HARMED_GROUP}: accuracy {100 * worst.baseline_accuracy_mean:.1f}% \u2192 {100 * worst.pruned_accuracy_mean:.1f}%, "
        f"lost {-100 * worst.accuracy_change:.2f} points, {-100 * worst.normalized_change:.2f} more than the models' average "
        f"[{points(worst.ci_low)}, {points(worst.ci_high)}], q < 0.0001"
    )
    assert line in page.section(heading).text
    fell = groups[groups["accuracy_significant"] & (groups["accuracy_change"] < 0)]
    assert f"Groups whose accuracy fell ({len(fell)})" in page.headings
    assert f"{HARMED_GROUP}: accuracy" in page.section(f"Groups whose accuracy fell ({len(fell)})").text
    power = grouped.group_power
    assert f"detect a group's drop beyond the models' average of {100 * power.median_mde:.1f} points or more" in section.text
    # The card and the gate's group rules.
    assert f"{len(harmed)} groups significantly harmed beyond the models' average" in page.section("Verdict").text
    rules = {row["rule"].text: row for row in page.table("Gate rules").records}
    assert rules["max-group-drop"]["observed"].text == f"{-100 * worst.normalized_change:.1f} points"
    assert rules["max-group-drop"]["status"].text == "failed"
    assert rules["max-group-accuracy-drop"]["status"].text == "failed"


def test_groups_table_holds_every_group_with_raw_sort_values(grouped):
    table = parse(render(grouped)).table("group-table")
    assert table.headers == [
        "group", "support", "baseline accuracy", "pruned accuracy", "change", "normalized change",
        "interval", "p", "q", "accuracy q", "MDE", "significant", "robustness", "PIEs",
    ]  # fmt: skip
    groups = grouped.groups
    assert len(table.rows) == len(groups) == 2 + 3 + 6
    for row, expected in zip(table.records, groups.itertuples(), strict=True):
        assert (row["group"].key, row["group"].text) == (None, expected.group)
        even = "100" if " & " in expected.group else "300" if expected.group.startswith("sex=") else "200"
        assert row["support"].key == str(expected.support) == even
        assert float(row["normalized change"].key) == expected.normalized_change
        assert row["normalized change"].text == points(expected.normalized_change)
        assert float(row["q"].key) == expected.q_value
        assert float(row["accuracy q"].key) == expected.accuracy_q_value
        assert float(row["MDE"].key) == expected.mde
        assert row["PIEs"].key == str(expected.n_pies)
        shown = expected.direction if expected.direction != "none" else "relative only" if expected.significant else "no"
        assert row["significant"].text == shown


def test_forest_plot_heatmap_and_pie_concentration(grouped):
    page = parse(render(grouped))
    groups = grouped.groups
    forest = page.svg("Normalized accuracy change per group")
    shown = {t.text for t in forest.find_all("text")}
    assert set(groups["group"]) <= shown
    heatmap = page.svg("Normalized accuracy change per combination of two attributes")
    assert "Intersections of sex and age" in page.headings
    worst = groups.set_index("group").loc[HARMED_GROUP]
    assert f"{100 * worst.normalized_change:+.1f}*" in {t.text for t in heatmap.find_all("text")}
    # The values name the rows and columns, as text, long ones cut.
    assert {"F", QUOTES, "old", "young", EVIL[:19] + "\u2026"} <= {t.text for t in heatmap.find_all("text")}
    # PIEs concentrate in the harmed intersection: its share of PIEs against its share of examples.
    records = {row["group"].text: row for row in page.table("group-pie-table").records}
    row, expected = records[HARMED_GROUP], worst
    assert row["share of examples"].text == f"{100 * expected.support / 600:.1f}%"
    assert row["share of PIEs"].text == f"{100 * expected.n_pies / grouped.pies.count:.1f}%"
    assert row["PIE rate"].text == f"{100 * expected.pie_fraction:.1f}%"
    assert float(row["q"].key) == expected.pie_q_value
    odds = expected.pie_odds_ratio
    assert row["odds ratio"].text == ("\u221e" if np.isinf(odds) else f"{odds:.2f}")
    concentrated = page.section("PIE concentration").text
    assert f"{HARMED_GROUP}: {expected.n_pies} PIEs among 100 examples" in concentrated


def test_two_class_tasks_show_false_positive_and_false_negative_rates(grouped):
    table = parse(render(grouped)).table("group-error-table")
    assert table.headers == [
        "group", "negatives", "baseline FPR", "pruned FPR", "FPR change", "FPR q", "FPR significant",
        "positives", "baseline FNR", "pruned FNR", "FNR change", "FNR q", "FNR significant",
    ]  # fmt: skip
    cells = grouped.group_cells.set_index(["group", "label"])
    assert len(table.rows) == len(grouped.groups)
    for row in table.records:
        for label, rate, count in ((0, "FPR", "negatives"), (1, "FNR", "positives")):
            cell = cells.loc[(row["group"].text, label)]
            assert row[count].text == str(cell.support)
            assert float(row[f"baseline {rate}"].key) == pytest.approx(1 - cell.baseline_recall_mean)
            assert float(row[f"pruned {rate}"].key) == pytest.approx(1 - cell.pruned_recall_mean)
            assert row[f"{rate} change"].text == points(-cell.recall_change)
            assert float(row[f"{rate} q"].key) == cell.q_value
            shown = cell.direction if cell.direction != "none" else "relative only" if cell.significant else "no"
            assert row[f"{rate} significant"].text == shown
    # Pruning made the harmed intersection's errors both ways: its rates rose.
    harmed = {row["group"].text: row for row in table.records}[HARMED_GROUP]
    assert harmed["FPR significant"].text == harmed["FNR significant"].text == "harmed"


def test_untested_groups_are_listed_not_plotted():
    result = grouped_result(min_group_support=150)  # the intersections have 100 examples each
    page = parse(render(result))
    untested = result.groups.loc[~result.groups["tested"], "group"].tolist()
    assert len(untested) == 6 and HARMED_GROUP in untested
    note = page.section("Groups").text
    assert "Not tested, with fewer than 150 examples (6): " + ", ".join(untested) in note
    shown = {t.text for t in page.svg("Normalized accuracy change per group").find_all("text")}
    assert not set(untested) & shown
    rows = {row["group"].text: row for row in page.table("group-table").records}
    # Described (its means and their change), not tested.
    assert rows[HARMED_GROUP]["significant"].text == "not tested"
    assert [rows[HARMED_GROUP][c].key for c in ("interval", "q", "MDE")] == ["", "", ""]
    # The heatmap marks the combinations that were not tested.
    heatmap = page.svg("Normalized accuracy change per combination of two attributes")
    assert [t.text for t in heatmap.find_all("text")].count("not tested") == 6


def test_three_attributes_and_more_classes_skip_the_heatmap_and_error_rates():
    result = grouped_result(n_classes=3, third=True)
    page = parse(render(result))
    assert "Groups" in page.headings
    assert not any(svg.label == "Normalized accuracy change per combination of two attributes" for svg in page.svgs)
    assert "With three attributes the audit forms their three-way combinations" in page.section("Groups").text
    assert "False-positive and false-negative rates" not in page.headings
    assert "sex=F & age=old & site=north" in [c.text for c in page.table("group-table").column("group")]


def test_gallery_cards_carry_their_attribute_values_for_the_filter(grouped):
    page = parse(render(grouped))
    cards = gallery(page).figures
    top = grouped.top_pies(GALLERY_SIZE)
    assert len(cards) == len(top) > 0
    for card, row in zip(cards, top.itertuples(), strict=True):
        assert (card.attrs["data-a0"], card.attrs["data-a1"]) == (row.sex, row.age)
        assert dict(card.definitions())["group"] == f"sex={row.sex} \u00b7 age={row.age}"
    (select,) = page.find_all("select", id="gallery-filter")
    options = select.find_all("option")
    assert [o.text for o in options] == ["every group", *grouped.groups["group"]]
    for option, attributes in zip(options[1:], grouped.groups["attributes"], strict=True):
        wanted = {f"data-a{k}": str(attributes[a]) for k, a in enumerate(("sex", "age")) if a in attributes}
        assert {k: v for k, v in option.attrs.items() if k.startswith("data-a")} == wanted


def test_hostile_group_names_are_escaped(grouped):
    html = render(grouped)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script") == 1  # the report's own sorter and filter
    assert "M&#34;&amp;&#39;" in html  # quotes and ampersand, in text and in attributes
    page = parse(html)
    names = [c.text for c in page.table("group-table").column("group")]
    assert f"age={EVIL}" in names and f"sex={QUOTES} & age={EVIL}" in names
    assert f"sex={QUOTES} & age={EVIL}" in page.svg("Normalized accuracy change per group").text


def test_a_report_with_groups_stays_self_contained(grouped):
    html = render(grouped)
    assert re.findall(r'\bsrc="([^"]*)"', html) == []  # no images requested
    hrefs = set(re.findall(r'\bhref="([^"]*)"', html))
    assert all(h.startswith(("#", "data:")) for h in hrefs), hrefs
    assert not re.search(r"url\((?!#)", html)
    ids = [element.attrs["id"] for element in parse(html).find_all() if "id" in element.attrs]
    assert len(ids) == len(set(ids))


def test_notebook_summary_names_the_harmed_groups(grouped, harmed_result):
    from pie_audit.report import render_summary_html

    text = parse(render_summary_html(grouped)).text
    harmed = grouped.harmed_groups
    tested = int(grouped.groups["tested"].sum())
    worst = harmed.iloc[0]
    assert (
        f"Groups (sex, age): {len(harmed)} of {tested} tested groups significantly harmed beyond the models' "
        f"average: {HARMED_GROUP} ({points(worst.normalized_change)} points)"
    ) in text
    assert "Groups (" not in parse(render_summary_html(harmed_result)).text


def test_sweep_page_counts_harmed_groups_only_when_some_audit_had_groups():
    rows = sweep_rows(("p50", "gmp", 0.5), ("p90", "gmp", 0.9))
    plain = parse(render_sweep(rows, links=LINKS[:2], baseline="b", created_at=WHEN))
    assert "harmed groups" not in plain.table("Pruned populations").headers
    rows["harmed_groups"] = [np.nan, 3.0]
    page = parse(render_sweep(rows, links=LINKS[:2], baseline="b", created_at=WHEN))
    column = page.table("Pruned populations").column("harmed groups")
    assert [(c.text, c.key) for c in column] == [("\u2014", ""), ("3", "3")]


def test_21843_classes_give_a_page_under_3_mb():
    # ImageNet-21k's class count: the class table lists what matters, the figures stay capped.
    rng = np.random.default_rng(1)
    n, c = 50_000, 21_843
    labels = rng.integers(0, c, n)
    base = np.where(rng.random((3, n)) < 0.8, labels, rng.integers(0, c, (3, n)))
    pruned = np.where(rng.random((3, n)) < 0.75, labels, rng.integers(0, c, (3, n)))
    result = pie_audit.compare(
        Population.from_arrays(base, labels), Population.from_arrays(pruned, labels), n_bootstrap=20
    )
    html = render(result, thumbnails=Thumbnails(images={}))
    assert len(html.encode()) <= 3_000_000
    page = parse(html)
    assert len(class_table(page).rows) == len(table_classes(result.classes)) < 1000
