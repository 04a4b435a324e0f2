"""ONNX models evaluated by ONNX Runtime (``pie_audit/prediction/_onnx.py``): what ``predict`` and
``pie-audit predict`` write for an ``.onnx`` file or a session, and every malformed file refused."""

import hashlib
import json
import subprocess
import sys
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

import pie_audit  # noqa: E402
import pie_audit.cli._predict  # noqa: E402,F401 - registers the command until cli/__init__ imports it
from pie_audit.data import load_dataset  # noqa: E402
from pie_audit.prediction._onnx import (  # noqa: E402
    CANNOT_LOAD,
    CUSTOM_OP,
    EXTERNAL_DATA,
    INPUT_COUNT,
    INPUT_SHAPE,
    NO_RUNTIME,
    NOT_ONNX,
    OUTPUT_SHAPE,
    UNBOUND,
    UNKNOWN_PROVIDER,
)
from pie_audit.prediction._predict import measured_layers  # noqa: E402
from pie_audit.training import build_model  # noqa: E402

from cli_run import error_line, run  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _export(model: nn.Module, path, shape=(2, 1, 8, 8), dynamic=True):
    """``torch.onnx.export``'s TorchScript-based exporter: the dynamo one needs onnxscript."""
    axes = {"x": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        torch.onnx.export(
            model.eval(), (torch.zeros(shape),), str(path), dynamo=False,
            input_names=["x"], output_names=["logits"], dynamic_axes=axes,
        )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def cnn(digits):
    """A small-cnn fitted to digits for a few steps (distinct logits, so arg-maxes do not tie)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("small-cnn", in_channels=1, image_size=8, num_classes=10)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(30):
            loss = nn.functional.cross_entropy(model(digits.x_train), digits.y_train)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def exported(cnn, tmp_path_factory):
    return _export(cnn, tmp_path_factory.mktemp("onnx") / "cnn.onnx")


def read_predictions(path):
    """Example ids, labels and probabilities (N, C) of a predictions.parquet."""
    table = pq.read_table(path).to_pandas()
    return table["example_id"].to_numpy(), table["label"].to_numpy(), table.filter(like="prob_").to_numpy()


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()


def _onnxruntime_probabilities(path, x: torch.Tensor) -> np.ndarray:
    """What onnxruntime itself gives, without pie-audit."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _softmax(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


# ---- what is evaluated and recorded ---------------------------------------------------------


def test_cli_onnx_gives_onnxruntimes_and_the_torch_models_predictions(digits, cnn, exported, tmp_path, capsys):
    assert run("predict", exported, "--dataset", "digits", "--out", tmp_path / "y", "--batch-size", 100) == 0
    assert "(onnx)" in capsys.readouterr().out
    ids, labels, probs = read_predictions(tmp_path / "y" / "cnn" / "predictions.parquet")
    np.testing.assert_array_equal(ids, digits.example_ids)
    np.testing.assert_array_equal(labels, digits.y_test.numpy())
    theirs = _onnxruntime_probabilities(exported, digits.x_test)
    np.testing.assert_allclose(probs, theirs, atol=1e-6)
    predictions = pq.read_table(tmp_path / "y" / "cnn" / "predictions.parquet").column("prediction").to_numpy()
    np.testing.assert_array_equal(predictions, theirs.argmax(axis=1))
    with torch.no_grad():
        torch_probs = torch.softmax(cnn(digits.x_test), dim=1).numpy()
    np.testing.assert_allclose(probs, torch_probs, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(axis=1), torch_probs.argmax(axis=1))

    record = json.loads((tmp_path / "y" / "cnn" / "run.json").read_text())
    graph = onnx.load(str(exported))
    content = exported.read_bytes()
    assert record["source_format"] == "onnx"
    assert record["source_file"] == str(exported.resolve())
    assert record["source_sha256"] == hashlib.sha256(content).hexdigest()
    assert record["source_bytes"] == len(content)
    assert record["runtime"] == {"name": "onnxruntime", "version": ort.__version__, "provider": "CPUExecutionProvider"}
    assert record["onnx"]["opset"] == next(o.version for o in graph.opset_import if o.domain == "")
    assert record["onnx"]["ir_version"] == graph.ir_version
    assert record["onnx"]["output"] == "logits" and record["onnx"]["batch_size"] is None
    assert record["device"] == "cpu"
    assert record["n_parameters"] == sum(p.numel() for p in cnn.parameters())
    # The same layers as pie-audit train measures, by the names the exporter keeps.
    assert list(record["sparsity"]["layers"]) == measured_layers(cnn)
    assert record["sparsity"]["achieved"] == 0.0
    assert record["accuracy"] == pytest.approx(float((torch_probs.argmax(1) == digits.y_test.numpy()).mean()))
    assert record["dataset"]["name"] == "digits" and record["dataset"]["hash"] == digits.test_hash
    assert pie_audit.load_population(tmp_path / "y").models == ("cnn",)


def test_predict_takes_an_onnx_file_or_a_session(digits, exported, tmp_path):
    loader = DataLoader(TensorDataset(digits.x_test, digits.y_test), batch_size=64)
    theirs = _onnxruntime_probabilities(exported, digits.x_test)
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    for name, model in (("file", exported), ("file-str", str(exported)), ("session", session)):
        out = pie_audit.predict(model, loader, tmp_path / name, classes=digits.classes, run={"seed": 3})
        _, labels, probs = read_predictions(out / "predictions.parquet")
        np.testing.assert_allclose(probs, theirs, atol=1e-6)
        record = json.loads((out / "run.json").read_text())
        assert record["seed"] == 3 and record["source"] == "pie_audit.predict"
        assert record["runtime"]["provider"] == "CPUExecutionProvider"
        if name == "session":
            assert "source_sha256" not in record and "opset" not in record["onnx"]
        else:
            assert record["source_sha256"] == hashlib.sha256(exported.read_bytes()).hexdigest()
            assert record["onnx"]["opset"] >= 7


def test_predict_feeds_a_graph_of_any_input_rank_and_checks_each_batch(digits, tmp_path):
    from pie_audit.prediction._onnx import BATCH_SHAPE

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    path = _export(mlp, tmp_path / "mlp.onnx", shape=(2, 64))
    flat = digits.x_test.reshape(len(digits.x_test), 64)
    out = pie_audit.predict(path, DataLoader(TensorDataset(flat, digits.y_test), batch_size=100), tmp_path / "flat")
    with torch.no_grad():
        np.testing.assert_allclose(read_predictions(out / "predictions.parquet")[2], torch.softmax(mlp(flat), 1).numpy(), atol=1e-5)
    with pytest.raises(pie_audit.FormatError) as e:
        pie_audit.predict(path, DataLoader(TensorDataset(digits.x_test, digits.y_test), batch_size=100), tmp_path / "images")
    assert str(e.value) == BATCH_SHAPE.format(shape=(100, 1, 8, 8), name="x", expected="(batch, 64)")
    assert not (tmp_path / "images").exists()


def test_predict_refuses_device_for_onnx_and_provider_for_torch(exported, digits, tmp_path):
    loader = DataLoader(TensorDataset(digits.x_test, digits.y_test), batch_size=64)
    from pie_audit.prediction._predict import DEVICE_FOR_ONNX, PROVIDER_FOR_TORCH

    with pytest.raises(pie_audit.ConfigError) as e:
        pie_audit.predict(exported, loader, tmp_path / "a", device="cpu")
    assert str(e.value) == DEVICE_FOR_ONNX
    with pytest.raises(pie_audit.ConfigError) as e:
        pie_audit.predict(nn.Linear(64, 10), loader, tmp_path / "b", provider="CPUExecutionProvider")
    assert str(e.value) == PROVIDER_FOR_TORCH
    assert not list(tmp_path.iterdir())


def test_a_fixed_batch_size_is_fed_padded_batches(digits, cnn, exported, tmp_path):
    fixed = _export(cnn, tmp_path / "fixed.onnx", shape=(7, 1, 8, 8), dynamic=False)
    assert run("predict", exported, fixed, "--dataset", "digits", "--out", tmp_path / "y", "-q") == 0
    _, _, dynamic_probs = read_predictions(tmp_path / "y" / "cnn" / "predictions.parquet")
    _, _, fixed_probs = read_predictions(tmp_path / "y" / "fixed" / "predictions.parquet")
    assert len(digits.y_test) % 7  # the last batch is padded
    np.testing.assert_allclose(fixed_probs, dynamic_probs, atol=1e-6)
    assert json.loads((tmp_path / "y" / "fixed" / "run.json").read_text())["onnx"]["batch_size"] == 7


def test_a_graph_ending_in_softmax_is_taken_as_probabilities(digits, cnn, tmp_path):
    path = _export(nn.Sequential(cnn, nn.Softmax(dim=1)), tmp_path / "soft.onnx")
    assert run("predict", path, "--dataset", "digits", "--out", tmp_path / "y", "-q") == 0
    _, _, probs = read_predictions(tmp_path / "y" / "soft" / "predictions.parquet")
    with torch.no_grad():
        np.testing.assert_allclose(probs, torch.softmax(cnn(digits.x_test), dim=1).numpy(), atol=1e-5)
    assert json.loads((tmp_path / "y" / "soft" / "run.json").read_text())["onnx"]["output"] == "probabilities"


# ---- refusals ------------------------------------------------------------------------------


def _graph(nodes, inputs, outputs, initializers=(), opsets=(("", 17),)):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def _image(name="x", shape=("N", 1, 8, 8)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _logits(n=10):
    return helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])


def _malformed(tmp_path, cnn):
    """``(file, the one line that refuses it, or a (prefix, suffix) of it)`` per malformed file."""
    files = {}

    def save(name, model):
        files[name] = tmp_path / f"{name}.onnx"
        onnx.save(model, str(files[name]))
        return files[name]

    not_protobuf = tmp_path / "garbage.onnx"
    not_protobuf.write_bytes(b"not a protobuf at all \x00\xff")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    flat = _export(nn.Sequential(nn.Linear(64, 10)), tmp_path / "flat.onnx", shape=(2, 64))
    five = _export(nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), tmp_path / "five.onnx")
    rgb = _export(build_model("small-cnn", in_channels=3, image_size=8, num_classes=10), tmp_path / "rgb.onnx", shape=(2, 3, 8, 8))
    flatten = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])]
    weight = onnx.numpy_helper.from_array(np.zeros((64, 10), np.float32), "w")
    unknown = save("unknown", _graph([helper.make_node("Frobnicate", ["x"], ["y"])], [_image()], [_logits()]))
    custom = save("custom", _graph([helper.make_node("Frob", ["x"], ["y"], domain="my.ops")], [_image()], [_logits()],
                                   opsets=(("", 17), ("my.ops", 1))))  # fmt: skip
    outside = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[64, 10])
    outside.data_location = TensorProto.EXTERNAL
    outside.external_data.add(key="location", value="/etc/passwd")
    external = save("external", _graph(flatten, [_image()], [_logits()], [outside]))
    tied = save("tied", _graph(flatten, [_image(shape=("N", 1, "N", 8))], [_logits()], [weight]))
    two = save("two", _graph(flatten[:1] + [helper.make_node("MatMul", ["f", "z"], ["y"])],
                             [_image(), helper.make_tensor_value_info("z", TensorProto.FLOAT, [64, 10])], [_logits()]))  # fmt: skip
    unknown_rank = save("rank", _graph(flatten, [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)], [_logits()], [weight]))
    return [
        (not_protobuf, NOT_ONNX.format(path=not_protobuf, reason="Error parsing message with type 'onnx.ModelProto': Wire format was corrupt")),
        (empty, NOT_ONNX.format(path=empty, reason="no graph in it")),
        (flat, INPUT_SHAPE.format(path=flat, name="x", shape="(batch, 64)", expected="(batch, 1, 8, 8)")),
        (rgb, INPUT_SHAPE.format(path=rgb, name="x", shape="(batch, 3, 8, 8)", expected="(batch, 1, 8, 8)")),
        (unknown_rank, INPUT_SHAPE.format(path=unknown_rank, name="x", shape="unknown", expected="(batch, 1, 8, 8)")),
        (five, OUTPUT_SHAPE.format(path=five, name="logits", shape="(batch, 5)", n=10)),
        (unknown, (CANNOT_LOAD.format(path=unknown, reason="")[:-1], "No Op registered for Frobnicate with domain_version of 17)")),
        (custom, CUSTOM_OP.format(path=custom, op="Frob", domain="my.ops")),
        (external, EXTERNAL_DATA.format(path=external, name="w")),
        (tied, UNBOUND.format(path=tied, name="x", shape="(N, 1, N, 8)", symbol="N", first="batch", second=8)),
        (two, INPUT_COUNT.format(path=two, n=2, names="'x', 'z'")),
    ]


def test_cli_refuses_every_malformed_onnx_file(tmp_path, cnn, capsys):
    for file, message in _malformed(tmp_path, cnn):
        assert run("predict", file, "--dataset", "digits", "--out", tmp_path / "y") == 2, file
        line = error_line(capsys)
        if isinstance(message, tuple):
            assert line.startswith(message[0]) and line.endswith(message[1]), line
        else:
            assert line == message
        assert not (tmp_path / "y").exists()


def test_cli_refuses_an_unavailable_provider_naming_the_available_ones(exported, tmp_path, capsys):
    args = ["predict", exported, "--dataset", "digits", "--out", tmp_path / "y"]
    assert run(*args, "--provider", "NoSuchExecutionProvider") == 2
    available = ", ".join(ort.get_available_providers())
    assert error_line(capsys) == UNKNOWN_PROVIDER.format(provider="NoSuchExecutionProvider", available=available)
    assert run(*args, "--provider", "CPUExecutionProvider", "-q") == 0


def test_without_onnxruntime_the_cli_says_what_to_install(exported, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # "import onnxruntime" now raises ImportError
    assert run("predict", exported, "--dataset", "digits", "--out", tmp_path / "y") == 2
    line = error_line(capsys)
    assert line.startswith(f"{exported}: an ONNX model, which needs onnx and onnxruntime (")
    assert line.endswith("); pip install 'pie-audit[onnx]'")
    assert line == NO_RUNTIME.format(what=exported, reason=line.split(" (", 1)[1].rsplit("); ", 1)[0])
    assert not (tmp_path / "y").exists()


def test_neither_the_package_nor_the_cli_imports_onnx():
    code = "import sys, pie_audit, pie_audit.cli; assert not {'onnx', 'onnxruntime'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
