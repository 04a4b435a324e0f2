"""Population directories: the interchange files, resume, refusal to mix configurations."""

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pie_audit.training import _population as population_module
from pie_audit._atomic import LOCKED, exclusive_lock
from pie_audit.data._datasets import Dataset, dataset_hash
from pie_audit.errors import ConfigError, OutputError
from pie_audit.training._models import UNKNOWN_ARCHITECTURE, build_model
from pie_audit.interchange import load_population
from pie_audit.training._population import (
    BAD_POPULATION_FILE,
    INCOMPLETE_PREFIX,
    MOVED_ASIDE,
    OLD_DATASET_HASH,
    POPULATION_FILE,
    WRITE_FAILED,
)
from pie_audit.training._driver import OUT_OF_MEMORY, default_jointly
from pie_audit.training._train import (
    JOINTLY_TOO_SMALL,
    NEGATIVE_SEED_START,
    POPULATION_TOO_SMALL,
    UNKNOWN_DATASET,
    check_arguments,
    train_population,
)
from pie_audit.interchange import file_record, incomplete_reason
from pie_audit.training._loop import DIVERGED, TrainConfig
from pie_audit.training.methods import NOTHING_TO_PRUNE, PRUNING_TOO_LATE, PruneConfig

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
    # Written last, the sizes and checksums of the other files make the directory finished.
    assert sorted(run["files"]) == ["model.pt", "predictions.parquet"]
    for name, record in run["files"].items():
        assert record["bytes"] == (dirs[1] / name).stat().st_size
        assert record["sha256"] == file_record(dirs[1] / name)["sha256"]
    spec = json.loads((dirs[1].parent / POPULATION_FILE).read_text())["spec"]
    data = tiny_digits()
    assert run["dataset"]["hash"] == spec["dataset_hash"]
    assert spec["dataset_hash"] == dataset_hash(data.example_ids, data.y_test.numpy(), data.x_test)
    assert spec["train_hash"] == dataset_hash(np.arange(256), data.y_train.numpy(), data.x_train)
    assert incomplete_reason(dirs[1], seed=6) is None


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


def test_out_of_device_memory_halves_k_and_retries(tmp_path, monkeypatch, caplog):
    groups = []
    real = PruneConfig.train

    def fake(self, dataset, *, seeds, **kw):
        groups.append(list(seeds))
        if len(seeds) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, dataset, seeds=seeds, **kw)

    # The population's method trains each group (pie_audit.training.Method.train).
    monkeypatch.setattr(PruneConfig, "train", fake)
    with caplog.at_level(logging.WARNING, logger="pie_audit.training._driver"):
        dirs = train_population(
            tiny_digits(), arch="small-cnn", out=tmp_path / "pop", population=5, jointly=8,
            train=replace(TINY_CONFIG, epochs=1), prune=PruneConfig(), device="cpu",
        )  # fmt: skip
    assert groups == [[0, 1, 2, 3, 4], [0, 1, 2, 3], [0, 1], [2, 3], [4]]
    assert [r.getMessage() for r in caplog.records if r.msg == OUT_OF_MEMORY] == [OUT_OF_MEMORY % 4, OUT_OF_MEMORY % 2]
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


ARCHS, DATASETS = "small-cnn, resnet18-cifar", "digits, fashion-mnist, cifar10, celeba"


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
    for kwargs in (
        dict(population=0), dict(jointly=0), dict(arch="vgg16"), dict(seed_start=-1),
        dict(prune=PruneConfig(sparsity=0.5, begin=1.0, end=1.0)),
        dict(prune=PruneConfig(sparsity=0.5, exclude=(".*",))),
    ):  # fmt: skip
        args = dict(arch="small-cnn", out=out, population=1, train=TINY_CONFIG, prune=PRUNE_90,
                    device="cpu") | kwargs  # fmt: skip
        with pytest.raises(ConfigError):
            train_population(tiny_digits(), **args)
    assert list(tmp_path.iterdir()) == []  # not even a lock file


def test_a_schedule_too_late_for_the_run_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError) as e:
        train_population(
            tiny_digits(), arch="small-cnn", out=tmp_path / "pop", population=1, train=TINY_CONFIG,
            prune=PruneConfig(sparsity=0.5, begin=0.995, end=1.0), device="cpu",
        )  # fmt: skip
    assert str(e.value) == PRUNING_TOO_LATE.format(
        begin=0.995, begin_step=80, total_steps=80, sparsity=0.5, max_begin=0.9875
    )
    with pytest.raises(ConfigError) as e:
        train_population(
            tiny_digits(), arch="small-cnn", out=tmp_path / "pop", population=1, train=TINY_CONFIG,
            prune=PruneConfig(sparsity=0.5, exclude=(".*",)), device="cpu",
        )  # fmt: skip
    assert str(e.value) == NOTHING_TO_PRUNE.format(sparsity=0.5)
    assert list(tmp_path.iterdir()) == []


ONE_EPOCH = replace(TINY_CONFIG, epochs=1)


def _train(out, population=1, *, config=ONE_EPOCH, prune=PruneConfig(), dataset=None, **kw):
    return train_population(
        dataset or tiny_digits(), arch="small-cnn", out=out, population=population,
        train=config, prune=prune, device="cpu", **kw,
    )  # fmt: skip


def test_a_diverged_run_writes_nothing_and_a_lower_rate_then_trains(tmp_path):
    out = tmp_path / "pop"
    with pytest.raises(ConfigError) as e:
        _train(out, 2, config=replace(ONE_EPOCH, lr=1e6))
    assert str(e.value) == DIVERGED.format(
        what="the loss", seeds="seeds 0, 1", step=2, total_steps=8, lr=1e6
    )
    assert not out.exists()  # no population.json binding the directory to the rate that failed
    dirs = _train(out, 2)
    assert all(incomplete_reason(d, seed=s) is None for s, d in enumerate(dirs))


def test_a_record_without_models_does_not_bind_the_directory(tmp_path):
    """What `train --exclude '['` used to leave: population.json and no model."""
    out = tmp_path / "pop"
    out.mkdir()
    (out / POPULATION_FILE).write_text(json.dumps({"format": "pie-audit/population/1", "spec": {"arch": "x"}}))
    [d] = _train(out)
    assert incomplete_reason(d, seed=0) is None
    assert json.loads((out / POPULATION_FILE).read_text())["spec"]["arch"] == "small-cnn"


def test_a_model_that_misses_its_sparsity_is_not_written(tmp_path, monkeypatch):
    @dataclass(frozen=True)
    class NeverPrunes:
        names: tuple
        target: float = 0.9

        def __call__(self, step, weights, masks):
            return None

        def to_dict(self):
            return {}

    real = PruneConfig.policy
    monkeypatch.setattr(PruneConfig, "policy", lambda self, m, t: NeverPrunes(real(self, m, t).names))
    with pytest.raises(RuntimeError, match="the masks were not applied as scheduled"):
        _train(tmp_path / "pop", prune=PRUNE_90)
    assert not (tmp_path / "pop").exists()


# ---- resume trusts only finished models -----------------------------------------------------


def _damage(out):
    """Five ways a model directory can be unfinished, each for one seed."""
    (out / "seed-0000" / "model.pt").unlink()
    (out / "seed-0000" / "predictions.parquet").unlink()
    (out / "seed-0000" / "run.json").unlink()  # an empty directory
    (out / "seed-0001" / "model.pt").unlink()
    model = out / "seed-0002" / "model.pt"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    model.write_bytes(bytes(data))
    run = out / "seed-0003" / "run.json"
    run.write_text(json.dumps({k: v for k, v in json.loads(run.read_text()).items() if k != "files"}))
    (out / "seed-0004").write_text("a file, not a model directory")


def test_resume_moves_unfinished_model_directories_aside_and_trains_them_again(tmp_path, caplog):
    out = tmp_path / "pop"
    _train(out, 4)
    _damage(out)
    reasons = {seed: incomplete_reason(out / f"seed-{seed:04d}", seed=seed) for seed in range(5)}
    assert reasons == {
        0: "no run.json",
        1: "no model.pt",
        2: "model.pt does not match the checksum run.json records",
        3: "run.json does not list the sizes and checksums of predictions.parquet and model.pt",
        4: "not a directory",
    }
    with caplog.at_level(logging.WARNING, logger="pie_audit.training._population"):
        dirs = _train(out, 6)
    assert [incomplete_reason(d, seed=s) for s, d in enumerate(dirs)] == [None] * 6
    aside = sorted(p.name for p in out.iterdir() if p.name.startswith(INCOMPLETE_PREFIX))
    assert [name[len(INCOMPLETE_PREFIX) : len(INCOMPLETE_PREFIX) + 9] for name in aside] == [
        f"seed-000{s}" for s in range(5)
    ]
    # Moved, never deleted: what was there is still there, under a hidden name.
    [file] = [out / name for name in aside if name.startswith(f"{INCOMPLETE_PREFIX}seed-0004")]
    assert file.read_text() == "a file, not a model directory"
    warned = sorted(r.getMessage() for r in caplog.records if r.msg == MOVED_ASIDE)
    assert len(warned) == 5 and all("moved to .incomplete-seed-000" in w for w in warned)
    assert load_population(out).models == tuple(f"seed-{s:04d}" for s in range(6))


def test_incomplete_reason_checks_the_seed(tmp_path):
    [d] = _train(tmp_path / "pop", seed_start=3)
    assert incomplete_reason(d, seed=3) is None
    assert incomplete_reason(d, seed=4) == "run.json is not the record of seed 4"
    assert incomplete_reason(tmp_path / "nowhere", seed=3) == "not a directory"


# ---- one writer; failed writes ----------------------------------------------------------------


def test_a_second_writer_is_refused_and_leaves_the_first_ones_work_alone(tmp_path):
    out = tmp_path / "pop"
    out.mkdir()
    in_progress = out / ".tmp-seed-0000-abcd1234"  # the first writer's model being written
    in_progress.mkdir()
    with exclusive_lock(out):
        with pytest.raises(OutputError) as e:
            _train(out)
        assert str(e.value) == LOCKED.format(path=out, lock=tmp_path / ".pop.pie-audit.lock")
        assert in_progress.is_dir()
    # Once the lock is free, a temporary left behind is stale and cleaned up.
    _train(out)
    assert sorted(p.name for p in out.iterdir()) == [POPULATION_FILE, "seed-0000"]


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _torch_writer_fails(*args, **kwargs):
    raise RuntimeError(
        "[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file "
        "data/0: file write failed"
    )


@pytest.mark.parametrize(
    "target,fake,reason",
    [
        ((torch, "save"), _torch_writer_fails, "PytorchStreamWriter failed writing file data/0: file write failed"),
        ((population_module, "write_predictions"), _enospc, "No space left on device"),
    ],
)
def test_a_failed_write_is_an_output_error_and_leaves_nothing_half_written(
    tmp_path, monkeypatch, target, fake, reason
):
    out = tmp_path / "pop"
    [first] = _train(out)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    monkeypatch.setattr(*target, fake)
    with pytest.raises(OutputError) as e:
        _train(out, 2)
    assert str(e.value) == WRITE_FAILED.format(path=out / "seed-0001", reason=reason)
    assert sorted(p.name for p in out.iterdir()) == [POPULATION_FILE, "seed-0000"]  # no .tmp-*
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    monkeypatch.undo()
    dirs = _train(out, 2)
    assert incomplete_reason(dirs[1], seed=1) is None


def test_an_error_that_is_not_a_write_failure_stays_a_bug(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("something else went wrong")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="something else went wrong"):
        _train(tmp_path / "pop")
    assert sorted(p.name for p in (tmp_path / "pop").iterdir()) == [POPULATION_FILE]


# ---- what the directory already holds ---------------------------------------------------------


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"[1, 2]", "expected a JSON object, found a list"),
        (b'"spec"', "expected a JSON object, found a string"),
        (b"null", "expected a JSON object, found null"),
        (b'{"spec": 3}', "'spec' is a number, expected an object"),
        (b'{"spec": [1]}', "'spec' is a list, expected an object"),
        (b"\xff\xfe{}", None),  # not UTF-8
        (b"{", None),  # not JSON
        (b"[" * 100_000, None),  # too deep for the parser
    ],
)
@pytest.mark.parametrize("with_model", [False, True])
def test_a_malformed_population_json_is_one_clear_error(tmp_path, content, reason, with_model):
    out = tmp_path / "pop"
    out.mkdir()
    marker = out / POPULATION_FILE
    marker.write_bytes(content)
    if with_model:
        (out / "seed-0000").mkdir()
    with pytest.raises(OutputError) as e:
        _train(out)
    message = str(e.value)
    if reason is not None:
        assert message == BAD_POPULATION_FILE.format(path=marker, reason=reason)
    else:
        head, tail = BAD_POPULATION_FILE.format(path=marker, reason="\0").split("\0")
        assert message.startswith(head + "not UTF-8 JSON: ") and message.endswith(tail)
        assert "\n" not in message
    assert marker.read_bytes() == content


def test_a_spec_of_unexpected_shape_is_a_difference_not_a_crash(tmp_path):
    out = tmp_path / "pop"
    out.mkdir()
    (out / POPULATION_FILE).write_text(json.dumps({"spec": {"train": 3, "train_hash": "x"}}))
    (out / "seed-0000").mkdir()
    with pytest.raises(OutputError, match=r"different configuration \(arch is None there, 'small-cnn' now\)"):
        _train(out)


def test_a_population_of_an_older_pie_audit_is_refused_with_the_reason(tmp_path):
    out = tmp_path / "pop"
    _train(out)
    marker = out / POPULATION_FILE
    record = json.loads(marker.read_text())
    del record["spec"]["train_hash"]
    data = tiny_digits()
    record["spec"]["dataset_hash"] = dataset_hash(data.example_ids, data.y_test.numpy())
    marker.write_text(json.dumps(record))
    with pytest.raises(OutputError) as e:
        _train(out, 2)
    assert str(e.value) == OLD_DATASET_HASH.format(path=out)


@pytest.mark.parametrize("split,key", [("x_test", "dataset_hash"), ("x_train", "train_hash")])
def test_changed_images_fail_the_configuration_check(tmp_path, split, key):
    out = tmp_path / "pop"
    _train(out)
    data = tiny_digits()
    images = getattr(data, split).clone()
    images[0, 0, 0, 0] += 0.5  # one pixel of one image; ids and labels unchanged
    with pytest.raises(OutputError, match=rf"different configuration \({key} is 'sha256:"):
        _train(out, 2, dataset=replace(data, **{split: images}))
