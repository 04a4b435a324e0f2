"""Untrusted inputs bounded before they are read, and populations that resume wherever they are.

Each case was a traceback (exit 3), a hang or a wrong message before: now it is one line naming
the file (exit 2 on the command line), and the inputs are left as they were. A study moved with
``mv`` resumes without training a model again.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pie_audit.cli import main
from pie_audit.data import _datasets as data_module
from pie_audit.data._datasets import LABEL_COUNT, LABEL_OUT_OF_RANGE, load_dataset
from pie_audit.errors import DatasetError, FormatError
from pie_audit.interchange import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    MAX_MODEL_BYTES,
    MODEL_FILE,
    RUN_FILE,
    file_records,
    incomplete_reason,
    load_population,
    parse_json,
    read_json_object,
    read_predictions,
)
from pie_audit.interchange._predictions import BAD_RANGE_INDEX, OUT_OF_RANGE
from pie_audit.interchange._records import BAD_JSON, NOT_A_FILE, TOO_LARGE
from pie_audit.prediction import _loading as loading_module
from pie_audit.prediction._loading import UNPACKS_TOO_LARGE, load_model_file
from pie_audit.training import PruneConfig, TrainConfig
from pie_audit.training._models import SmallCNN, state_dict_mismatch
from pie_audit.training._population import DIFFERENT_CONFIGURATION
from pie_audit.training._train import train_population
from pie_audit.training.methods import (
    PARENT_DOES_NOT_FIT,
    PARENT_UNREADABLE,
    Int8Quantization,
    OneShotPruning,
    align_parent,
    check_parent,
    load_parent,
    recorded_run,
    recorded_spec,
)

from tiny import tiny_digits

QUICK = TrainConfig(epochs=1, batch_size=64, lr=0.05)


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def one_line_error(err: str) -> str:
    """The one line of a refusal, with its prefix; fails on a traceback or a second line."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("pie-audit: error: "), err
    return lines[0].removeprefix("pie-audit: error: ")


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root``: its mtime and SHA-256, to show that nothing changed."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def huge_sparse_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk: the bound must refuse it by its size alone."""
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def refinish(model_dir: Path) -> None:
    """Make ``run.json`` list the files as they are now: a model directory that looks finished."""
    run = json.loads((model_dir / RUN_FILE).read_text())
    run["files"] = file_records(model_dir)
    (model_dir / RUN_FILE).write_text(json.dumps(run))


# ---- a baseline trained on tiny digits, for the parent's checks ------------------------------


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    out = tmp_path_factory.mktemp("inputs") / "baseline"
    train_population(tiny_digits(), arch="small-cnn", out=out, population=2, train=QUICK,
                     prune=PruneConfig(), device="cpu")  # fmt: skip
    return out


@pytest.fixture
def own_baseline(baseline, tmp_path):
    """A copy of the baseline that a test may damage."""
    copy = tmp_path / "baseline"
    shutil.copytree(baseline, copy)
    return copy


# ---- model files: bounded before a byte is read ----------------------------------------------


def test_a_huge_model_file_is_refused_by_its_size_before_it_is_read(tmp_path, capsys):
    model = huge_sparse_file(tmp_path / "huge.pt", MAX_MODEL_BYTES + 1)
    with pytest.raises(FormatError) as e:
        load_model_file(model, arch="small-cnn", dataset=tiny_digits())
    size = MAX_MODEL_BYTES + 1
    assert str(e.value) == TOO_LARGE.format(path=model, size=size, limit=MAX_MODEL_BYTES, what="a model file")
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", model, "--dataset", "digits", "--arch", "small-cnn", "--out", out], capsys)
    assert code == 2
    assert one_line_error(err) == str(e.value)
    assert not out.exists() and model.stat().st_size == size


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_model_file_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "model.pt"
        os.mkfifo(path)  # open() for reading would wait for a writer for ever
    else:
        path = Path("/dev/zero")  # read whole, it never ends
    with pytest.raises(FormatError) as e:
        load_model_file(path, arch="small-cnn", dataset=tiny_digits())
    assert str(e.value) == NOT_A_FILE.format(path=path)


def test_a_zip_that_unpacks_beyond_the_bound_is_refused_from_its_listing(tmp_path, monkeypatch):
    monkeypatch.setattr(loading_module, "MAX_MODEL_BYTES", 10_000)
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * 50_000)  # a few hundred bytes on disk
    assert path.stat().st_size < 10_000
    with pytest.raises(FormatError) as e:
        load_model_file(path, arch="small-cnn", dataset=tiny_digits())
    assert str(e.value) == UNPACKS_TOO_LARGE.format(path=path, size=50_000, limit=10_000)


def test_a_parent_model_file_beyond_the_bound_is_refused_before_it_is_hashed(own_baseline, tmp_path):
    model = own_baseline / "seed-0001" / MODEL_FILE
    size = MAX_MODEL_BYTES + 1
    huge_sparse_file(model, size)
    run = json.loads((model.parent / RUN_FILE).read_text())
    run["files"][MODEL_FILE]["bytes"] = size  # a record that agrees: only the bound refuses it
    (model.parent / RUN_FILE).write_text(json.dumps(run))
    reason = f"{size} bytes, more than the {MAX_MODEL_BYTES} bytes pie-audit reads from a model file"
    expected = PARENT_UNREADABLE.format(path=model, reason=reason)
    with pytest.raises(FormatError) as e:
        check_parent(own_baseline, tiny_digits(), arch="small-cnn", derived="oneshot", seeds=[0, 1])
    assert str(e.value) == expected
    with pytest.raises(FormatError) as e:
        load_parent(own_baseline, 1, arch="small-cnn", dataset=tiny_digits())
    assert str(e.value) == expected
    found = incomplete_reason(model.parent, seed=1)
    assert found == f"model.pt is larger than the {MAX_MODEL_BYTES} bytes pie-audit reads from a model file"


# ---- the parent's weights against the architecture -------------------------------------------


def _wrong_shapes(state):
    return SmallCNN(1, 8, 5).state_dict()  # five classes, not ten: the last layer differs


def _missing_key(state):
    return {k: v for k, v in state.items() if k != "classifier.3.bias"}


def _unexpected_key(state):
    return {**state, "extra.weight": torch.zeros(2)}


def _not_a_state_dict(state):
    return [state["features.0.weight"]]


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_wrong_shapes, "classifier.3.weight has shape (5, 128), the architecture (10, 128); "
                        "classifier.3.bias has shape (5,), the architecture (10,)"),
        (_missing_key, "missing keys: classifier.3.bias"),
        (_unexpected_key, "unexpected keys: extra.weight"),
        (_not_a_state_dict, "a list, not a state dict (a mapping of parameter names to tensors)"),
    ],
    ids=["shapes", "missing-key", "unexpected-key", "a-list"],
)
def test_a_parent_whose_weights_do_not_fit_the_architecture_is_refused_naming_the_file(
    own_baseline, tmp_path, damage, reason
):
    model = own_baseline / "seed-0001" / MODEL_FILE
    torch.save(damage(torch.load(model, weights_only=True)), model)
    refinish(model.parent)  # finished by its record: only the weights are wrong
    before = snapshot(own_baseline)
    expected = PARENT_DOES_NOT_FIT.format(path=model, arch="small-cnn", dataset="digits", reason=reason)
    assert state_dict_mismatch(SmallCNN(1, 8, 10), damage(SmallCNN(1, 8, 10).state_dict())) == reason
    # Before anything is written (train's check) ...
    out = tmp_path / "oneshot"
    prune = OneShotPruning(sparsity=0.5, source=str(own_baseline), finetune_epochs=1)
    with pytest.raises(FormatError) as e:
        train_population(tiny_digits(), arch="small-cnn", out=out, population=2, train=QUICK, prune=prune,
                         device="cpu")  # fmt: skip
    assert str(e.value) == expected
    assert not out.exists()
    # ... and where a study trains without it (the parents are trained in the same run).
    for method in (prune, Int8Quantization(source=str(own_baseline), calibration_images=16)):
        with pytest.raises(FormatError) as e:
            method.train(tiny_digits(), arch="small-cnn", seeds=[0, 1], config=QUICK, device="cpu")
        assert str(e.value) == expected
    assert snapshot(own_baseline) == before


# ---- JSON records: size and depth ------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 500, 975, 100_000])
def test_a_deeply_nested_run_json_is_one_line(tmp_path, capsys, depth):
    from synthetic import planted_predictions, write_population

    labels = np.arange(60) % 3
    base, pruned = (
        write_population(tmp_path / name, planted_predictions(2, labels, accuracy=0.9, n_classes=3, seed=s), labels)
        for name, s in (("base", 1), ("pruned", 2))
    )
    run = pruned / "model-001" / RUN_FILE
    run.write_text('{"seed": 1, "config": ' + '{"a": ' * depth + "1" + "}" * depth + "}")
    expected = BAD_JSON.format(path=run, reason="nested too deeply")
    with pytest.raises(FormatError) as e:
        read_json_object(run)
    assert str(e.value) == expected
    with pytest.raises(FormatError):
        load_population(pruned)
    assert incomplete_reason(run.parent, seed=1).startswith(f"{RUN_FILE} is unreadable (")
    before = snapshot(tmp_path)
    out = tmp_path / "report"
    code, _, err = run_cli(["compare", base, pruned, "--out", out], capsys)
    assert code == 2
    assert one_line_error(err) == expected
    assert not out.exists() and snapshot(tmp_path) == before


def test_a_record_at_the_depth_bound_is_read():
    nested: dict = {}
    inner = nested
    for _ in range(MAX_JSON_DEPTH - 1):
        inner["a"] = {}
        inner = inner["a"]
    assert parse_json(json.dumps(nested).encode(), path="x") == nested


def test_a_huge_or_endless_record_is_refused_before_it_is_read(tmp_path):
    run = huge_sparse_file(tmp_path / RUN_FILE, MAX_JSON_BYTES + 1)
    with pytest.raises(FormatError) as e:
        read_json_object(run)
    size = MAX_JSON_BYTES + 1
    assert str(e.value) == TOO_LARGE.format(path=run, size=size, limit=MAX_JSON_BYTES, what="a JSON record")
    fifo = tmp_path / "population.json"
    os.mkfifo(fifo)
    with pytest.raises(FormatError) as e:
        read_json_object(fifo)
    assert str(e.value) == NOT_A_FILE.format(path=fifo)


def test_deep_pandas_metadata_in_predictions_is_ignored_not_a_crash(tmp_path):
    table = pa.table({"example_id": [0, 1], "label": [0, 1], "prediction": [1, 1]})
    path = tmp_path / "predictions.parquet"
    pq.write_table(table.replace_schema_metadata({b"pandas": b"[" * 100_000 + b"]" * 100_000}), path)
    ids, labels, predictions = read_predictions(path)
    assert ids.tolist() == [0, 1] and labels.tolist() == [0, 1] and predictions.tolist() == [1, 1]


def test_a_range_index_that_does_not_match_the_rows_is_one_line(tmp_path):
    table = pa.table({"label": [0, 1], "prediction": [1, 1]})
    metadata = {"index_columns": [{"kind": "range", "name": "example_id", "start": 0, "stop": 5, "step": 1}]}
    path = tmp_path / "predictions.parquet"
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(metadata).encode()}), path)
    with pytest.raises(FormatError) as e:
        read_predictions(path)
    assert str(e.value) == BAD_RANGE_INDEX.format(path=path, count=5, rows=2)


# ---- labels: in range in every dataset and every predictions file ----------------------------


@pytest.mark.parametrize("column", ["label", "prediction", "example_id"])
def test_a_uint64_value_beyond_int64_is_out_of_range_not_negative(tmp_path, column):
    columns = {"example_id": [0, 1], "label": [0, 1], "prediction": [1, 1]}
    columns[column] = [0, 2**63 + 5]
    path = tmp_path / "predictions.parquet"
    pq.write_table(pa.table({k: pa.array(v, pa.uint64()) for k, v in columns.items()}), path)
    with pytest.raises(FormatError) as e:
        read_predictions(path)
    assert str(e.value) == OUT_OF_RANGE.format(path=path, column=column, value=2**63 + 5, largest=2**63 - 1)
    # uint64 values that fit are read as they are.
    columns[column] = [0, 1]
    pq.write_table(pa.table({k: pa.array(v, pa.uint64()) for k, v in columns.items()}), path)
    assert read_predictions(path)[1].tolist() == [0, 1]


def _write_cifar(root: Path, *, train_labels=None, n=4, classes=10) -> Path:
    """CIFAR-10 in torchvision's python format; ``train_labels`` replaces data_batch_3's labels."""
    rng = np.random.default_rng(0)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, classes, n).tolist()
        if name == "data_batch_3" and train_labels is not None:
            labels = train_labels
        batch = {"labels": labels, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (base / name).write_bytes(pickle.dumps(batch))
    return base


def test_a_cifar_training_label_out_of_range_is_one_line_before_training(tmp_path, capsys):
    base = _write_cifar(tmp_path / "data", train_labels=[0, 3, 10, 1])
    batch = base / "data_batch_3"
    expected = LABEL_OUT_OF_RANGE.format(path=batch, split="train", value=10, dataset="cifar10", count=10, last=9)
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", data_root=tmp_path / "data")
    assert str(e.value) == expected
    before = snapshot(tmp_path / "data")
    out = tmp_path / "out"
    code, _, err = run_cli(["train", "--dataset", "cifar10", "--data-root", tmp_path / "data", "--out", out,
                            "--population", 1, "--epochs", 1, "--quiet"], capsys)  # fmt: skip
    assert code == 2 and one_line_error(err) == expected
    assert not out.exists() and snapshot(tmp_path / "data") == before


@pytest.mark.parametrize(
    "labels, expected",
    [([0, 1, -1, 2], "label"), ([0, 1, 2], "count")],
    ids=["negative", "fewer-labels-than-images"],
)
def test_cifar_labels_are_class_indices_one_per_image(tmp_path, labels, expected):
    base = _write_cifar(tmp_path, train_labels=labels)
    batch = base / "data_batch_3"
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", data_root=tmp_path)
    if expected == "label":
        assert str(e.value) == LABEL_OUT_OF_RANGE.format(path=batch, split="train", value=-1, dataset="cifar10",
                                                         count=10, last=9)  # fmt: skip
    else:
        assert str(e.value) == LABEL_COUNT.format(path=batch, images=4, labels=3)


def test_cifar_labels_are_checked_against_the_class_names_of_its_meta_file(tmp_path):
    base = _write_cifar(tmp_path, train_labels=[0, 1, 2, 3], classes=3)
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": ["cat", "dog", "bird"]}))
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", data_root=tmp_path)
    batch = base / "data_batch_3"
    expected = LABEL_OUT_OF_RANGE.format(path=batch, split="train", value=3, dataset="cifar10", count=3, last=2)
    assert str(e.value) == expected


def test_a_cifar_batch_that_is_not_a_dict_or_is_endless_is_one_line(tmp_path):
    base = _write_cifar(tmp_path)
    (base / "test_batch").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DatasetError, match="test_batch: not a CIFAR-10 batch file .a pickled list, not a dict.$"):
        load_dataset("cifar10", data_root=tmp_path)
    (base / "test_batch").unlink()
    os.mkfifo(base / "test_batch")
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", data_root=tmp_path)
    assert str(e.value) == data_module.NOT_A_DATA_FILE.format(path=base / "test_batch")


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compress", [False, True])
def test_a_fashion_mnist_label_out_of_range_names_its_file(tmp_path, compress):
    rng = np.random.default_rng(0)
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 5),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28)),
        "t10k-labels-idx1-ubyte": np.array([1, 12, 0]),
    }
    for name, array in files.items():
        payload = _idx(array)
        if compress:
            (root / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (root / name).write_bytes(payload)
    labels = root / ("t10k-labels-idx1-ubyte" + (".gz" if compress else ""))
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist", data_root=tmp_path)
    assert str(e.value) == LABEL_OUT_OF_RANGE.format(path=labels, split="test", value=12, dataset="fashion-mnist",
                                                     count=10, last=9)  # fmt: skip


def test_a_gzipped_dataset_file_that_unpacks_beyond_the_bound_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "MAX_DATA_FILE_BYTES", 1000)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(_idx(np.zeros(5000))))
    assert path.stat().st_size < 1000
    with pytest.raises(DatasetError) as e:
        data_module._read_idx(path)
    assert str(e.value) == data_module.DATA_FILE_TOO_LARGE.format(path=path, limit=1000)


# ---- populations record their parent relative to themselves ----------------------------------


def test_records_name_the_parent_relative_to_the_population():
    spec = {"method": "oneshot", "prune": {"sparsity": 0.5, "source": "/data/study/dense"}}
    recorded = {"method": "oneshot", "prune": {"sparsity": 0.5, "source": "../dense"}}
    assert recorded_spec(spec, "/data/study/oneshot") == recorded
    assert recorded_spec({"prune": {"sparsity": 0.9}}, "/x") == {"prune": {"sparsity": 0.9}}
    run = {"seed": 1, "method_params": {"source": "/data/study/dense"},
           "pruning": {"config": {"source": "/data/study/dense"}, "schedule": {}},
           "parent": {"seed": 1, "path": "/data/study/dense/seed-0001", "model_sha256": "ab"}}  # fmt: skip
    assert recorded_run(run, "/data/study/int8") == {
        "seed": 1, "method_params": {"source": "../dense"},
        "pruning": {"config": {"source": "../dense"}, "schedule": {}},
        "parent": {"seed": 1, "path": "../dense/seed-0001", "model_sha256": "ab"},
    }  # fmt: skip


def test_an_old_absolute_record_names_the_same_parent_when_it_is_the_same_directory(tmp_path):
    (tmp_path / "dense").mkdir()
    (tmp_path / "oneshot").mkdir()
    old = {"prune": {"source": str(tmp_path / "dense"), "sparsity": 0.5}}
    new = recorded_spec({"prune": {"source": str(tmp_path / "dense"), "sparsity": 0.5}}, tmp_path / "oneshot")
    assert align_parent(old, new, tmp_path / "oneshot") == new
    # Another directory, whose models no derived model records: not the same parent.
    (tmp_path / "other").mkdir()
    other = recorded_spec({"prune": {"source": str(tmp_path / "other"), "sparsity": 0.5}}, tmp_path / "oneshot")
    assert align_parent(old, other, tmp_path / "oneshot") == old


# ---- a study moved with mv resumes without training anything ---------------------------------

MOVED_SPEC = """
[study]
name = "moved"
dataset = "digits"
arch = "small-cnn"
models = 2
out = "runs/moved"

[train]
epochs = 1

[[population]]
name = "dense"
sparsity = 0.0

[[population]]
name = "oneshot-50"
method = "oneshot"
sparsity = 0.5
finetune-epochs = 1

[[population]]
name = "int8"
method = "int8"
calibration-images = 32
"""


@pytest.fixture(scope="module")
def trained_study(tmp_path_factory):
    """A tiny study (a baseline and two populations derived from it), trained once."""
    root = tmp_path_factory.mktemp("study") / "first"
    root.mkdir()
    (root / "study.toml").write_text(MOVED_SPEC)
    with pytest.raises(SystemExit) as exc:
        main(["study", "run", str(root / "study.toml"), "--no-report", "--quiet", "--device", "cpu"])
    assert exc.value.code == 0
    return root


def _moved(trained_study, tmp_path) -> tuple[Path, Path]:
    """A copy of the trained study at one place, then moved with ``shutil.move``: (spec, out)."""
    copy = tmp_path / "before"
    shutil.copytree(trained_study, copy)
    moved = tmp_path / "elsewhere" / "after"
    moved.parent.mkdir()
    shutil.move(copy, moved)
    assert not copy.exists()
    return moved / "study.toml", moved / "runs" / "moved"


def test_derived_populations_record_their_parent_relative_to_themselves(trained_study):
    out = trained_study / "runs" / "moved"
    for name in ("oneshot-50", "int8"):
        spec = json.loads((out / name / "population.json").read_text())["spec"]
        assert spec["prune"]["source"] == "../dense"
        for seed in (0, 1):
            run = json.loads((out / name / f"seed-{seed:04d}" / RUN_FILE).read_text())
            parent = json.loads((out / "dense" / f"seed-{seed:04d}" / RUN_FILE).read_text())
            assert run["method_params"]["source"] == run["pruning"]["config"]["source"] == "../dense"
            assert run["parent"] == {"seed": seed, "path": f"../dense/seed-{seed:04d}",
                                     "model_sha256": parent["files"][MODEL_FILE]["sha256"]}  # fmt: skip


def test_a_moved_study_resumes_without_training_any_model(trained_study, tmp_path, capsys):
    spec, out = _moved(trained_study, tmp_path)
    before = snapshot(out)
    code, stdout, err = run_cli(["study", "status", spec], capsys)
    assert code == 0, err
    assert stdout.splitlines() == ["dense: 2 of 2 finished", "oneshot-50: 2 of 2 finished", "int8: 2 of 2 finished"]
    code, stdout, err = run_cli(["study", "run", spec, "--no-report", "--device", "cpu"], capsys)
    assert code == 0, err
    assert err.splitlines() == ["study: 6 of 6 models finished; training 0"]  # progress goes to stderr
    assert snapshot(out) == before  # no model, record or population.json touched


def test_a_moved_study_with_old_absolute_records_resumes_by_the_parents_digests(trained_study, tmp_path, capsys):
    """Records written before they were relative name the baseline where it was before the move."""
    spec, out = _moved(trained_study, tmp_path)
    gone = "/nowhere/runs/moved/dense"  # where the study was: no such directory now
    for name in ("oneshot-50", "int8"):
        marker = out / name / "population.json"
        record = json.loads(marker.read_text())
        record["spec"]["prune"]["source"] = gone
        marker.write_text(json.dumps(record))
        for seed in (0, 1):
            run_file = out / name / f"seed-{seed:04d}" / RUN_FILE
            run = json.loads(run_file.read_text())
            run["method_params"]["source"] = gone
            run["parent"]["path"] = f"{gone}/seed-{seed:04d}"
            run_file.write_text(json.dumps(run))
    models = {p: p.stat().st_mtime_ns for p in out.rglob(MODEL_FILE)}
    runs = {p: p.read_bytes() for p in out.rglob(RUN_FILE)}
    code, stdout, err = run_cli(["study", "run", spec, "--no-report", "--device", "cpu"], capsys)
    assert code == 0, err
    assert err.splitlines() == ["study: 6 of 6 models finished; training 0"]  # progress goes to stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob(MODEL_FILE)} == models
    assert {p: p.read_bytes() for p in out.rglob(RUN_FILE)} == runs


def test_a_derived_population_of_another_parent_is_still_refused(trained_study, tmp_path, capsys):
    """Moved or not, a population derived from other models is not resumed from this baseline."""
    spec, out = _moved(trained_study, tmp_path)
    for seed in (0, 1):
        run_file = out / "int8" / f"seed-{seed:04d}" / RUN_FILE
        run = json.loads(run_file.read_text())
        run["parent"]["model_sha256"] = "0" * 64
        run_file.write_text(json.dumps(run))
    marker = out / "int8" / "population.json"
    record = json.loads(marker.read_text())
    record["spec"]["prune"]["source"] = "/nowhere/dense"
    marker.write_text(json.dumps(record))
    before = snapshot(out)
    code, _, err = run_cli(["study", "run", spec, "--no-report", "--device", "cpu"], capsys)
    assert code == 2
    difference = "prune.source is '/nowhere/dense' there, '../dense' now"
    assert one_line_error(err) == DIFFERENT_CONFIGURATION.format(path=out / "int8", difference=difference)
    assert snapshot(out) == before


def test_a_parent_that_does_not_fit_is_exit_2_on_the_command_line(trained_study, tmp_path, capsys):
    dense = tmp_path / "dense"
    shutil.copytree(trained_study / "runs" / "moved" / "dense", dense)
    model = dense / "seed-0001" / MODEL_FILE
    torch.save(_wrong_shapes(None), model)
    refinish(model.parent)
    before = snapshot(dense)
    out = tmp_path / "oneshot"
    code, _, err = run_cli(["train", "--method", "oneshot", "--from", dense, "--sparsity", 0.5, "--population", 2,
                            "--epochs", 1, "--device", "cpu", "--out", out, "--quiet"], capsys)  # fmt: skip
    assert code == 2
    reason = ("classifier.3.weight has shape (5, 128), the architecture (10, 128); "
              "classifier.3.bias has shape (5,), the architecture (10,)")  # fmt: skip
    assert one_line_error(err) == PARENT_DOES_NOT_FIT.format(path=model, arch="small-cnn", dataset="digits", reason=reason)
    assert not out.exists() and snapshot(dense) == before
