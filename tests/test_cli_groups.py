"""``pie-audit compare --groups``: every refusal of a groups table, CSV and Parquet, a population's own file.

A refused table exits 2 with one line that names the file and the column, and writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from pie_audit.interchange import GROUPS_FILE, write_groups
from pie_audit.interchange._groups import (
    DUPLICATE_EXAMPLE,
    FLOAT_ATTRIBUTE,
    MISSING_EXAMPLES,
    MISSING_VALUES,
    NO_EXAMPLE_ID,
    NO_GROUPS_FILE,
    SINGLE_VALUE,
    TOO_MANY_VALUES,
    UNKNOWN_ATTRIBUTE,
)

from cli_run import run

N = 400  # the audit fixtures' examples (conftest.py)
GROUP_RULES = ("max-group-drop", "max-group-accuracy-drop")


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    # The CLI reads ./pyproject.toml and writes ./reports/ by default.
    monkeypatch.chdir(tmp_path)


def attributes() -> pd.DataFrame:
    rng = np.random.default_rng(18)
    return pd.DataFrame(
        {
            "example_id": np.arange(N, dtype=np.int64),
            "sex": rng.choice(["F", "M"], N),
            "age": rng.choice(["old", "young"], N),
        }
    )


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def _assert_refused(capsys, tmp_path, message: str, *parts: str) -> None:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines == [f"pie-audit: error: {message}"], captured.err
    for part in parts:
        assert part in lines[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "reports").exists()
    assert not (tmp_path / "r").exists()


def _refusals(tmp_path: Path, case: str):
    """The groups file of a refusal, extra arguments, the expected message and what it must name."""
    good = attributes()
    parquet, csv = tmp_path / "groups.parquet", tmp_path / "groups.csv"
    if case == "missing file":
        return tmp_path / "nope.parquet", [], NO_GROUPS_FILE.format(name=tmp_path / "nope.parquet"), ()
    if case == "no example_id":
        frame = good.rename(columns={"example_id": "id"})
        return _write(frame, parquet), [], NO_EXAMPLE_ID.format(name=parquet), ("example_id",)
    if case == "duplicate example_id":
        # Ids 0 and 1 both twice; the first duplicate is named.
        frame = pd.concat([good, good.iloc[:2]])
        message = DUPLICATE_EXAMPLE.format(name=parquet, example_id=0, count=2)
        return _write(frame, parquet), [], message, ("example_id",)
    if case == "an example without a row":
        frame = good[good["example_id"] != 17]
        message = MISSING_EXAMPLES.format(name=parquet, count=1, example_id=17)
        return _write(frame, parquet), [], message, ("example_id",)
    if case.startswith("missing value"):
        path = csv if case.endswith("CSV") else parquet
        frame = good.astype({"sex": object})
        frame.loc[[5, 9], "sex"] = None
        message = MISSING_VALUES.format(name=path, column="sex", count=2, example_id=5)
        return _write(frame, path), [], message, ("'sex'",)
    if case.startswith("float column"):
        path = csv if case.endswith("CSV") else parquet
        frame = good.assign(score=np.linspace(0, 1, N))
        return _write(frame, path), [], FLOAT_ATTRIBUTE.format(name=path, column="score"), ("'score'", "bin it first")
    if case == "more than 50 values":
        frame = good.assign(zip=np.arange(N) % 51)
        message = TOO_MANY_VALUES.format(name=parquet, column="zip", count=51, limit=50)
        return _write(frame, parquet), [], message, ("'zip'", "bin it first")
    if case == "a single value":
        frame = good.assign(site="A")
        return _write(frame, parquet), [], SINGLE_VALUE.format(name=parquet, column="site", value="A"), ("'site'",)
    if case == "unknown --group-by column":
        message = UNKNOWN_ATTRIBUTE.format(name=parquet, column="nope", known="sex, age")
        return _write(good, parquet), ["--group-by", "sex,nope"], message, ("'nope'",)
    raise ValueError(case)


REFUSALS = [
    "missing file", "no example_id", "duplicate example_id", "an example without a row", "missing value",
    "missing value in a CSV", "float column", "float column in a CSV", "more than 50 values", "a single value",
    "unknown --group-by column",
]  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS)
def test_a_bad_groups_table_is_refused_and_nothing_is_written(case, identical_populations, tmp_path, capsys):
    path, extra, message, parts = _refusals(tmp_path, case)
    code = run("compare", *identical_populations, "--groups", path, *extra, "--out", tmp_path / "r")
    assert code == 2
    _assert_refused(capsys, tmp_path, message, str(path), *parts)


def test_an_attribute_named_like_an_examples_column_is_refused(identical_populations, tmp_path, capsys):
    # examples.parquet gains one column per attribute: "pie" would overwrite the PIE flags.
    path = _write(attributes().rename(columns={"age": "pie"}), tmp_path / "groups.parquet")
    assert run("compare", *identical_populations, "--groups", path, "--out", tmp_path / "r") == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pie-audit: error: "), captured.err
    assert str(path) in lines[0] and "'pie'" in lines[0]
    assert not (tmp_path / "r").exists() and not (tmp_path / "reports").exists()


def test_the_original_table_is_accepted(identical_populations, tmp_path):
    """The refusals above are each one change away from a table that works."""
    path = _write(attributes(), tmp_path / "groups.parquet")
    assert run("compare", *identical_populations, "--groups", path, "--out", tmp_path / "r", "-q") == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["groups"]["attributes"] == ["sex", "age"]
    assert summary["groups"]["source"] == str(path)


def test_a_csv_works_as_parquet_does(harmed_populations, tmp_path):
    frame = attributes()
    parquet = _write(frame, tmp_path / "groups.parquet")
    csv = _write(frame.sample(frac=1, random_state=1), tmp_path / "groups.csv")  # any row order
    summaries = []
    for path, out in ((parquet, tmp_path / "a"), (csv, tmp_path / "b")):
        run("compare", *harmed_populations, "--groups", path, "--group-by", "age,sex", "--out", out, "-q")
        summaries.append(json.loads((out / "summary.json").read_text())["groups"])
    a, b = summaries
    assert a["source"] == str(parquet) and b["source"] == str(csv)
    assert a["attributes"] == b["attributes"] == ["age", "sex"]
    assert a["rows"] == b["rows"] and a["cells"] == b["cells"]
    assert len(a["rows"]) == 2 + 2 + 4
    assert {r["group"] for r in a["rows"]} >= {"age=old & sex=F", "age=young & sex=M"}


def test_the_populations_own_groups_file_is_picked_up(harmed_populations, tmp_path):
    base, pruned = harmed_populations
    write_groups(attributes(), base / GROUPS_FILE)
    assert run("compare", base, pruned, "--out", tmp_path / "own", "-q") in (0, 1)
    own = json.loads((tmp_path / "own" / "summary.json").read_text())
    assert own["groups"]["source"] == str(base / GROUPS_FILE)
    assert any(GROUPS_FILE in note for note in own["notes"]), own["notes"]
    # The same as naming the file.
    run("compare", base, pruned, "--groups", base / GROUPS_FILE, "--out", tmp_path / "named", "-q")
    named = json.loads((tmp_path / "named" / "summary.json").read_text())
    assert own["groups"]["rows"] == named["groups"]["rows"]
    examples = pd.read_parquet(tmp_path / "own" / "examples.parquet")
    assert examples["sex"].tolist() == attributes()["sex"].tolist()


def test_min_group_support_and_the_junit_file(harmed_populations, tmp_path):
    path = _write(attributes(), tmp_path / "groups.parquet")
    junit = tmp_path / "gate.xml"
    args = ("compare", *harmed_populations, "--groups", path, "--min-group-support", "150")
    run(*args, "--out", tmp_path / "r", "--junit", junit, "-q")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["groups"]["min_support"] == 150
    rows = summary["groups"]["rows"]
    assert all(r["tested"] == (r["support"] >= 150) for r in rows)
    assert {r["tested"] for r in rows} == {True, False}
    cases = [c for c in ET.parse(junit).getroot().iter("testcase") if c.get("name").split()[0] in GROUP_RULES]
    assert len(cases) == 2 and all(c.find("skipped") is None for c in cases)


def test_without_groups_the_group_rules_are_skipped_in_junit(harmed_populations, tmp_path):
    junit = tmp_path / "gate.xml"
    run("compare", *harmed_populations, "--out", tmp_path / "r", "--junit", junit, "-q")
    cases = [c for c in ET.parse(junit).getroot().iter("testcase") if c.get("name").split()[0] in GROUP_RULES]
    assert len(cases) == 2 and all(c.find("skipped") is not None for c in cases)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["groups"] is None
    assert not any(f["rule"] in GROUP_RULES for f in summary["gate"]["failures"])


def test_group_by_without_a_groups_table_is_refused(identical_populations, tmp_path, capsys):
    assert run("compare", *identical_populations, "--group-by", "sex", "--out", tmp_path / "r") == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pie-audit: error: group-by needs a groups table"), captured.err
    assert not (tmp_path / "r").exists() and not (tmp_path / "reports").exists()
