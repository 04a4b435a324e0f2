"""Report and sweep directories: what is written, what is replaced, what is refused."""

import json

import numpy as np
import pandas as pd
import pytest
from synthetic import planted_predictions, write_population

import pie_audit
from pie_audit.data._datasets import dataset_hash, load_dataset
from pie_audit.errors import OutputError
from pie_audit.report._outputs import (
    GROUPS_CSV,
    OUTPUT_FILES,
    REPORT_FILE,
    REPORT_FILES,
    pie_gallery,
    write_junit,
    write_outputs,
)
from pie_audit.report._render import GALLERY_SIZE
from pie_audit.report._thumbnails import NO_DATASET

def test_write_outputs(tmp_path, harmed_populations):
    result = pie_audit.compare(*harmed_populations)
    out = write_outputs(result, tmp_path / "reports" / "run")
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.to_summary()))
    examples = pd.read_parquet(out / "examples.parquet")
    pd.testing.assert_frame_equal(examples, result.examples)
    classes = pd.read_csv(out / "classes.csv")
    assert classes["label"].tolist() == list(range(5))
    np.testing.assert_allclose(classes["q_value"], result.classes["q_value"])
    html = (out / "report.html").read_text()
    assert "Gate FAILED" in html


def test_write_outputs_replaces_a_previous_report(tmp_path, harmed_populations, identical_populations):
    out = tmp_path / "report"
    write_outputs(pie_audit.compare(*harmed_populations), out)
    (out / "report.html").write_text("stale")
    write_outputs(pie_audit.compare(*identical_populations), out)
    assert json.loads((out / "summary.json").read_text())["gate"]["passed"] is True
    assert (out / "report.html").read_text() != "stale"
    # No temporary left behind; the only hidden entry is the writers' lock.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".report.pie-audit.lock", "base", "pruned", "report", "same-base", "same-pruned",
    ]  # fmt: skip


def test_write_outputs_refuses_a_foreign_directory(tmp_path, identical_populations):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(OutputError):
        write_outputs(pie_audit.compare(*identical_populations), out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_report_escapes_names(tmp_path, audit_labels):
    names = ["<script>alert(1)</script>", "b", "c", "d", "e"]
    base = planted_predictions(4, audit_labels, accuracy=0.9, n_classes=5, seed=1)
    pruned = planted_predictions(4, audit_labels, accuracy=0.9, n_classes=5, seed=2, class_accuracy={0: 0.3})
    b = write_population(tmp_path / "b<&>", base, audit_labels, classes=names)
    p = write_population(tmp_path / "p", pruned, audit_labels)
    out = write_outputs(pie_audit.compare(b, p), tmp_path / "out")
    html = (out / "report.html").read_text()
    # The class name is text; the only script is the report's own table sorter.
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "b&lt;&amp;&gt;" in html


def test_write_outputs_uses_the_full_report(tmp_path, harmed_populations):
    result = pie_audit.compare(*harmed_populations, n_bootstrap=50)
    out = write_outputs(result, tmp_path / "r", command=["pie-audit", "compare"], sweep_link="../index.html")
    html = (out / "report.html").read_text()
    assert 'id="class-table"' in html and '<a href="../index.html">' in html




def test_report_files_are_what_write_outputs_writes_plus_groups_and_junit():
    assert REPORT_FILES == {*OUTPUT_FILES, "groups.csv", "junit.xml"}
    assert REPORT_FILE in OUTPUT_FILES and GROUPS_CSV not in OUTPUT_FILES


# --- groups ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grouped():
    from test_report import grouped_result

    return grouped_result()


def test_groups_csv_holds_one_row_per_group_with_a_column_per_attribute(tmp_path, grouped):
    out = write_outputs(grouped, tmp_path / "r")
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUT_FILES, GROUPS_CSV])
    # Read as text: an empty cell is a group that does not constrain the attribute.
    table = pd.read_csv(out / GROUPS_CSV, keep_default_na=False, dtype={"attribute:sex": str, "attribute:age": str})
    groups = grouped.groups
    rest = [c for c in groups.columns if c not in ("group", "attributes")]
    assert table.columns.tolist() == ["group", "attribute:sex", "attribute:age", *rest]
    assert table["group"].tolist() == groups["group"].tolist()
    for column in ("sex", "age"):
        assert table[f"attribute:{column}"].tolist() == [a.get(column, "") for a in groups["attributes"]]
    numbers = pd.read_csv(out / GROUPS_CSV)
    for column in rest:
        if not pd.api.types.is_numeric_dtype(groups[column]) or pd.api.types.is_bool_dtype(groups[column]):
            assert numbers[column].tolist() == groups[column].tolist(), column
        else:
            np.testing.assert_allclose(numbers[column].to_numpy(dtype=float), groups[column].to_numpy(dtype=float), err_msg=column)
    # The hostile value round-trips as text.
    assert "<script>alert(1)</script>" in set(table["attribute:age"])
    # summary.json carries the same rows; examples.parquet the attribute columns.
    summary = json.loads((out / "summary.json").read_text())
    assert [r["group"] for r in summary["groups"]["rows"]] == groups["group"].tolist()
    examples = pd.read_parquet(out / "examples.parquet")
    pd.testing.assert_frame_equal(examples, grouped.examples)
    assert {"sex", "age"} <= set(examples.columns)


def test_a_report_without_groups_replaces_one_with_groups(tmp_path, grouped, identical_populations):
    out = write_outputs(grouped, tmp_path / "r")
    assert (out / GROUPS_CSV).is_file()
    write_outputs(pie_audit.compare(*identical_populations), out)  # groups.csv is a report file
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)


def test_write_junit_replaces_atomically(tmp_path, harmed_populations):
    result = pie_audit.compare(*harmed_populations)
    path = write_junit(result, tmp_path / "ci" / "gate.xml")
    assert '<failure message="' in path.read_text()
    with pytest.raises(OutputError):
        write_junit(result, tmp_path)


# --- the gallery ---------------------------------------------------------------------------------


def test_gallery_rows_are_chosen_once_for_images_and_page(tmp_path):
    """Digits predictions with a recorded hash: the gallery's rows and its images agree."""
    digits = load_dataset("digits")
    labels = digits.y_test.numpy()
    ids = digits.example_ids
    base = planted_predictions(4, labels, accuracy=0.95, n_classes=10, seed=1)
    pruned = planted_predictions(4, labels, accuracy=0.8, n_classes=10, seed=2, class_accuracy={3: 0.3})
    run = {"dataset": {"name": "digits", "hash": dataset_hash(ids, labels, digits.x_test)}}
    b = write_population(tmp_path / "b", base, labels, example_ids=ids, run=run)
    p = write_population(tmp_path / "p", pruned, labels, example_ids=ids, run=run)
    result = pie_audit.compare(b, p, n_bootstrap=50)
    gallery = pie_gallery(result, data_root=tmp_path)
    pd.testing.assert_frame_equal(gallery.rows, result.top_pies(GALLERY_SIZE))
    assert sorted(gallery.thumbnails.images) == sorted(gallery.rows["example_id"].tolist())
    assert gallery.thumbnails.note is None
    html = (write_outputs(result, tmp_path / "r", gallery=gallery) / REPORT_FILE).read_text()
    assert html.count("<img ") == len(gallery.rows) > 0
    # Without a data root, the same rows and no image.
    plain = pie_gallery(result)
    pd.testing.assert_frame_equal(plain.rows, gallery.rows)
    assert not plain.thumbnails.images and plain.thumbnails.note


def test_gallery_without_a_dataset_record_says_why(harmed_populations, tmp_path):
    result = pie_audit.compare(*harmed_populations)
    gallery = pie_gallery(result, data_root=tmp_path)
    assert gallery.thumbnails.note == NO_DATASET
    assert len(gallery.rows) == min(result.pies.count, GALLERY_SIZE)


# --- refusals before anything is written ---------------------------------------------------------


@pytest.mark.parametrize("where", ["inside", "same", "around"])
def test_an_output_inside_or_around_an_input_is_refused(tmp_path, harmed_populations, where):
    base, pruned = harmed_populations
    result = pie_audit.compare(base, pruned, n_bootstrap=50)
    out = {"inside": pruned / "report", "same": pruned, "around": tmp_path}[where]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(OutputError, match="choose an output directory outside the populations"):
        write_outputs(result, out)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_user_directory_named_like_a_report_file_is_not_replaced(tmp_path, identical_populations):
    out = tmp_path / "out"
    (out / "report.html").mkdir(parents=True)
    (out / "report.html" / "mine.txt").write_text("keep")
    with pytest.raises(OutputError, match="'report.html', which is not part of a pie-audit report"):
        write_outputs(pie_audit.compare(*identical_populations), out)
    assert (out / "report.html" / "mine.txt").read_text() == "keep"


def test_an_unwritable_junit_is_refused_before_the_report_is_replaced(tmp_path, identical_populations):
    result = pie_audit.compare(*identical_populations)
    out = write_outputs(result, tmp_path / "r")
    old = (out / "summary.json").read_bytes()
    (tmp_path / "file").write_text("")
    for junit in (tmp_path, tmp_path / "file" / "gate.xml"):
        with pytest.raises(OutputError):
            write_outputs(result, out, junit=junit)
        assert (out / "summary.json").read_bytes() == old
    write_outputs(result, out, junit=tmp_path / "ci" / "gate.xml")
    assert (tmp_path / "ci" / "gate.xml").read_text().startswith("<?xml")


# --- save(), images files ---------------------------------------------------------------------


def test_save_writes_what_the_cli_writes(tmp_path, harmed_populations, monkeypatch):
    from pie_audit.cli import main

    monkeypatch.chdir(tmp_path)
    result = pie_audit.compare(*harmed_populations)
    saved = result.save(tmp_path / "api", junit=tmp_path / "api.xml")
    with pytest.raises(SystemExit):
        main(["compare", *map(str, harmed_populations), "--out", str(tmp_path / "cli"), "--junit", str(tmp_path / "cli.xml"), "-q"])
    assert sorted(p.name for p in saved.iterdir()) == sorted(p.name for p in (tmp_path / "cli").iterdir())
    api, cli = (json.loads((d / "summary.json").read_text()) for d in (saved, tmp_path / "cli"))
    assert api == cli
    pd.testing.assert_frame_equal(
        pd.read_parquet(saved / "examples.parquet"), pd.read_parquet(tmp_path / "cli" / "examples.parquet")
    )
    assert (tmp_path / "api.xml").read_text() == (tmp_path / "cli.xml").read_text()


def test_an_images_file_fills_the_gallery(tmp_path, harmed_populations):
    result = pie_audit.compare(*harmed_populations, n_bootstrap=50)
    ids = result.examples["example_id"].to_numpy()
    images = np.random.default_rng(0).random((ids.size, 8, 8, 3)).astype(np.float32)  # channels last
    np.savez(tmp_path / "images.npz", example_id=ids, images=images)
    out = result.save(tmp_path / "r", images=tmp_path / "images.npz")
    html = (out / REPORT_FILE).read_text()
    assert html.count('<img src="data:image/png;base64,') == min(result.pies.count, GALLERY_SIZE) > 0
    # An images file without some PIE says which.
    np.savez(tmp_path / "some.npz", example_id=ids[:1], images=images[:1])
    gallery = pie_gallery(result, images=tmp_path / "some.npz")
    assert not gallery.thumbnails.images and "has no image for example" in gallery.thumbnails.note
