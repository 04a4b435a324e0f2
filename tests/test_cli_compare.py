"""``pie-audit compare``: exit codes, verdict, outputs, settings, JUnit, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli_run import run


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    # The CLI reads ./pyproject.toml and writes ./reports/ by default.
    monkeypatch.chdir(tmp_path)


def test_exit_0_when_gate_passes(identical_populations, tmp_path, capsys):
    assert run("compare", *identical_populations, "--out", tmp_path / "r") == 0
    out = capsys.readouterr().out
    assert "gate PASSED" in out
    assert "PIEs 0 of 400" in out
    assert f"report: {tmp_path / 'r'}" in out
    assert (tmp_path / "r" / "summary.json").is_file()


def test_exit_1_when_gate_fails_and_verdict_names_class(harmed_populations, tmp_path, capsys):
    assert run("compare", *harmed_populations, "--out", tmp_path / "r") == 1
    out = capsys.readouterr().out
    assert "gate FAILED" in out
    assert "beyond the models' average: 2 (-" in out
    assert "1 significantly harmed: 2 (lost " in out and "points of recall" in out
    assert "rules: defaults" in out and "power: this audit can detect class drops of" in out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["gate"]["passed"] is False


def test_default_out_is_reports_pruned_name(harmed_populations, tmp_path):
    run("compare", *harmed_populations, "--quiet")
    assert sorted(p.name for p in (tmp_path / "reports" / "pruned").iterdir()) == [
        "classes.csv",
        "examples.parquet",
        "report.html",
        "summary.json",
    ]


def test_quiet_prints_nothing(harmed_populations, capsys):
    assert run("compare", *harmed_populations, "-q") == 1
    assert capsys.readouterr() == ("", "")


def test_options_reach_the_library(harmed_populations, tmp_path):
    code = run(
        "compare",
        *harmed_populations,
        "--out", tmp_path / "r",
        "--alpha", "0.01",
        "--correction", "none",
        "--tie-break", "highest",
        "--seed", "3",
        "--n-bootstrap", "50",
        "--max-class-drop", "0.5",
        "--max-pie-fraction", "0.9",
        "--max-accuracy-drop", "0.9",
        "--max-harmed-classes", "4",
        "--max-class-recall-drop", "0.9",
        "--stable-pies-only",
        "--min-power", "0.01",
        "--test", "welch",
        "--detect", "0.3",
        "-q",
    )
    assert code == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["settings"] == {
        "alpha": 0.01,
        "correction": "none",
        "tie-break": "highest",
        "test": "welch",
        "detect": 0.3,
        "n-bootstrap": 50,
        "confidence": 0.95,
        "seed": 3,
        "min-group-support": 30,
    }
    # One spelling of every rule, the flags' and the config's, in summary.json too.
    assert summary["gate"]["rules"] == summary["config"]["rules"] == {
        "max-class-drop": 0.5,
        "max-class-recall-drop": 0.9,
        "max-group-drop": 0.02,
        "max-group-accuracy-drop": 0.05,
        "max-pie-fraction": 0.9,
        "max-accuracy-drop": 0.9,
        "max-harmed-classes": 4,
        "min-power": 0.01,
        "stable-pies-only": True,
        "allow-inconclusive": False,
    }
    assert summary["config"]["source"] is None and summary["power"]["detect"] == 0.3


def test_rules_from_pyproject_and_command_line_precedence(harmed_populations, tmp_path):
    Path("pyproject.toml").write_text("[tool.pie-audit]\nmax-class-drop = 0.5\nmax-class-recall-drop = 1\nmax-pie-fraction = 0.0\n")
    assert run("compare", *harmed_populations, "--out", tmp_path / "r", "-q") == 1
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert [f["rule"] for f in summary["gate"]["failures"]] == ["max-pie-fraction"]
    assert summary["config"]["source"] == str(Path("pyproject.toml").resolve())
    assert run("compare", *harmed_populations, "--out", tmp_path / "r", "-q", "--max-pie-fraction", "1") == 0


def test_config_is_found_from_a_sub_directory_and_named(harmed_populations, tmp_path, monkeypatch, capsys):
    (tmp_path / "pyproject.toml").write_text("[tool.pie-audit]\nmax-class-drop = 0.5\nmax-class-recall-drop = 1\n")
    sub = tmp_path / "src" / "deep"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert run("compare", *harmed_populations, "--out", tmp_path / "r") == 0
    assert f"rules: {tmp_path / 'pyproject.toml'}" in capsys.readouterr().out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["config"] == {
        "source": str(tmp_path / "pyproject.toml"),
        "rules": {**summary["gate"]["rules"], "max-class-drop": 0.5, "max-class-recall-drop": 1},
    }


def test_explicit_config_file(harmed_populations, tmp_path):
    config = tmp_path / "ci" / "gate.toml"
    config.parent.mkdir()
    config.write_text("[tool.pie-audit]\nmax-class-drop = 0.5\nmax-class-recall-drop = 1\n")
    assert run("compare", *harmed_populations, "--config", config, "-q") == 0


def test_junit(harmed_populations, tmp_path):
    junit = tmp_path / "ci" / "gate.xml"
    assert run("compare", *harmed_populations, "--junit", junit, "-q") == 1
    root = ET.parse(junit).getroot()
    failure = root.find("testsuite/testcase/failure")
    assert failure is not None and "2 (-" in failure.get("message")
    props = {p.get("name"): p.get("value") for p in root.findall("testsuite/properties/property")}
    assert props["rules-source"] == "defaults" and props["rule:max-class-drop"] == "0.02"
    assert props["test"] == "welch" and props["power"].startswith("this audit can detect")


# --- exit 2: bad input and usage ----------------------------------------------------------------


def _assert_bad_input(capsys, tmp_path, *message_parts):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("pie-audit: error: ")
    for part in message_parts:
        assert part in lines[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "reports").exists()
    assert not (tmp_path / "r").exists()


def test_missing_directory(identical_populations, tmp_path, capsys):
    assert run("compare", tmp_path / "nope", identical_populations[1], "--out", tmp_path / "r") == 2
    _assert_bad_input(capsys, tmp_path, str(tmp_path / "nope"), "no such directory")


def test_empty_directory(identical_populations, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run("compare", identical_populations[0], tmp_path / "empty") == 2
    _assert_bad_input(capsys, tmp_path, "no model found (it is empty)")


def test_no_prediction_files(identical_populations, tmp_path, capsys):
    (tmp_path / "pop" / "seed-0").mkdir(parents=True)
    assert run("compare", identical_populations[0], tmp_path / "pop") == 2
    _assert_bad_input(capsys, tmp_path, "no prediction files")


def _replace_file(population, **columns):
    path = population / "model-003" / "predictions.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def test_corrupt_parquet(identical_populations, tmp_path, capsys):
    path = identical_populations[1] / "model-003" / "predictions.parquet"
    path.write_bytes(b"garbage")
    assert run("compare", *identical_populations) == 2
    _assert_bad_input(capsys, tmp_path, str(path), "not a readable Parquet file")


def test_missing_column(identical_populations, tmp_path, capsys):
    path = _replace_file(identical_populations[1], example_id=np.arange(400), prediction=np.zeros(400, int))
    assert run("compare", *identical_populations) == 2
    _assert_bad_input(capsys, tmp_path, f"{path}: missing column 'label'")


@pytest.mark.parametrize(
    ("label", "problem"),
    [(np.full(400, 1.5), "has type double; expected integers"), (np.full(400, -1), "negative value -1")],
)
def test_bad_labels(identical_populations, tmp_path, capsys, label, problem):
    path = _replace_file(
        identical_populations[1], example_id=np.arange(400), label=label, prediction=np.zeros(400, int)
    )
    assert run("compare", *identical_populations) == 2
    _assert_bad_input(capsys, tmp_path, str(path), problem)


def test_duplicate_example_ids(identical_populations, tmp_path, capsys):
    path = _replace_file(
        identical_populations[1],
        example_id=np.arange(400) // 2,
        label=np.zeros(400, int),
        prediction=np.zeros(400, int),
    )
    assert run("compare", *identical_populations) == 2
    _assert_bad_input(capsys, tmp_path, str(path), "duplicate example_id 0")


def test_populations_on_different_examples(identical_populations, audit_labels, tmp_path, capsys):
    from synthetic import write_population

    other = write_population(tmp_path / "other", np.zeros((2, 300), int), audit_labels[:300])
    assert run("compare", identical_populations[0], other) == 2
    _assert_bad_input(capsys, tmp_path, "evaluated on different examples")


def test_labels_disagree(identical_populations, audit_labels, tmp_path, capsys):
    path = _replace_file(
        identical_populations[1],
        example_id=np.arange(400),
        label=(audit_labels + 1) % 5,
        prediction=np.zeros(400, int),
    )
    assert run("compare", *identical_populations) == 2
    _assert_bad_input(capsys, tmp_path, str(path), "label of example_id 0 is")


def test_mismatched_class_lists(audit_labels, tmp_path, capsys):
    from synthetic import write_population

    preds = np.zeros((2, 400), int)
    b = write_population(tmp_path / "b", preds, audit_labels, classes=list("abcde"))
    p = write_population(tmp_path / "p", preds, audit_labels, classes=list("abcdf"))
    assert run("compare", b, p) == 2
    _assert_bad_input(capsys, tmp_path, "class list differs", "class 4 is 'f' here, 'e' there")


def test_output_directory_with_foreign_files(identical_populations, tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "notes.txt").write_text("keep")
    assert run("compare", *identical_populations, "--out", tmp_path / "r") == 2
    assert "not part of a pie-audit report" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "args",
    [
        ["--correction", "bonferroni"],
        ["--tie-break", "random"],
        ["--alpha", "2"],
        ["--max-class-drop", "-1"],
        ["--config", "missing.toml"],
    ],
)
def test_bad_settings(identical_populations, tmp_path, capsys, args):
    assert run("compare", *identical_populations, *args) == 2
    _assert_bad_input(capsys, tmp_path)


@pytest.mark.parametrize(
    "args",
    [["compare"], ["compare", "a"], ["compare", "a", "b", "--bogus"], ["compare", "a", "b", "--alpha", "x"]],
)
def test_usage_errors(tmp_path, args):
    assert run(*args) == 2


def test_end_to_end_subprocess(harmed_populations, identical_populations, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    cli = [sys.executable, "-c", "from pie_audit.cli import main; main()"]
    options = {"capture_output": True, "text": True, "env": env, "cwd": tmp_path}
    failed = subprocess.run([*cli, "compare", *map(str, harmed_populations)], **options)
    assert failed.returncode == 1, failed.stderr
    assert "gate FAILED" in failed.stdout and failed.stderr == ""
    bad = subprocess.run([*cli, "compare", str(tmp_path / "nope"), str(identical_populations[1])], **options)
    assert bad.returncode == 2
    assert bad.stderr == f"pie-audit: error: {tmp_path / 'nope'}: no such directory\n"
