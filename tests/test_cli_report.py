"""``pie-audit report``: the sweep page, its links and plots, exit codes and atomic output."""

import json

import numpy as np
import pytest
from html_page import parse
from synthetic import planted_predictions, write_population

from pie_audit.report._outputs import NOT_A_SWEEP, REPORT_FILES
from pie_audit.report._render import NO_IMAGES
from pie_audit.audit._sweep import DUPLICATE_NAME, sweep_table

from cli_run import run

N_CLASSES = 5


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    # The CLI reads ./pyproject.toml by default.
    monkeypatch.chdir(tmp_path)


def population(path, labels, *, seed, accuracy, sparsity=None, harm=None, n_classes=N_CLASSES):
    predictions = planted_predictions(
        6, labels, accuracy=accuracy, n_classes=n_classes, seed=seed, class_accuracy=harm
    )
    write_population(path, predictions, labels, classes=[f"class {c}" for c in range(n_classes)])
    if sparsity is not None:
        for m, run_json in enumerate(sorted(path.glob("*/run.json"))):
            record = json.loads(run_json.read_text())
            record["sparsity"] = {"target": sparsity, "achieved": sparsity - 0.001 * m}
            run_json.write_text(json.dumps(record))
    return path


@pytest.fixture
def sweep_dirs(tmp_path, audit_labels):
    """A baseline, a 50% population that predicts like it, and a 90% one that harms class 2."""
    return (
        population(tmp_path / "base", audit_labels, seed=1, accuracy=0.9, sparsity=0.0),
        population(tmp_path / "sparse-50", audit_labels, seed=1, accuracy=0.9, sparsity=0.5),
        population(tmp_path / "sparse-90", audit_labels, seed=3, accuracy=0.88, sparsity=0.9, harm={2: 0.5}),
    )


def test_sweep_page_links_plots_and_exit_1(sweep_dirs, tmp_path, capsys):
    base, p50, p90 = sweep_dirs
    # Given out of order: the plots sort by sparsity, the table keeps the order given.
    assert run("report", base, p90, p50, "--out", tmp_path / "sweep", "--n-bootstrap", 100) == 1
    out = capsys.readouterr().out
    assert "FAILED sparse-90:" in out and "PASSED (underpowered) sparse-50:" in out
    assert "rules: defaults" in out
    sweep = tmp_path / "sweep"
    assert sorted(p.name for p in sweep.iterdir()) == ["index.html", "sparse-50", "sparse-90"]
    for name in ("sparse-50", "sparse-90"):
        assert {p.name for p in (sweep / name).iterdir()} == REPORT_FILES - {"junit.xml", "groups.csv"}
        assert "../index.html" in [link.href for link in parse((sweep / name / "report.html").read_text()).links]
    page = parse((sweep / "index.html").read_text())
    # Each row links its population's report, in the order given.
    rows = page.table("Pruned populations").records
    assert [(row["population"].text, row["population"].href) for row in rows] == [
        ("sparse-90", "sparse-90/report.html"),
        ("sparse-50", "sparse-50/report.html"),
    ]
    assert "1 of 2 gate(s) failed" in page.text
    assert [svg.label for svg in page.svgs] == [
        "Accuracy, PIE fraction and impacted classes against target sparsity",
        "Accuracy, PIE fraction and impacted classes against achieved sparsity",
    ]
    target = [(row["target sparsity"].key, row["target sparsity"].text) for row in rows]
    assert target == [("0.9", "90.0%"), ("0.5", "50.0%")]  # shown, and sorted by the raw value
    assert rows[0]["gate"].text == "failed"
    summary = json.loads((sweep / "sparse-90" / "summary.json").read_text())
    assert rows[0]["harmed"].key == rows[0]["harmed"].text == str(summary["impacted"]["harmed"])
    assert summary["impacted"]["harmed"] >= 1


def test_exit_0_when_every_gate_passes_and_rerun_replaces(sweep_dirs, tmp_path):
    base, p50, _ = sweep_dirs
    assert run("report", base, p50, "--out", tmp_path / "s", "--quiet", "--n-bootstrap", 50) == 0
    (tmp_path / "s" / "index.html").write_text("stale")
    assert run("report", base, p50, "--out", tmp_path / "s", "--quiet", "--n-bootstrap", 50) == 0
    assert "Every gate passed" in parse((tmp_path / "s" / "index.html").read_text()).text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_without_sparsity_the_order_given_is_the_axis(tmp_path, audit_labels):
    base = population(tmp_path / "base", audit_labels, seed=1, accuracy=0.9)
    a = population(tmp_path / "a", audit_labels, seed=2, accuracy=0.9)
    b = population(tmp_path / "b", audit_labels, seed=3, accuracy=0.85)
    assert run("report", base, a, b, "--out", tmp_path / "s", "--quiet", "--n-bootstrap", 50, "--max-class-drop", 1, "--max-class-recall-drop", 1) == 0
    page = parse((tmp_path / "s" / "index.html").read_text())
    assert "placed in the order they were given" in page.text
    assert [svg.label for svg in page.svgs] == ["Accuracy, PIE fraction and impacted classes against population (in the order given)"]


def test_bad_input_exits_2_and_writes_nothing(sweep_dirs, tmp_path, capsys):
    base, p50, _ = sweep_dirs
    other = tmp_path / "elsewhere"
    other.mkdir()
    twin = population(other / "sparse-50", np.arange(400) % N_CLASSES, seed=4, accuracy=0.9)
    assert run("report", base, p50, twin, "--out", tmp_path / "s") == 2
    err = capsys.readouterr().err
    assert err.strip() == "pie-audit: error: " + DUPLICATE_NAME.format(first=p50, second=twin, name="sparse-50")
    assert run("report", base, tmp_path / "missing", "--out", tmp_path / "s") == 2
    assert "missing: no such directory" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_refuses_to_replace_a_foreign_directory(sweep_dirs, tmp_path, capsys):
    base, p50, _ = sweep_dirs
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep")
    assert run("report", base, p50, "--out", mine, "--n-bootstrap", 50) == 2
    assert NOT_A_SWEEP.format(path=mine, entry="thesis.tex") in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_sweep_table_values(sweep_dirs):
    import pie_audit

    base, p50, p90 = sweep_dirs
    result = pie_audit.compare(base, p90, n_bootstrap=50)
    table = sweep_table([("sparse-90", result)])
    row = table.iloc[0]
    assert row["method"] == "gmp"  # run.json written before methods: gradual magnitude pruning
    assert row["sparsity_target"] == 0.9
    assert row["sparsity_achieved"] == pytest.approx(0.9 - 0.001 * 2.5)
    assert row["accuracy_mean"] == result.pruned_accuracy.mean()
    assert row["pie_fraction"] == result.pies.fraction
    assert row["harmed"] == len(result.harmed) and row["gate_passed"] == result.gate.passed


@pytest.fixture(scope="module")
def digits_record():
    from pie_audit.data._datasets import dataset_hash, load_dataset

    data = load_dataset("digits")
    labels = data.y_test.numpy()
    return {"name": "digits", "hash": dataset_hash(data.example_ids, labels, data.x_test)}, labels


def test_compare_shows_digits_images_unless_told_not_to(tmp_path, digits_record):
    record, labels = digits_record
    dirs = []
    for name, seed, accuracy in (("base", 1, 0.95), ("pruned", 2, 0.8)):
        path = population(tmp_path / name, labels, seed=seed, accuracy=accuracy, n_classes=10)
        for run_json in path.glob("*/run.json"):
            run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "dataset": record}))
        dirs.append(path)
    run("compare", *dirs, "--out", tmp_path / "with", "--quiet", "--n-bootstrap", 50, "--max-class-drop", 1)
    images = parse((tmp_path / "with" / "report.html").read_text()).images
    n_pies = json.loads((tmp_path / "with" / "summary.json").read_text())["pies"]["count"]
    assert len(images) == min(n_pies, 64) > 0
    assert all(image.src.startswith("data:image/png;base64,") for image in images)
    run("compare", *dirs, "--out", tmp_path / "without", "--quiet", "--n-bootstrap", 50, "--no-images")
    page = parse((tmp_path / "without" / "report.html").read_text())
    assert page.images == [] and NO_IMAGES in page.text


def test_help_keeps_bracketed_text(capsys, monkeypatch):
    # Rich reads "[...]" as markup: the defaults and the settings table must survive it.
    monkeypatch.setenv("COLUMNS", "200")
    assert run("report", "--help") == 0
    out = capsys.readouterr().out
    assert "pyproject.toml with [tool.pie-audit] settings" in out
    assert "Significance level for q-values. [default: 0.05]" in out
