"""The pages added beside the report, in a real headless browser (Debian's chromium through Playwright).

- the risk page (``pie-audit risk``): offline, its class table sorts by a number, a hostile class
  name stays text;
- the blinded review page (``pie-audit review export``): offline, the sheet's rows in its order,
  its images decoded, nothing that tells a PIE from a control;
- the compare report's new parts: label issues, the dense-only risk, intensification and the
  human review's sortable tally;
- an inconclusive verdict, rendered as one.

No mocks: every page is written by the package and opened from disk. Skipped where chromium is
missing, unless the CI variable is set: CI must run it.
"""

import os
import re

import numpy as np
import pandas as pd
import pytest

import pie_audit
from pie_audit import Population
from pie_audit.cli import main
from pie_audit.interchange import CATEGORIES
from pie_audit.report import export_review, tally_review
from synthetic import planted_predictions, write_population
from test_report_browser import CHROMIUM, browser, open_page  # noqa: F401 - browser is a fixture

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
        reason="chromium is not installed (CI installs it and runs this test)",
    ),
]

HOSTILE = "<script>alert(1)</script>"


def run_cli(*args):
    """Run the CLI in-process; return its exit code."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code


def softmax_for(predictions, n_classes, seed, confidence=0.7):
    """Probability rows of shape (M, N, C) whose arg-max is each model's prediction."""
    rng = np.random.default_rng(seed)
    m, n = predictions.shape
    p = rng.dirichlet(np.ones(n_classes), size=(m, n)) * (1 - confidence)
    p[np.arange(m)[:, None], np.arange(n)[None, :], predictions] += confidence
    return p.astype(np.float32)


def offline(requests, url):
    """The requests a page made beyond its own file and its inline data: URIs."""
    return [r for r in requests if r != url and not r.startswith("data:")]


def column(page, table, index):
    return page.eval_on_selector_all(
        f"#{table} tbody tr", f"rows => rows.map(r => r.cells[{index}].textContent.trim())"
    )


def watch_dialogs(page):
    dialogs = []

    def on_dialog(dialog):
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return dialogs


# ---- 1. the risk page ---------------------------------------------------------------------------

RISK_NAMES = [HOSTILE, "a & b", "plain", "hard", "easy", "middling"]


@pytest.fixture
def risk_page(tmp_path):
    rng = np.random.default_rng(21)
    n_classes = len(RISK_NAMES)
    labels = rng.permutation(np.arange(300) % n_classes)
    predictions = planted_predictions(
        7, labels, accuracy=0.8, n_classes=n_classes, seed=21, class_accuracy={3: 0.45, 4: 0.97, 0: 0.6}
    )
    population = Population.from_arrays(
        predictions, labels, probabilities=softmax_for(predictions, n_classes, 21), classes=RISK_NAMES
    )
    base = pie_audit.write_population(tmp_path / "base", population)
    out = tmp_path / "risk"
    assert run_cli("risk", base, "--out", out, "--top", "0.1", "--quiet") == 0
    classes = pd.read_csv(out / "risk.csv", keep_default_na=False, na_values=[""])
    return out / "index.html", classes


def test_risk_page_offline_sorts_by_number_and_keeps_a_script_name_as_text(browser, risk_page):
    path, classes = risk_page
    url = path.as_uri()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs = watch_dialogs(page)  # before the page loads: an inline script would fire at once
    problems, requests = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url, wait_until="load")

    assert page.title() == "pie-audit risk: base"
    assert offline(requests, url) == []
    # The table as written: one row per class of risk.csv, its values as the csv has them.
    assert column(page, "class-risk", 0) == classes["name"].tolist()
    assert column(page, "class-risk", 0)[0] == HOSTILE  # shown as the text it is
    assert page.locator("#class-risk tbody script").count() == 0
    assert page.locator("script").count() == 1  # the page's own sorter, nothing more
    assert [int(v) for v in column(page, "class-risk", 2)] == classes["n_examples"].tolist()
    assert column(page, "class-risk", 5) == [f"{v:.3f}" for v in classes["risk_mean"]]
    assert [int(v) for v in column(page, "class-risk", 6)] == classes["high_risk"].tolist()
    assert sum(int(v) for v in column(page, "class-risk", 6)) == 30  # 10% of 300

    # Sorting by "mean risk" (a number), then by "dense deficit": the csv's order by the same value.
    headers = page.locator("#class-risk thead th")
    assert headers.nth(5).inner_text().strip() == "mean risk"
    headers.nth(5).locator("button").click()
    assert column(page, "class-risk", 0) == classes.sort_values("risk_mean", kind="stable")["name"].tolist()
    assert headers.nth(5).get_attribute("aria-sort") == "ascending"
    headers.nth(5).locator("button").click()
    assert column(page, "class-risk", 0) == classes.sort_values("risk_mean", ascending=False, kind="stable")["name"].tolist()
    assert headers.nth(5).get_attribute("aria-sort") == "descending"

    assert headers.nth(4).inner_text().strip() == "dense deficit (points)"
    headers.nth(4).locator("button").click()
    by_deficit = classes.sort_values("dense_deficit", kind="stable")
    assert column(page, "class-risk", 0) == by_deficit["name"].tolist()
    assert by_deficit["name"].iloc[0] == "hard"  # the planted hard class leads
    shown = [float(v) for v in column(page, "class-risk", 4)]
    assert shown == sorted(shown)
    np.testing.assert_allclose(shown, 100 * by_deficit["dense_deficit"].to_numpy(), atol=0.051)
    assert headers.nth(5).get_attribute("aria-sort") == "none"

    # The riskiest examples: 50 rows, riskiest first.
    risks = [float(v) for v in column(page, "riskiest", 4)]
    assert len(risks) == 50 and risks == sorted(risks, reverse=True)
    assert set(column(page, "riskiest", 2)) <= set(RISK_NAMES)  # labels by name, as text

    assert dialogs == []
    assert problems == []
    context.close()


# ---- 2. the blinded review page -----------------------------------------------------------------

REVIEW_NAMES = ["cat", "dog", "heron", "owl", "bird"]  # nothing that reads as "PIE" or "control"


@pytest.fixture(scope="module")
def review_audit(tmp_path_factory):
    """A report directory of 400 examples with a few dozen PIEs, and an images file for them."""
    root = tmp_path_factory.mktemp("review-audit")
    labels = np.random.default_rng(7).permutation(np.arange(400) % 5)
    base = planted_predictions(8, labels, accuracy=0.9, n_classes=5, seed=1)
    pruned = planted_predictions(8, labels, accuracy=0.85, n_classes=5, seed=2, class_accuracy={2: 0.3})
    result = pie_audit.compare(
        write_population(root / "base", base, labels, classes=REVIEW_NAMES),
        write_population(root / "pruned", pruned, labels, classes=REVIEW_NAMES),
        n_bootstrap=50,
    )
    pie_audit.write_outputs(result, root / "audit")
    images = np.random.default_rng(0).integers(0, 256, size=(400, 3, 10, 12)).astype(np.uint8)
    np.savez(root / "images.npz", example_id=np.arange(400), images=images)
    return root / "audit", root / "images.npz"


CARDS = """cards => cards.map(c => ({
  id: c.id,
  dts: Array.from(c.querySelectorAll('dt'), d => d.textContent.trim()),
  dds: Array.from(c.querySelectorAll('dd'), d => d.textContent.trim()),
  text: c.textContent,
  // Every attribute but the image data and the card's own class (the gallery's "pie" style, the
  // same on every card: checked below to be uniform, so it tells no row from another).
  attributes: Array.from(c.querySelectorAll('*')).flatMap(
    e => Array.from(e.attributes, a => a.name === 'src' ? '' : a.name + '=' + a.value)).concat(
    Array.from(c.attributes, a => a.name === 'class' ? '' : a.name + '=' + a.value)).join(' '),
  names: Array.from(c.attributes, a => a.name).sort().join(' '),
  cls: c.className,
}))"""


def test_review_page_offline_in_sheet_order_with_images_and_blind(browser, review_audit, tmp_path):
    audit_dir, images_file = review_audit
    out = tmp_path / "review"
    assert run_cli("review", "export", audit_dir, "--out", out, "--top", "20", "--controls", "20", "--seed", "3",
                   "--images", images_file, "--quiet") == 0  # fmt: skip
    sheet = pd.read_csv(out / "sheet.csv", dtype=str, keep_default_na=False)
    key = pd.read_csv(out / "key.csv")
    assert len(sheet) == 40 and key["pie"].sum() == 20  # both kinds are on the sheet

    url = (out / "index.html").as_uri()
    page, problems, requests = open_page(browser, url, viewport={"width": 1280, "height": 900})
    assert offline(requests, url) == []
    cards = page.eval_on_selector_all("#sheet figure", CARDS)
    assert len(cards) == len(sheet)
    # One card per sheet row, in the sheet's order, with its row, example and labels.
    assert [c["id"] for c in cards] == [f"row-{r}" for r in sheet["row"]]
    assert [c["dds"][0] for c in cards] == sheet["row"].tolist()
    assert [c["dds"][1] for c in cards] == [f"#{i}" for i in sheet["example_id"]]
    assert [c["dds"][2] for c in cards] == sheet["label"].tolist()
    assert [c["dds"][3] for c in cards] == sheet["baseline_modal"].tolist()
    assert all(c["dts"] == ["row", "example", "true", "baseline", "category"] for c in cards)
    assert all(c["dds"][4] == "" for c in cards)  # the reviewer's, blank

    # The images are decoded: every one has pixels, each at the file's size.
    sizes = page.eval_on_selector_all(
        "#sheet figure img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
    )
    assert len(sizes) == len(sheet)
    assert all(complete and w > 0 and h > 0 for complete, w, h in sizes)
    assert {(w, h) for _, w, h in sizes} == {(12, 10)}  # smaller than 256: kept at its size
    assert page.locator("#sheet .note").count() == 0  # no "No images" note

    # Blind: no card says PIE or control, in its text or in any attribute, and all are alike in form.
    for card in cards:
        for text in (card["text"], card["attributes"]):
            assert not re.search(r"\bpies?\b", text, flags=re.IGNORECASE), text
            assert "control" not in text.lower(), text
    assert len({c["names"] for c in cards}) == 1 and {c["cls"] for c in cards} == {"pie"}
    sheet_text = page.locator("#sheet").inner_text()
    assert "PIE" not in sheet_text and "control" not in sheet_text.lower()
    # Nor does the page give away how many are PIEs.
    body = page.locator("body").inner_text()
    assert "20 PIEs" not in body and "score" not in body.lower()
    assert problems == []


# ---- 3. the compare report's new parts -----------------------------------------------------------

N_LABEL_CLASSES = 4


def _mislabelled(seed=0):
    """600 examples; 40 labelled wrongly, every dense model confidently predicting their true class.

    The pruned models move most of the mislabelled ones to their (wrong) label: they become PIEs
    (as tests/test_labels.py plants them).
    """
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(N_LABEL_CLASSES), 150)
    labels = truth.copy()
    wrong = rng.choice(600, 40, replace=False)
    labels[wrong] = (truth[wrong] + 1) % N_LABEL_CLASSES
    base = np.where(rng.random((6, 600)) < 0.95, truth, (truth + 2) % N_LABEL_CLASSES)
    pruned = base.copy()
    pruned[:, wrong[:30]] = labels[wrong[:30]]
    others = rng.choice(np.setdiff1d(np.arange(600), wrong), 30, replace=False)
    pruned[:, others] = (truth[others] + 3) % N_LABEL_CLASSES
    return labels, base, pruned, wrong


@pytest.fixture(scope="module")
def labelled_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    labels, base, pruned, wrong = _mislabelled()
    probabilities = softmax_for(base, N_LABEL_CLASSES, seed=1, confidence=0.8)
    result = pie_audit.compare(
        Population.from_arrays(base, labels, probabilities=probabilities, name="dense"),
        Population.from_arrays(pruned, labels, name="pruned"),
        n_bootstrap=50,
    )
    assert result.examples["label_issue"].any()
    pie_audit.write_outputs(result, root / "audit")
    # A blinded review of that audit, every row given a category, tallied against its key.
    export_review(root / "audit", root / "review", top=30, controls=30, seed=2)
    sheet_path = root / "review" / "sheet.csv"
    sheet = pd.read_csv(sheet_path, dtype=str, keep_default_na=False)
    sheet["category"] = [CATEGORIES[i % len(CATEGORIES)] for i in range(len(sheet))]
    sheet.to_csv(sheet_path, index=False)
    tally = tally_review(sheet_path, write=False, examples=result.examples)
    pie_audit.write_outputs(result, root / "report", review=tally)
    return result, tally, root / "report" / "report.html"


def test_report_shows_label_issues_risk_intensification_and_sorts_the_review(browser, labelled_report):
    result, tally, path = labelled_report
    url = path.as_uri()
    page, problems, requests = open_page(browser, url, viewport={"width": 1280, "height": 900})
    assert offline(requests, url) == []
    pies = page.locator("#pies")
    paragraphs = pies.locator("p").all_inner_texts()
    summary = result.pies
    [labels_line] = [p for p in paragraphs if p.startswith("Label issues:")]
    assert labels_line.startswith(
        f"Label issues: cleanlab flags {100 * summary.label_issue_fraction:.1f}% of the PIEs as likely label errors, "
        f"against {100 * summary.non_pie_label_issue_fraction:.1f}% of the other examples (odds ratio "
    )
    assert re.search(r"Fisher's exact test p [=<] ", labels_line) and labels_line.endswith("Flagged PIEs are marked in the gallery.")
    assert summary.label_issue_fraction > summary.non_pie_label_issue_fraction  # the planted errors are PIEs
    [risk_line] = [p for p in paragraphs if p.startswith("Dense-only risk:")]
    assert f"ranks the PIEs with ROC AUC {summary.risk_auc:.2f}; PIEs are {100 * summary.risk_top_1_percent:.1f}% of the 1% riskiest" in risk_line
    assert f"(against {100 * summary.fraction:.1f}% of all)" in risk_line

    # Gallery cards flag the PIEs cleanlab calls mislabelled, with their label quality.
    flagged = page.locator(".gallery .pie dd.label-issue")
    assert flagged.count() >= 1
    assert all(re.fullmatch(r"likely label issue \(\d\.\d\d\)", t) for t in flagged.all_inner_texts())
    shown_ids = page.eval_on_selector_all(
        ".gallery .pie", "cards => cards.filter(c => c.querySelector('dd.label-issue'))"
        ".map(c => parseInt(c.querySelector('dd').textContent.slice(1)))",
    )
    examples = result.examples.set_index("example_id")
    assert all(bool(examples.loc[i, "label_issue"]) and bool(examples.loc[i, "pie"]) for i in shown_ids)

    # Intensification: its heading, its sentence and its figure.
    heading = page.locator("#classes h3", has_text="Intensification")
    assert heading.count() == 1
    assert "Spearman's rank correlation" in page.locator("#classes").inner_text()
    figure = page.locator('svg[aria-label="Dense deficit against normalized change"]')
    assert figure.count() == 1 and figure.is_visible()
    box = figure.bounding_box()
    assert box["width"] > 200 and box["height"] > 100

    # The human review's tally: a row per category, and the category column sorts alphabetically.
    table = page.locator("#review-table")
    assert table.count() == 1
    assert column(page, "review-table", 0) == tally["category"].tolist()
    assert [int(v) for v in column(page, "review-table", 1)] == tally["pies"].tolist()
    assert [int(v) for v in column(page, "review-table", 2)] == tally["controls"].tolist()
    assert sum(int(v) for v in column(page, "review-table", 1)) == 30
    header = table.locator("thead th").nth(0)
    header.locator("button").click()
    assert column(page, "review-table", 0) == sorted(CATEGORIES)
    assert header.get_attribute("aria-sort") == "ascending"
    header.locator("button").click()
    assert column(page, "review-table", 0) == sorted(CATEGORIES, reverse=True)
    # And by a number: the PIEs column.
    table.locator("thead th").nth(1).locator("button").click()
    assert [int(v) for v in column(page, "review-table", 1)] == sorted(tally["pies"].tolist())
    assert problems == []


# ---- 4. an inconclusive verdict -------------------------------------------------------------------

VERDICT_LABELS = np.repeat(np.arange(10), 100)


@pytest.fixture
def inconclusive_report(tmp_path):
    base = planted_predictions(5, VERDICT_LABELS, accuracy=0.9, n_classes=10, seed=3, class_accuracy={9: 0.98})
    pruned = planted_predictions(5, VERDICT_LABELS, accuracy=0.9, n_classes=10, seed=4, class_accuracy={9: 0.98})
    pruned[:2, VERDICT_LABELS == 9] = 0  # class 9 lost entirely by 2 of the 5 pruned models
    result = pie_audit.compare(
        Population.from_arrays(base, VERDICT_LABELS, name="baseline"),
        Population.from_arrays(pruned, VERDICT_LABELS, name="pruned"),
    )
    assert result.outcome == "inconclusive"
    pie_audit.write_outputs(result, tmp_path / "report")
    return result, tmp_path / "report" / "report.html"


def test_an_inconclusive_verdict_renders_as_one(browser, inconclusive_report):
    result, path = inconclusive_report
    url = path.as_uri()
    page, problems, requests = open_page(browser, url, viewport={"width": 1280, "height": 900}, color_scheme="light")
    assert offline(requests, url) == []
    assert page.locator(".verdict .badge").inner_text() == "Gate INCONCLUSIVE"
    verdict = page.locator("#verdict .verdict")
    classes = verdict.get_attribute("class").split()
    assert "inconclusive" in classes and "passed" not in classes
    # Drawn as inconclusive (purple), not as failed (red), though it did not pass.
    purple = "rgb(130, 80, 223)"
    assert verdict.evaluate("e => getComputedStyle(e).borderTopColor") == purple
    assert page.locator(".verdict .badge").evaluate("e => getComputedStyle(e).color") == purple
    findings = page.locator(".inconclusive-findings")
    assert findings.count() == 1 and "max-class-recall-drop" in findings.inner_text()
    assert page.locator(".verdict > ul").count() == 0  # no failure listed

    rows = page.eval_on_selector_all(
        "#verdict table tbody tr",
        "rows => rows.map(r => [r.cells[0].textContent.trim(), r.cells[4].textContent.trim(), r.cells[4].className])",
    )
    status = {rule: (text, cls) for rule, text, cls in rows}
    assert status["max-class-recall-drop"] == ("inconclusive", "status-inconclusive")
    assert page.locator("td.status-inconclusive").first.evaluate("e => getComputedStyle(e).color") == purple
    assert {rule for rule, (text, _) in status.items() if text == "failed"} == set()
    assert {i.rule for i in result.gate.inconclusive} == {r for r, (t, _) in status.items() if t == "inconclusive"}
    assert problems == []
