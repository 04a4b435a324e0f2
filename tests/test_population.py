"""Population directories: the interchange files, resume, refusal to mix configurations."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pie_audit.data import Dataset
from pie_audit.errors import ConfigError, OutputError
from pie_audit.models import UNKNOWN_ARCHITECTURE, build_model
from pie_audit.population import (
    JOINTLY_TOO_SMALL,
    NEGATIVE_SEED_START,
    POPULATION_FILE,
    POPULATION_TOO_SMALL,
    UNKNOWN_DATASET,
    check_arguments,
    default_jointly,
    train_population,
)
from pie_audit.training import PruneConfig, TrainConfig

from tiny import PRUNE_90, TINY_CONFIG, tiny_digits


@pytest.fixture(scope="module")
def pruned_population(tmp_path_factory):
    out = tmp_path_factory.mktemp("pop") / "pruned-90"
    dirs = train_population(
        tiny_digits(), arch="small-cnn", out=out, population=2, seed_start=5,
        train=TINY_CONFIG, prune=PRUNE_90, device="cpu", command=["pie-audit", "train"],
    )  # fmt: skip
    return out, dirs


def test_layout(pruned_population):
    out, dirs = pruned_population
    assert [d.name for d in dirs] == ["seed-0005", "seed-0006"]
    assert sorted(p.name for p in out.iterdir()) == [POPULATION_FILE, "seed-0005", "seed-0006"]
    for d in dirs:
        assert sorted(p.name for p in d.iterdir()) == ["model.pt", "predictions.parquet", "run.json"]


def test_predictions_parquet(pruned_population):
    _, dirs = pruned_population
    table = pq.read_table(dirs[0] / "predictions.parquet")
    schema = {f.name: str(f.type) for f in table.schema}
    assert schema["example_id"] == "int64" and schema["label"] == "int64"
    assert schema["prediction"] == "int64"
    assert [schema[f"prob_{k}"] for k in range(10)] == ["float"] * 10
    assert len(schema) == 13
    df = table.to_pandas()
    ds = tiny_digits()
    np.testing.assert_array_equal(df["example_id"], np.arange(120))
    np.testing.assert_array_equal(df["label"], ds.y_test.numpy())
    probs = df[[f"prob_{k}" for k in range(10)]].to_numpy()
    np.testing.assert_array_equal(df["prediction"], probs.argmax(1))
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)


def test_run_json(pruned_population):
    _, dirs = pruned_population
    run = json.loads((dirs[1] / "run.json").read_text())
    assert run["seed"] == 6 and run["arch"] == "small-cnn"
    assert run["dataset"]["name"] == "digits" and run["dataset"]["n_examples"] == 120
    assert run["dataset"]["hash"].startswith("sha256:")
    assert run["classes"] == [str(d) for d in range(10)]
    assert run["sparsity"]["target"] == 0.9
    assert run["sparsity"]["achieved"] == pytest.approx(0.9, abs=1e-3)
    assert set(run["sparsity"]["layers"]) == {
        "features.0.weight", "features.3.weight", "classifier.1.weight"
    }  # fmt: skip
    assert run["pruning"]["schedule"]["final"] == 0.9
    assert run["config"]["epochs"] == 10
    preds = pq.read_table(dirs[1] / "predictions.parquet").to_pandas()
    assert run["accuracy"] == pytest.approx(float((preds["prediction"] == preds["label"]).mean()))
    assert run["device"] == "cpu" and run["versions"]["torch"] == torch.__version__
    assert run["command"] == ["pie-audit", "train"] and run["wall_time_s"] > 0
    assert run["jointly"] == 2  # the default K on a CPU for the small CNN on digits


def test_model_pt_loads_into_plain_module_with_masks_folded(pruned_population):
    _, dirs = pruned_population
    state = torch.load(dirs[0] / "model.pt", weights_only=True)
    model = build_model("small-cnn", in_channels=1, image_size=8, num_classes=10)
    model.load_state_dict(state)  # plain keys: no weight_orig / weight_mask
    w = model.features[3].weight
    assert int((w == 0).sum()) == round(0.9 * w.numel())
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(tiny_digits().x_test), 1).numpy()
    preds = pq.read_table(dirs[0] / "predictions.parquet").to_pandas()
    np.testing.assert_array_equal(probs.argmax(1), preds["prediction"])


def test_resume_skips_finished_models(pruned_population):
    out, dirs = pruned_population
    before = {d.name: d.stat().st_mtime_ns for d in dirs}
    more = train_population(
        tiny_digits(), arch="small-cnn", out=out, population=3, seed_start=5,
        train=TINY_CONFIG, prune=PRUNE_90, device="cpu",
    )  # fmt: skip
    assert [d.name for d in more] == ["seed-0005", "seed-0006", "seed-0007"]
    assert {d.name: d.stat().st_mtime_ns for d in dirs} == before


def test_refuses_a_different_configuration(pruned_population):
    out, _ = pruned_population
    listing = sorted(p.name for p in out.iterdir())
    with pytest.raises(OutputError, match=r"different configuration \(prune.sparsity is 0.9 there, 0.5 now\)"):
        train_population(
            tiny_digits(), arch="small-cnn", out=out, population=1,
            train=TINY_CONFIG, prune=PruneConfig(sparsity=0.5, begin=0.1, end=0.6), device="cpu",
        )  # fmt: skip
    with pytest.raises(OutputError, match=r"train.epochs is 10 there, 4 now"):
        train_population(
            tiny_digits(), arch="small-cnn", out=out, population=1,
            train=TrainConfig(epochs=4, batch_size=32), prune=PRUNE_90, device="cpu",
        )  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == listing


def test_refuses_a_foreign_non_empty_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty and not a pie-audit population"):
        train_population(
            tiny_digits(), arch="small-cnn", out=tmp_path, population=1,
            train=TINY_CONFIG, prune=PruneConfig(), device="cpu",
        )  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_killed_run_resumes(tmp_path):
    """Kill a population run mid-way with SIGKILL, re-run it, and get the full population."""
    out = tmp_path / "pop"
    # One model at a time, so the kill lands between two finished models.
    common = [sys.executable, "-m", "pie_audit", "train", "--epochs", "15", "--sparsity", "0.5",
              "--quiet", "--device", "cpu", "--jointly", "1"]  # fmt: skip
    cmd = [*common, "--population", "4", "--out", str(out)]
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while not (out / "seed-0000").is_dir():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "first model never finished"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = sorted(p.name for p in out.iterdir() if p.name.startswith("seed-"))
    assert 1 <= len(finished) < 4, "the run was not interrupted mid-way"
    for name in finished:  # whatever looks finished is complete
        assert (out / name / "predictions.parquet").is_file() and (out / name / "run.json").is_file()
    first_mtime = (out / "seed-0000").stat().st_mtime_ns

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        POPULATION_FILE, "seed-0000", "seed-0001", "seed-0002", "seed-0003"
    ]  # fmt: skip
    assert (out / "seed-0000").stat().st_mtime_ns == first_mtime
    # A model finished after the resume is the same as in an uninterrupted run.
    fresh = tmp_path / "fresh"
    subprocess.run([*common, "--population", "1", "--seed-start", "3", "--out", str(fresh)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    a = pq.read_table(out / "seed-0003" / "predictions.parquet").to_pandas()
    b = pq.read_table(fresh / "seed-0003" / "predictions.parquet").to_pandas()
    assert a.equals(b)


def test_out_of_device_memory_halves_k_and_retries(tmp_path, monkeypatch):
    from pie_audit import population as population_module

    groups = []
    real = population_module.train_models

    def fake(dataset, *, seeds, **kw):
        groups.append(list(seeds))
        if len(seeds) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(dataset, seeds=seeds, **kw)

    monkeypatch.setattr(population_module, "train_models", fake)
    dirs = train_population(
        tiny_digits(), arch="small-cnn", out=tmp_path / "pop", population=5, jointly=8,
        train=replace(TINY_CONFIG, epochs=1), prune=PruneConfig(), device="cpu",
    )  # fmt: skip
    assert groups == [[0, 1, 2, 3, 4], [0, 1, 2, 3], [0, 1], [2, 3], [4]]
    assert all((d / "predictions.parquet").is_file() for d in dirs)
    assert [json.loads((d / "run.json").read_text())["jointly"] for d in dirs] == [2, 2, 2, 2, 1]


def _tiny_rgb() -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(
        name="synthetic-rgb",
        classes=tuple("abcd"),
        x_train=torch.randn(4, 3, 32, 32, generator=g),
        y_train=torch.randint(0, 4, (4,), generator=g),
        x_test=torch.randn(2, 3, 32, 32, generator=g),
        y_test=torch.randint(0, 4, (2,), generator=g),
        split="random",
    )


def test_default_jointly_rule():
    digits = tiny_digits()
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_jointly("small-cnn", digits, cpu, 16) == 16
    assert default_jointly("small-cnn", digits, cpu, 5) == 5
    assert default_jointly("small-cnn", digits, cpu, 100) == 16
    big = replace(digits, x_train=torch.zeros(4, 1, 28, 28), x_test=torch.zeros(2, 1, 28, 28))
    assert default_jointly("small-cnn", big, cpu, 16) == 1  # compute-bound on a CPU
    assert default_jointly("resnet18-cifar", _tiny_rgb(), cpu, 16) == 1
    assert default_jointly("small-cnn", big, cuda, 100) == 32


ARCHS, DATASETS = "small-cnn, resnet18-cifar", "digits, fashion-mnist, cifar10"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(population=0), POPULATION_TOO_SMALL.format(population=0)),
        (dict(seed_start=-1), NEGATIVE_SEED_START.format(seed_start=-1)),
        (dict(jointly=0), JOINTLY_TOO_SMALL.format(jointly=0)),
        (dict(arch="vgg16"), UNKNOWN_ARCHITECTURE.format(arch="vgg16", choices=ARCHS)),
        (dict(dataset="imagenet"), UNKNOWN_DATASET.format(dataset="imagenet", choices=DATASETS)),
        (dict(device="tpu"), "unknown device 'tpu'; choose auto, cpu, cuda or mps"),
    ],
)
def test_check_arguments(kwargs, message):
    args = dict(arch="small-cnn", population=2, dataset="digits", device="cpu") | kwargs
    with pytest.raises(ConfigError) as e:
        check_arguments(**args)
    assert str(e.value) == message


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "pop"
    for kwargs in (dict(population=0), dict(jointly=0), dict(arch="vgg16"), dict(seed_start=-1)):
        args = dict(arch="small-cnn", out=out, population=1, train=TINY_CONFIG, prune=PRUNE_90,
                    device="cpu") | kwargs  # fmt: skip
        with pytest.raises(ConfigError):
            train_population(tiny_digits(), **args)
    assert not out.exists()
