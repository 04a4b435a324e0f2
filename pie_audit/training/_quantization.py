"""Post-training static int8 quantization of trained float models, and running the result.

The flow is torch's FX graph mode static quantization: the float model is traced and observed
(``prepare_fx``), calibrated on training images, and converted (``convert_fx``) with the default
qconfig mapping of the ``"x86"`` quantized engine: int8 weights, per channel and symmetric, and
uint8 activations, per tensor and affine. The converted model runs real int8 kernels (fbgemm and
oneDNN) on the CPU, and only there.

A converted model saves as an ordinary ``state_dict()``, which ``torch.load(weights_only=True)``
reads back; :func:`load_quantized` rebuilds the model from it by converting the same float
architecture without calibration (:func:`quantized_skeleton`) and loading the state into it.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, FormatError
from ._pruning import sparsity_report

__all__ = [
    "BACKEND",
    "FLOW",
    "quantize_static",
    "quantized_skeleton",
    "load_quantized",
    "quantized_engine",
    "is_quantized_state_dict",
    "int8_parameters",
    "int8_weights",
    "scheme",
    "predict_probabilities",
]

#: The quantized engine (``torch.backends.quantized.engine``) and qconfig mapping used.
BACKEND = "x86"
#: How a model is quantized, as ``run.json`` records it.
FLOW = "torch.ao.quantization FX graph mode: prepare_fx, calibrate, convert_fx"

NO_FX = (
    "int8 needs torch's FX quantization (torch.ao.quantization.quantize_fx), which this torch "
    "{version} lacks"
)
NO_BACKEND = (
    "int8 needs torch's {backend!r} quantized engine, which this torch {version} lacks here "
    "(it has: {engines})"
)
NOT_A_MODULE = "model must be a torch.nn.Module, got {what}"
BAD_IMAGES = "{what} must be a floating-point tensor of shape (N, C, H, W) with N >= 1, got {detail}"
BAD_BATCH_SIZE = "batch size must be >= 1, got {batch_size}"
NOT_INT8 = "not an int8 state dict (a mapping of names to tensors holding quantized weights)"
INT8_MISMATCH = (
    "an int8 state dict that does not fit {arch} with {num_classes} classes for "
    "{in_channels}x{image_size}x{image_size} images: {reason}"
)
UNKNOWN_LAYER = "no int8 weight named {name!r}; the state dict has {choices}"

# The entries a quantized Linear saves: its packed weight and bias (a tuple, not a tensor) and
# their dtype. Quantized convs save plain (quantized) tensors, and ``None`` for a missing bias.
_PACKED = "_packed_params._packed_params"
_PACKED_DTYPE = "_packed_params.dtype"
_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams)
_SYMMETRIC = (torch.per_tensor_symmetric, torch.per_channel_symmetric)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch.ao.quantization's own deprecation chatter, and nothing else.

    The FX flow is deprecated in favour of torchao's pt2e, but pt2e's output runs int8 only
    through torch.compile; this is the flow of the pinned torch that runs real int8 kernels on
    x86. Its observers also warn about their own defaults (``reduce_range``), and an uncalibrated
    skeleton warns that its observers never ran, which is the point of a skeleton.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", category=UserWarning, message="Please use quant_min and quant_max")
        warnings.filterwarnings("ignore", category=UserWarning, message="must run observer before calling")
        warnings.filterwarnings(
            "ignore", category=UserWarning, message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel"
        )
        yield


def _fx() -> tuple[Any, Any, Any]:
    """``get_default_qconfig_mapping``, ``prepare_fx`` and ``convert_fx``, or a ConfigError."""
    try:
        with _quiet():
            from torch.ao.quantization import get_default_qconfig_mapping
            from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    except ImportError as e:
        raise ConfigError(NO_FX.format(version=torch.__version__)) from e
    return get_default_qconfig_mapping, prepare_fx, convert_fx


@contextlib.contextmanager
def quantized_engine() -> Iterator[None]:
    """The :data:`BACKEND` quantized engine for the block, then the previous one again.

    Int8 weights are packed for the engine current when a model is converted or loaded, and run
    by the one current when it is called, so both happen inside this block. torch.ao's
    deprecation warnings are silenced in it, and only those.

    Raises
    ------
    ConfigError
        This torch has no :data:`BACKEND` engine (e.g. on an ARM machine).
    """
    engines = torch.backends.quantized.supported_engines
    if BACKEND not in engines:
        raise ConfigError(NO_BACKEND.format(backend=BACKEND, version=torch.__version__, engines=", ".join(engines)))
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = BACKEND
    try:
        with _quiet():
            yield
    finally:
        torch.backends.quantized.engine = previous


def _check_module(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise ConfigError(NOT_A_MODULE.format(what=type(model).__name__))


def _check_images(x: Any, *, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ConfigError(BAD_IMAGES.format(what=what, detail=type(x).__name__))
    if x.ndim != 4 or len(x) == 0 or not x.is_floating_point():
        raise ConfigError(BAD_IMAGES.format(what=what, detail=f"{x.dtype} of shape {tuple(x.shape)}"))
    return x


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(BAD_BATCH_SIZE.format(batch_size=batch_size))


def _prepared(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A CPU copy of ``model``, traced, fused and observed; the caller's model is left alone."""
    get_mapping, prepare_fx, _ = _fx()
    float_model = copy.deepcopy(model).cpu().eval()
    example = example[:1].detach().cpu().float()
    return prepare_fx(float_model, get_mapping(BACKEND), example_inputs=(example,))


def quantize_static(model: nn.Module, calibration: torch.Tensor, *, batch_size: int = 256) -> nn.Module:
    """Quantize a trained float model to int8, calibrating activations on example images.

    Parameters
    ----------
    model : nn.Module
        The float model, on any device; it is copied to the CPU and not changed.
    calibration : Tensor of shape (N, C, H, W)
        Float images, usually training images, that the activation observers see.
    batch_size : int, default 256
        Calibration images per forward pass.

    Returns
    -------
    nn.Module
        The converted int8 ``torch.fx.GraphModule``, on the CPU and in eval mode. Save it with
        ``torch.save(q.state_dict(), path)``; load it with :func:`load_quantized`; run it with
        :func:`predict_probabilities` (or inside :func:`quantized_engine`).

    Raises
    ------
    ConfigError
        ``model`` not a module, ``calibration`` not a non-empty float (N, C, H, W) tensor,
        ``batch_size`` below 1, or a torch without FX quantization or the x86 engine.
    """
    _check_module(model)
    calibration = _check_images(calibration, what="calibration")
    _check_batch_size(batch_size)
    _, _, convert_fx = _fx()
    with quantized_engine(), torch.no_grad():
        prepared = _prepared(model, calibration)
        for start in range(0, len(calibration), batch_size):
            prepared(calibration[start : start + batch_size].detach().cpu().float())
        return convert_fx(prepared).eval()


def quantized_skeleton(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The int8 graph of ``model`` without calibration, to load a saved int8 state dict into.

    Parameters
    ----------
    model : nn.Module
        A float model of the architecture that was quantized; its weights do not matter. It is
        copied to the CPU and not changed.
    example : Tensor of shape (B, C, H, W)
        Example input, for tracing; only its first image is used.

    Returns
    -------
    nn.Module
        A converted ``torch.fx.GraphModule`` on the CPU in eval mode, whose quantization
        parameters are placeholders until ``load_state_dict(state)``.
    """
    _check_module(model)
    example = _check_images(example, what="example")
    _, _, convert_fx = _fx()
    with quantized_engine():
        return convert_fx(_prepared(model, example)).eval()


def load_quantized(
    arch: str, *, in_channels: int, image_size: int, num_classes: int, state_dict: Mapping[str, Any]
) -> nn.Module:
    """Rebuild an int8 model of a registry architecture from its saved state dict.

    Parameters
    ----------
    arch : str
        Registry name (:data:`pie_audit.training._models.ARCHITECTURES`).
    in_channels, image_size, num_classes : int
        The shape the float model was built for.
    state_dict : mapping
        ``q.state_dict()`` of a model from :func:`quantize_static`, e.g. read back with
        ``torch.load(path, weights_only=True)``.

    Returns
    -------
    nn.Module
        The int8 ``torch.fx.GraphModule`` on the CPU in eval mode, giving the same outputs as the
        model that was saved.

    Raises
    ------
    ConfigError
        An unknown architecture, or a torch without FX quantization or the x86 engine.
    FormatError
        ``state_dict`` is not an int8 state dict, or does not fit the architecture (keys,
        shapes or kinds of tensor differ). Callers add the file name.
    """
    from ._models import build_model

    if not is_quantized_state_dict(state_dict):
        raise FormatError(NOT_INT8)
    # The float weights are thrown away; a private RNG keeps the caller's stream where it was.
    with torch.random.fork_rng(devices=[]):
        float_model = build_model(arch, in_channels=in_channels, image_size=image_size, num_classes=num_classes)
    skeleton = quantized_skeleton(float_model, torch.zeros(1, in_channels, image_size, image_size))

    def mismatch(reason: str) -> FormatError:
        return FormatError(
            INT8_MISMATCH.format(
                arch=arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size, reason=reason
            )
        )

    # Quantized layers take weights of any shape without complaint, so the shapes are checked here.
    expected = skeleton.state_dict()
    reason = _misfit(expected, state_dict)
    if reason is not None:
        raise mismatch(reason)
    state = OrderedDict(state_dict)
    # Quantized Linear layers read their packed entries only when the state's per-module
    # versions say so; a state copied into a plain dict has lost them, and the keys already
    # checked are those of this torch's version.
    state._metadata = getattr(state_dict, "_metadata", None) or expected._metadata  # type: ignore[attr-defined]
    with quantized_engine():
        try:
            skeleton.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, ValueError) as e:
            raise mismatch(" ".join(str(e).split())) from e
    return skeleton.eval()


def _misfit(expected: Mapping[str, Any], state: Mapping[str, Any]) -> str | None:
    """Why ``state`` does not fit the skeleton's ``expected`` state, or None when it does."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
                parts.append(f"{what} keys {', '.join(repr(k) for k in keys[:3])}{more}")
        return "; ".join(parts)
    for key, want in expected.items():
        reason = _value_misfit(key, want, state[key])
        if reason is not None:
            return reason
    return None


def _value_misfit(key: str, want: Any, got: Any) -> str | None:
    if isinstance(want, tuple):
        want_parts = want
        got_parts = got if isinstance(got, tuple) and len(got) == len(want) else None
        if got_parts is None:
            return f"{key} is {_kind(got)}, expected {_kind(want)}"
        # A packed Linear entry is (weight, bias): name its parts as the float layer's.
        layer = key[: -len(_PACKED)] if key.endswith(_PACKED) else None
        for index, (w, g) in enumerate(zip(want_parts, got_parts)):
            part = f"{layer}{('weight', 'bias')[index]}" if layer is not None and index < 2 else f"{key}[{index}]"
            reason = _value_misfit(part, w, g)
            if reason is not None:
                return reason
        return None
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor) or got.is_quantized != want.is_quantized:
            return f"{key} is {_kind(got)}, expected {_kind(want)}"
        if got.shape != want.shape:
            return f"{key} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        return None
    if want is None:
        return None if got is None else f"{key} is {_kind(got)}, expected None"
    return None if got == want else f"{key} is {got!r}, expected {want!r}"


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {'quantized ' if value.is_quantized else ''}tensor of {value.dtype}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return "None" if value is None else f"a {type(value).__name__}"


def is_quantized_state_dict(state: Any) -> bool:
    """Whether ``state`` is an int8 state dict as :func:`quantize_static`'s models save it.

    That is a mapping of names to tensors that holds a quantized tensor or a quantized Linear's
    packed entries, and nothing else but those entries (``..._packed_params.dtype``, a
    ``torch.dtype``; ``..._packed_params._packed_params``, a tuple of a weight and a bias
    tensor or None) and the ``None`` that a conv without bias saves as its ``.bias``.

    Parameters
    ----------
    state : Any

    Returns
    -------
    bool
    """
    if not isinstance(state, Mapping):
        return False
    quantized = False
    for key, value in state.items():
        if not isinstance(key, str):
            return False
        if isinstance(value, torch.Tensor):
            quantized = quantized or value.is_quantized
        elif key.endswith(_PACKED_DTYPE):
            if not isinstance(value, torch.dtype):
                return False
            quantized = True
        elif key.endswith(_PACKED):
            if not (
                isinstance(value, tuple)
                and len(value) == 2
                and isinstance(value[0], torch.Tensor)
                and (value[1] is None or isinstance(value[1], torch.Tensor))
            ):
                return False
            quantized = True
        elif not (value is None and key.endswith(".bias")):
            return False
    return quantized


def int8_parameters(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights and biases of the quantized layers of an int8 state dict, by their float names.

    Quantized convs keep ``{layer}.weight`` (a quantized tensor) and ``{layer}.bias``; quantized
    Linear layers pack both into ``{layer}._packed_params._packed_params``. Both are returned as
    ``{layer}.weight`` and ``{layer}.bias``, the names of the float model's parameters, in the
    state dict's (module) order. Missing biases are left out.

    Parameters
    ----------
    state_dict : mapping
        An int8 state dict (:func:`is_quantized_state_dict`).

    Returns
    -------
    dict of str to Tensor
        Weights are quantized tensors (qint8); biases are float tensors.
    """
    params: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith(_PACKED) and isinstance(value, tuple):
            layer = key[: -len(_PACKED)]
            weight, bias = value[0], value[1] if len(value) > 1 else None
        elif isinstance(value, torch.Tensor) and value.is_quantized and key.rsplit(".", 1)[-1] == "weight":
            layer = key[: -len("weight")]
            weight, bias = value, state_dict.get(f"{layer}bias")
        else:
            continue
        params[f"{layer}weight"] = weight
        if isinstance(bias, torch.Tensor):
            params[f"{layer}bias"] = bias
    return params


def _centred(weight: torch.Tensor) -> torch.Tensor:
    """A weight's integer codes less their zero point: 0 exactly where the weight is 0."""
    if not weight.is_quantized:
        return weight
    codes = weight.int_repr().to(torch.int32)
    if weight.qscheme() in _PER_CHANNEL:
        shape = [1] * weight.ndim
        shape[weight.q_per_channel_axis()] = -1
        return codes - weight.q_per_channel_zero_points().reshape(shape).to(torch.int32)
    return codes - int(weight.q_zero_point())


def int8_weights(state_dict: Mapping[str, Any], *, names: Iterable[str] | None = None) -> dict[str, Any]:
    """Report of the int8 weights of a quantized state dict: dtypes and exact zeros.

    A weight entry counts as zero when its integer code equals its zero point, i.e. when it
    dequantizes to exactly 0.0 (for symmetric int8, when the code is 0): the same measure as
    :func:`pie_audit.training._pruning.sparsity_report` takes of float weights.

    Parameters
    ----------
    state_dict : mapping
        An int8 state dict (:func:`is_quantized_state_dict`).
    names : iterable of str, optional
        The layers to report, by their float weight names (``features.0.weight``). Default:
        every quantized conv and linear weight.

    Returns
    -------
    dict
        ``{"achieved": float, "layers": {name: float}, "n_weights": int, "n_zero": int,
        "dtypes": {name: str}}``: the fraction of zero weights overall and per layer, the
        counts, and each layer's dtype (``"torch.qint8"``).

    Raises
    ------
    ConfigError
        A name in ``names`` that is not an int8 weight of ``state_dict``.
    """
    params = int8_parameters(state_dict)
    weights = {name: w for name, w in params.items() if name.endswith("weight")}
    chosen = list(weights) if names is None else list(names)
    for name in chosen:
        if name not in weights:
            raise ConfigError(UNKNOWN_LAYER.format(name=name, choices=", ".join(weights) or "none"))
    report = sparsity_report({name: _centred(weights[name]) for name in chosen}, chosen)
    return report | {"dtypes": {name: str(weights[name].dtype) for name in chosen}}


def _observer_record(observer: Any) -> dict[str, Any]:
    qscheme = observer.qscheme
    record = {
        "dtype": str(observer.dtype),
        "qscheme": str(qscheme),
        "granularity": "per-channel" if qscheme in _PER_CHANNEL else "per-tensor",
        "symmetric": qscheme in _SYMMETRIC,
        "reduce_range": bool(observer.reduce_range),
        "quant_min": int(observer.quant_min),
        "quant_max": int(observer.quant_max),
        "observer": type(observer).__name__,
    }
    if qscheme in _PER_CHANNEL:
        record["ch_axis"] = int(observer.ch_axis)
    return record


def scheme() -> dict[str, Any]:
    """How :func:`quantize_static` quantizes, read from the qconfig it uses, for ``run.json``.

    Returns
    -------
    dict
        ``flow`` (:data:`FLOW`), ``backend`` (:data:`BACKEND`), ``torch`` (its version), and
        ``weights`` and ``activations``, each with ``dtype``, ``qscheme``, ``granularity``
        (``"per-channel"`` or ``"per-tensor"``), ``symmetric``, ``reduce_range``,
        ``quant_min``, ``quant_max``, ``observer`` (class name) and, per channel, ``ch_axis``.
        What the calibration images were is the caller's to add.

    Examples
    --------
    >>> s = scheme()
    >>> s["weights"]["dtype"], s["weights"]["granularity"], s["activations"]["dtype"]
    ('torch.qint8', 'per-channel', 'torch.quint8')
    """
    get_mapping, _, _ = _fx()
    with _quiet():
        qconfig = get_mapping(BACKEND).global_qconfig
        weight, activation = qconfig.weight(), qconfig.activation()
    return {
        "flow": FLOW,
        "backend": BACKEND,
        "torch": torch.__version__,
        "weights": _observer_record(weight),
        "activations": _observer_record(activation),
    }


def predict_probabilities(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> np.ndarray:
    """Softmax probabilities of an int8 model, on the CPU with the :data:`BACKEND` engine.

    Parameters
    ----------
    model : nn.Module
        An int8 model from :func:`quantize_static` or :func:`load_quantized` (a float model on
        the CPU works too).
    x : Tensor of shape (N, C, H, W)
        Float images.
    batch_size : int, default 1024
        Images per forward pass.

    Returns
    -------
    ndarray of shape (N, C), float32
    """
    _check_module(model)
    x = _check_images(x, what="x")
    _check_batch_size(batch_size)
    chunks = []
    with quantized_engine(), torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size].detach().cpu().float())
            chunks.append(torch.softmax(logits.float(), dim=1).numpy())
    return np.concatenate(chunks).astype(np.float32, copy=False)
