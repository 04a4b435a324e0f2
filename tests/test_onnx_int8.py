"""``onnx-int8``: dense parents exported to ONNX, quantized by ONNX Runtime, paired with their parents."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from pie_audit.data._datasets import load_dataset  # noqa: E402
from pie_audit.errors import ConfigError  # noqa: E402
from pie_audit.interchange import read_predictions  # noqa: E402
from pie_audit.training._loop import init_model  # noqa: E402
from pie_audit.training._train import train_population  # noqa: E402
from pie_audit.training.methods import (  # noqa: E402
    DERIVED,
    METHODS,
    NO_ONNX_RUNTIME,
    NO_SPARSITY,
    OnnxInt8Quantization,
    PruneConfig,
    calibration_indices,
    make_method,
    onnx_graph_bytes,
)

from tiny import TINY_CONFIG  # noqa: E402

# Parents of about 93% accuracy in a few seconds (256 training images, 10 epochs), audited on the
# whole digits test split; their quantized models agree with them on 99.3% and 99.8% of it.
CONFIG = TINY_CONFIG
CALIBRATION = 128


def _digits():
    full = load_dataset("digits")
    return replace(full, x_train=full.x_train[:256], y_train=full.y_train[:256])


@pytest.fixture(scope="module")
def populations(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx-int8")
    data = _digits()
    train_population(data, arch="small-cnn", out=root / "dense", population=2, train=CONFIG,
                     prune=PruneConfig(), device="cpu")  # fmt: skip
    prune = OnnxInt8Quantization(source=str(root / "dense"), calibration_images=CALIBRATION)
    dirs = train_population(data, arch="small-cnn", out=root / "onnx-int8", population=2, train=CONFIG,
                            prune=prune, device="cpu")  # fmt: skip
    return data, root / "dense", root / "onnx-int8", dirs


def _graph(directory):
    return onnx.load_from_string(onnx_graph_bytes(torch.load(directory / "model.pt", weights_only=True)))


def test_each_model_records_its_parent_and_the_population_pairs_with_them(populations):
    import pie_audit

    data, dense, out, dirs = populations
    for seed, directory in enumerate(dirs):
        run = json.loads((directory / "run.json").read_text())
        parent_run = json.loads((dense / f"seed-{seed:04d}" / "run.json").read_text())
        assert run["method"] == "onnx-int8" and run["device"] == "cpu" and run["steps"] == 0
        # As int8 records it: the seed, the path relative to the population, the model's digest.
        assert run["parent"] == {"seed": seed, "path": f"../dense/seed-{seed:04d}",
                                 "model_sha256": parent_run["files"]["model.pt"]["sha256"]}  # fmt: skip
        q = run["quantization"]
        assert q["tool"] == "onnxruntime.quantization.quantize_static" and q["format"] == "QDQ"
        assert q["per_channel"] is True and q["opset"] == 17 and q["calibration_images"] == CALIBRATION
        assert q["onnxruntime"] == __import__("onnxruntime").__version__
        assert run["sparsity"]["target"] == 0.0 and 0.0 <= run["sparsity"]["achieved"] < 0.05
        assert set(run["sparsity"]["dtypes"].values()) == {"int8"}
    assert pie_audit.compare(dense, out).test == "paired"


def test_the_saved_graph_holds_int8_weights_behind_quantize_dequantize_pairs(populations):
    _, _, _, dirs = populations
    graph = _graph(dirs[0]).graph
    ops = [node.op_type for node in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    initializers = {t.name: t for t in graph.initializer}
    dequantize = {node.output[0]: node for node in graph.node if node.op_type == "DequantizeLinear"}
    layers = [node for node in graph.node if node.op_type in ("Conv", "Gemm")]
    assert len(layers) == 4  # small-cnn: two convs, two linear layers
    for node in layers:
        # Every weight is an int8 initializer, dequantized per output channel.
        dq = dequantize[node.input[1]]
        weight = initializers[dq.input[0]]
        assert weight.data_type == onnx.TensorProto.INT8, node.name
        scale = onnx.numpy_helper.to_array(initializers[dq.input[1]])
        assert scale.shape == (weight.dims[0],), node.name
    # No float weight is left: the only float initializers are scales and biases (1-D).
    floats = [t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    assert all(len(t.dims) <= 1 for t in floats)


def test_each_run_records_the_graphs_full_cost_beside_its_parents(populations):
    from pie_audit.training._onnx_cost import onnx_parameters

    _, dense, _, dirs = populations
    for seed, directory in enumerate(dirs):
        run = json.loads((directory / "run.json").read_text())
        parent = json.loads((dense / f"seed-{seed:04d}" / "run.json").read_text())["cost"]
        cost = run["cost"]
        # small-cnn on digits, by hand (docs/cost.md): the same operations as the float parent's.
        assert cost["flops"] == parent["flops"] == 694_784 and cost["note"] is None
        # The int8 weights and int32 biases, each with a scale and a zero point per output
        # channel (234 channels), and a scale and a zero point per quantized activation.
        graph = _graph(directory)
        activations = {n.input[1] for n in graph.graph.node if n.op_type == "QuantizeLinear"}
        assert parent["parameters"]["stored"] == 53_002
        assert cost["parameters"]["stored"] == 53_002 + 4 * 234 + 2 * len(activations)
        assert cost["parameters"] == onnx_parameters(graph)
        # Symmetric weights: their zero points (234 of them) and the biases' (234) are zeros.
        assert cost["parameters"]["nonzero"] <= cost["parameters"]["stored"] - 2 * 234
        assert cost["file_bytes"] == run["files"]["model.pt"]["bytes"]
        assert cost["file_bytes"] < parent["file_bytes"] / 2  # int8 weights: a quarter of the floats' bytes, and the graph
        assert set(cost["latency_ms"]) == {"batch_1", "batch_64"} and all(v > 0 for v in cost["latency_ms"].values())
        assert cost["timing"]["runtime"] == {"name": "onnxruntime", "version": __import__("onnxruntime").__version__,
                                             "provider": "CPUExecutionProvider"}  # fmt: skip
        assert cost["timing"]["threads"] == parent["timing"]["threads"]


def test_it_agrees_with_its_float_parent_and_predict_gives_what_it_recorded(populations, tmp_path):
    from pie_audit.prediction._onnx import load_onnx_file

    data, dense, _, dirs = populations
    order = np.argsort(np.asarray(data.example_ids), kind="stable")
    for seed, directory in enumerate(dirs):
        parent = init_model("small-cnn", data, seed)
        parent.load_state_dict(torch.load(dense / f"seed-{seed:04d}" / "model.pt", weights_only=True))
        with torch.no_grad():
            floats = parent.eval()(data.x_test).argmax(1).numpy()[order]
        _, labels, stored = read_predictions(directory / "predictions.parquet")
        assert len(stored) == len(data.x_test) == 450  # the whole digits test split
        assert float((stored == floats).mean()) >= 0.98
        # The file predict would run gives the predictions the population holds.
        path = tmp_path / f"seed-{seed}.onnx"
        path.write_bytes(onnx_graph_bytes(torch.load(directory / "model.pt", weights_only=True)))
        module, _ = load_onnx_file(path, image_shape=data.image_shape, num_classes=data.num_classes)
        with torch.no_grad():
            assert np.array_equal(module(data.x_test).argmax(1).numpy()[order], stored)


def test_it_calibrates_on_the_images_int8_calibrates_the_same_seed_on(monkeypatch, populations):
    from pie_audit.training.methods import _onnx_int8

    data, dense, _, _ = populations
    seen = []
    real = _onnx_int8._quantize
    monkeypatch.setattr(_onnx_int8, "_quantize", lambda graph, images: seen.append(images) or real(graph, images))
    OnnxInt8Quantization(source=str(dense), calibration_images=16).train(
        data, arch="small-cnn", seeds=[1], config=CONFIG
    )
    chosen = calibration_indices(len(data.x_train), 16, 1)
    assert np.array_equal(seen[0], data.x_train[torch.from_numpy(chosen)].numpy())


def test_the_method_is_registered_for_train_and_studies():
    assert "onnx-int8" in METHODS and "onnx-int8" in DERIVED and "onnx-int8" in NO_SPARSITY
    method = make_method("onnx-int8", {"from": "runs/dense", "calibration-images": 64})
    assert method == OnnxInt8Quantization(source="runs/dense", calibration_images=64)
    with pytest.raises(ConfigError, match="is not used by method 'onnx-int8'"):
        make_method("onnx-int8", {"from": "runs/dense", "sparsity": 0.5})


def test_without_onnxruntime_train_says_which_extra_in_one_line(monkeypatch, capsys, populations):
    from pie_audit.cli import main

    _, dense, _, _ = populations
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(ConfigError) as e:
        OnnxInt8Quantization(source=str(dense)).check(_digits(), arch="small-cnn")
    assert str(e.value).startswith(NO_ONNX_RUNTIME.split("(")[0])
    out = dense.parent / "refused"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--method", "onnx-int8", "--from", str(dense), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert "method 'onnx-int8' needs onnx and onnxruntime" in err[0] and "pie-audit[onnx]" in err[0]
    assert not out.exists()


def test_a_study_population_of_onnx_int8_derives_from_the_baseline(tmp_path):
    from pie_audit.study import read_study

    spec = tmp_path / "study.toml"
    spec.write_text(
        '[study]\nname = "toolchains"\ndataset = "digits"\narch = "small-cnn"\nmodels = 2\nout = "runs"\n\n'
        '[[population]]\nname = "dense"\nsparsity = 0.0\n\n'
        '[[population]]\nname = "onnx-int8"\nmethod = "onnx-int8"\ncalibration-images = 64\n'
    )
    study = read_study(spec)
    (population,) = study.pruned
    assert population.method == "onnx-int8" and population.is_derived
    assert population.prune == OnnxInt8Quantization(source=str(study.out / "dense"), calibration_images=64)
