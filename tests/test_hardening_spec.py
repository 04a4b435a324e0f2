"""Hardening: every spec checked whole before the first model trains, every study writer locked.

A study is refused at once, with one line and exit 2, when its names would split a line or
collide with the study's own files, when it asks for more models than a population may hold,
or when its ``out`` (or its report) holds something that is not the study's; a study run holds
its ``out``'s lock; a shrunk spec audits exactly its seeds; and ``--from`` takes the parent's seeds.
"""

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

import pie_audit.study._study as study_module
import pie_audit.training
from pie_audit._atomic import LOCKED, exclusive_lock
from pie_audit.errors import ConfigError, OutputError
from pie_audit.report._outputs import NOT_A_SWEEP
from pie_audit.study._study import (
    BAD_VALUE,
    NOT_A_DATA_ROOT,
    OUT_HOLDS_OTHER,
    OUT_IS_A_POPULATION,
    RESERVED,
    RESERVED_NAMES,
    TOO_MANY,
    UNAUDITED_MODELS,
    read_study,
    run_study,
)
from pie_audit.training._population import MAX_MODELS, TOO_MANY_MODELS
from synthetic import planted_predictions, write_population

from cli_run import error_line, run

SPEC = """
[study]
name = "tiny"
dataset = "digits"
arch = "small-cnn"
models = {models}
out = "runs/tiny"

[train]
epochs = 2
batch-size = 32
lr = 0.05

[[population]]
name = "{baseline}"
sparsity = 0.0

[[population]]
name = "{pruned}"
sparsity = 0.9
prune-begin = 0.1
prune-end = 0.6
"""
NAME_PROBLEM = "name must be letters, digits, '.', '_' or '-', not starting with '.'"


def spec(directory: Path, *, models=2, baseline="dense", pruned="gmp-90") -> Path:
    path = directory / "study.toml"
    path.write_text(textwrap.dedent(SPEC.format(models=models, baseline=baseline, pruned=pruned)))
    return path


def everything(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.fixture(autouse=True)
def _no_training(monkeypatch, tmp_path):
    """Any training a refused study would start fails the test instead."""
    monkeypatch.chdir(tmp_path)

    def run_local(*args, **kwargs):
        raise AssertionError("a model was trained")

    monkeypatch.setattr(pie_audit.training, "run_local", run_local)


# ---- names ----------------------------------------------------------------------------------------


def test_a_population_name_with_a_final_newline_is_refused(tmp_path, capsys):
    path = spec(tmp_path, pruned="gmp-90\\n")
    with pytest.raises(ConfigError) as e:
        read_study(path)
    assert str(e.value) == BAD_VALUE.format(path=path, where="[[population]] 'gmp-90\\n'", problem=NAME_PROBLEM)
    assert run("study", "run", path) == 2
    assert error_line(capsys) == str(e.value)
    assert not (tmp_path / "runs").exists()


def test_a_study_name_with_a_final_newline_is_refused(tmp_path, capsys):
    path = spec(tmp_path)
    path.write_text(path.read_text().replace('name = "tiny"', 'name = "tiny\\n"'))
    assert run("study", "status", path) == 2
    assert "[study] name 'tiny\\n' must be letters, digits" in error_line(capsys)


@pytest.mark.parametrize("name", ["report", "Report", "index.html", "INDEX.HTML", "population.json", "groups.parquet"])
def test_reserved_names_are_refused_before_anything(tmp_path, capsys, name):
    path = spec(tmp_path, pruned=name)
    assert run("study", "run", path) == 2
    reserved = ", ".join(sorted(RESERVED_NAMES))
    assert error_line(capsys) == RESERVED.format(path=path, where=f"[[population]] {name!r}", name=name, reserved=reserved)
    assert not (tmp_path / "runs").exists()


# ---- how many models ------------------------------------------------------------------------------


def test_a_huge_models_count_is_refused_at_once(tmp_path, capsys):
    path = spec(tmp_path, models=20_000_000)
    for command in ("run", "status"):
        assert run("study", command, path) == 2
        assert error_line(capsys) == TOO_MANY.format(path=path, most="10,000", models="20,000,000")
    assert not (tmp_path / "runs").exists()
    assert MAX_MODELS == 10_000
    assert read_study(spec(tmp_path, models=MAX_MODELS)).models == MAX_MODELS


def test_train_refuses_more_models_than_a_population_holds(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pie_audit.training, "train_population", lambda *a, **k: pytest.fail("trained"))
    assert run("train", "--out", tmp_path / "p", "--population", 20_000, "-q") == 2
    assert error_line(capsys) == TOO_MANY_MODELS.format(what="population", most="10,000", models="20,000")
    assert not (tmp_path / "p").exists()


def test_the_population_writer_refuses_too_many_seeds_before_looking_at_any(tmp_path):
    from tiny import TINY_CONFIG, tiny_digits

    from pie_audit.training import PruneConfig, open_population

    with open_population(tiny_digits(), arch="small-cnn", out=tmp_path / "p", train=TINY_CONFIG, prune=PruneConfig(sparsity=0.0)) as writer:
        with pytest.raises(ConfigError, match="at most 10,000 models"):
            writer.missing(range(MAX_MODELS + 1))
        assert writer.missing(range(3)) == [0, 1, 2]


# ---- the study's out --------------------------------------------------------------------------------


def _synthetic_population(path: Path) -> Path:
    labels = np.arange(40) % 10
    return write_population(path, planted_predictions(2, labels, accuracy=0.9, n_classes=10, seed=0), labels)


def test_an_out_that_is_a_population_is_refused_before_any_training(tmp_path, capsys):
    path = spec(tmp_path)
    out = _synthetic_population(tmp_path / "runs" / "tiny")
    before = everything(out)
    assert run("study", "run", path) == 2
    assert error_line(capsys) == OUT_IS_A_POPULATION.format(path=path, out=out, evidence="'model-000' is a model directory")
    (out / "population.json").write_text("{}")
    assert run("study", "run", path) == 2
    assert error_line(capsys) == OUT_IS_A_POPULATION.format(path=path, out=out, evidence="it holds population.json")
    assert everything(out) == sorted([*before, "population.json"])


def test_an_out_holding_a_users_files_is_refused_before_any_training(tmp_path, capsys):
    path = spec(tmp_path)
    out = tmp_path / "runs" / "tiny"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    assert run("study", "run", path) == 2
    assert error_line(capsys) == OUT_HOLDS_OTHER.format(path=path, out=out, entry="notes.txt")
    (out / "notes.txt").unlink()
    (out / "photos").mkdir()
    assert run("study", "run", path) == 2
    assert error_line(capsys) == OUT_HOLDS_OTHER.format(path=path, out=out, entry="photos")
    assert everything(out) == ["photos"]


def test_a_population_the_spec_no_longer_names_is_the_studys_own(tmp_path):
    out = tmp_path / "runs" / "tiny"
    (out / "gmp-50").mkdir(parents=True)
    (out / "gmp-50" / "population.json").write_text("{}")
    (out / ".dense.pie-audit.lock").write_text("")
    assert read_study(spec(tmp_path)).out == out


def test_a_report_holding_a_users_file_is_refused_at_spec_read(tmp_path, capsys):
    path = spec(tmp_path)
    report = tmp_path / "runs" / "tiny" / "report"
    report.mkdir(parents=True)
    (report / "notes.txt").write_text("mine")
    with pytest.raises(OutputError) as e:
        read_study(path)
    assert str(e.value) == NOT_A_SWEEP.format(path=report, entry="notes.txt")
    assert run("study", "run", path) == 2
    assert error_line(capsys) == str(e.value)
    assert (report / "notes.txt").read_text() == "mine" and everything(tmp_path / "runs") == ["tiny", "tiny/report", "tiny/report/notes.txt"]


def test_a_symlink_loop_as_out_is_refused(tmp_path, capsys):
    path = spec(tmp_path)
    (tmp_path / "runs").mkdir()
    loop = tmp_path / "runs" / "tiny"
    loop.symlink_to(loop)
    assert run("study", "run", path) == 2
    assert error_line(capsys) == f"{loop}: cannot be followed (a loop of symbolic links)"


# ---- the study's lock ---------------------------------------------------------------------------------


def test_a_study_run_is_refused_while_another_holds_its_out(tmp_path, capsys):
    path = spec(tmp_path)
    out = tmp_path / "runs" / "tiny"
    with exclusive_lock(out) as lock:
        assert run("study", "run", path, "--quiet") == 2
        assert error_line(capsys) == LOCKED.format(path=out, lock=lock)
    assert not out.exists()


def test_a_study_run_holds_its_outs_lock_while_it_trains(tmp_path, monkeypatch):
    held = []
    out = tmp_path / "runs" / "tiny"

    def run_local(units, **kwargs):
        try:
            with exclusive_lock(out):
                held.append(False)
        except OutputError:
            held.append(True)

    monkeypatch.setattr(pie_audit.training, "run_local", run_local)
    assert run("study", "run", spec(tmp_path), "--no-report", "--quiet") == 0
    assert held == [True]


# ---- data options -------------------------------------------------------------------------------------


def test_status_takes_the_data_root_as_run_does(tmp_path, capsys):
    path = spec(tmp_path)
    (tmp_path / "data").mkdir()
    assert run("study", "status", path, "--data-root", tmp_path / "data") == 0
    assert capsys.readouterr().out.splitlines() == ["dense: 0 of 2 finished; missing seeds 0, 1", "gmp-90: 0 of 2 finished; missing seeds 0, 1"]
    (tmp_path / "file").write_text("")
    for command in ("run", "status"):
        assert run("study", command, path, "--data-root", tmp_path / "file") == 2
        assert error_line(capsys) == NOT_A_DATA_ROOT.format(data_root=tmp_path / "file")
    assert not (tmp_path / "runs").exists()


# ---- a shrunk spec audits exactly its seeds -----------------------------------------------------------


def test_a_shrunk_spec_audits_exactly_its_seeds_and_says_so(tmp_path, monkeypatch):
    from tiny import tiny_digits

    from pie_audit.training._driver import run_local

    monkeypatch.setattr(pie_audit.training, "run_local", run_local)  # real training, of tiny data
    monkeypatch.setattr(study_module, "_load", lambda study, data_root: tiny_digits())
    run_study(read_study(spec(tmp_path, models=3)), device="cpu", report=False)
    shrunk = read_study(spec(tmp_path, models=2))
    outcome = run_study(shrunk, device="cpu")
    assert outcome.trained == 0
    [(name, result)] = outcome.results
    assert name == "gmp-90" and result.baseline.n_models == result.pruned.n_models == 2
    assert sorted(result.examples.columns)  # a real audit
    notes = [
        UNAUDITED_MODELS.format(population=p, models=2, first="seed-0000", last="seed-0001", count=1, ies="y",
                                shown="seed-0002", are="is")
        for p in ("dense", "gmp-90")
    ]  # fmt: skip
    assert [n for n in result.notes if "not audited" in n] == notes
    assert outcome.notes == tuple(notes)  # what the console prints, once each
    summary = json.loads((shrunk.report_dir / "gmp-90" / "summary.json").read_text())
    assert summary["baseline"]["n_models"] == 2 and [n for n in summary["notes"] if "not audited" in n] == notes
    # The spec's own seeds all there: no note.
    outcome = run_study(read_study(spec(tmp_path, models=3)), device="cpu")
    assert outcome.results[0][1].pruned.n_models == 3
    assert not [n for n in outcome.results[0][1].notes if "not audited" in n] and outcome.notes == ()


# ---- --from takes the parent's seeds --------------------------------------------------------------------


def _fake_parent(path: Path, seeds) -> Path:
    for seed in seeds:
        (path / f"seed-{seed:04d}").mkdir(parents=True)
        (path / f"seed-{seed:04d}" / "run.json").write_text("{}")
    return path


@pytest.fixture
def asked(monkeypatch):
    """What ``pie-audit train`` asks the library for: (population, seed_start)."""
    calls = []

    def train_population(dataset, *, population, seed_start, **kwargs):
        calls.append((population, seed_start))
        return []

    monkeypatch.setattr(pie_audit.training, "train_population", train_population)
    return calls


@pytest.mark.parametrize("method", ["oneshot", "int8"])
def test_from_takes_the_parents_seeds_by_default(tmp_path, asked, method):
    extra = ["--sparsity", "0.5"] if method == "oneshot" else []
    two = _fake_parent(tmp_path / "two", [0, 1])
    later = _fake_parent(tmp_path / "later", [3, 4, 5])
    (tmp_path / "later" / "seed-0006").mkdir()  # no run.json: no model
    for parent, given in ((two, []), (later, []), (later, ["--seed-start", "4"]), (two, ["--population", "5"])):
        assert run("train", "--method", method, *extra, "--from", parent, "--out", tmp_path / "child", *given, "-q") == 0
    assert asked == [(2, 0), (3, 3), (2, 4), (5, 0)]


def test_without_from_the_default_is_sixteen_from_seed_zero(tmp_path, asked):
    assert run("train", "--out", tmp_path / "p", "-q") == 0
    assert asked == [(16, 0)]


@pytest.mark.slow
def test_int8_from_a_two_model_parent_makes_two_models(tmp_path):
    """End to end: the parent of 2 models gives a derived population of 2, not the default 16."""
    dense, derived = tmp_path / "dense", tmp_path / "int8"
    assert run("train", "--population", 2, "--epochs", 1, "--out", dense, "-q") == 0
    assert run("train", "--method", "int8", "--from", dense, "--out", derived, "-q") == 0
    assert sorted(p.name for p in derived.iterdir() if p.is_dir()) == ["seed-0000", "seed-0001"]
