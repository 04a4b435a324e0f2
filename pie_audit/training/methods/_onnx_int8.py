"""``onnx-int8``: a trained dense parent exported to ONNX and quantized by ONNX Runtime's own tools.

The same post-training static int8 quantization as ``int8``, through another toolchain: each
seed's parent is exported with ``torch.onnx.export``, quantized with
``onnxruntime.quantization.quantize_static`` (QDQ, per-channel int8 weights) and evaluated by an
``onnxruntime.InferenceSession``. Nothing is trained and the training loop does not run. The
audit of the two toolchains on the same parents then says whether the toolchain changes who pays.

``onnx`` and ``onnxruntime`` are an optional extra (``pip install 'pie-audit[onnx]'``), imported
only when this method runs; without them it is refused before anything is written
(:data:`NO_ONNX_RUNTIME`).
"""

from __future__ import annotations

import io
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ...data import Dataset
from ...errors import ConfigError
from .._loop import TrainConfig, TrainedModel, init_model
from .._pruning import FixedMasks, prunable_weights
from ._base import check_count
from ._int8 import CALIBRATION_IMAGES, calibration_indices
from ._parent import FromParent, load_parent

__all__ = ["OnnxInt8Quantization", "NO_ONNX_RUNTIME", "NO_INT8_LAYER", "OPSET", "ONNX_GRAPH_KEY", "onnx_graph_bytes"]

NO_ONNX_RUNTIME = (
    "method 'onnx-int8' needs onnx and onnxruntime ({reason}); install the extra: pip install 'pie-audit[onnx]'"
)
NO_INT8_LAYER = (
    "the quantized ONNX graph has no int8 weight for layer {name!r} (its int8 layers: {found}); "
    "onnx-int8 expects the exporter's node names"
)
#: The ONNX opset the parent is exported at: 13 is the first with per-channel
#: QuantizeLinear/DequantizeLinear, 17 what the TorchScript exporter and onnxruntime both support fully.
OPSET = 17
#: The key under which ``model.pt`` holds the quantized ONNX file's bytes (a uint8 tensor), so
#: that the model directory has the two files every finished model has; :func:`onnx_graph_bytes`
#: reads them back.
ONNX_GRAPH_KEY = "model.onnx"
_PROVIDER = "CPUExecutionProvider"
_INPUT, _OUTPUT = "images", "logits"
_LINEAR_OPS = {"Conv": "conv", "Gemm": "linear", "MatMul": "linear"}


def _runtime() -> tuple[Any, Any]:
    """The ``onnx`` and ``onnxruntime`` modules, or :data:`NO_ONNX_RUNTIME`."""
    try:
        import onnx
        import onnxruntime
        import onnxruntime.quantization  # noqa: F401 - its own import can fail (a partial install)
    except ImportError as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(NO_ONNX_RUNTIME.format(reason=reason)) from e
    return onnx, onnxruntime


def onnx_graph_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    """The quantized ONNX file an ``onnx-int8`` ``model.pt`` holds (read it with ``weights_only``)."""
    return state_dict[ONNX_GRAPH_KEY].numpy().tobytes()


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the TorchScript exporter's deprecation notices (it, and its logging set-up, are
    deprecated in favour of the dynamo exporter, which needs onnxscript); nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def _export(model: nn.Module, image_shape: Sequence[int]) -> bytes:
    """``model`` (in eval mode, BatchNorm folded into its convs by the exporter) as ONNX bytes."""
    buffer = io.BytesIO()
    example = torch.zeros(1, *image_shape)
    with _quiet(), torch.no_grad():
        torch.onnx.export(model.eval(), (example,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=[_INPUT], output_names=[_OUTPUT],
                          dynamic_axes={_INPUT: {0: "batch"}, _OUTPUT: {0: "batch"}})  # fmt: skip
    return buffer.getvalue()


def _quantize(float_graph: bytes, calibration: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    """``float_graph`` quantized statically by onnxruntime, calibrated on ``calibration`` (N, C, H, W).

    Returns the quantized file's bytes and what ``run.json`` records of the scheme.
    """
    onnx, ort = _runtime()
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quant_pre_process, quantize_static

    class Images(CalibrationDataReader):
        """The calibration images, one at a time (the exported graph takes any batch)."""

        def __init__(self) -> None:
            self._images = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self._images, None)
            return None if image is None else {_INPUT: image[None]}

    # The x86 scheme, as ``int8`` uses it: unsigned affine activations per tensor, signed
    # symmetric weights per output channel, min-max ranges; only the toolchain differs.
    options = {"WeightSymmetric": True, "ActivationSymmetric": False}
    with tempfile.TemporaryDirectory(prefix="pie-audit-onnx-int8-") as scratch:
        source, prepared = Path(scratch) / "float.onnx", Path(scratch) / "prepared.onnx"
        target = Path(scratch) / "int8.onnx"
        source.write_bytes(float_graph)
        # onnxruntime's recommended first step: shape inference and graph optimisation, so that
        # every tensor has the shape the quantizer needs.
        quant_pre_process(source, prepared)
        quantize_static(prepared, target, Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, extra_options=options)  # fmt: skip
        quantized = target.read_bytes()
    record = {
        "tool": "onnxruntime.quantization.quantize_static",
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "exporter": f"torch.onnx.export (TorchScript, torch {torch.__version__})",
        "pre_process": "onnxruntime.quantization.quant_pre_process",
        "format": "QDQ",
        "opset": OPSET,
        "per_channel": True,
        "reduce_range": False,
        "calibrate_method": "MinMax",
        "weights": {"dtype": "int8", "granularity": "per-channel", "symmetric": True},
        "activations": {"dtype": "uint8", "granularity": "per-tensor", "symmetric": False},
    }
    return quantized, record


def _probabilities(graph: bytes, x: torch.Tensor, *, batch_size: int) -> np.ndarray:
    """Softmax probabilities (N, K) of the ONNX ``graph`` on images ``x``, by onnxruntime on the CPU."""
    _, ort = _runtime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are not the user's concern
    session = ort.InferenceSession(graph, sess_options=options, providers=[_PROVIDER])
    images = x.detach().cpu().float().numpy()
    chunks = []
    for start in range(0, len(images), batch_size):
        logits = session.run([_OUTPUT], {_INPUT: images[start : start + batch_size]})[0]
        chunks.append(torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float32)), dim=1).numpy())
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _cost(graph: bytes, state_dict: dict[str, torch.Tensor], image_shape: Sequence[int]) -> dict[str, Any]:
    """``run.json`` ``cost`` of the quantized graph, measured by onnxruntime (``docs/cost.md``).

    Its ``file_bytes`` is ``model.pt``'s, as every method records it: the population writer
    saves ``state_dict`` with ``torch.save`` into memory and writes those bytes, so the same
    call here gives their size before the file exists.
    """
    from .._onnx_cost import onnx_cost

    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return onnx_cost(graph, tuple(image_shape)) | {"file_bytes": buffer.getbuffer().nbytes}


def _module_of(node_name: str) -> str:
    """The module path a TorchScript-exported node's name gives.

    Its scopes hold each attribute once, an indexed child as its parent's name with the index:
    ``/layer2/layer2.0/downsample/downsample.0/Conv`` is ``layer2.0.downsample.0``.

    >>> _module_of("/layer2/layer2.0/downsample/downsample.0/Conv"), _module_of("/conv1/Conv")
    ('layer2.0.downsample.0', 'conv1')
    """
    parts: list[str] = []
    for scope in node_name.split("/")[1:-1]:
        if parts and scope.startswith(parts[-1] + "."):
            parts[-1] = scope
        else:
            parts.append(scope)
    return ".".join(parts)


def _int8_sparsity(graph: bytes, model: nn.Module) -> dict[str, Any]:
    """The zeros among the graph's int8 weights, by the torch names of the layers other methods prune.

    The exporter renames the weights it folds BatchNorm into, but names each node by the module
    it came from (``/layer2/layer2.0/downsample/downsample.0/Conv``), and quantization keeps the
    node names: a layer is found by its node's name. An int8 weight counts as zero when its code
    equals its zero point (it dequantizes to exactly 0.0), as ``int8`` counts.
    """
    onnx, _ = _runtime()
    from onnx import numpy_helper

    parsed = onnx.load_from_string(graph)
    initializers = {t.name: t for t in parsed.graph.initializer}
    dequantized = {n.output[0]: n for n in parsed.graph.node if n.op_type == "DequantizeLinear"}
    codes_of: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for node in parsed.graph.node:
        dq = dequantized.get(node.input[1]) if node.op_type in _LINEAR_OPS and len(node.input) > 1 else None
        if dq is None or dq.input[0] not in initializers:
            continue
        codes = numpy_helper.to_array(initializers[dq.input[0]])
        zero = numpy_helper.to_array(initializers[dq.input[2]]) if len(dq.input) > 2 else np.zeros((), codes.dtype)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if zero.ndim == 1:
            zero = zero.reshape([-1 if i == axis else 1 for i in range(codes.ndim)])
        codes_of[f"{_module_of(node.name)}.weight"] = (codes, codes == zero)
    report: dict[str, Any] = {"layers": {}, "dtypes": {}, "n_weights": 0, "n_zero": 0}
    for name in prunable_weights(model):
        if name not in codes_of:
            raise ConfigError(NO_INT8_LAYER.format(name=name, found=", ".join(codes_of) or "none"))
        codes, zeros = codes_of[name]
        report["layers"][name] = float(zeros.mean())
        report["dtypes"][name] = str(codes.dtype)
        report["n_weights"] += int(codes.size)
        report["n_zero"] += int(zeros.sum())
    report["achieved"] = report["n_zero"] / report["n_weights"] if report["n_weights"] else 0.0
    return report


@dataclass(frozen=True)
class OnnxInt8Quantization(FromParent):
    """Post-training static int8 quantization of a trained dense parent by ONNX Runtime, seed by seed.

    Each seed's model is the parent population's model of the same seed (``source``), exported
    to ONNX (opset :data:`OPSET`, TorchScript exporter, BatchNorm folded) and quantized by
    ``onnxruntime.quantization.quantize_static`` in the QDQ format: int8 weights per output
    channel (symmetric) and uint8 activations per tensor (affine), with min-max ranges
    calibrated on ``calibration_images`` training images, one at a time. They are the images
    ``int8`` calibrates the same seed on (:func:`~._int8.calibration_indices`), so the two
    methods differ in their toolchain only. The quantized graph is evaluated by onnxruntime on
    the CPU. ``model.pt`` holds the quantized ONNX file's bytes (:data:`ONNX_GRAPH_KEY`, read
    back with ``weights_only`` by :func:`onnx_graph_bytes`); each ``run.json`` names its parent,
    so the audit pairs them, and its ``cost`` is the graph's (:func:`~.._onnx_cost.onnx_cost`:
    parameters and FLOPs from the graph, latency timed by onnxruntime on the CPU).
    """

    source: str
    calibration_images: int = CALIBRATION_IMAGES
    method: ClassVar[str] = "onnx-int8"

    def __post_init__(self) -> None:
        check_count("calibration-images", self.calibration_images)

    def check(self, dataset: Dataset, *, arch: str, seeds: Sequence[int] | None = None) -> None:
        """Refuse a missing onnxruntime, then a parent that is not a dense one of this data and architecture."""
        _runtime()
        super().check(dataset, arch=arch, seeds=seeds)

    def policy(self, model: nn.Module, total_steps: int) -> FixedMasks:
        """No masks: the weights are the parent's, quantized after training."""
        return FixedMasks((), 0.0, "none")

    def train(self, dataset: Dataset, *, arch: str, seeds: Sequence[int], config: TrainConfig,
              device: torch.device | str = "cpu", on_epoch: Any = None) -> list[TrainedModel]:  # fmt: skip
        """Export, quantize and evaluate each seed's parent; each result records its parent.

        ``device`` is not used: the quantized graph runs on onnxruntime's CPU provider, and the
        record says so.
        """
        _runtime()
        labels = dataset.y_test.numpy()
        results = []
        for seed in seeds:
            started = time.perf_counter()
            state, parent = load_parent(self.source, seed, arch=arch, dataset=dataset)
            model = init_model(arch, dataset, seed)
            model.load_state_dict(state)
            chosen = calibration_indices(len(dataset.x_train), self.calibration_images, seed)
            calibration = dataset.x_train[torch.from_numpy(chosen)].float().numpy()
            graph, scheme = _quantize(_export(model, dataset.image_shape), calibration)
            probabilities = _probabilities(graph, dataset.x_test, batch_size=config.eval_batch_size)
            state_dict = {ONNX_GRAPH_KEY: torch.frombuffer(bytearray(graph), dtype=torch.uint8)}
            record = {"parent": parent,
                      "quantization": scheme | {"calibration_images": int(len(chosen))},
                      "cost": _cost(graph, state_dict, dataset.image_shape)}  # fmt: skip
            results.append(
                TrainedModel(
                    seed=seed,
                    state_dict=state_dict,
                    probabilities=probabilities,
                    accuracy=float((probabilities.argmax(1) == labels).mean()),
                    sparsity=_int8_sparsity(graph, model) | {"target": 0.0},
                    schedule={"kind": "post-training-quantization"},
                    steps=0,
                    wall_time_s=time.perf_counter() - started,
                    device="cpu",
                    jointly=1,
                    record=record,
                )
            )
        return results
