"""What an ONNX model costs (``pie_audit/training/_onnx_cost.py``): parameters and FLOPs read from
the graph and worked by hand, latency timed by onnxruntime, and the cost predict records."""

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pie_audit.errors import ConfigError, FormatError  # noqa: E402
from pie_audit.training._cost import BAD_COUNT, BAD_SHAPE, model_cost  # noqa: E402
from pie_audit.training._models import build_model  # noqa: E402
from pie_audit.training._onnx_cost import (  # noqa: E402
    FLOPS_NONE,
    COUNTED_OPS,
    NO_INPUT_SHAPE,
    NOT_A_GRAPH,
    onnx_cost,
    onnx_flops,
    onnx_parameters,
)
from pie_audit.training.methods._onnx_int8 import _export, _quantize  # noqa: E402

# Cheap timing: the fields and their meaning are tested, never the wall time.
FAST = {"runs": 2, "warmup": 1}
# small-cnn on digits (1x8x8, 10 classes), worked by hand in docs/cost.md:
# conv 1->32 3x3 on 8x8: 288 + 32 parameters, 2 x (32*8*8) x 9 = 36,864 FLOPs;
# conv 32->64 3x3 on 4x4: 18,432 + 64, 2 x (64*4*4) x 288 = 589,824;
# linear 256->128: 32,768 + 128, 2 x 256 x 128 = 65,536; linear 128->10: 1,280 + 10, 2,560.
SMALL_CNN_PARAMETERS = 320 + 18_496 + 32_896 + 1_290
SMALL_CNN_FLOPS = 36_864 + 589_824 + 65_536 + 2_560


def _small_cnn(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model("small-cnn", in_channels=1, image_size=8, num_classes=10).eval()


def _to_onnx(model, shape, *, dynamic=True):
    buffer = __import__("io").BytesIO()
    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        torch.onnx.export(model.eval(), (torch.zeros(shape),), buffer, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes=axes)  # fmt: skip
    return buffer.getvalue()


@pytest.fixture(scope="module")
def graphs():
    """small-cnn's float graph and the same graph quantized by onnxruntime, as onnx-int8 does it."""
    model = _small_cnn()
    float_graph = _export(model, (1, 8, 8))
    calibration = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)).numpy()
    int8_graph, _ = _quantize(float_graph, calibration)
    return model, float_graph, int8_graph


def test_small_cnn_exported_has_the_hand_counted_flops_and_parameters(graphs):
    assert (SMALL_CNN_PARAMETERS, SMALL_CNN_FLOPS) == (53_002, 694_784)
    model, float_graph, _ = graphs
    assert onnx_flops(float_graph, (1, 8, 8)) == (SMALL_CNN_FLOPS, None)
    assert onnx_flops(float_graph) == (SMALL_CNN_FLOPS, None)  # the graph fixes (1, 8, 8) itself
    assert onnx_parameters(float_graph) == {"stored": SMALL_CNN_PARAMETERS, "nonzero": SMALL_CNN_PARAMETERS}
    # What torch's counter gives the torch model.
    torch_cost = model_cost(model, (1, 8, 8), **FAST)
    assert torch_cost["flops"] == SMALL_CNN_FLOPS and torch_cost["parameters"]["stored"] == SMALL_CNN_PARAMETERS


def test_the_int8_graph_has_its_float_parents_flops_and_counts_its_int8_weights(graphs):
    _, float_graph, int8_graph = graphs
    assert onnx_flops(int8_graph, (1, 8, 8)) == onnx_flops(float_graph, (1, 8, 8)) == (SMALL_CNN_FLOPS, None)
    model = onnx.load_from_string(int8_graph)
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dequantized = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in arrays]
    weights = [n for n in dequantized if arrays[n.input[0]].dtype == np.int8]
    biases = [n for n in dequantized if arrays[n.input[0]].dtype == np.int32]
    assert len(weights) == len(biases) == 4
    # Each layer keeps its weight as int8 and its bias as int32, with a scale and a zero point
    # per output channel (32, 64, 128 and 10 of them); each activation a scale and a zero point.
    channels = 32 + 64 + 128 + 10
    activations = {n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert all(arrays[name].shape == () for name in activations)
    assert onnx_parameters(int8_graph)["stored"] == SMALL_CNN_PARAMETERS + 2 * channels + 2 * channels + 2 * len(activations)
    # Nonzero: an int8 code at its zero point is 0.0, whatever its own value; a scale or zero
    # point of 0 is a zero too.
    at_zero_point = {}
    for node in dequantized:
        codes, zero = arrays[node.input[0]], arrays[node.input[2]]
        at_zero_point[node.input[0]] = int((codes == zero.reshape(-1, *[1] * (codes.ndim - 1))).sum())
    zeros = sum(at_zero_point.values()) + sum(int((a == 0).sum()) for n, a in arrays.items() if n not in at_zero_point)
    assert all(not arrays[n.input[2]].any() for n in weights)  # symmetric int8 weights: zero points 0
    stored = onnx_parameters(int8_graph)["stored"]
    assert onnx_parameters(int8_graph)["nonzero"] == stored - zeros


def _dequantized_gemm(codes, zero, scale, *, axis):
    """x (batch, 3) -> Gemm with the weight DequantizeLinear(codes, scale, zero) (2, 3), transposed."""
    initializers = [
        numpy_helper.from_array(np.asarray(codes, dtype=np.int8), "w_q"),
        numpy_helper.from_array(np.asarray(scale, dtype=np.float32), "w_scale"),
        numpy_helper.from_array(np.asarray(zero, dtype=np.int8), "w_zero"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=axis),
        helper.make_node("Gemm", ["x", "w"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])], initializer=initializers,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_an_int8_value_at_its_zero_point_is_counted_as_zero():
    # Per output channel: zero points 1 and 2; codes [[1, 1, 0], [2, 5, 2]] dequantize to
    # [[0, 0, -s], [0, 3s, 0]]: 2 nonzero codes of 6. Then 2 scales (nonzero) and 2 zero points
    # (nonzero): 10 stored, 6 nonzero. The Gemm: 2 x (1 x 2 outputs) x 3 inner = 12 FLOPs.
    graph = _dequantized_gemm([[1, 1, 0], [2, 5, 2]], [1, 2], [0.5, 0.25], axis=0)
    assert onnx_parameters(graph) == {"stored": 10, "nonzero": 6}
    assert onnx_flops(graph, (3,)) == (12, None)
    # One zero point for the tensor, of 0: the codes that are 0 are the zeros, and so is it.
    graph = _dequantized_gemm([[1, 0, 0], [0, 5, 0]], 0, 0.5, axis=1)
    assert onnx_parameters(graph) == {"stored": 6 + 1 + 1, "nonzero": 2 + 1 + 0}


@pytest.mark.parametrize(
    "module,shape,flops",
    [
        # Depthwise: 4 groups of one channel; 2 x (4*8*8 outputs) x (1 x 3 x 3).
        (nn.Conv2d(4, 4, 3, padding=1, groups=4), (4, 8, 8), 2 * 4 * 8 * 8 * 9),
        # Strided, two groups: 6 -> 4 channels, out 4x4; 2 x (4*4*4) x (3 x 3 x 3).
        (nn.Conv2d(6, 4, 3, stride=2, padding=1, groups=2), (6, 8, 8), 2 * 4 * 4 * 4 * 27),
        # Linear on a (5, 7) input (a batched MatMul): 2 x (5*3) x 7.
        (nn.Linear(7, 3), (5, 7), 2 * 5 * 3 * 7),
    ],
)
def test_flops_follow_torchs_counter(module, shape, flops):
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.zeros(1, *shape))
    assert counter.get_total_flops() == flops
    assert onnx_flops(_to_onnx(module, (1, *shape)), shape) == (flops, None)


def test_a_graph_without_counted_operators_has_no_flops():
    graph = _to_onnx(nn.ReLU(), (1, 4))
    assert onnx_flops(graph, (4,)) == (None, FLOPS_NONE.format(ops=", ".join(COUNTED_OPS)))


def test_cost_has_every_field_timed_on_the_cpu_provider(graphs, tmp_path):
    _, _, int8_graph = graphs
    path = tmp_path / "int8.onnx"
    path.write_bytes(int8_graph)
    before = torch.get_num_threads()
    cost = onnx_cost(int8_graph, (1, 8, 8), model_file=path, threads=1, **FAST)
    assert torch.get_num_threads() == before
    assert list(cost) == ["parameters", "flops", "note", "file_bytes", "latency_ms", "timing"]
    assert cost["parameters"] == onnx_parameters(int8_graph) and cost["flops"] == SMALL_CNN_FLOPS
    assert cost["note"] is None and cost["file_bytes"] == len(int8_graph)
    assert set(cost["latency_ms"]) == {"batch_1", "batch_64"}
    assert all(isinstance(v, float) and v > 0 for v in cost["latency_ms"].values())
    assert cost["timing"] == {
        "device": "cpu", "threads": 1, "runs": 2, "warmup": 1, "statistic": "median",
        "runtime": {"name": "onnxruntime", "version": ort.__version__, "provider": "CPUExecutionProvider"},
    }  # fmt: skip
    # By default the thread count torch times with, so that a model and its parent are timed alike.
    assert onnx_cost(int8_graph, **FAST)["timing"]["threads"] == before
    json.dumps(cost)  # as run.json holds it


def test_a_fixed_batch_graph_is_counted_per_example_and_timed_as_predict_feeds_it():
    graph = _to_onnx(_small_cnn(), (7, 1, 8, 8), dynamic=False)
    cost = onnx_cost(graph, **FAST)
    assert cost["flops"] == SMALL_CNN_FLOPS and cost["timing"]["batch_size"] == 7
    assert all(v > 0 for v in cost["latency_ms"].values())


def test_refusals_name_the_problem():
    # A graph whose input leaves its image size open needs the example's shape.
    graph = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, "h", "w"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, "h", "w"])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    ).SerializeToString()  # fmt: skip
    with pytest.raises(ConfigError) as e:
        onnx_cost(graph, **FAST)
    assert str(e.value) == NO_INPUT_SHAPE.format(name="x", shape="(?, 1, ?, ?)")
    assert onnx_cost(graph, (1, 5, 5), **FAST)["flops"] is None
    with pytest.raises(ConfigError) as e:
        onnx_cost(graph, (1, 0, 5))
    assert str(e.value) == BAD_SHAPE.format(shape=(1, 0, 5))
    with pytest.raises(ConfigError) as e:
        onnx_cost(graph, (1, 5, 5), runs=0)
    assert str(e.value) == BAD_COUNT.format(name="runs", least=1, value=0)
    with pytest.raises(FormatError) as e:
        onnx_cost(b"not a graph")
    assert str(e.value).startswith(NOT_A_GRAPH.split("(")[0])


def test_predict_records_the_cost_of_an_onnx_file(tmp_path):
    from pie_audit.cli import main

    path = tmp_path / "cnn.onnx"
    path.write_bytes(_to_onnx(_small_cnn(), (1, 1, 8, 8)))
    with pytest.raises(SystemExit) as e:
        main(["predict", str(path), "--dataset", "digits", "--out", str(tmp_path / "y"), "-q"])
    assert e.value.code == 0
    record = json.loads((tmp_path / "y" / "cnn" / "run.json").read_text())
    cost = record["cost"]
    assert cost["parameters"] == {"stored": SMALL_CNN_PARAMETERS, "nonzero": SMALL_CNN_PARAMETERS}
    assert cost["flops"] == SMALL_CNN_FLOPS and cost["note"] is None
    assert cost["file_bytes"] == record["source_bytes"] == path.stat().st_size
    assert all(v > 0 for v in cost["latency_ms"].values())
    assert cost["timing"]["runtime"]["provider"] == "CPUExecutionProvider"
    assert cost["timing"]["threads"] == torch.get_num_threads()


def test_predict_with_a_loader_measures_a_graph_open_in_its_image_size(tmp_path):
    # The graph leaves H and W open: its cost is measured at the shape it was fed.
    import pie_audit
    from torch.utils.data import DataLoader, TensorDataset

    model = _small_cnn()
    buffer = __import__("io").BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), buffer, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b"}})  # fmt: skip
    path = tmp_path / "open.onnx"
    path.write_bytes(buffer.getvalue())
    x, y = torch.randn(20, 1, 8, 8), torch.randint(0, 10, (20,))
    out = pie_audit.predict(path, DataLoader(TensorDataset(x, y), batch_size=8), tmp_path / "p")
    cost = json.loads((out / "run.json").read_text())["cost"]
    assert cost["flops"] == SMALL_CNN_FLOPS and cost["parameters"]["stored"] == SMALL_CNN_PARAMETERS
