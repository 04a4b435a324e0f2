"""What an ONNX model costs: the ``cost`` fields of ``_cost.py``, read from the graph and timed by onnxruntime.

The same record as :func:`pie_audit.training.model_cost` gives a torch model (``docs/cost.md``):
parameters are the graph's stored tensors, FLOPs are counted from its operators and the shapes
``onnx.shape_inference`` gives them at batch 1 (with torch's conventions, so that a graph
exported from a torch model, float or quantized by onnxruntime, has that model's FLOPs), and
latency is the median wall time of onnxruntime's CPU provider. ``onnx-int8`` records it for its
quantized graphs, and ``pie-audit predict`` for the ONNX files it evaluates.

``onnx`` and ``onnxruntime`` are imported only when a graph is measured.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, FormatError
from ._cost import BAD_SHAPE, DEFAULT_RUNS, DEFAULT_WARMUP, LATENCY_BATCHES, _check_count

__all__ = [
    "COUNTED_OPS",
    "PROVIDER",
    "NO_RUNTIME",
    "NOT_A_GRAPH",
    "NO_INPUT_SHAPE",
    "FLOPS_NONE",
    "FLOPS_PARTLY",
    "onnx_cost",
    "onnx_flops",
    "onnx_parameters",
]

#: The operators whose FLOPs are counted, as torch's ``flop_counter`` counts their torch
#: counterparts (convolutions and matrix products); every other operator costs 0 FLOPs, as
#: element-wise operators, pooling and (de)quantization do there.
COUNTED_OPS = ("Conv", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "MatMulInteger", "QLinearMatMul")
#: What the latency is measured on, whatever provider the model was evaluated with: the CPU
#: provider is in every onnxruntime build, and a torch model's latency is the CPU's too.
PROVIDER = "CPUExecutionProvider"

NO_RUNTIME = "measuring an ONNX model needs onnx and onnxruntime ({reason}); pip install 'pie-audit[onnx]'"
NOT_A_GRAPH = "not an ONNX model ({reason}); its cost cannot be measured"
NO_INPUT_SHAPE = (
    "the ONNX model's input {name!r} has shape {shape}; give example_input_shape, one example's shape without the batch axis"
)
FLOPS_NONE = "the graph has no operator whose FLOPs are counted ({ops})"
FLOPS_PARTLY = "FLOPs leave out {n} operator(s) whose shapes onnx.shape_inference could not infer: {names}"

# Where a convolution's weight sits among its inputs: its shape gives the work per output
# element. A matrix product's is given by its left operand, always its first input.
_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
# (value input, zero point input, axis of a 1-D zero point) of the operators that pair an
# integer tensor with its zero point; None: the zero point broadcasts like numpy (a
# per-column zero point of a matrix product's right operand, a scalar).
_ZERO_POINTS = {
    "ConvInteger": ((0, 2, None), (1, 3, 0)),
    "MatMulInteger": ((0, 2, None), (1, 3, None)),
    "QLinearConv": ((0, 2, None), (3, 5, 0)),
    "QLinearMatMul": ((0, 2, None), (3, 5, None)),
}


def _runtime() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(NO_RUNTIME.format(reason=reason)) from e
    return onnx, onnxruntime


def _parse(onnx: Any, graph: Any) -> Any:
    """A ``ModelProto`` from bytes (or one given), or :data:`NOT_A_GRAPH`."""
    if isinstance(graph, onnx.ModelProto):
        return graph
    try:
        model = onnx.load_from_string(bytes(graph))
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and others for bytes that are no model
        raise FormatError(NOT_A_GRAPH.format(reason=" ".join(str(e).split()) or type(e).__name__)) from e
    if not model.HasField("graph") or not model.graph.node:
        raise FormatError(NOT_A_GRAPH.format(reason="no graph in it"))
    return model


def _attribute(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _zero_point_of(model: Any) -> dict[str, tuple[str, int | None, int | None]]:
    """``{integer initializer: (its zero point initializer, axis, block size)}`` as the graph pairs them."""
    initializers = {t.name for t in model.graph.initializer}
    paired: dict[str, tuple[str, int | None, int | None]] = {}
    for node in model.graph.node:
        inputs = list(node.input)
        if node.op_type == "DequantizeLinear":
            pairs = ((0, 2, _attribute(node, "axis", 1)),)
            block = _attribute(node, "block_size", 0) or None
        else:
            pairs, block = _ZERO_POINTS.get(node.op_type, ()), None
        for value, zero, axis in pairs:
            if len(inputs) > zero and inputs[value] in initializers and inputs[zero] in initializers:
                # The first pairing wins: a tensor is stored once, whatever dequantizes it.
                paired.setdefault(inputs[value], (inputs[zero], axis, block))
    return paired


def _broadcast_zero(zero: np.ndarray, shape: tuple[int, ...], axis: int | None, block: int | None) -> np.ndarray | None:
    """The zero point of every element of a tensor of ``shape``, or ``None`` when it does not fit."""
    try:
        if zero.ndim == 1 and axis is not None and len(shape) > 1:
            axis = axis % len(shape)
            if block:  # blocked quantization: one zero point per ``block`` elements along ``axis``
                zero = np.repeat(zero, block)[: shape[axis]]
            return np.broadcast_to(zero.reshape([-1 if i == axis else 1 for i in range(len(shape))]), shape)
        if block and zero.ndim == len(shape) and axis is not None:
            return np.broadcast_to(np.repeat(zero, block, axis=axis % len(shape))[tuple(slice(n) for n in shape)], shape)
        return np.broadcast_to(zero, shape)
    except (ValueError, IndexError):
        return None


def onnx_parameters(graph: Any) -> dict[str, int]:
    """Stored and nonzero elements of an ONNX graph's initializers.

    Parameters
    ----------
    graph : bytes or onnx.ModelProto

    Returns
    -------
    dict
        ``{"stored", "nonzero"}``. ``stored``: every element of every initializer of the main
        graph (weights, biases; in a quantized graph its integer weights and biases and every
        scale and zero point), each once however many operators use it; a sparse initializer
        counts its stored values. ``nonzero``: those that do not stand for 0: an integer value
        equal to the zero point that a ``DequantizeLinear`` (or ``QLinearConv``,
        ``QLinearMatMul``, ``ConvInteger``, ``MatMulInteger``) pairs it with dequantizes to 0
        and is counted as zero; any other element counts when it is not 0 (a zero point of 0
        is a zero).
    """
    onnx, _ = _runtime()
    from onnx import numpy_helper

    model = _parse(onnx, graph)
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    paired = _zero_point_of(model)
    stored = nonzero = 0
    for name, values in arrays.items():
        stored += int(values.size)
        zero = None
        if name in paired:
            zero_name, axis, block = paired[name]
            zero = _broadcast_zero(np.asarray(arrays[zero_name]), values.shape, axis, block)
        if values.dtype.kind in "biufc":
            nonzero += int(np.count_nonzero(values if zero is None else values != zero))
    for sparse in model.graph.sparse_initializer:
        values = numpy_helper.to_array(sparse.values)
        stored += int(values.size)
        nonzero += int(np.count_nonzero(values))
    return {"stored": stored, "nonzero": nonzero}


def _input(model: Any) -> Any:
    """The graph's one data input (old graphs also list their initializers as inputs)."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise FormatError(NOT_A_GRAPH.format(reason=f"{len(inputs)} inputs; expected one, the images"))
    return inputs[0]


def _dims(value_info: Any) -> list[int | None] | None:
    """A value's dimensions (``None`` where not fixed), or ``None`` for an unknown shape."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


def _example_dims(model: Any, example_input_shape: Sequence[int] | None) -> tuple[int | None, tuple[int, ...]]:
    """The graph's fixed batch size (``None``: it takes any) and one example's shape."""
    single = _input(model)
    dims = _dims(single)
    shape_words = "(" + ", ".join("?" if d is None else str(d) for d in dims or []) + ")"
    if example_input_shape is not None:
        shape = tuple(example_input_shape) if isinstance(example_input_shape, (tuple, list)) else None
        if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise ConfigError(BAD_SHAPE.format(shape=example_input_shape))
    elif dims is None or len(dims) < 2 or any(d is None for d in dims[1:]):
        raise ConfigError(NO_INPUT_SHAPE.format(name=single.name, shape=shape_words))
    else:
        shape = tuple(int(d) for d in dims[1:])
    batch = dims[0] if dims else None
    return (batch if batch else None), shape


def _at_batch(onnx: Any, model: Any, batch: int, shape: tuple[int, ...]) -> Any:
    """A copy of ``model`` whose input is fixed to ``(batch, *shape)``, its shapes inferred."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    # Shapes recorded at another batch (quant_pre_process writes them) would be kept as they are.
    del fixed.graph.value_info[:]
    single = _input(fixed)
    single.type.tensor_type.shape.Clear()
    for size in (batch, *shape):
        single.type.tensor_type.shape.dim.add().dim_value = size
    try:
        return onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - a graph inference fails on keeps the shapes it was saved with
        return fixed


def onnx_flops(graph: Any, example_input_shape: Sequence[int] | None = None) -> tuple[int | None, str | None]:
    """FLOPs of one example's forward pass through an ONNX graph, counted as torch counts them.

    Parameters
    ----------
    graph : bytes or onnx.ModelProto
        A graph with one input, ``(batch, *example_input_shape)``.
    example_input_shape : sequence of int, optional
        One example's shape without the batch axis, ``(C, H, W)``; default the graph's own (it
        must then fix every dimension but the batch).

    Returns
    -------
    (int or None, str or None)
        The FLOPs, and why they are ``None`` or leave operators out (else ``None``).
        :data:`COUNTED_OPS` only, each 2 per multiply-add (biases, activations, pooling,
        quantization and every other operator are not counted, as torch's ``flop_counter``
        does not count them): a convolution ``2 x (output elements) x (input channels per
        group x kernel elements)``, a ``Gemm`` or matrix product ``2 x (output elements) x
        (inner dimension)``, their integer and ``QLinear`` forms alike. Shapes are those
        ``onnx.shape_inference`` gives with the input fixed at batch 1; a graph that fixes
        another batch size ``B`` is counted at ``B`` and divided by it.

    Raises
    ------
    ConfigError
        No ``example_input_shape`` and a graph whose input leaves a dimension open.
    """
    onnx, _ = _runtime()
    model = _parse(onnx, graph)
    fixed_batch, shape = _example_dims(model, example_input_shape)
    batch = fixed_batch or 1
    inferred = _at_batch(onnx, model, batch, shape)
    shapes: dict[str, list[int | None] | None] = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        shapes[value.name] = _dims(value)
    for tensor in inferred.graph.initializer:
        shapes[tensor.name] = list(tensor.dims)

    def known(name: str) -> list[int] | None:
        dims = shapes.get(name)
        return None if dims is None or any(d is None for d in dims) else [int(d) for d in dims]

    total, counted, unknown = 0, 0, []
    for node in inferred.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        out = known(node.output[0])
        if node.op_type in _WEIGHT:
            operand = known(node.input[_WEIGHT[node.op_type]]) if len(node.input) > _WEIGHT[node.op_type] else None
            inner = int(np.prod(operand[1:])) if operand is not None and len(operand) > 1 else None
        else:
            operand = known(node.input[0])
            # Gemm's A is (M, K), or (K, M) transposed; a matrix product's left operand ends in K.
            transposed = node.op_type == "Gemm" and _attribute(node, "transA", 0)
            inner = (operand[0] if transposed else operand[-1]) if operand else None
        if out is None or inner is None:
            unknown.append(node.name or node.op_type)
            continue
        total += 2 * int(np.prod(out)) * inner
        counted += 1
    if not counted:
        reason = FLOPS_PARTLY.format(n=len(unknown), names=", ".join(unknown)) if unknown else None
        return None, reason or FLOPS_NONE.format(ops=", ".join(COUNTED_OPS))
    return total // batch, FLOPS_PARTLY.format(n=len(unknown), names=", ".join(unknown)) if unknown else None


def _median_ms(run: Any, feeds: Sequence[np.ndarray], *, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        for feed in feeds:
            run(feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for feed in feeds:
            run(feed)
        times.append(time.perf_counter() - start)
    return round(1e3 * statistics.median(times), 4)


def onnx_cost(
    graph: bytes,
    example_input_shape: Sequence[int] | None = None,
    *,
    model_file: str | Path | None = None,
    threads: int | None = None,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
) -> dict[str, Any]:
    """Parameters, FLOPs per example, file size and CPU latency of an ONNX model.

    Parameters
    ----------
    graph : bytes
        The ONNX file's bytes, its tensors inside it.
    example_input_shape : sequence of int, optional
        One example's shape without the batch axis, ``(C, H, W)``; default the graph's own.
    model_file : path, optional
        The saved model (the ``.onnx`` file, or an ``onnx-int8`` ``model.pt`` that holds it);
        its size in bytes is ``file_bytes`` (``None`` without it).
    threads : int, optional
        onnxruntime's intra-op threads; by default ``torch.get_num_threads()``, the number a
        torch model of the same run is timed with. Recorded either way.
    runs : int, default :data:`~._cost.DEFAULT_RUNS`
        Timed runs per batch size; the median is recorded.
    warmup : int, default :data:`~._cost.DEFAULT_WARMUP`
        Untimed runs before them.

    Returns
    -------
    dict
        The fields of :func:`pie_audit.training.model_cost`: ``parameters``
        (:func:`onnx_parameters`), ``flops`` (:func:`onnx_flops`) with its ``note``,
        ``file_bytes``, ``latency_ms`` (``{"batch_1", "batch_64"}``, the median wall time of
        ``InferenceSession.run`` on :data:`PROVIDER`, all graph optimisations on, on inputs
        drawn from a fixed generator) and ``timing`` (``{"device": "cpu", "threads", "runs",
        "warmup", "statistic": "median", "runtime": {"name", "version", "provider"}}``, and
        ``batch_size`` for a graph that fixes one: it is then timed as predict feeds it,
        ``ceil(b / batch_size)`` runs of ``batch_size`` examples, the last padded).

    Raises
    ------
    ConfigError
        onnx or onnxruntime missing, a malformed ``example_input_shape``, ``runs``, ``warmup``
        or ``threads``, or no ``example_input_shape`` for a graph that leaves a dimension open.
    FormatError
        ``graph`` is not an ONNX model with one input, or onnxruntime cannot load it.
    """
    import os

    import torch

    onnx, ort = _runtime()
    _check_count("runs", runs, 1)
    _check_count("warmup", warmup, 0)
    if threads is not None:
        _check_count("threads", threads, 1)
    model = _parse(onnx, graph)
    fixed_batch, shape = _example_dims(model, example_input_shape)
    flops, note = onnx_flops(model, shape)
    threads = torch.get_num_threads() if threads is None else threads
    options = ort.SessionOptions()
    options.log_severity_level = 3  # unused-initializer warnings are not the user's concern
    options.intra_op_num_threads = threads
    # One operator at a time, on the intra-op threads only: as torch runs a model.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=[PROVIDER])
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors share only Exception
        raise FormatError(NOT_A_GRAPH.format(reason=" ".join(str(e).split()) or type(e).__name__)) from e
    single = session.get_inputs()[0]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(_input(model).type.tensor_type.elem_type)
    # Inputs from a private generator: the caller's random streams stay where they were.
    generator = np.random.default_rng(0)
    latency = {}
    for b in LATENCY_BATCHES:
        size = fixed_batch or b
        feeds = [generator.standard_normal((size, *shape)).astype(dtype) for _ in range(-(-b // size))]
        latency[f"batch_{b}"] = _median_ms(
            lambda x: session.run(None, {single.name: x}), feeds, runs=runs, warmup=warmup
        )
    timing = {
        "device": "cpu",
        "threads": threads,
        "runs": runs,
        "warmup": warmup,
        "statistic": "median",
        "runtime": {"name": "onnxruntime", "version": ort.__version__, "provider": PROVIDER},
    }
    if fixed_batch is not None:
        timing["batch_size"] = fixed_batch
    return {
        "parameters": onnx_parameters(model),
        "flops": flops,
        "note": note,
        "file_bytes": os.path.getsize(model_file) if model_file is not None else None,
        "latency_ms": latency,
        "timing": timing,
    }

