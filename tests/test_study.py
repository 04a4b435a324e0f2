"""Study specs: every bad spec is one line naming the file, the key and the problem."""

import textwrap
from pathlib import Path

import pytest

from pie_audit.errors import ConfigError
from pie_audit.study._study import read_study

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
[study]
name = "tiny"
dataset = "digits"
arch = "small-cnn"
models = 3
out = "runs/tiny"

[train]
epochs = 1

[[population]]
name = "dense"
sparsity = 0.0

[[population]]
name = "gmp-90"
sparsity = 0.9
scope = "global"
prune-begin = 0.1
exclude = ["features.0"]
"""


def write(tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_good_spec(tmp_path):
    study = read_study(write(tmp_path, GOOD))
    assert (study.name, study.dataset, study.arch, study.models, study.seed_start) == ("tiny", "digits", "small-cnn", 3, 0)
    assert study.out == (tmp_path / "runs" / "tiny").resolve()
    assert study.train.epochs == 1 and study.train.batch_size == 64  # digits' default kept
    assert [p.name for p in study.populations] == ["dense", "gmp-90"]
    assert study.baseline.name == "dense" and [p.name for p in study.pruned] == ["gmp-90"]
    gmp = study.pruned[0].prune
    assert (gmp.sparsity, gmp.scope, gmp.begin, gmp.end, gmp.exclude) == (0.9, "global", 0.1, 0.8, ("features.0",))
    assert study.seeds == [0, 1, 2] and study.directory(study.baseline) == study.out / "dense"


METHODS_SPEC = """
[study]
name = "methods"
dataset = "digits"
arch = "small-cnn"
models = 2
out = "runs/methods"

[train]
epochs = 1

[[population]]
name = "oneshot-80"
method = "oneshot"
sparsity = 0.8

[[population]]
name = "dense"
sparsity = 0.0

[[population]]
name = "random-80"
method = "random"
sparsity = 0.8

[[population]]
name = "lottery-80"
method = "lottery"
sparsity = 0.8
rounds = 2
rewind = 0.0

[[population]]
name = "int8"
method = "int8"
calibration-images = 64

[[population]]
name = "structured-50"
method = "structured"
sparsity = 0.5
"""


def test_a_spec_with_methods(tmp_path):
    study = read_study(write(tmp_path, METHODS_SPEC))
    assert study.baseline.name == "dense"
    assert [p.method for p in study.pruned] == ["oneshot", "random", "lottery", "int8", "structured"]
    oneshot = study.pruned[0]
    assert oneshot.is_derived and oneshot.prune.source == str(study.out / "dense")
    assert study.pruned[2].prune.rounds == 2
    int8 = study.pruned[3]
    assert int8.is_derived and int8.prune.source == str(study.out / "dense")
    assert int8.prune.calibration_images == 64
    assert study.pruned[4].prune.sparsity == 0.5 and not study.pruned[4].is_derived


def test_a_study_trains_derived_populations_after_the_baseline(tmp_path):
    study = read_study(write(tmp_path, METHODS_SPEC))
    from pie_audit.study._study import run_study

    # The derived population comes first in the spec, but its parents must exist when it trains.
    outcome = run_study(study, device="cpu", report=False)
    assert outcome.trained == 12
    for population in study.populations:
        run = json.loads((study.directory(population) / "seed-0001" / "run.json").read_text())
        assert run["method"] == population.method
    oneshot = json.loads((study.out / "oneshot-80" / "seed-0001" / "run.json").read_text())
    assert oneshot["parent"]["seed"] == 1
    assert pie_audit.compare(study.out / "dense", study.out / "oneshot-80").test == "paired"
    int8 = json.loads((study.out / "int8" / "seed-0001" / "run.json").read_text())
    assert int8["parent"]["seed"] == 1 and int8["quantization"]["calibration_images"] == 64
    assert pie_audit.compare(study.out / "dense", study.out / "int8").test == "paired"
    structured = json.loads((study.out / "structured-50" / "seed-0001" / "run.json").read_text())
    assert structured["sparsity"]["channels"]["achieved"] == 0.5
    # Every method's population audits against the baseline.
    for population in study.pruned:
        result = pie_audit.compare(study.out / "dense", study.directory(population))
        assert result.pruned.n_models == 2 and 0.0 <= result.pies.fraction <= 1.0


def test_the_shipped_studies_are_valid():
    study = read_study(ROOT / "studies" / "digits.toml")
    assert [p.prune.sparsity for p in study.populations] == [0.0, 0.5, 0.9, 0.98]
    assert study.out == (ROOT / "runs" / "digits-gmp").resolve()
    methods = read_study(ROOT / "studies" / "methods.toml")
    assert [p.method for p in methods.pruned] == ["gmp", "random", "oneshot", "lottery", "structured", "int8"]
    assert {p.prune.sparsity for p in methods.pruned if p.method != "int8"} == {0.9}
    deploy = read_study(ROOT / "studies" / "deploy.toml")
    assert [(p.name, p.method) for p in deploy.pruned] == [
        ("gmp-90", "gmp"), ("structured-50", "structured"), ("structured-90", "structured"),
        ("int8", "int8"), ("onnx-int8", "onnx-int8"),
    ]
    assert [p.prune.sparsity for p in deploy.pruned if p.method in ("gmp", "structured")] == [0.9, 0.5, 0.9]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.replace("[study]", "[study"), "not valid TOML"),
        (lambda s: s.replace('arch = "small-cnn"', 'arch = "small-cnn"\ncolour = "red"'), "[study] has unknown key 'colour'"),
        (lambda s: s.replace("models = 3", 'models = "3"'), "[study] models must be an integer, not '3'"),
        (lambda s: s.replace("models = 3", "models = 0"), "[study] models must be >= 1, not 0"),
        (lambda s: s.replace('dataset = "digits"', 'dataset = "mnist"'), "[study] dataset 'mnist' is not one of"),
        (lambda s: s.replace('arch = "small-cnn"', 'arch = "vgg"'), "[study] arch 'vgg' is not one of"),
        (lambda s: s.replace('name = "gmp-90"', 'name = "dense"'), "two populations are named 'dense'"),
        (lambda s: s.replace("sparsity = 0.9", "sparsity = 0.0"), "exactly one baseline population (sparsity = 0), found 2: 'dense', 'gmp-90'"),
        (lambda s: s.replace("sparsity = 0.0", "sparsity = 0.5"), "exactly one baseline population (sparsity = 0), found 0"),
        (lambda s: s.replace("sparsity = 0.9", "sparsity = 1.0"), "[[population]] 'gmp-90' sparsity must be in [0, 1), got 1.0"),
        (lambda s: s.replace("sparsity = 0.9", "sparsity = -0.1"), "sparsity must be in [0, 1)"),
        (lambda s: s.replace("scope = \"global\"", "scope = \"row\""), "unknown pruning scope 'row'"),
        (lambda s: s.replace("epochs = 1", "epochs = 0"), "[train] epochs must be"),
        (lambda s: s.replace("epochs = 1", "epoch = 1"), "[train] has unknown key 'epoch'"),
        (lambda s: s.replace("sparsity = 0.9", "sparsity = 0.9\nmethod = \"magic\""), "method 'magic' is not one of gmp, random, oneshot, lottery, structured, int8"),
        (lambda s: s.replace('sparsity = 0.9\nscope = "global"', 'method = "int8"\nsparsity = 0.9'),
         "[[population]] 'gmp-90' option 'sparsity' is not used by method 'int8', which takes: from, calibration-images"),
        (lambda s: s.replace('sparsity = 0.9\nscope = "global"', 'method = "structured"'),
         "[[population]] 'gmp-90' is missing required key 'sparsity'"),
        (lambda s: s.replace('sparsity = 0.9\nscope = "global"\nprune-begin = 0.1\nexclude = ["features.0"]', 'method = "int8"\ncalibration-images = 0'),
         "calibration-images must be a whole number >= 1, got 0"),
        (lambda s: s.replace("sparsity = 0.9", "sparsity = 0.9\nmethod = \"oneshot\"\nfrom = \"gmp-90\""),
         "[[population]] 'gmp-90' from must name the study's baseline population ('dense'), not 'gmp-90'"),
        (lambda s: s.replace("sparsity = 0.9", "sparsity = 0.9\nmethod = \"random\""),
         "[[population]] 'gmp-90' option 'scope' is not used by method 'random', which takes: sparsity, exclude, prune-final"),
        (lambda s: s.replace("sparsity = 0.9", "sparsity = 0.9\nrounds = 2"), "option 'rounds' is not used by method 'gmp'"),
        (lambda s: s.replace('exclude = ["features.0"]', 'exclude = "features.0"'), "exclude must be a list of strings"),
        (lambda s: s.replace('name = "gmp-90"', 'name = "report"'), "name 'report' is reserved"),
        (lambda s: s.replace('name = "gmp-90"', 'name = "../escape"'), "name must be letters, digits"),
        (lambda s: s.replace("[study]", "[studdy]"), "unknown key 'studdy'"),
        (lambda s: s.split("[[population]]")[0], "no [[population]]"),
        (lambda s: s.replace('out = "runs/tiny"\n', ""), "[study] is missing required key 'out'"),
        (lambda s: s.replace("prune-begin = 0.1", "prune-begin = nan"), "prune-begin must be a number, not nan"),
    ],
)
def test_bad_specs(tmp_path, change, message):
    path = write(tmp_path, change(textwrap.dedent(GOOD)))
    with pytest.raises(ConfigError) as e:
        read_study(path)
    text = str(e.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        read_study(tmp_path / "nope.toml")


def celeba_spec(extra):
    """GOOD on CelebA, with ``extra`` lines in [study]."""
    return textwrap.dedent(GOOD).replace('dataset = "digits"', 'dataset = "celeba"\n' + extra)


def test_a_spec_with_a_target_and_groups(tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "groups.csv").write_text("example_id,sex\n0,F\n")
    study = read_study(write(tmp_path, celeba_spec('target = "Smiling"\ngroups = "tables/groups.csv"\ngroup-by = ["sex"]')))
    assert (study.dataset, study.target, study.group_by) == ("celeba", "Smiling", ("sex",))
    assert study.groups == (tmp_path / "tables" / "groups.csv").resolve()  # relative to the spec file
    assert study.train.augment and study.train.epochs == 1  # celeba's defaults, [train] applied
    # Without groups, group-by names attributes of the baseline's own groups.parquet; the target defaults.
    default = read_study(write(tmp_path, celeba_spec('group-by = ["Male", "Young"]')))
    assert (default.target, default.groups, default.group_by) == ("Blond_Hair", None, ("Male", "Young"))
    plain = read_study(write(tmp_path, GOOD))
    assert (plain.target, plain.groups, plain.group_by) == (None, None, None)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('target = "Blond"', "[study] target unknown target 'Blond' for celeba; choose one of its attributes: 5_o_Clock_Shadow, "),
        ("target = 3", "[study] target must be a string, not 3"),
        ('groups = "nowhere.parquet"', "[study] groups {tmp}/nowhere.parquet is not a file"),
        ('groups = "study.toml"', "[study] groups {tmp}/study.toml must be a .parquet or .csv file"),
        ("groups = true", "[study] groups must be a string, not True"),
        ('group-by = "Male"', "[study] group-by must be a list of strings, not 'Male'"),
        ("group-by = []", "[study] group-by names no attribute"),
        ('group-by = ["Male", "Male"]', "[study] group-by names 'Male' twice"),
        ('group-by = ["Blond_Hair"]', "[study] group-by 'Blond_Hair' is the target the models predict, not a group of examples"),
        ('group-by = ["sex"]', "[study] group-by 'sex' is not an attribute of celeba; its attributes: 5_o_Clock_Shadow, "),
    ],
)
def test_bad_targets_and_groups(tmp_path, extra, message):
    path = write(tmp_path, celeba_spec(extra))
    with pytest.raises(ConfigError) as e:
        read_study(path)
    text = str(e.value)
    assert text.startswith(f"{path}: ") and message.format(tmp=tmp_path.resolve()) in text and "\n" not in text, text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('target = "Male"', "[study] target digits has fixed classes and takes no target (datasets with a target: celeba)"),
        ('group-by = ["sex"]', "[study] group-by needs groups = FILE: digits has no attributes of its own"),
    ],
)
def test_a_dataset_without_attributes_takes_no_target_and_no_group_by_alone(tmp_path, extra, message):
    path = write(tmp_path, textwrap.dedent(GOOD).replace('dataset = "digits"', 'dataset = "digits"\n' + extra))
    with pytest.raises(ConfigError) as e:
        read_study(path)
    assert str(e.value) == f"{path}: {message}"


# --- running studies -------------------------------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import pie_audit  # noqa: E402
from pie_audit.cli import main  # noqa: E402

TINY = """
[study]
name = "tiny"
dataset = "digits"
arch = "small-cnn"
models = 3
out = "runs/tiny"

[train]
epochs = {epochs}

[[population]]
name = "dense"
sparsity = 0.0

[[population]]
name = "gmp-90"
sparsity = 0.9
"""


def tiny_spec(directory, epochs=1, name="study.toml", out="runs/tiny"):
    path = directory / name
    path.write_text(TINY.format(epochs=epochs).replace('out = "runs/tiny"', f'out = "{out}"'))
    return path


def run_cli(*args):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code


def models_of(population_dir):
    return sorted(p.name for p in population_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.mark.slow
def test_a_study_runs_resumes_and_reports(tmp_path, capsys):
    spec = tiny_spec(tmp_path)
    code = run_cli("study", "run", spec, "--quiet")
    assert code in (0, 1)
    out = tmp_path / "runs" / "tiny"
    for name in ("dense", "gmp-90"):
        assert models_of(out / name) == ["seed-0000", "seed-0001", "seed-0002"]
    summary = json.loads((out / "report" / "gmp-90" / "summary.json").read_text())
    assert summary["baseline"]["n_models"] == summary["pruned"]["n_models"] == 3
    assert (out / "report" / "index.html").is_file()
    capsys.readouterr()
    assert run_cli("study", "status", spec) == 0
    assert capsys.readouterr().out.splitlines() == ["dense: 3 of 3 finished", "gmp-90: 3 of 3 finished"]
    # Nothing is retrained: the models' files are untouched by a second run.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("model.pt")}
    run_cli("study", "run", spec, "--quiet")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.pt")} == before


@pytest.mark.slow
def test_a_population_from_train_is_the_studys(tmp_path, capsys):
    """`pie-audit train` with the same options writes what the study would: the study skips it."""
    spec = tiny_spec(tmp_path)
    out = tmp_path / "runs" / "tiny"
    assert run_cli("train", "--dataset", "digits", "--population", 2, "--epochs", 1, "--sparsity", 0.9,
                   "--out", out / "gmp-90", "--quiet") == 0  # fmt: skip
    assert run_cli("study", "status", spec) == 0
    assert "gmp-90: 2 of 3 finished; missing seeds 2" in capsys.readouterr().out
    # A population of another configuration is refused, naming the key.
    assert run_cli("train", "--dataset", "digits", "--population", 1, "--epochs", 2, "--out", out / "dense", "--quiet") == 0
    capsys.readouterr()
    assert run_cli("study", "run", spec, "--quiet") == 2
    err = capsys.readouterr().err
    assert "holds runs of a different configuration (train.epochs is 2 there, 1 now)" in err
    assert models_of(out / "gmp-90") == ["seed-0000", "seed-0001"]  # refused before any training


@pytest.mark.slow
def test_an_interrupted_study_resumes(tmp_path):
    spec = tiny_spec(tmp_path, epochs=3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pie_audit", "study", "run", str(spec), "--quiet", "--jointly", "1"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    dense = tmp_path / "runs" / "tiny" / "dense"
    deadline = time.monotonic() + 120
    while not (dense.is_dir() and models_of(dense)) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err.splitlines()[-1]
    # Whatever was written before the interrupt is whole.
    from pie_audit.interchange import incomplete_reason

    kept = {name: models_of(tmp_path / "runs" / "tiny" / name) for name in ("dense", "gmp-90")
            if (tmp_path / "runs" / "tiny" / name).is_dir()}  # fmt: skip
    assert kept["dense"]
    for name, models in kept.items():
        for model in models:
            seed = int(model.split("-")[1])
            assert incomplete_reason(tmp_path / "runs" / "tiny" / name / model, seed=seed) is None
    assert run_cli("study", "run", spec, "--quiet") in (0, 1)
    for name in ("dense", "gmp-90"):
        population = pie_audit.load_population(tmp_path / "runs" / "tiny" / name)
        assert population.models == ("seed-0000", "seed-0001", "seed-0002")


def test_ray_missing_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import pie_audit.training as schedule

    # The study reads the training wing's face, so that is where the name is replaced.
    monkeypatch.setattr(schedule, "ray_available", lambda: False)
    assert run_cli("study", "run", tiny_spec(tmp_path), "--executor", "ray") == 2
    assert capsys.readouterr().err.strip() == f"pie-audit: error: {schedule.RAY_MISSING}"
    assert not (tmp_path / "runs").exists()


ray = pytest.importorskip("ray") if os.environ.get("CI") is None else __import__("ray")


@pytest.fixture(scope="module")
def local_ray():
    """A real Ray instance on this machine, 2 CPUs, over loopback."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_and_local_executors_give_identical_predictions(tmp_path, local_ray):
    from pie_audit.study._study import read_study, run_study

    local = read_study(tiny_spec(tmp_path, name="local.toml", out="runs/local"))
    remote = read_study(tiny_spec(tmp_path, name="ray.toml", out="runs/ray"))
    run_study(local, executor="local", device="cpu", report=False)
    outcome = run_study(remote, executor="ray", device="cpu", report=False)
    assert outcome.trained == 6
    for name in ("dense", "gmp-90"):
        a = pie_audit.load_population(local.out / name)
        b = pie_audit.load_population(remote.out / name)
        np.testing.assert_array_equal(a.predictions, b.predictions)
        for model in a.models:
            pa = json.loads((local.out / name / model / "run.json").read_text())
            pb = json.loads((remote.out / name / model / "run.json").read_text())
            assert pa["accuracy"] == pb["accuracy"] and pa["sparsity"] == pb["sparsity"]


@pytest.mark.slow
def test_a_killed_ray_worker_is_retried_and_every_model_written_once(tmp_path):
    spec = tiny_spec(tmp_path, epochs=12)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pie_audit", "study", "run", str(spec), "--executor", "ray", "--quiet", "--no-report"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        # Ray names a worker's process after the task it runs.
        found = subprocess.run(["pgrep", "-f", "ray::_train_unit"], capture_output=True, text=True).stdout.split()
        if found:
            time.sleep(0.5)  # let it get into the unit's training
            os.kill(int(found[0]), signal.SIGKILL)
            killed = int(found[0])
        time.sleep(0.1)
    _, err = proc.communicate(timeout=300)
    assert killed is not None, "no worker was seen running a unit"
    assert proc.returncode == 0, err
    # The local instance's token-authentication notice is Ray's default, not the user's news.
    assert "Token authentication" not in err, err
    out = tmp_path / "runs" / "tiny"
    for name in ("dense", "gmp-90"):
        assert models_of(out / name) == ["seed-0000", "seed-0001", "seed-0002"]  # once each
        assert not [p for p in (out / name).iterdir() if p.name.startswith(".tmp-")]
        population = pie_audit.load_population(out / name)
        assert population.n_models == 3


@pytest.mark.slow
def test_a_study_with_a_derived_population_starts_ray_once(tmp_path):
    """The baseline's wave and the derived wave share one local Ray instance: one session."""
    spec = tmp_path / "study.toml"
    spec.write_text(TINY.format(epochs=1) + '\n[[population]]\nname = "oneshot-90"\nmethod = "oneshot"\nsparsity = 0.9\n')
    # Ray's sockets live under its temporary directory, whose path must stay short (a Unix
    # socket's path is at most 107 bytes): not under pytest's tmp_path.
    ray_tmp = tempfile.mkdtemp(prefix="pa-ray-", dir="/tmp")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pie_audit", "study", "run", str(spec), "--executor", "ray", "--quiet", "--no-report"],
            cwd=tmp_path, capture_output=True, text=True, timeout=600, env=os.environ | {"RAY_TMPDIR": ray_tmp},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        sessions = [p.name for p in Path(ray_tmp, "ray").iterdir() if p.name.startswith("session_") and p.name != "session_latest"]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert len(sessions) == 1, sessions
    out = tmp_path / "runs" / "tiny"
    for name in ("dense", "gmp-90", "oneshot-90"):
        assert models_of(out / name) == ["seed-0000", "seed-0001", "seed-0002"]
    oneshot = json.loads((out / "oneshot-90" / "seed-0002" / "run.json").read_text())
    assert oneshot["parent"]["seed"] == 2
