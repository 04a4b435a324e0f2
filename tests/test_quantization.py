"""``pie_audit.quantization``: int8 weights, agreement with the float model, saving and loading,
determinism, the recorded scheme, and ``pie-audit predict`` on an int8 model file."""

import doctest
import importlib
import json
import subprocess
import sys
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import pie_audit.cli._predict  # noqa: F401 - registers the command until cli/__init__ imports it
from pie_audit.cli import main
from pie_audit.data._datasets import load_dataset
from pie_audit.errors import ConfigError, FormatError
from pie_audit.training._models import build_model
from pie_audit.prediction._predict import measured_layers
from pie_audit.training._quantization import (
    BACKEND,
    FLOW,
    INT8_MISMATCH,
    NOT_INT8,
    UNKNOWN_LAYER,
    int8_parameters,
    int8_weights,
    is_quantized_state_dict,
    load_quantized,
    predict_probabilities,
    quantize_static,
    quantized_engine,
    scheme,
)
from pie_audit.training._loop import TrainConfig, init_model, train_models
from pie_audit.training.methods import PruneConfig

quantization_module = importlib.import_module("pie_audit.training._quantization")

SMALL_CNN_WEIGHTS = ["features.0.weight", "features.3.weight", "classifier.1.weight", "classifier.3.weight"]
DIGITS_SHAPE = {"in_channels": 1, "image_size": 8, "num_classes": 10}

# ---- shared inputs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def float_model(digits):
    """small-cnn trained on all of digits for 5 epochs (about 98% test accuracy), in eval mode."""
    [trained] = train_models(
        digits, arch="small-cnn", seeds=[0], config=TrainConfig(epochs=5, batch_size=32, lr=0.05), prune=PruneConfig()
    )
    model = init_model("small-cnn", digits, 0)
    model.load_state_dict(trained.state_dict)
    return model.eval()


@pytest.fixture(scope="module")
def quantized(float_model, digits):
    return quantize_static(float_model, digits.x_train[:512])


def float_probabilities(model, x) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model.eval()(x), dim=1).numpy()


def save_and_load(state, path):
    """``torch.save`` then ``torch.load(weights_only=True)``, as a user's file goes and comes back."""
    torch.save(state, path)
    with warnings.catch_warnings():
        # torch's own rebuilding of quantized tensors goes through its deprecated TypedStorage.
        warnings.filterwarnings("ignore", category=UserWarning, message="TypedStorage is deprecated")
        return torch.load(path, weights_only=True)


def assert_same_state(a, b):
    """Two int8 state dicts hold the same keys and bit-identical values (quantized ones included)."""
    assert list(a) == list(b)
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, tuple):
            assert isinstance(y, tuple) and len(x) == len(y), key
            for u, v in zip(x, y):
                assert_same_value(key, u, v)
        else:
            assert_same_value(key, x, y)


def assert_same_value(key, x, y):
    if isinstance(x, torch.Tensor) and x.is_quantized:
        assert y.is_quantized and x.qscheme() == y.qscheme(), key
        assert torch.equal(x.int_repr(), y.int_repr()), key
        assert torch.equal(x.q_per_channel_scales(), y.q_per_channel_scales()), key
        assert torch.equal(x.q_per_channel_zero_points(), y.q_per_channel_zero_points()), key
    elif isinstance(x, torch.Tensor):
        assert torch.equal(x, y), key
    else:
        assert x == y, key


# ---- what the int8 model holds --------------------------------------------------------------


def test_convs_hold_qint8_per_channel_tensors_and_linears_qint8_packed_params(quantized):
    state = quantized.state_dict()
    assert is_quantized_state_dict(state)
    for name in ("features.0.weight", "features.3.weight"):
        weight = state[name]
        assert weight.is_quantized and weight.dtype == torch.qint8
        assert weight.qscheme() in (torch.per_channel_symmetric, torch.per_channel_affine)
        assert weight.q_per_channel_axis() == 0
        # Symmetric: every output channel's zero point is 0.
        assert torch.equal(weight.q_per_channel_zero_points(), torch.zeros(weight.shape[0], dtype=torch.long))
    for layer in ("classifier.1", "classifier.3"):
        assert state[f"{layer}._packed_params.dtype"] == torch.qint8
        weight, bias = state[f"{layer}._packed_params._packed_params"]
        assert weight.dtype == torch.qint8
        assert weight.qscheme() in (torch.per_channel_symmetric, torch.per_channel_affine)
        assert not torch.any(weight.q_per_channel_zero_points())
        assert bias.dtype == torch.float32
    # Nothing of the float model is left as a float weight.
    assert not any(isinstance(v, torch.Tensor) and v.is_floating_point() and v.ndim >= 2 for v in state.values())


def test_int8_weights_counts_the_zero_codes_by_hand(quantized, float_model):
    state = quantized.state_dict()
    weights = {
        "features.0.weight": state["features.0.weight"],
        "features.3.weight": state["features.3.weight"],
        "classifier.1.weight": state["classifier.1._packed_params._packed_params"][0],
        "classifier.3.weight": state["classifier.3._packed_params._packed_params"][0],
    }
    zeros = {name: int((w.int_repr() == 0).sum()) for name, w in weights.items()}
    report = int8_weights(state)
    assert list(report["layers"]) == SMALL_CNN_WEIGHTS
    assert report["layers"] == {name: zeros[name] / weights[name].numel() for name in SMALL_CNN_WEIGHTS}
    assert report["n_zero"] == sum(zeros.values())
    float_weights = [p for name, p in float_model.named_parameters() if name.endswith("weight")]
    assert report["n_weights"] == sum(p.numel() for p in float_weights)
    assert report["achieved"] == report["n_zero"] / report["n_weights"]
    assert report["dtypes"] == dict.fromkeys(SMALL_CNN_WEIGHTS, "torch.qint8")
    # Weights and biases under the float model's names, as many as the float model has.
    params = int8_parameters(state)
    assert list(params) == [name for name, _ in float_model.named_parameters()]
    assert [p.numel() for p in params.values()] == [p.numel() for p in float_model.parameters()]

    subset = int8_weights(state, names=["features.3.weight"])
    assert subset["layers"] == {"features.3.weight": report["layers"]["features.3.weight"]}
    assert subset["n_weights"] == weights["features.3.weight"].numel()
    with pytest.raises(ConfigError) as e:
        int8_weights(state, names=["features.1.weight"])
    assert str(e.value) == UNKNOWN_LAYER.format(name="features.1.weight", choices=", ".join(SMALL_CNN_WEIGHTS))


def test_pruned_zeros_stay_exact_zeros_in_int8(float_model, digits):
    pruned = build_model("small-cnn", **DIGITS_SHAPE)
    pruned.load_state_dict(float_model.state_dict())
    with torch.no_grad():
        for name, p in pruned.named_parameters():
            if name.endswith("weight"):
                p[p.abs() <= p.abs().median()] = 0.0
    float_zeros = {name: float((p == 0).float().mean()) for name, p in pruned.named_parameters() if p.ndim > 1}
    report = int8_weights(quantize_static(pruned, digits.x_train[:256]).state_dict())
    for name in SMALL_CNN_WEIGHTS:
        # Symmetric quantization maps 0.0 to code 0; small weights may round to it too.
        assert report["layers"][name] >= float_zeros[name] >= 0.5


# ---- agreement, saving, determinism -----------------------------------------------------------


def test_int8_agrees_with_the_float_model_on_digits(quantized, float_model, digits):
    ours = predict_probabilities(quantized, digits.x_test)
    theirs = float_probabilities(float_model, digits.x_test)
    assert ours.shape == (len(digits.x_test), 10) and ours.dtype == np.float32
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-5)
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).mean() >= 0.98
    assert np.abs(ours - theirs).mean() < 0.01
    labels = digits.y_test.numpy()
    assert (theirs.argmax(axis=1) == labels).mean() >= 0.95  # the float model is a real one
    assert abs((ours.argmax(axis=1) == labels).mean() - (theirs.argmax(axis=1) == labels).mean()) <= 0.02


def test_saved_state_dict_loads_back_bit_identical(quantized, digits, tmp_path):
    state = save_and_load(quantized.state_dict(), tmp_path / "int8.pt")
    assert is_quantized_state_dict(state)
    loaded = load_quantized("small-cnn", **DIGITS_SHAPE, state_dict=state)
    assert not loaded.training
    assert_same_state(loaded.state_dict(), quantized.state_dict())
    expected = predict_probabilities(quantized, digits.x_test)
    np.testing.assert_array_equal(predict_probabilities(loaded, digits.x_test), expected)
    # A copy into a plain dict loses torch's per-module versions; it loads all the same.
    plain = load_quantized("small-cnn", **DIGITS_SHAPE, state_dict=dict(state))
    np.testing.assert_array_equal(predict_probabilities(plain, digits.x_test), expected)


def test_quantization_is_deterministic_and_leaves_the_float_model_alone(float_model, digits):
    before = {k: v.clone() for k, v in float_model.state_dict().items()}
    float_model.train()
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    try:
        first = quantize_static(float_model, digits.x_train[:512], batch_size=100)
        assert torch.backends.quantized.engine == "qnnpack"
        second = quantize_static(float_model, digits.x_train[:512], batch_size=100)
    finally:
        torch.backends.quantized.engine = previous
    assert float_model.training
    float_model.eval()
    assert type(float_model).__name__ == "SmallCNN"
    assert all(torch.equal(before[k], v) for k, v in float_model.state_dict().items())
    assert_same_state(first.state_dict(), second.state_dict())
    np.testing.assert_array_equal(
        predict_probabilities(first, digits.x_test), predict_probabilities(second, digits.x_test)
    )
    # The batch size of prediction does not change the outputs.
    np.testing.assert_array_equal(
        predict_probabilities(first, digits.x_test, batch_size=7), predict_probabilities(first, digits.x_test)
    )


def test_scheme_is_read_from_the_qconfig():
    from torch.ao.quantization import get_default_qconfig_mapping

    with quantized_engine():  # torch.ao's warnings stay quiet here too
        qconfig = get_default_qconfig_mapping("x86").global_qconfig
        weight, activation = qconfig.weight(), qconfig.activation()
    recorded = scheme()
    assert recorded == json.loads(json.dumps(recorded))  # what run.json can hold
    assert recorded["flow"] == FLOW
    assert recorded["backend"] == BACKEND == "x86"
    assert recorded["torch"] == torch.__version__
    assert recorded["weights"] == {
        "dtype": str(weight.dtype),
        "qscheme": str(weight.qscheme),
        "granularity": "per-channel",
        "symmetric": True,
        "reduce_range": weight.reduce_range,
        "quant_min": weight.quant_min,
        "quant_max": weight.quant_max,
        "observer": type(weight).__name__,
        "ch_axis": 0,
    }
    assert recorded["activations"] == {
        "dtype": str(activation.dtype),
        "qscheme": str(activation.qscheme),
        "granularity": "per-tensor",
        "symmetric": False,
        "reduce_range": activation.reduce_range,
        "quant_min": activation.quant_min,
        "quant_max": activation.quant_max,
        "observer": type(activation).__name__,
    }
    # The pinned torch's x86 defaults, written out.
    assert recorded["weights"]["dtype"] == "torch.qint8"
    assert recorded["weights"]["qscheme"] == "torch.per_channel_symmetric"
    assert recorded["weights"]["observer"] == "PerChannelMinMaxObserver"
    assert recorded["activations"]["dtype"] == "torch.quint8"
    assert recorded["activations"]["qscheme"] == "torch.per_tensor_affine"
    assert recorded["activations"]["reduce_range"] is True
    assert recorded["activations"]["observer"] == "HistogramObserver"


# ---- refusals -------------------------------------------------------------------------------


def test_load_quantized_refuses_a_state_dict_that_does_not_fit(quantized, float_model):
    state = quantized.state_dict()
    with pytest.raises(FormatError) as e:
        load_quantized("small-cnn", in_channels=1, image_size=8, num_classes=3, state_dict=state)
    assert str(e.value) == INT8_MISMATCH.format(
        arch="small-cnn", num_classes=3, in_channels=1, image_size=8,
        reason="classifier.3.weight has shape (10, 128), expected (3, 128)",
    )  # fmt: skip
    with pytest.raises(FormatError) as e:
        load_quantized("resnet18-cifar", **DIGITS_SHAPE, state_dict=state)
    prefix = INT8_MISMATCH.format(arch="resnet18-cifar", reason="", **DIGITS_SHAPE)
    assert str(e.value).startswith(prefix + "missing keys 'conv1_input_scale_0'")
    assert "unexpected keys 'features_0_input_scale_0'" in str(e.value)
    with pytest.raises(FormatError) as e:
        load_quantized("small-cnn", **DIGITS_SHAPE, state_dict=float_model.state_dict())
    assert str(e.value) == NOT_INT8
    assert not is_quantized_state_dict(float_model.state_dict())
    assert not is_quantized_state_dict({**state, "extra": "not a tensor"})


def test_quantize_static_refuses_what_is_not_images(float_model, digits):
    with pytest.raises(ConfigError, match="calibration must be a floating-point tensor"):
        quantize_static(float_model, digits.x_train[:0])
    with pytest.raises(ConfigError, match="calibration must be a floating-point tensor"):
        quantize_static(float_model, digits.x_train[:8].flatten(1))
    with pytest.raises(ConfigError, match="batch size must be >= 1"):
        quantize_static(float_model, digits.x_train[:8], batch_size=0)


# ---- resnet18-cifar ---------------------------------------------------------------------------


def test_resnet18_cifar_quantizes_and_round_trips(tmp_path):
    shape = {"in_channels": 3, "image_size": 32, "num_classes": 10}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("resnet18-cifar", **shape).eval()
        x = torch.randn(16, 3, 32, 32)
    quantized = quantize_static(model, x, batch_size=8)
    report = int8_weights(quantized.state_dict())
    # 20 convs (batch norms folded into them) and the classifier, all int8.
    assert len(report["layers"]) == 21 and set(report["dtypes"].values()) == {"torch.qint8"}
    assert report["n_weights"] == sum(p.numel() for p in model.parameters() if p.ndim > 1)
    assert not any("bn" in key for key in quantized.state_dict())
    state = save_and_load(quantized.state_dict(), tmp_path / "resnet-int8.pt")
    loaded = load_quantized("resnet18-cifar", **shape, state_dict=state)
    expected = predict_probabilities(quantized, x[:4])
    assert expected.shape == (4, 10)
    np.testing.assert_array_equal(predict_probabilities(loaded, x[:4]), expected)
    np.testing.assert_allclose(expected, float_probabilities(model, x[:4]), atol=0.05)


# ---- pie-audit predict ------------------------------------------------------------------------


def test_cli_predict_evaluates_an_int8_model_file(quantized, float_model, digits, tmp_path, capsys):
    file = tmp_path / "int8.pt"
    torch.save(quantized.state_dict(), file)
    args = ["predict", str(file), "--arch", "small-cnn", "--dataset", "digits", "--out", str(tmp_path / "pop")]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0, capsys.readouterr().err

    table = pq.read_table(tmp_path / "pop" / "int8" / "predictions.parquet").to_pandas()
    state = save_and_load(quantized.state_dict(), tmp_path / "copy.pt")
    loaded = load_quantized("small-cnn", **DIGITS_SHAPE, state_dict=state)
    expected = predict_probabilities(loaded, digits.x_test)
    order = np.argsort(digits.example_ids, kind="stable")
    np.testing.assert_array_equal(table["example_id"].to_numpy(), digits.example_ids[order])
    np.testing.assert_array_equal(table.filter(like="prob_").to_numpy(), expected[order])
    np.testing.assert_array_equal(table["prediction"].to_numpy(), expected[order].argmax(axis=1))

    record = json.loads((tmp_path / "pop" / "int8" / "run.json").read_text())
    assert record["source_format"] == "state_dict" and record["arch"] == "small-cnn"
    assert record["device"] == "cpu"
    assert record["n_parameters"] == sum(p.numel() for p in float_model.parameters())
    layers = measured_layers(loaded)
    assert layers == SMALL_CNN_WEIGHTS[:3]  # the classifier is left out, as for float models
    assert record["sparsity"] == json.loads(json.dumps(int8_weights(quantized.state_dict(), names=layers)))
    assert record["accuracy"] == pytest.approx((expected.argmax(axis=1) == digits.y_test.numpy()).mean())


def test_cli_predict_names_the_file_when_an_int8_model_does_not_fit(quantized, tmp_path, capsys):
    file = tmp_path / "int8.pt"
    torch.save(quantized.state_dict(), file)
    with pytest.raises(SystemExit) as e:
        main(["predict", str(file), "--arch", "resnet18-cifar", "--dataset", "digits", "--out", str(tmp_path / "pop")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    mismatch = INT8_MISMATCH.format(arch="resnet18-cifar", reason="missing keys", **DIGITS_SHAPE)
    assert err.startswith(f"pie-audit: error: {file}: {mismatch}")
    assert err.count("\n") == 1
    assert not (tmp_path / "pop").exists()


def test_doctests():
    assert doctest.testmod(quantization_module).failed == 0


def test_cli_predict_of_an_int8_file_prints_nothing_of_torchs_own(quantized, tmp_path):
    # torch warns once per process when it rebuilds quantized tensors; a fresh process shows it.
    file = tmp_path / "int8.pt"
    torch.save(quantized.state_dict(), file)
    done = subprocess.run(
        [sys.executable, "-m", "pie_audit", "predict", str(file), "--arch", "small-cnn", "--dataset", "digits",
         "--out", str(tmp_path / "pop"), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
