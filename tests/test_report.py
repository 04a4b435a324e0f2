"""The HTML report: content, escaping, self-containment, the no-image case and the 1,000-class bound."""

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from markupsafe import escape
from synthetic import planted_predictions, write_population

import pie_audit
from pie_audit.plots import MAX_PLOTTED_CLASSES
from pie_audit.report import GALLERY_SIZE, Gallery, render_report
from pie_audit.store import Population
from pie_audit.thumbnails import NO_DATASET, Thumbnails, png_data_uri

MAX_BYTES = 5 * 1024 * 1024
WHEN = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
EVIL = "<script>alert(1)</script>"


def render(result, *, thumbnails=None, **kwargs):
    gallery = None if thumbnails is None else Gallery(result.top_pies(GALLERY_SIZE), thumbnails)
    return render_report(result, gallery=gallery, created_at=WHEN, **kwargs)


def class_table(html):
    """Rows of the per-class table as lists of (text, data-v) cells."""
    body = html[html.index('id="class-table"') :]
    body = body[: body.index("</table>")]
    rows = re.findall(r"<tr class=\"\w+\">(.*?)</tr>", body)
    return [re.findall(r'<td[^>]*?(?: data-v="([^"]*)")?>(.*?)</td>', row) for row in rows]


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
    html = render(harmed_result)
    assert "Gate FAILED" in html
    (failure,) = harmed_result.gate.failures
    assert f"<li>{failure.message}</li>" in html
    assert failure.message.startswith("1 class(es) significantly harmed by more than 2.0 points")
    # Cards: PIE count and fraction, harmed and helped counts, both mean accuracies.
    pies = harmed_result.pies
    assert f'<div class="value">{pies.count}</div>' in html
    assert f"PIEs ({100 * pies.fraction:.2f}% of 400 test examples)" in html
    assert f'{100 * harmed_result.baseline_accuracy.mean():.2f}%</div><div class="label">baseline mean accuracy (8 models)' in html
    assert "<h3>Significantly harmed (1)</h3>" in html
    change = 100 * harmed_result.harmed["normalized_change"].iloc[0]
    assert f'<span style="color:var(--harmed)">2</span>: {change:+.2f} points' in html
    assert "q &lt; 0.0001" in html
    # The gate table explains each rule: limit, observed value, status.
    assert re.search(r"<code class=\"name\">max-class-drop</code>.*?2\.00 points.*?failed", html)
    assert re.search(r"<code class=\"name\">max-pie-fraction</code>.*?>off<", html)


def test_class_table_holds_every_class_with_raw_sort_values(harmed_result):
    rows = class_table(render(harmed_result))
    classes = harmed_result.classes
    assert len(rows) == len(classes) == 5
    for row, expected in zip(rows, classes.itertuples(), strict=True):
        label, name, support, base, pruned, change, normalized, ci, p, q, sig, n_pies = row
        assert label == (str(expected.label), str(expected.label))
        assert name == ("", expected.name)
        assert support[0] == str(expected.support)
        assert float(base[0]) == pytest.approx(expected.baseline_recall_mean)
        assert float(normalized[0]) == expected.normalized_change  # exact: repr round-trips
        assert normalized[1] == f"{100 * expected.normalized_change:+.2f}"
        assert float(q[0]) == expected.q_value
        assert sig[1] == (expected.direction if expected.significant else "no")
        assert n_pies[0] == str(expected.n_pies)
    assert rows[2][10][1] == "harmed"


def test_pie_accuracy_and_gallery(harmed_result):
    html = render(harmed_result)
    pies = harmed_result.pies
    assert (
        f"<td class=\"num\">{100 * pies.pruned_accuracy_pies:.2f}%</td>"
        f"<td class=\"num\">{100 * pies.pruned_accuracy_non_pies:.2f}%</td>"
    ) in html
    top = harmed_result.top_pies(GALLERY_SIZE)
    assert len(top) == min(pies.count, GALLERY_SIZE) > 0
    cards = re.findall(r'<figure class="pie">(.*?)</figure>', html, re.S)
    assert len(cards) == len(top)
    first = top.iloc[0]
    assert f"#{first.example_id} &middot; {first.score:.2f}" in cards[0]
    assert f"({100 * first.pruned_share:.0f}%" in cards[0]


def test_plots_are_inline_svg_with_unique_ids(harmed_result):
    html = render(harmed_result)
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    labels = [re.search(r'aria-label="([^"]+)"', s).group(1) for s in svgs]
    assert labels == ["Normalized recall change per class", "PIEs per class", "Per-model accuracy in both populations"]
    for svg in svgs:
        assert "<style" not in svg  # it would style the whole page
        assert "currentColor" in svg  # axes and text follow the page's colour (dark mode)
    ids = re.findall(r'\bid="([^"]+)"', html)
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
    add_run_fields(pruned, **common, sparsity={"target": 0.9, "achieved": 0.8995}, command=["pie-audit", "train", "--sparsity", "0.9"])
    html = render(pie_audit.compare(base, pruned, n_bootstrap=50), command=["pie-audit", "compare", "base", "pruned"])
    for text in (
        "<code>pie-audit compare base pruned</code>",
        "<code>pie-audit train --sparsity 0.9</code>",
        "<code>sha256:abc123</code>",
        "<code>small-cnn</code>",
        "<code>{&#34;epochs&#34;: 7, &#34;lr&#34;: 0.05}</code>",
        "<code>{&#34;pie_audit&#34;: &#34;0.1.0&#34;, &#34;torch&#34;: &#34;2.14.1&#34;}</code>",
        "<code>deadbeef</code>",
        "<dd>0, 1, 2</dd>",  # seeds
        "<dd>2026-11-26T10:41:00+00:00</dd>",
        "<dt>n_bootstrap</dt><dd><code>50</code></dd>",
        "2026-11-26T12:00:00+00:00",  # report time
        f"<code>{base}</code>",
        '<td class="num">90.0%</td><td class="num">89.95%</td>',  # pruned target and achieved sparsity
    ):
        assert text in html, text


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
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f'<td class="name">{escaped}</td>' in html  # the class table
    assert escaped in re.search(r'<svg[^>]*aria-label="Normalized.*?</svg>', html, re.S).group(0)  # the figure
    assert "q&#34;uote" in html and "b&lt;&amp;&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html


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
    html = render(harmed_result, thumbnails=Thumbnails(note=NO_DATASET))
    assert "<img" not in html
    assert f'<p class="note">{escape(NO_DATASET)}</p>' in html
    first = harmed_result.top_pies(1).iloc[0]
    assert f"<dt>example</dt><dd>#{first.example_id} &middot; {first.score:.2f}</dd>" in html
    assert len(re.findall(r'<figure class="pie">', html)) == len(harmed_result.top_pies(GALLERY_SIZE))


def test_gallery_with_images(harmed_result):
    top = harmed_result.top_pies(GALLERY_SIZE)
    images = {int(i): png_data_uri(np.full((1, 8, 8), i)) for i in top["example_id"]}
    html = render(harmed_result, thumbnails=Thumbnails(images=images))
    first = int(top["example_id"].iloc[0])
    assert f'<img src="{images[first]}" alt="test example {first}, labelled' in html
    assert html.count("<img ") == len(top)
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
    assert len(class_table(html)) == 1000
    assert html.count("<img ") == GALLERY_SIZE
    # The figure shows the most affected classes, every harmed one among them.
    assert f"the {MAX_PLOTTED_CLASSES} most affected of 1000 classes" in html
    figure = re.search(r'<svg[^>]*aria-label="Normalized.*?</svg>', html, re.S).group(0)
    shown = set(re.findall(r"\[(\d+)\]</text>", figure))
    assert len(shown) == MAX_PLOTTED_CLASSES
    assert {str(label) for label in imagenet_like.harmed["label"]} <= shown


def test_degenerate_audit_renders_undefined_values_as_dashes(tmp_path):
    # One model per population (nothing can be tested) and a class without test examples.
    labels = np.arange(40) % 3
    names = ["a", "b", "c", "never seen"]
    base = write_population(tmp_path / "b", planted_predictions(1, labels, accuracy=0.9, n_classes=3, seed=1), labels, classes=names)
    pruned = write_population(tmp_path / "p", planted_predictions(1, labels, accuracy=0.6, n_classes=3, seed=2), labels, classes=names)
    result = pie_audit.compare(base, pruned, n_bootstrap=50)
    html = render(result)
    rows = class_table(html)
    assert len(rows) == 4
    assert rows[3][3] == ("", "\u2014") and rows[3][10] == ("", "not tested")  # recall, significance
    assert rows[0][7] == ("", "\u2014")  # no interval with one model
    for note in result.notes:
        assert f'<p class="note">Note: {escape(note)}</p>' in html
    assert "Gate PASSED" in html
