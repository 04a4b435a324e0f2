"""What a model costs (``pie_audit/training/_cost.py``): parameters, FLOPs, file size, CPU latency."""

import json
import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

from pie_audit.errors import ConfigError
from pie_audit.interchange import MODEL_FILE, RUN_FILE
from pie_audit.training import PruneConfig, make_method
from pie_audit.training._cost import (
    BAD_COUNT,
    BAD_SHAPE,
    FLOPS_NOT_SEEN,
    LATENCY_BATCHES,
    NOT_MEASURED,
    model_cost,
    saved_model_cost,
)
from pie_audit.training._models import build_model, state_dict_mismatch
from pie_audit.training._quantization import quantize_static
from pie_audit.training._train import train_population

from tiny import PRUNE_90, TINY_CONFIG, tiny_digits

# Cheap timing: the fields and their meaning are tested, never the wall time.
FAST = {"runs": 2, "warmup": 1}


def small_cnn_by_hand(channels: int, side: int, classes: int, width: int = 32) -> tuple[int, int]:
    """Parameters and FLOPs of small-cnn, worked from its layer shapes (``_models.SmallCNN``).

    conv 3x3 pad 1 (C -> w), ReLU, max-pool 2, conv 3x3 pad 1 (w -> 2w), ReLU, max-pool 2,
    flatten, linear (2w (side/4)^2 -> 128), ReLU, linear (128 -> classes). A multiply-add is 2
    FLOPs, biases, ReLU and pooling are not counted (as torch's counter does).
    """
    k = 3 * 3
    conv1 = width * channels * k + width
    conv2 = 2 * width * width * k + 2 * width
    flat = 2 * width * (side // 4) ** 2
    fc1 = flat * 128 + 128
    fc2 = 128 * classes + classes
    flops = (
        2 * (width * side * side) * (channels * k)  # conv1: one output element per pixel and channel
        + 2 * (2 * width * (side // 2) ** 2) * (width * k)  # conv2 on the pooled (side/2)^2 map
        + 2 * flat * 128
        + 2 * 128 * classes
    )
    return conv1 + conv2 + fc1 + fc2, flops


def test_small_cnn_by_hand_on_digits_is_what_the_docs_state():
    # 1x8x8 digits, 10 classes: 320 + 18,496 + 32,896 + 1,290 parameters;
    # 36,864 + 589,824 + 65,536 + 2,560 FLOPs.
    assert small_cnn_by_hand(1, 8, 10) == (53_002, 694_784)


@pytest.mark.parametrize("channels,side,classes", [(1, 8, 10), (3, 16, 4)])
def test_small_cnn_parameters_and_flops_match_the_hand_count(channels, side, classes):
    model = build_model("small-cnn", in_channels=channels, image_size=side, num_classes=classes)
    cost = model_cost(model, (channels, side, side), **FAST)
    parameters, flops = small_cnn_by_hand(channels, side, classes)
    assert cost["parameters"] == {"stored": parameters, "nonzero": parameters}
    assert cost["flops"] == flops and cost["note"] is None
    assert cost["file_bytes"] is None


def test_nonzero_counts_known_zeros_in_parameters_and_buffers():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(12.0).reshape(3, 4))  # one zero, at [0, 0]
        model[0].weight[2] = 0  # and four more
        model[0].bias.zero_()
    # Saved: weight 12 + bias 3, then BatchNorm's weight (ones), bias (zeros), running_mean
    # (zeros), running_var (ones) and num_batches_tracked (a zero): 28 elements.
    cost = model_cost(model, (4,), **FAST)
    assert cost["parameters"] == {"stored": 28, "nonzero": (12 - 5) + 0 + 3 + 0 + 0 + 3 + 0}
    assert model.training  # given back in the mode it came in


def test_latency_is_timed_at_each_batch_size_with_the_thread_count(tmp_path):
    model = build_model("small-cnn", in_channels=1, image_size=8, num_classes=10)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    before = torch.get_num_threads()
    cost = model_cost(model, (1, 8, 8), model_file=path, threads=1, runs=3, warmup=2)
    assert torch.get_num_threads() == before
    assert set(cost["latency_ms"]) == {f"batch_{b}" for b in LATENCY_BATCHES} == {"batch_1", "batch_64"}
    assert all(isinstance(v, float) and v > 0 for v in cost["latency_ms"].values())
    assert cost["timing"] == {"device": "cpu", "threads": 1, "runs": 3, "warmup": 2, "statistic": "median"}
    assert cost["file_bytes"] == path.stat().st_size
    assert model_cost(model, (1, 8, 8), **FAST)["timing"]["threads"] == before


def test_an_int8_model_is_measured_without_flops():
    torch.manual_seed(0)
    model = build_model("small-cnn", in_channels=1, image_size=8, num_classes=10)
    q = quantize_static(model, torch.randn(32, 1, 8, 8))
    cost = model_cost(q, (1, 8, 8), **FAST)
    assert cost["flops"] is None and cost["note"] == FLOPS_NOT_SEEN
    # The float weights and biases, plus the scale and zero point of every quantized tensor.
    parameters, _ = small_cnn_by_hand(1, 8, 10)
    assert parameters < cost["parameters"]["stored"] < parameters + 20
    assert 0 < cost["parameters"]["nonzero"] <= cost["parameters"]["stored"]
    assert all(v > 0 for v in cost["latency_ms"].values())


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"example_input_shape": (1, 0, 8)}, BAD_SHAPE.format(shape=(1, 0, 8))),
        ({"example_input_shape": 8}, BAD_SHAPE.format(shape=8)),
        ({"runs": 0}, BAD_COUNT.format(name="runs", least=1, value=0)),
        ({"warmup": -1}, BAD_COUNT.format(name="warmup", least=0, value=-1)),
        ({"threads": 0}, BAD_COUNT.format(name="threads", least=1, value=0)),
    ],
)
def test_malformed_arguments_are_refused(kwargs, message):
    model = nn.Linear(4, 3)
    with pytest.raises(ConfigError) as e:
        model_cost(model, **{"example_input_shape": (4,), **kwargs})
    assert str(e.value) == message


def test_a_state_of_another_kind_records_only_its_file_size(tmp_path):
    path = tmp_path / "model.pt"
    state = {"model.onnx": torch.zeros(7, dtype=torch.uint8)}  # as onnx-int8 saves its graph
    torch.save(state, path)
    cost = saved_model_cost(state, arch="small-cnn", image_shape=(1, 8, 8), num_classes=10, model_file=path)
    reason = state_dict_mismatch(build_model("small-cnn", in_channels=1, image_size=8, num_classes=10), state)
    assert cost == {
        "parameters": None, "flops": None, "note": NOT_MEASURED.format(arch="small-cnn", reason=reason),
        "file_bytes": path.stat().st_size, "latency_ms": None, "timing": None,
    }  # fmt: skip


def test_measuring_does_not_move_the_global_random_stream():
    model = build_model("small-cnn", in_channels=1, image_size=8, num_classes=10)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    saved_model_cost(model.state_dict(), arch="small-cnn", image_shape=(1, 8, 8), num_classes=10)
    assert torch.equal(torch.rand(3), expected)


@pytest.fixture(scope="module")
def populations(tmp_path_factory):
    """Tiny digits populations of one model each: dense, 90% gmp, and int8 of the dense one."""
    root = tmp_path_factory.mktemp("cost")
    short = replace(TINY_CONFIG, epochs=1)
    methods = {
        "dense": PruneConfig(sparsity=0.0),
        "gmp-90": PRUNE_90,
        "int8": make_method("int8", {"from": str(root / "dense")}),
    }
    for name, method in methods.items():
        train_population(tiny_digits(), arch="small-cnn", out=root / name, population=1, train=short,
                         prune=method, device="cpu")  # fmt: skip
    return root


def _counted(path):
    """Elements and nonzero elements of the tensors in a saved state dict, float or int8."""
    with warnings.catch_warnings():
        # Said by torch's own rebuilding of quantized tensors, as predict's loader knows.
        warnings.filterwarnings("ignore", category=UserWarning, message="TypedStorage is deprecated")
        warnings.filterwarnings("ignore", category=UserWarning, message="torch.quantize_per_tensor")
        state = torch.load(path, weights_only=True)
    tensors = [t for v in state.values() for t in (v if isinstance(v, tuple) else (v,)) if isinstance(t, torch.Tensor)]
    tensors = [t.dequantize() if t.is_quantized else t for t in tensors]
    return {"stored": sum(t.numel() for t in tensors), "nonzero": sum(int(t.count_nonzero()) for t in tensors)}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dense", "gmp-90", "int8"])
def test_every_trained_model_records_its_cost(populations, name):
    model_dir = populations / name / "seed-0000"
    run = json.loads((model_dir / RUN_FILE).read_text())
    cost = run["cost"]
    parameters, flops = small_cnn_by_hand(1, 8, 10)
    assert cost["file_bytes"] == run["files"][MODEL_FILE]["bytes"] == (model_dir / MODEL_FILE).stat().st_size
    assert cost["parameters"] == _counted(model_dir / MODEL_FILE)
    assert all(v > 0 for v in cost["latency_ms"].values()) and cost["timing"]["threads"] >= 1
    nonzero = cost["parameters"]["nonzero"]
    if name == "int8":
        assert cost["flops"] is None and cost["note"] == FLOPS_NOT_SEEN
        return
    assert cost["parameters"]["stored"] == parameters and cost["flops"] == flops
    if name == "dense":
        assert nonzero > 0.99 * parameters
    else:
        # 90% of the conv and hidden linear weights are zero; the last layer (prune_final off) and biases are not.
        pruned = 288 + 18_432 + 32_768
        assert nonzero == pytest.approx(parameters - 0.9 * pruned, abs=10)
