"""What a model costs to keep and to run: parameters, FLOPs, file size and CPU latency.

Recorded as ``cost`` in every ``run.json`` that ``pie-audit train`` writes (``docs/cost.md``).
Parameters and FLOPs are properties of the model and the same on every machine; the file size is
the saved file's; latency is measured here and now, on this machine's CPU with its current
thread count, so it varies between machines and from run to run.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = [
    "LATENCY_BATCHES",
    "DEFAULT_RUNS",
    "DEFAULT_WARMUP",
    "FLOPS_NOT_SEEN",
    "FLOPS_NONE",
    "NOT_MEASURED",
    "BAD_SHAPE",
    "BAD_COUNT",
    "model_cost",
    "saved_model_cost",
]

#: The batch sizes whose latency is measured: one example, and a batch as served in bulk.
LATENCY_BATCHES = (1, 64)
#: Timed runs per batch size; the median of them is recorded. Few, because every model of a
#: population is measured as it is written (and the test suite writes hundreds): a median of 5
#: already ignores the odd pass slowed by another process, and costs a small-cnn ~0.1 s.
DEFAULT_RUNS = 5
#: Untimed runs first, which fill caches, pick kernels and (int8) pack weights.
DEFAULT_WARMUP = 2

FLOPS_NOT_SEEN = (
    "torch.utils.flop_counter counts no quantized operator; the float parent's FLOPs are the same "
    "operations in int8"
)
FLOPS_NONE = "torch.utils.flop_counter counted no operator of this model"
NOT_MEASURED = (
    "not measured: the saved state is not a torch state dict of {arch} ({reason}); only its file size is recorded"
)
BAD_SHAPE = "example_input_shape must be a tuple of positive ints, one example's (C, H, W); got {shape!r}"
BAD_COUNT = "{name} must be a whole number >= {least}, got {value!r}"


def _check_count(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(BAD_COUNT.format(name=name, least=least, value=value))


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors a state dict entry saves: a tensor, or those in a quantized Linear's packed tuple."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)


def _parameters(state: Mapping[str, Any]) -> tuple[dict[str, int], bool]:
    """``{"stored", "nonzero"}`` element counts of ``state``, and whether it holds quantized tensors."""
    stored = nonzero = 0
    quantized = False
    for value in state.values():
        for tensor in _tensors(value):
            stored += tensor.numel()
            if tensor.is_quantized:
                quantized = True
                # An int8 value equal to its zero point stands for 0.0.
                tensor = tensor.dequantize()
            nonzero += int(torch.count_nonzero(tensor))
    return {"stored": stored, "nonzero": nonzero}, quantized


def _flops(model: nn.Module, example: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(example)
    return int(counter.get_total_flops())


def _median_ms(model: nn.Module, batch: torch.Tensor, *, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        model(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model(batch)
        times.append(time.perf_counter() - start)
    return round(1e3 * statistics.median(times), 4)


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def model_cost(
    model: nn.Module,
    example_input_shape: Sequence[int],
    *,
    model_file: str | Path | None = None,
    threads: int | None = None,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
) -> dict[str, Any]:
    """Parameters, FLOPs per example, file size and CPU latency of ``model``.

    Parameters
    ----------
    model : nn.Module
        A model on the CPU, float or int8 (:func:`pie_audit.training.load_quantized`); measured
        in eval mode under ``torch.no_grad``, and left in the mode it came in.
    example_input_shape : sequence of int
        One example's shape without the batch axis, ``(C, H, W)``.
    model_file : path, optional
        The saved model; its size in bytes is ``file_bytes`` (``None`` without it).
    threads : int, optional
        Intra-op threads to time with (``torch.set_num_threads``, restored after); by default the
        current number. The number used is recorded either way.
    runs : int, default :data:`DEFAULT_RUNS`
        Timed forward passes per batch size; the median is recorded.
    warmup : int, default :data:`DEFAULT_WARMUP`
        Untimed forward passes before them.

    Returns
    -------
    dict
        ``parameters``: ``{"stored", "nonzero"}``, elements of every tensor in the model's state
        dict (parameters and buffers, what is saved; an int8 layer's weight, bias, scales and
        zero points), and those of them that are not zero (an int8 value at its zero point is
        zero). ``flops``: of one example's forward pass (batch 1) as
        ``torch.utils.flop_counter.FlopCounterMode`` counts it (a multiply-add is 2 FLOPs;
        convolutions, matrix products and other operators it knows, not element-wise ones such as
        ReLU or pooling; zeroed weights are counted like any others), or ``None`` when it counts
        nothing (an int8 model: its operators are not known to it), with the reason in
        ``note`` (else ``None``). ``file_bytes``: the size of ``model_file``, or ``None``.
        ``latency_ms``: ``{"batch_1", "batch_64"}``, the median wall time of a forward pass in
        milliseconds. ``timing``: how latency was measured, ``{"device": "cpu", "threads",
        "runs", "warmup", "statistic": "median"}``.

    Raises
    ------
    ConfigError
        A malformed ``example_input_shape``, ``runs``, ``warmup`` or ``threads``.
    """
    shape = tuple(example_input_shape) if isinstance(example_input_shape, (tuple, list)) else None
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ConfigError(BAD_SHAPE.format(shape=example_input_shape))
    _check_count("runs", runs, 1)
    _check_count("warmup", warmup, 0)
    if threads is not None:
        _check_count("threads", threads, 1)

    parameters, quantized = _parameters(model.state_dict())
    # Inputs from a private generator: the caller's random stream stays where it was.
    generator = torch.Generator().manual_seed(0)
    batches = {b: torch.randn(b, *shape, generator=generator) for b in LATENCY_BATCHES}
    engine = contextlib.nullcontext()
    if quantized:
        from ._quantization import quantized_engine

        engine = quantized_engine()
    was_training = model.training
    model.eval()
    try:
        with engine, torch.no_grad(), _threads(threads):
            flops = _flops(model, batches[1])
            latency = {f"batch_{b}": _median_ms(model, x, runs=runs, warmup=warmup) for b, x in batches.items()}
            used = torch.get_num_threads()
    finally:
        model.train(was_training)
    return {
        "parameters": parameters,
        "flops": flops or None,
        "note": None if flops else FLOPS_NOT_SEEN if quantized else FLOPS_NONE,
        "file_bytes": os.path.getsize(model_file) if model_file is not None else None,
        "latency_ms": latency,
        "timing": {"device": "cpu", "threads": used, "runs": runs, "warmup": warmup, "statistic": "median"},
    }


def _compact(arch: str, shape: dict[str, int], channels: Mapping[str, int],
             state_dict: Mapping[str, Any]) -> tuple[nn.Module | None, str | None]:  # fmt: skip
    """The compact ``arch`` of ``channels`` and ``None``, or ``None`` and why ``state_dict`` does not fit it."""
    from ._compact import compact_architecture
    from ._models import state_dict_mismatch

    try:
        model = compact_architecture(arch, **shape, channels=channels)
    except ConfigError as e:
        return None, f"not a compact {arch}: {e}"
    reason = state_dict_mismatch(model, state_dict)
    return (model, None) if reason is None else (None, reason)


def saved_model_cost(
    state_dict: Mapping[str, Any],
    *,
    arch: str,
    image_shape: Sequence[int],
    num_classes: int,
    model_file: str | Path | None = None,
    channels: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """:func:`model_cost` of the model that ``state_dict`` saves, rebuilt on the CPU.

    What ``pie-audit train`` records as ``run.json`` ``cost``: the model as saved (masks folded
    in; int8 through :func:`pie_audit.training.load_quantized`; a compact model of structured
    pruning rebuilt at its own widths, :func:`pie_audit.training._compact.compact_architecture`),
    measured with the defaults.

    Parameters
    ----------
    state_dict : mapping
        The saved state of a registry architecture, float or int8, dense or compact.
    arch : str
        Its registry name.
    image_shape : sequence of int
        ``(C, H, W)`` of one input image.
    num_classes : int
    model_file : path, optional
        The saved file, for ``file_bytes``.
    channels : mapping of str to int, optional
        A compact model's conv widths (``run.json`` ``structure.channels``). By default, a float
        state that does not fit the dense architecture is read as compact at the widths its
        conv weights have, and measured if it fits that.

    Returns
    -------
    dict
        As :func:`model_cost`; for a state that does not fit ``arch`` (neither its float nor its
        int8 state dict, dense or compact) only ``file_bytes``, every other value ``None`` and
        the reason in ``note`` (:data:`NOT_MEASURED`).
    """
    from ._compact import state_channels
    from ._models import build_model, state_dict_mismatch
    from ._quantization import is_quantized_state_dict, load_quantized

    height = image_shape[1]
    shape = {"in_channels": image_shape[0], "image_size": height, "num_classes": num_classes}
    if is_quantized_state_dict(state_dict):
        model = load_quantized(arch, **shape, state_dict=state_dict)
    else:
        # build_model initialises from the global RNG: forked, so that measuring a model does not
        # change the models trained after it.
        with torch.random.fork_rng(devices=[]):
            model = build_model(arch, **shape)
        reason = state_dict_mismatch(model, state_dict)
        inferred = channels is None and reason is not None
        if inferred and isinstance(state_dict, Mapping):
            channels = state_channels(model, state_dict)
        if channels is not None:
            compact, compact_reason = _compact(arch, shape, channels, state_dict)
            if compact_reason is None:
                model, reason = compact, None
            elif not inferred:
                reason = compact_reason
        if reason is not None:
            # A method whose model.pt holds something else (an ONNX graph's bytes): measured by
            # that method, if at all; the model is still written.
            return {
                "parameters": None,
                "flops": None,
                "note": NOT_MEASURED.format(arch=arch, reason=reason),
                "file_bytes": os.path.getsize(model_file) if model_file is not None else None,
                "latency_ms": None,
                "timing": None,
            }
        model.load_state_dict(state_dict, strict=True)
    return model_cost(model, tuple(image_shape), model_file=model_file)
