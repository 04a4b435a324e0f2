"""The report in a real headless browser (Debian's chromium through Playwright).

Renders without console errors or any network request, sorts its class table, fits a narrow
window, hides navigation in print, and leaves screenshots (light wide, dark narrow).
Skipped where chromium is missing, unless the CI variable is set: CI must run it.
"""

import os
import shutil

import numpy as np
import pytest

import pie_audit
from pie_audit.report._outputs import write_outputs
from pie_audit.report._render import GALLERY_SIZE, Gallery
from pie_audit.report._thumbnails import Thumbnails, png_data_uri

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # we run as root in containers
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
        reason="chromium is not installed (CI installs it and runs this test)",
    ),
]


@pytest.fixture
def report(tmp_path, harmed_populations):
    result = pie_audit.compare(*harmed_populations, n_bootstrap=200)
    top = result.top_pies(GALLERY_SIZE)
    images = {int(i): png_data_uri(np.outer(np.arange(8), np.ones(8)) * (i % 7)) for i in top["example_id"]}
    gallery = Gallery(top, Thumbnails(images=images))
    write_outputs(result, tmp_path / "report", gallery=gallery, command=["pie-audit", "compare"])
    return result, tmp_path / "report" / "report.html"


@pytest.fixture
def browser():
    if os.environ.get("CI"):
        from playwright import sync_api  # CI must run this test: a missing package fails it
    else:
        sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, url, **context):
    page = browser.new_context(**context).new_page()
    problems, requests = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url, wait_until="load")
    return page, problems, requests


def column(page, index):
    return page.eval_on_selector_all(
        "#class-table tbody tr", f"rows => rows.map(r => r.cells[{index}].textContent.trim())"
    )


def test_renders_offline_without_errors_and_sorts(browser, report, tmp_path):
    result, path = report
    url = path.as_uri()
    page, problems, requests = open_page(browser, url, viewport={"width": 1280, "height": 900}, color_scheme="light")
    assert problems == []
    assert [r for r in requests if r != url and not r.startswith("data:")] == []
    assert page.title() == "pie-audit: pruned vs base"
    assert page.locator(".verdict .badge").inner_text() == "Gate FAILED"
    assert page.locator(".pie img").count() == min(result.pies.count, GALLERY_SIZE)
    assert page.locator("svg.figure").count() == 5  # recall change, intensification, PIEs per class, PIE flows, accuracy

    classes = result.classes
    header = page.locator("#class-table thead th").nth(6)  # normalized change
    header.locator("button").click()
    expected = classes.sort_values(["normalized_change", "label"])["label"].astype(str).tolist()
    assert column(page, 0) == expected
    assert header.get_attribute("aria-sort") == "ascending"
    header.locator("button").click()
    assert column(page, 0) == classes.sort_values("normalized_change", ascending=False)["label"].astype(str).tolist()
    assert header.get_attribute("aria-sort") == "descending"
    assert page.locator("#class-table thead th").nth(0).get_attribute("aria-sort") == "none"
    # A text column sorts by its text.
    page.locator("#class-table thead th").nth(1).locator("button").click()
    assert column(page, 1) == sorted(classes["name"])
    page.screenshot(path=tmp_path / "report-light-wide.png", full_page=True)
    assert (tmp_path / "report-light-wide.png").stat().st_size > 10_000
    assert problems == []


def test_narrow_dark_and_print(browser, report, tmp_path):
    _, path = report
    page, problems, requests = open_page(browser, path.as_uri(), viewport={"width": 390, "height": 844}, color_scheme="dark")
    # Nothing but the scrolling table wrappers may be wider than a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(22, 25, 29)"
    # The figures' text and axes follow the page's (light) text colour.
    assert page.evaluate("getComputedStyle(document.querySelector('svg.figure')).color") == "rgb(227, 230, 234)"
    page.screenshot(path=tmp_path / "report-dark-narrow.png", full_page=True)
    page.emulate_media(media="print")
    assert page.locator("nav.toc").is_hidden()
    assert problems == []
    assert [r for r in requests if r != path.as_uri() and not r.startswith("data:")] == []


# --- groups -------------------------------------------------------------------------------------

#: A group name that runs if it ever reaches the page as markup (the page allows inline scripts).
PWN = "<script>window.pwned = 1</script>"


@pytest.fixture
def grouped_report(tmp_path):
    from test_report import grouped_result

    result = grouped_result(evil=PWN)
    write_outputs(result, tmp_path / "grouped")
    return result, tmp_path / "grouped" / "report.html"


def visible_cards(page):
    return page.eval_on_selector_all(
        ".gallery .pie", "cards => cards.filter(c => !c.hidden && c.offsetParent !== null).map(c => c.textContent)"
    )


def test_groups_table_sorts_and_gallery_filters_without_running_names(browser, grouped_report, tmp_path):
    from test_report import HARMED_GROUP, QUOTES

    result, path = grouped_report
    url = path.as_uri()
    page, problems, requests = open_page(browser, url, viewport={"width": 1280, "height": 900})
    assert problems == []
    assert [r for r in requests if r != url and not r.startswith("data:")] == []
    assert page.evaluate("window.pwned") is None  # the hostile value stayed text
    assert page.locator("#group-table tbody td.name").nth(2).inner_text() == f"age={PWN}"

    # The groups table sorts by the raw normalized change, most harmed first.
    groups = result.groups
    header = page.locator("#group-table thead th").nth(5)
    assert header.inner_text().startswith("normalized change")
    header.locator("button").click()
    names = page.eval_on_selector_all("#group-table tbody tr", "rows => rows.map(r => r.cells[0].textContent)")
    assert names == groups.sort_values("normalized_change", kind="stable")["group"].tolist()
    assert names[0] == HARMED_GROUP

    # The gallery shows only the chosen group's PIEs; "every group" shows them all again.
    top = result.top_pies(GALLERY_SIZE)
    assert len(visible_cards(page)) == len(top) > 0
    for label, member in (
        (HARMED_GROUP, (top["sex"] == "F") & (top["age"] == "old")),
        (f"age={PWN}", top["age"] == PWN),
        (f"sex={QUOTES}", top["sex"] == QUOTES),
    ):
        page.select_option("#gallery-filter", label=label)
        shown = visible_cards(page)
        assert len(shown) == int(member.sum()), label
        assert all(f"#{i} " in text for i, text in zip(top.loc[member, "example_id"], shown, strict=True))
        assert page.locator("#gallery-count").inner_text() == f"{int(member.sum())} of {len(top)} shown"
        assert page.locator("#gallery-empty").is_visible() == (not member.any())
    page.select_option("#gallery-filter", label="every group")
    assert len(visible_cards(page)) == len(top)
    page.screenshot(path=tmp_path / "report-groups.png", full_page=True)
    assert page.evaluate("window.pwned") is None
    assert problems == []


@pytest.fixture
def thousand_class_report(tmp_path):
    from synthetic import planted_predictions

    labels = np.arange(20_000) % 1000
    base = planted_predictions(6, labels, accuracy=0.8, n_classes=1000, seed=1)
    pruned = planted_predictions(6, labels, accuracy=0.78, n_classes=1000, seed=2, class_accuracy={c: 0.2 for c in range(0, 1000, 40)})
    result = pie_audit.compare(
        pie_audit.Population.from_arrays(base, labels, classes=[f"class {c:04d}" for c in range(1000)]),
        pie_audit.Population.from_arrays(pruned, labels, name="pruned"),
        n_bootstrap=20,
    )
    write_outputs(result, tmp_path / "report", command=["pie-audit", "compare"])
    return result, tmp_path / "report" / "report.html"


def _shown_rows(page):
    return page.eval_on_selector_all("#class-table tbody tr:not([hidden])", "rows => rows.map(r => r.cells[1].textContent.trim())")


def test_a_thousand_classes_page_filter_and_volcano(browser, thousand_class_report):
    from pie_audit.report._render import TABLE_PAGE_SIZE, table_classes

    result, path = thousand_class_report
    assert path.stat().st_size < 3_000_000
    page, problems, _ = open_page(browser, path.as_uri(), viewport={"width": 1280, "height": 900})
    # Every class is one point of the volcano plot, beside the forest plot of the 40 that matter.
    assert page.locator('svg[aria-label^="Every class"]').count() == 1
    listed = table_classes(result.classes)
    assert page.locator("#class-table tbody tr").count() == len(listed) > TABLE_PAGE_SIZE
    assert len(_shown_rows(page)) == TABLE_PAGE_SIZE
    count = page.locator(".pager-count")
    pages = -(-len(listed) // TABLE_PAGE_SIZE)
    assert count.inner_text() == f"1\u2013{TABLE_PAGE_SIZE} of {len(listed)} (page 1 of {pages})"
    page.locator('.pager button[data-step="1"]').click()
    assert count.inner_text().startswith(f"{TABLE_PAGE_SIZE + 1}\u2013")
    assert _shown_rows(page) == listed["name"].iloc[TABLE_PAGE_SIZE : 2 * TABLE_PAGE_SIZE].tolist()
    # Only the harmed ones, most harmed first once sorted by normalized change.
    page.locator(".pager select").select_option("harmed")
    harmed = result.harmed
    assert sorted(_shown_rows(page)) == sorted(harmed["name"])
    page.locator("#class-table thead th").nth(6).locator("button").click()
    assert _shown_rows(page) == harmed.sort_values(["normalized_change", "label"])["name"].tolist()
    # A name typed in the box finds its class.
    page.locator(".pager select").select_option("all")
    page.locator(".pager input").fill(harmed["name"].iloc[0])
    assert _shown_rows(page) == [harmed["name"].iloc[0]]
    page.locator(".pager input").fill("no such class")
    assert _shown_rows(page) == [] and count.inner_text() == "no class matches"
    page.emulate_media(media="print")
    assert page.locator(".pager").is_hidden()
    assert problems == []


def test_ten_classes_have_no_pager_and_no_volcano(browser, report):
    _, path = report
    page, problems, _ = open_page(browser, path.as_uri())
    assert page.locator(".pager").count() == 0
    assert page.locator('svg[aria-label^="Every class"]').count() == 0
    assert problems == []
