"""The blinded human review: export (blinded, seeded, the key apart), tally (against scipy and
statsmodels), every bad sheet refused, the CLI end to end, and a hostile class name escaped."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from html_page import parse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from synthetic import planted_predictions, write_population

import pie_audit
from pie_audit.audit import TALLY_COLUMNS, review_tally
from pie_audit.audit._review import NOT_A_CATEGORY
from pie_audit.errors import ConfigError, FormatError, OutputError
from pie_audit.interchange import CATEGORIES, KEY_FILE, SHEET_FILE, TALLY_FILE, read_review
from pie_audit.interchange._review import (
    BAD_ROW_NUMBER,
    BLANK_CATEGORY,
    CHANGED_ID,
    DUPLICATE_ROW,
    KEY_COLUMNS,
    MISSING_ROW,
    NO_KEY,
    NO_SHEET,
    NOT_A_SHEET,
    SHEET_COLUMNS,
    UNKNOWN_CATEGORY,
    UNKNOWN_ROW,
)
from pie_audit.report import export_review, tally_review
from pie_audit.report._review import (
    BAD_COUNT,
    NO_IMAGES_ASKED,
    NO_PIES,
    NOT_A_REVIEW,
    NOT_AN_AUDIT,
    OTHER_AUDIT,
    OUT_AND_AUDIT,
    REVIEW_STARTED,
)
from pie_audit.report._thumbnails import NO_DATASET

from cli_run import run

N_CLASSES = 5
HOSTILE = "<script>alert(1)</script>"
NAMES = ["cat", "dog", HOSTILE, 'a, "quoted" name', "bird"]
CATEGORY_LIST = ", ".join(CATEGORIES)


def populations(root: Path, labels: np.ndarray, *, run_record: dict | None = None, names=NAMES) -> tuple[Path, Path]:
    """A baseline and a pruned population whose class 2 (named HOSTILE) pruning mostly loses."""
    n_classes = int(labels.max()) + 1
    base = planted_predictions(8, labels, accuracy=0.9, n_classes=n_classes, seed=1)
    pruned = planted_predictions(8, labels, accuracy=0.85, n_classes=n_classes, seed=2, class_accuracy={2: 0.3})
    return (
        write_population(root / "base", base, labels, classes=names, run=run_record),
        write_population(root / "pruned", pruned, labels, classes=names, run=run_record),
    )


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    """A report directory of 400 examples with a few dozen PIEs, and an images file for them."""
    root = tmp_path_factory.mktemp("audit")
    labels = np.random.default_rng(7).permutation(np.arange(400) % N_CLASSES)
    base, pruned = populations(root, labels)
    result = pie_audit.compare(base, pruned, n_bootstrap=50)
    pie_audit.write_outputs(result, root / "audit")
    images = np.random.default_rng(0).integers(0, 256, size=(400, 3, 10, 12)).astype(np.uint8)
    np.savez(root / "images.npz", example_id=np.arange(400), images=images)
    return root / "audit", root / "images.npz", images


def sheet_records(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def write_records(path: Path, records: list[dict[str, str]], columns=SHEET_COLUMNS) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)


def files_of(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def examples_of(audit_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(audit_dir / "examples.parquet")


# ---- export ------------------------------------------------------------------------------


def test_export_is_blinded_and_the_key_is_separate_and_right(audit, tmp_path):
    audit_dir, images_file, images = audit
    written = export_review(audit_dir, tmp_path / "review", top=20, controls=30, seed=4, images=images_file)
    examples = examples_of(audit_dir)
    # The top 20 PIEs, computed here: highest score first, ties by id.
    pies = examples[examples["pie"]]
    assert len(pies) > 20  # the cut matters
    top = pies.sort_values(["score", "example_id"], ascending=[False, True]).head(20)["example_id"].tolist()

    sheet = pd.read_csv(tmp_path / "review" / SHEET_FILE, dtype=str, keep_default_na=False)
    key = pd.read_csv(tmp_path / "review" / KEY_FILE)
    # The sheet holds only what a reviewer may see, and empty columns for them; the key, the flag.
    assert tuple(sheet.columns) == SHEET_COLUMNS
    assert tuple(key.columns) == KEY_COLUMNS
    assert (sheet["category"] == "").all() and (sheet["note"] == "").all()
    assert sheet["row"].astype(int).tolist() == list(range(1, 51)) == key["row"].tolist()
    assert sheet["example_id"].astype(int).tolist() == key["example_id"].tolist()
    assert (written.n_pies, written.n_controls, written.image_note) == (20, 30, None)

    # The key is right: its PIEs are the top 20, its controls 30 distinct non-PIEs.
    flagged = examples.set_index("example_id")["pie"]
    assert sorted(key.loc[key["pie"], "example_id"]) == sorted(top)
    controls = key.loc[~key["pie"], "example_id"]
    assert len(set(controls)) == 30 and not flagged[controls].any()
    assert key["pie"].tolist() == flagged[key["example_id"]].tolist()

    # Labels are class names, the true label and the baseline's modal one.
    by_id = examples.set_index("example_id")
    ids = sheet["example_id"].astype(int)
    assert sheet["label"].tolist() == [NAMES[c] for c in by_id.loc[ids, "label"]]
    assert sheet["baseline_modal"].tolist() == [NAMES[c] for c in by_id.loc[ids, "baseline_modal"]]

    # The order tells nothing: not sorted by score, id or PIE flag, either way.
    for column in (by_id.loc[ids, "score"].to_numpy(), ids.to_numpy(), key["pie"].to_numpy().astype(int)):
        assert not (np.diff(column) >= 0).all() and not (np.diff(column) <= 0).all()
    # File names by row, never by status; each image is its example's, min-max scaled.
    width = 4
    assert sheet["image"].tolist() == [f"images/row-{r:0{width}d}.png" for r in range(1, 51)]
    assert sorted(p.name for p in (tmp_path / "review" / "images").iterdir()) == [f"row-{r:04d}.png" for r in range(1, 51)]
    for row, example_id in zip(sheet["image"], ids, strict=True):
        picture = np.asarray(Image.open(tmp_path / "review" / row))
        raw = np.moveaxis(images[example_id], 0, -1).astype(float)
        expected = np.round(255 * (raw - raw.min()) / (raw.max() - raw.min())).astype(np.uint8)
        np.testing.assert_array_equal(picture, expected)

    # The page shows the same rows in the same order, each with its image, and no score or flag.
    page = parse((tmp_path / "review" / "index.html").read_text(encoding="utf-8"))
    cards = [f for f in page.figures if f.attrs.get("id", "").startswith("row-")]
    assert [c.attrs["id"] for c in cards] == [f"row-{r}" for r in range(1, 51)]
    shown = [dict(c.definitions()) for c in cards]
    assert [s["example"] for s in shown] == [f"#{i}" for i in ids]
    assert [s["true"] for s in shown] == sheet["label"].tolist()
    assert all(len(c.images) == 1 and c.images[0].src.startswith("data:image/png;base64,") for c in cards)
    shown_text = page.section("The sheet").text.lower()
    for word in ("score", "pie", "control", "false", "stability", "pruned"):
        assert word not in shown_text, word


def test_export_is_reproducible_from_its_seed(audit, tmp_path):
    audit_dir, images_file, _ = audit
    export_review(audit_dir, tmp_path / "a", seed=11, images=images_file)
    export_review(audit_dir, tmp_path / "b", seed=11, images=images_file)
    export_review(audit_dir, tmp_path / "c", seed=12, images=images_file)
    a, b, c = (files_of(tmp_path / name) for name in "abc")
    assert a == b and len(a) > 3
    assert a[SHEET_FILE] != c[SHEET_FILE]
    # Re-exporting over an untouched export replaces it with the same files.
    export_review(audit_dir, tmp_path / "a", seed=11, images=images_file)
    assert files_of(tmp_path / "a") == b


def test_export_defaults_take_every_pie_when_fewer_than_asked(audit, tmp_path):
    audit_dir, _, _ = audit
    examples = examples_of(audit_dir)
    n_pies = int(examples["pie"].sum())
    assert n_pies < 50
    written = export_review(audit_dir, tmp_path / "review")
    key = pd.read_csv(tmp_path / "review" / KEY_FILE)
    assert (written.n_pies, written.n_controls) == (n_pies, 50) == (int(key["pie"].sum()), int((~key["pie"]).sum()))
    # Without images: no image column values, no images directory, and the page says why.
    sheet = pd.read_csv(tmp_path / "review" / SHEET_FILE, dtype=str, keep_default_na=False)
    assert (sheet["image"] == "").all() and not (tmp_path / "review" / "images").exists()
    assert written.image_note == NO_IMAGES_ASKED
    page = parse((tmp_path / "review" / "index.html").read_text(encoding="utf-8"))
    assert NO_IMAGES_ASKED in page.section("The sheet").text and page.images == []


def test_the_page_escapes_a_hostile_class_name(audit, tmp_path):
    audit_dir, _, _ = audit
    export_review(audit_dir, tmp_path / "review", top=40, controls=40, seed=2)
    html = (tmp_path / "review" / "index.html").read_text(encoding="utf-8")
    sheet = pd.read_csv(tmp_path / "review" / SHEET_FILE, dtype=str, keep_default_na=False)
    assert HOSTILE in sheet["label"].tolist()  # the CSV holds the name as data
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script") == 1  # the page's own (sorter and pager), nothing else
    page = parse(html)
    assert HOSTILE in [dict(f.definitions())["true"] for f in page.figures if "true" in dict(f.definitions())]
    assert "connect-src" not in html and "default-src 'none'" in html


def test_images_from_the_dataset_the_populations_name(tmp_path, monkeypatch):
    from pie_audit.data import load_dataset

    digits = load_dataset("digits")
    labels = digits.y_test.numpy()
    record = {"dataset": {"name": "digits", "hash": digits.test_hash}}
    base, pruned = populations(tmp_path, labels, run_record=record, names=[str(c) for c in range(10)])
    monkeypatch.chdir(tmp_path)  # summary.json names the populations as given, from here
    result = pie_audit.compare(Path("base"), Path("pruned"), n_bootstrap=50)
    pie_audit.write_outputs(result, "audit")
    written = export_review("audit", "review", top=5, controls=5, data_root=tmp_path / "no-data-needed")
    assert written.image_note is None
    sheet = pd.read_csv(Path("review") / SHEET_FILE)
    for name, example_id in zip(sheet["image"], sheet["example_id"], strict=True):
        picture = np.asarray(Image.open(Path("review") / name)).astype(float)
        raw = digits.x_test[example_id].numpy()[0].astype(float)
        expected = np.round(255 * (raw - raw.min()) / (raw.max() - raw.min()))
        np.testing.assert_array_equal(picture, expected)
    # Populations whose run.json names no dataset: no images, and the thumbnails' reason.
    for model in Path("base").iterdir():
        (model / "run.json").write_text(json.dumps({"classes": [str(c) for c in range(10)]}))
    for model in Path("pruned").iterdir():
        (model / "run.json").unlink()
    written = export_review("audit", "review-2", top=5, controls=5, data_root="data")
    assert written.image_note == NO_DATASET


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"top": 0}, ConfigError, BAD_COUNT.format(name="top", value=0)),
        ({"controls": -1}, ConfigError, BAD_COUNT.format(name="controls", value=-1)),
    ],
)
def test_export_refuses_bad_counts(audit, tmp_path, kwargs, error, message):
    with pytest.raises(error) as e:
        export_review(audit[0], tmp_path / "review", **kwargs)
    assert str(e.value) == message and not (tmp_path / "review").exists()


def test_export_refuses_what_it_must_not_replace(audit, tmp_path):
    audit_dir, _, _ = audit
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError) as e:
        export_review(tmp_path / "empty", tmp_path / "review")
    assert str(e.value) == NOT_AN_AUDIT.format(path=tmp_path / "empty", file="summary.json")
    with pytest.raises(OutputError) as e:
        export_review(audit_dir, audit_dir / "review")
    assert str(e.value) == OUT_AND_AUDIT.format(out=audit_dir / "review", relation="lie inside", audit=audit_dir)
    # A sheet a reviewer has started is never replaced.
    out = tmp_path / "review"
    export_review(audit_dir, out)
    records = sheet_records(out / SHEET_FILE)
    records[3]["category"] = "fine"
    write_records(out / SHEET_FILE, records)
    before = files_of(out)
    with pytest.raises(OutputError) as e:
        export_review(audit_dir, out)
    assert str(e.value) == REVIEW_STARTED.format(path=out, sheet=SHEET_FILE, count=1)
    assert files_of(out) == before
    (out / SHEET_FILE).write_bytes(b"\xff\xfe not text")
    with pytest.raises(OutputError) as e:
        export_review(audit_dir, out)
    assert str(e.value) == NOT_A_REVIEW.format(path=out, entry=SHEET_FILE)
    (out / SHEET_FILE).unlink()
    (out / "mine.txt").write_text("the user's")
    with pytest.raises(OutputError) as e:
        export_review(audit_dir, out)
    assert str(e.value) == NOT_A_REVIEW.format(path=out, entry="mine.txt")


def test_export_refuses_an_audit_without_pies(tmp_path, audit_labels):
    same = planted_predictions(4, audit_labels, accuracy=0.9, n_classes=N_CLASSES, seed=1)
    base = write_population(tmp_path / "base", same, audit_labels)
    pruned = write_population(tmp_path / "pruned", same, audit_labels)
    pie_audit.write_outputs(pie_audit.compare(base, pruned, n_bootstrap=50), tmp_path / "audit")
    with pytest.raises(ConfigError) as e:
        export_review(tmp_path / "audit", tmp_path / "review")
    assert str(e.value) == NO_PIES.format(path=tmp_path / "audit") and not (tmp_path / "review").exists()


# ---- tally -------------------------------------------------------------------------------


def fill(review: Path, seed: int = 0) -> list[str]:
    """Fill a sheet as a reviewer might: PIEs often mislabelled or ambiguous, controls mostly fine.
    Categories are written in varied case and spacing; returns them, normalised, by row."""
    key = pd.read_csv(review / KEY_FILE)
    rng = np.random.default_rng(seed)
    pie_choice = ["label-incorrect", "ambiguous", "fine", "fine-grained", "atypical"]
    chosen = [
        str(rng.choice(pie_choice if pie else ["fine", "fine", "fine", "atypical", "corrupted"])) for pie in key["pie"]
    ]
    records = sheet_records(review / SHEET_FILE)
    spellings = [lambda c: c, str.upper, lambda c: f"  {c.title()} "]
    for k, record in enumerate(records):
        record["category"] = spellings[k % 3](chosen[int(record["row"]) - 1])
        record["note"] = "looks like a 7, maybe" if k == 0 else ""
    write_records(review / SHEET_FILE, records[::-1])  # a reviewer may sort the rows
    return chosen


def test_a_filled_sheet_tallies_to_scipy_and_statsmodels(audit, tmp_path):
    from scipy.stats import fisher_exact
    from statsmodels.stats.multitest import multipletests

    export_review(audit[0], tmp_path / "review", top=30, controls=40, seed=5)
    chosen = fill(tmp_path / "review")
    key = pd.read_csv(tmp_path / "review" / KEY_FILE)
    tally = tally_review(tmp_path / "review" / SHEET_FILE)

    assert tuple(tally.columns) == TALLY_COLUMNS
    assert tally["category"].tolist() == list(CATEGORIES)
    pie = key["pie"].to_numpy()
    chosen = np.array(chosen, dtype=object)
    expected_p, expected_odds = [], []
    for k, category in enumerate(CATEGORIES):
        a, c = int((pie & (chosen == category)).sum()), int((~pie & (chosen == category)).sum())
        assert (tally.loc[k, "pies"], tally.loc[k, "controls"]) == (a, c)
        odds, p = fisher_exact([[a, pie.sum() - a], [c, (~pie).sum() - c]], alternative="two-sided")
        expected_odds.append(odds)
        expected_p.append(p)
    assert tally["pies"].sum() == 30 and tally["controls"].sum() == 40
    np.testing.assert_allclose(tally["p_value"], expected_p, rtol=1e-12)
    np.testing.assert_allclose(tally["odds_ratio"], expected_odds, rtol=1e-12)
    np.testing.assert_allclose(tally["q_value"], multipletests(expected_p, method="fdr_bh")[1], rtol=1e-12)
    # Planted: label-incorrect only among PIEs, so its odds are infinite and its p small.
    row = tally.set_index("category").loc["label-incorrect"]
    assert row["controls"] == 0 and row["pies"] > 0 and np.isinf(row["odds_ratio"]) and row["p_value"] < 0.05
    # Never chosen: p = 1 and an undefined odds ratio.
    row = tally.set_index("category").loc["several-objects"]
    assert (row["pies"], row["controls"], row["p_value"]) == (0, 0, 1.0) and np.isnan(row["odds_ratio"])

    written = pd.read_csv(tmp_path / "review" / TALLY_FILE)
    pd.testing.assert_frame_equal(written, tally, check_dtype=False)
    review = read_review(tmp_path / "review" / SHEET_FILE)
    assert review["row"].tolist() == list(range(1, 71))
    assert review["category"].tolist() == chosen.tolist()
    assert review["note"].tolist() == ["looks like a 7, maybe"] + [""] * 69


def test_a_sheet_from_another_audit_is_refused_against_the_audit(audit, filled):
    review, records = filled
    write_records(review / SHEET_FILE, records)
    examples = examples_of(audit[0])
    tally = tally_review(review / SHEET_FILE, write=False, examples=examples)
    assert tally["pies"].sum() == 10 and not (review / TALLY_FILE).exists()
    key = pd.read_csv(review / KEY_FILE)
    first_pie = int(key.loc[key["pie"], "example_id"].iloc[0])
    flipped = examples.assign(pie=examples["pie"] ^ (examples["example_id"] == first_pie))
    with pytest.raises(FormatError) as e:
        tally_review(review / SHEET_FILE, examples=flipped)
    assert str(e.value) == OTHER_AUDIT.format(key=review / KEY_FILE, example_id=first_pie, said="a PIE", found="not a PIE")
    assert not (review / TALLY_FILE).exists()


def test_review_tally_is_pure_and_checks_its_categories():
    tally = review_tally(["ambiguous", "fine", "ambiguous", "fine"], [True, False, True, False])
    by = tally.set_index("category")
    assert by.loc["ambiguous", ["pies", "controls"]].tolist() == [2, 0]
    # [[2, 0], [0, 2]]: a two-sided p of 1/6 + 1/6 (hypergeometric, hand-worked).
    assert by.loc["ambiguous", "p_value"] == pytest.approx(1 / 3)
    with pytest.raises(ConfigError) as e:
        review_tally(["fine", "blurry"], [True, False])
    assert str(e.value) == NOT_A_CATEGORY.format(value="blurry", categories=CATEGORY_LIST)


def _edit(records, k, **fields):
    records[k] = {**records[k], **fields}
    return records


BAD_SHEETS = {
    "edited id": (
        lambda r: _edit(r, 2, example_id="99999"),
        lambda r, path: CHANGED_ID.format(path=path, row=r[2]["row"], found="99999", expected=r[2]["example_id"]),
    ),
    "edited row": (
        lambda r: _edit(r, 2, row="999"),
        lambda r, path: UNKNOWN_ROW.format(path=path, row=999, n=len(r)),
    ),
    "row not a number": (
        lambda r: _edit(r, 2, row="third"),
        lambda r, path: BAD_ROW_NUMBER.format(path=path, line=4, value="third"),
    ),
    "duplicated row": (
        lambda r: [*r[:3], r[1], *r[3:]],
        lambda r, path: DUPLICATE_ROW.format(path=path, row=r[1]["row"], first=3, line=5),
    ),
    "missing row": (
        lambda r: r[:4] + r[5:],
        lambda r, path: MISSING_ROW.format(path=path, row=r[4]["row"], count=1),
    ),
    "unknown category": (
        lambda r: _edit(r, 6, category="Blurry"),
        lambda r, path: UNKNOWN_CATEGORY.format(path=path, row=r[6]["row"], value="Blurry", categories=CATEGORY_LIST),
    ),
    "blank category": (
        lambda r: _edit(r, 6, category="   "),
        lambda r, path: BLANK_CATEGORY.format(path=path, row=r[6]["row"], categories=CATEGORY_LIST),
    ),
}


@pytest.fixture
def filled(audit, tmp_path):
    """A review directory whose sheet is filled, in the exported order, with valid categories."""
    export_review(audit[0], tmp_path / "review", top=10, controls=10, seed=1)
    records = sheet_records(tmp_path / "review" / SHEET_FILE)
    for k, record in enumerate(records):
        record["category"] = CATEGORIES[k % len(CATEGORIES)]
    return tmp_path / "review", records


@pytest.mark.parametrize("case", list(BAD_SHEETS))
def test_every_bad_sheet_is_refused_naming_the_row(filled, case, capsys):
    review, records = filled
    edit, message = BAD_SHEETS[case]
    sheet = review / SHEET_FILE
    write_records(sheet, edit([dict(r) for r in records]))
    expected = message(records, sheet)
    with pytest.raises(FormatError) as e:
        tally_review(sheet)
    assert str(e.value) == expected
    capsys.readouterr()
    assert run("review", "tally", sheet) == 2
    captured = capsys.readouterr()
    assert captured.err == f"pie-audit: error: {expected}\n" and captured.out == ""
    assert not (review / TALLY_FILE).exists()


def test_a_sheet_without_its_key_or_not_a_csv_is_refused(filled, tmp_path, capsys):
    review, records = filled
    sheet = review / SHEET_FILE
    write_records(sheet, records)
    (review / KEY_FILE).rename(tmp_path / "elsewhere.csv")
    expected = NO_KEY.format(path=sheet, key=review / KEY_FILE)
    assert run("review", "tally", sheet) == 2
    assert capsys.readouterr().err == f"pie-audit: error: {expected}\n"
    (tmp_path / "elsewhere.csv").rename(review / KEY_FILE)

    cases = {
        b"\x89PNG\r\n\x1a\n\x00\x00\x00binary": "'utf-8' codec can't decode byte 0x89 in position 0: invalid start byte",
        b"just some words\nand more\n": "no column 'row'",
        b"": "it is empty",
    }
    for content, reason in cases.items():
        sheet.write_bytes(content)
        assert run("review", "tally", sheet) == 2
        assert capsys.readouterr().err == f"pie-audit: error: {NOT_A_SHEET.format(path=sheet, reason=reason)}\n"
    assert run("review", "tally", review / "nothing.csv") == 2
    assert capsys.readouterr().err == f"pie-audit: error: {NO_SHEET.format(path=review / 'nothing.csv')}\n"
    assert not (review / TALLY_FILE).exists()


def test_the_cli_end_to_end(tmp_path, audit_labels, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    populations(tmp_path, np.asarray(audit_labels))
    np.savez(tmp_path / "images.npz", example_id=np.arange(400), images=np.zeros((400, 6, 6), np.float32))
    assert run("compare", "base", "pruned", "--out", "audit", "--n-bootstrap", 50, "--quiet") in (0, 1)
    assert run("review", "export", "audit", "--out", "review", "--top", 15, "--controls", 15, "--seed", 3, "--images", "images.npz") == 0
    out = capsys.readouterr().out
    assert "review sheet: review/sheet.csv (30 rows: 15 PIEs and 15 controls, shuffled with seed 3)" in out
    assert sorted(files_of(tmp_path / "review"))[:3] == ["images/row-0001.png", "images/row-0002.png", "images/row-0003.png"]
    chosen = fill(tmp_path / "review", seed=2)
    assert run("review", "tally", "review/sheet.csv") == 0
    out = capsys.readouterr().out
    assert "PIEs against controls, per category" in out and "tally: review/tally.csv" in out
    tally = pd.read_csv(tmp_path / "review" / TALLY_FILE)
    pd.testing.assert_frame_equal(tally, tally_review(tmp_path / "review" / SHEET_FILE, write=False), check_dtype=False)
    for category in CATEGORIES:
        assert category in out
    assert int(tally.set_index("category").loc["fine", ["pies", "controls"]].sum()) == chosen.count("fine")
    # Bad usage and input: exit 2, one line, nothing written.
    assert run("review", "export", "audit", "--out", "review-2", "--top", 0) == 2
    assert capsys.readouterr().err == f"pie-audit: error: {BAD_COUNT.format(name='top', value=0)}\n"
    assert run("review", "export", "nowhere", "--out", "review-2") == 2
    assert capsys.readouterr().err == f"pie-audit: error: {NOT_AN_AUDIT.format(path='nowhere', file='summary.json')}\n"
    assert not (tmp_path / "review-2").exists()


# ---- fuzz: the sheet reader refuses anything with a FormatError, never another exception --------

_KEY = "row,example_id,pie\n1,10,true\n2,11,false\n"
_cells = st.sampled_from(["1", "2", "3", "10", "11", "", " fine ", "FINE", "blurry", '"', "a,b", "\x00", "é", "-1", "1.0"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.lists(st.lists(_cells, min_size=0, max_size=4), max_size=5).map(
            lambda rows: ("row,example_id,category\n" + "\n".join(",".join(r) for r in rows)).encode()
        ),
    )
)
@example(data=b"row,example_id,category\n1,10,fine\n2,11,ambiguous\n")
def test_the_sheet_reader_refuses_any_bad_bytes_with_a_format_error(tmp_path, data):
    (tmp_path / KEY_FILE).write_text(_KEY)
    sheet = tmp_path / SHEET_FILE
    sheet.write_bytes(data)
    try:
        review = read_review(sheet)
    except FormatError as e:
        assert "\n" not in str(e) and str(sheet) in str(e)
    else:
        assert review["row"].tolist() == [1, 2] and review["example_id"].tolist() == [10, 11]
        assert set(review["category"]) <= set(CATEGORIES)


def test_compare_puts_the_tally_into_the_report(audit, tmp_path):
    audit_dir = audit[0]
    root = audit_dir.parent
    export_review(audit_dir, tmp_path / "review", top=10, controls=10, seed=3)
    fill(tmp_path / "review", seed=2)
    expected = tally_review(tmp_path / "review" / SHEET_FILE, write=False)
    code = run("compare", root / "base", root / "pruned", "--out", tmp_path / "report", "--review", tmp_path / "review" / SHEET_FILE, "--no-images", "-q")
    assert code in (0, 1)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert [r["category"] for r in summary["review"]] == expected["category"].tolist()
    assert [r["pies"] for r in summary["review"]] == expected["pies"].tolist()
    for got, p in zip(summary["review"], expected["p_value"], strict=True):
        assert got["p_value"] == pytest.approx(p)
    page = parse((tmp_path / "report" / "report.html").read_text())
    table = page.table("review-table")
    assert [r["category"].text for r in table.records] == expected["category"].tolist()
    # A sheet exported from another audit is refused before anything is written.
    other = tmp_path / "other"
    labels = np.random.default_rng(8).permutation(np.arange(400) % N_CLASSES)
    base2, pruned2 = populations(other, labels)
    assert run("compare", base2, pruned2, "--out", tmp_path / "report2", "--review", tmp_path / "review" / SHEET_FILE, "--no-images", "-q") == 2
    assert not (tmp_path / "report2").exists()


def test_class_names_that_look_like_formulas_are_inert_in_the_sheet(tmp_path, audit_labels):
    names = ["=HYPERLINK(\"http://x\")", "+1", "@SUM(A1)", "-2", "fine"]
    base, pruned = populations(tmp_path, audit_labels, names=names)
    result = pie_audit.compare(base, pruned, n_bootstrap=10)
    pie_audit.write_outputs(result, tmp_path / "audit")
    export_review(tmp_path / "audit", tmp_path / "review", top=10, controls=10, seed=0)
    records = sheet_records(tmp_path / "review" / SHEET_FILE)
    shown = {r["label"] for r in records} | {r["baseline_modal"] for r in records}
    assert all(not v.startswith(("=", "+", "@", "-")) for v in shown)
    assert shown <= {"'" + n if n[0] in "=+@-" else n for n in names}
    for k, record in enumerate(records):
        record["category"] = CATEGORIES[k % len(CATEGORIES)]
    write_records(tmp_path / "review" / SHEET_FILE, records)
    tally = tally_review(tmp_path / "review" / SHEET_FILE, write=False)
    assert int(tally["pies"].sum() + tally["controls"].sum()) == len(records)
