"""Evaluating a model in memory into one model directory of the interchange format.

:func:`predict` runs a model over a data loader in eval mode, checks every batch (its structure,
labels, ids and the model's logits), takes the softmax, measures the sparsity of the layers that
pruning touches (:func:`measured_layers`), and writes ``predictions.parquet`` and ``run.json``
through :mod:`pie_audit.interchange`, atomically, so a reader never sees a half-written model.
"""

from __future__ import annotations

import contextlib
import json
import platform
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._atomic import ALREADY_EXISTS, atomic_directory, write_json
from .._version import __version__
from ..errors import ConfigError, FormatError, OutputError
from ..interchange import PREDICTIONS_FILE, RUN_FILE, run_record, write_predictions

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch, and the training wing that needs it, are imported where they are used, so that
# ``import pie_audit`` (and every CLI command) does not pay torch's second of start-up.

__all__ = [
    "predict",
    "measured_layers",
    "Evaluation",
    "evaluate",
    "model_record",
    "write_model",
    "SOURCE",
]

SOURCE = "pie_audit.predict"

# Messages are constants so that tests (and users' scripts) see the same wording every time.
NOT_A_MODULE = "model must be a torch.nn.Module, an .onnx file or an onnxruntime.InferenceSession, got {what}"
DEVICE_FOR_ONNX = "device is where a torch model runs; an ONNX model runs on its execution provider (provider=)"
PROVIDER_FOR_SESSION = "provider is for an .onnx file; an onnxruntime.InferenceSession runs on the providers it was made with"
PROVIDER_FOR_TORCH = "provider is the onnxruntime execution provider of an ONNX model; a torch model runs on its device (device=)"
NOT_ITERABLE = "loader must be an iterable of batches (a torch.utils.data.DataLoader), got {what}"
BAD_CLASSES = "classes must be a non-empty sequence of strings"
BAD_BATCH = "batch {index}: expected (inputs, labels) or (inputs, labels, example_ids), got {what}"
MIXED_BATCHES = "batch {index}: has {n} items, but batch 0 had {first}; every batch must have one structure"
NOT_A_TENSOR = "batch {index}: inputs are {what}; expected a tensor"
NOT_INTEGERS = "batch {index}: {what} must be a 1-D array of integers, got {detail}"
BAD_IDS = "example_ids must be a 1-D array of integers, got {detail}"
LENGTH_MISMATCH = "batch {index}: {n} {what} for {n_out} rows of model output"
BAD_OUTPUT = "batch {index}: the model returned {what}; expected a tensor of logits of shape (batch, classes)"
NON_FINITE = "batch {index}: the model returned non-finite logits (NaN or infinity)"
CLASS_COUNT = "batch {index}: the model returned {n} logits per example, but {expected}"
LABEL_RANGE = "batch {index}: label {label} is not one of the model's {n} classes (0 .. {last})"
EMPTY_LOADER = "the loader yielded no examples"
IDS_TWICE = "example_ids given, but the loader yields example ids too; give them one way"
IDS_LENGTH = "example_ids has {n} entries, but the loader yielded {total} examples"
DUPLICATE_ID = "example id {value} appears more than once"
MEASURED_KEY = "run: {key!r} is measured by predict; remove it"
BAD_RUN = "run must be a mapping of JSON values, got {what}"

_CONV_LINEAR = {"Conv1d": "conv", "Conv2d": "conv", "Conv3d": "conv", "Linear": "linear"}
_MEASURED = (
    "format", "source", "model_class", "n_parameters", "classes", "sparsity", "accuracy",
    "device", "versions", "finished_at", "runtime", "onnx", "source_bytes", "cost",
)  # fmt: skip
_MEASURED_DATASET = ("n_examples",)


@dataclass(frozen=True, eq=False)
class Evaluation:
    """What one model predicted, sorted by example id.

    Attributes
    ----------
    example_ids : ndarray of shape (N,), int64
        Strictly increasing.
    labels : ndarray of shape (N,), int64
    probabilities : ndarray of shape (N, C), float32
        Softmax of the model's logits.
    """

    example_ids: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray

    @property
    def accuracy(self) -> float:
        """Fraction of examples whose arg-max probability is their label."""
        return float((self.probabilities.argmax(axis=1) == self.labels).mean())


def predict(
    model: nn.Module | str | Path | Any,
    loader: Iterable[Any],
    out: str | Path,
    *,
    classes: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    example_ids: Any = None,
    run: Mapping[str, Any] | None = None,
    provider: str | None = None,
) -> Path:
    """Evaluate a model on a data loader and write one model directory in the interchange format.

    The model is run in eval mode under ``torch.no_grad()``; its training mode is restored
    afterwards. The directory is written under a temporary name and renamed into place, so it
    appears whole or not at all.

    Parameters
    ----------
    model : nn.Module, str, Path or onnxruntime.InferenceSession
        A classifier returning logits of shape (B, C) for inputs of shape (B, ...); the
        probabilities written are their softmax. A model that already returns probabilities
        gets a second softmax: its predictions stay right, its ``prob_*`` columns do not.
        An ``.onnx`` file, or a session, is run by ONNX Runtime on images of shape
        (B, C, H, W) (``docs/predict.md``); an ONNX graph ending in ``Softmax`` is taken as
        probabilities.
    loader : iterable of batches
        A :class:`torch.utils.data.DataLoader` (or any iterable) yielding ``(x, y)`` or
        ``(x, y, example_id)``: ``x`` a tensor of shape (B, ...), ``y`` integer labels of shape
        (B,), ``example_id`` unique integers of shape (B,). Every batch has the same structure.
    out : str or Path
        The model directory to write, e.g. ``my-pruned/model-0``; must not exist.
    classes : sequence of str, optional
        Class names indexed by label, written to ``run.json``; the model must return one logit
        per class.
    device : str or torch.device, optional
        Where to run: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ... The
        model is moved there, as ``model.to(device)`` does, and stays there. Default: where the
        model's parameters are (the CPU for a model without any).
    example_ids : array-like of shape (N,), optional
        Ids of the examples in the loader's order, when the loader does not yield them.
        Default: ``0 .. N-1`` in the loader's order (a loader must then not shuffle).
    run : mapping, optional
        More provenance for ``run.json``, such as ``{"seed": 3, "parent": {"seed": 3}}`` (a
        pruned model's parent lets the audit pair it with its baseline model) or
        ``{"dataset": {"name": "my-set", "hash": ...}}``. What :func:`predict` measures itself
        cannot be given here.
    provider : str, optional
        The onnxruntime execution provider of an ``.onnx`` file; default
        ``CPUExecutionProvider``. A session runs on its own.

    Returns
    -------
    Path
        ``out``, holding ``predictions.parquet`` (``example_id``, ``label``, ``prediction``,
        ``prob_0`` .. ``prob_{C-1}``, sorted by id) and ``run.json``: ``source``
        (``"pie_audit.predict"``), ``model_class``, ``n_parameters``, ``classes``,
        ``dataset`` (``n_examples``, with what ``run`` says of it),
        ``sparsity`` (the fraction of exactly-zero weights, overall and per layer, of every conv
        and linear layer but the last linear one, as ``pie-audit train`` measures it),
        ``accuracy``, ``device``, ``versions`` and ``finished_at``.

    Raises
    ------
    OutputError
        ``out`` exists, or cannot be written.
    ConfigError
        An argument of the wrong type, ids given twice, an empty loader, or ``run`` naming a
        measured entry.
    FormatError
        A batch of the wrong structure, labels or ids that are not integers or do not match the
        model's output in length, labels outside the model's classes, a model output that is not
        finite logits of shape (B, C), or duplicate example ids.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    >>> loader = DataLoader(TensorDataset(x, y), batch_size=4)
    >>> predict(torch.nn.Linear(4, 3), loader, "my-models/linear")  # doctest: +SKIP
    PosixPath('my-models/linear')
    """
    from torch import nn

    out = Path(out)
    _check_out(out)
    classes = _check_classes(classes)
    extra = _check_run(run)
    model = _onnx_model(model, device=device, provider=provider, n_classes=_count(classes), extra=extra)
    if not isinstance(model, nn.Module):
        raise ConfigError(NOT_A_MODULE.format(what=type(model).__name__))
    ids = None if example_ids is None else _integers(example_ids)
    target = _resolve_device(device, model)
    model.to(target)
    evaluation = evaluate(model, model, loader, device=target, example_ids=ids, n_classes=_count(classes))
    # No dataset hash: pie-audit's covers the images, which a loader's examples are too many to keep.
    dataset = {"n_examples": int(evaluation.labels.size)}
    record = model_record(model, evaluation, classes=classes, device=target, dataset=dataset, extra=extra)
    return write_model(out, evaluation, record)


def _onnx_model(
    model: Any, *, device: Any, provider: str | None, n_classes: int | None, extra: dict[str, Any]
) -> Any:
    """An :class:`~._onnx.OnnxModule` for an ``.onnx`` path or a session (``extra`` gains the
    file's provenance); any other model as it is."""
    from ._loading import ONNX
    from ._onnx import is_onnx_file, is_session, load_onnx_file, onnx_session

    onnx_file = isinstance(model, (str, Path)) and is_onnx_file(model)
    session = is_session(model)
    if not (onnx_file or session):
        if provider is not None:
            raise ConfigError(PROVIDER_FOR_TORCH)
        return model
    if device is not None:
        raise ConfigError(DEVICE_FOR_ONNX)
    if session:
        if provider is not None:
            raise ConfigError(PROVIDER_FOR_SESSION)
        return onnx_session(model, num_classes=n_classes)
    path = Path(model)
    module, sha256 = load_onnx_file(path, image_shape=None, num_classes=n_classes, provider=provider)
    extra.update({"source_file": str(path.resolve()), "source_sha256": sha256, "source_format": ONNX})
    return module


def _check_out(out: Path) -> None:
    # Checked before the model runs, which may take long.
    if out.exists() or out.is_symlink():
        raise OutputError(ALREADY_EXISTS.format(path=out))


def _check_classes(classes: Sequence[str] | None) -> tuple[str, ...] | None:
    if classes is None:
        return None
    if isinstance(classes, str) or not isinstance(classes, Iterable):
        raise ConfigError(BAD_CLASSES)
    classes = tuple(classes)
    if not classes or not all(isinstance(c, str) for c in classes):
        raise ConfigError(BAD_CLASSES)
    return classes


def _count(classes: tuple[str, ...] | None) -> int | None:
    return len(classes) if classes is not None else None


def _check_run(run: Mapping[str, Any] | None) -> dict[str, Any]:
    if run is None:
        return {}
    if not isinstance(run, Mapping):
        raise ConfigError(BAD_RUN.format(what=type(run).__name__))
    for key in run:
        if key in _MEASURED:
            raise ConfigError(MEASURED_KEY.format(key=key))
    dataset = run.get("dataset")
    if dataset is not None:
        if not isinstance(dataset, Mapping):
            raise ConfigError(BAD_RUN.format(what=f"'dataset' {type(dataset).__name__}"))
        for key in _MEASURED_DATASET:
            if key in dataset:
                raise ConfigError(MEASURED_KEY.format(key=f"dataset.{key}"))
    try:
        # A copy that cannot change under us, and a failure now rather than after the model ran.
        return json.loads(json.dumps(dict(run)))
    except (TypeError, ValueError) as e:
        raise ConfigError(BAD_RUN.format(what=f"a value JSON cannot hold ({e})")) from e


def _resolve_device(device: str | torch.device | None, model: nn.Module) -> torch.device:
    import torch

    if device is None:
        tensor = next(model.parameters(), None)
        if tensor is None:
            tensor = next(model.buffers(), None)
        return tensor.device if tensor is not None else torch.device("cpu")
    if isinstance(device, torch.device):
        return device
    from ..training import resolve_device

    return resolve_device(device)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block, then the model's own mode again."""
    was_training = model.training
    try:
        model.train(False)
        switched = True
    except NotImplementedError:
        # A torch.export program's module refuses to switch: its mode was fixed when exported.
        switched = False
    try:
        yield
    finally:
        if switched:
            model.train(was_training)


def _describe(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def _integers(values: Any, *, what: str = "", index: int | None = None) -> np.ndarray:
    """A 1-D int64 array of ``values``: ``what`` of batch ``index``, or the ``example_ids`` argument."""
    import torch

    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as e:
        array, problem = None, str(e)
    else:
        problem = None
        if array.ndim != 1:
            problem = f"shape {array.shape}"
        elif array.size and not np.issubdtype(array.dtype, np.integer):
            problem = f"dtype {array.dtype}"
    if problem is not None:
        if index is None:
            raise ConfigError(BAD_IDS.format(detail=problem))
        raise FormatError(NOT_INTEGERS.format(index=index, what=what, detail=problem))
    return array.astype(np.int64)


def evaluate(
    model: nn.Module,
    forward: Callable[[torch.Tensor], Any],
    loader: Iterable[Any],
    *,
    device: torch.device,
    example_ids: np.ndarray | None,
    n_classes: int | None,
) -> Evaluation:
    """Run ``forward`` (``model`` or a wrapper of it) over ``loader``; validate every batch.

    Parameters
    ----------
    model : nn.Module
        Put in eval mode for the run, then back in its own mode.
    forward : callable
        Maps inputs of shape (B, ...), on ``device``, to logits of shape (B, C).
    loader : iterable of batches
        ``(x, y)`` or ``(x, y, example_id)``, as :func:`predict` describes.
    device : torch.device
        Where the inputs are moved.
    example_ids : ndarray of shape (N,), optional
        Ids in the loader's order, for a loader of 2-tuples; default ``0 .. N-1``.
    n_classes : int, optional
        The number of logits every batch must have; default batch 0's.

    Returns
    -------
    Evaluation

    Raises
    ------
    ConfigError, FormatError
        As :func:`predict` describes.
    """
    import torch

    if isinstance(loader, (str, bytes)) or not isinstance(loader, Iterable):
        raise ConfigError(NOT_ITERABLE.format(what=type(loader).__name__))
    labels, ids, probabilities = [], [], []
    first: int | None = None
    with _eval_mode(model), torch.no_grad():
        for index, batch in enumerate(loader):
            x, y, batch_ids = _unpack(batch, index=index, first=first)
            if first is None:
                first = len(batch)
                if batch_ids is not None and example_ids is not None:
                    raise ConfigError(IDS_TWICE)
            logits = forward(x.to(device))
            # Every batch must have the first one's classes, or the dataset's when they are known.
            width = n_classes if n_classes is not None else probabilities[0].shape[1] if probabilities else None
            named = n_classes is not None
            probabilities.append(_softmax(logits, y, batch_ids, index=index, width=width, named=named))
            labels.append(y)
            if batch_ids is not None:
                ids.append(batch_ids)
    total = sum(y.size for y in labels)
    if total == 0:
        raise ConfigError(EMPTY_LOADER)
    if first == 3:
        all_ids = np.concatenate(ids)
    elif example_ids is not None:
        if example_ids.size != total:
            raise ConfigError(IDS_LENGTH.format(n=example_ids.size, total=total))
        all_ids = example_ids
    else:
        all_ids = np.arange(total, dtype=np.int64)
    order = np.argsort(all_ids, kind="stable")
    all_ids = all_ids[order]
    repeated = np.flatnonzero(np.diff(all_ids) == 0)
    if repeated.size:
        raise FormatError(DUPLICATE_ID.format(value=all_ids[repeated[0]]))
    return Evaluation(
        example_ids=all_ids,
        labels=np.concatenate(labels)[order],
        probabilities=np.concatenate(probabilities).astype(np.float32, copy=False)[order],
    )


def _unpack(batch: Any, *, index: int, first: int | None) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None]:
    """Inputs, labels and ids (None for a 2-tuple) of one batch, after checking its structure."""
    import torch

    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise FormatError(BAD_BATCH.format(index=index, what=_describe(batch)))
    if first is not None and len(batch) != first:
        raise FormatError(MIXED_BATCHES.format(index=index, n=len(batch), first=first))
    if not isinstance(batch[0], torch.Tensor):
        raise FormatError(NOT_A_TENSOR.format(index=index, what=_describe(batch[0])))
    y = _integers(batch[1], what="labels", index=index)
    ids = _integers(batch[2], what="example ids", index=index) if len(batch) == 3 else None
    return batch[0], y, ids


def _softmax(
    logits: Any, y: np.ndarray, ids: np.ndarray | None, *, index: int, width: int | None, named: bool
) -> np.ndarray:
    """Probabilities of shape (B, C) from one batch's logits, after checking them against its labels."""
    import torch

    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        if isinstance(logits, torch.Tensor):
            raise FormatError(BAD_OUTPUT.format(index=index, what=f"a tensor of shape {tuple(logits.shape)}"))
        raise FormatError(BAD_OUTPUT.format(index=index, what=_describe(logits)))
    n_out, n_logits = logits.shape
    for what, values in (("labels", y), ("example ids", ids)):
        if values is not None and values.size != n_out:
            raise FormatError(LENGTH_MISMATCH.format(index=index, n=values.size, what=what, n_out=n_out))
    if width is not None and n_logits != width:
        expected = f"there are {width} classes" if named else f"batch 0 had {width}"
        raise FormatError(CLASS_COUNT.format(index=index, n=n_logits, expected=expected))
    if y.size and (y.min() < 0 or y.max() >= n_logits):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise FormatError(LABEL_RANGE.format(index=index, label=bad, n=n_logits, last=n_logits - 1))
    logits = logits.float()  # bf16 and fp16 outputs: softmax in float32, as pie-audit train does
    if not torch.isfinite(logits).all():
        raise FormatError(NON_FINITE.format(index=index))
    return torch.softmax(logits, dim=1).cpu().numpy()


def measured_layers(model: nn.Module) -> list[str]:
    """Names of the weights whose sparsity :func:`predict` records.

    Every conv and linear layer's ``weight`` but the last linear layer's (the classifier, which
    pruning leaves dense), as :func:`pie_audit.training._pruning.prunable_weights` chooses them, so that a
    model's measured sparsity is comparable with ``pie-audit train``'s. Found in plain modules,
    TorchScript modules (by their original class name), ``torch.export`` modules (by the
    module types their graph records) and int8 models (by their quantized weights, named as
    the float model's, :func:`pie_audit.training._quantization.int8_parameters`).

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    list of str
        Parameter names, in module order.
    """
    import torch
    from torch import nn

    int8 = _int8_parameters(model)
    if int8 is not None:
        # Quantized layers hold their weights outside named_parameters(); a linear weight is 2-D.
        layers = [(name, "linear" if w.ndim == 2 else "conv") for name, w in int8.items() if name.endswith("weight")]
        return _all_but_classifier(layers)
    traced: dict[str, str] = {}
    graph = getattr(model, "graph", None)
    if isinstance(model, torch.fx.GraphModule) and graph is not None:
        for node in graph.nodes:
            for path, kind in (node.meta.get("nn_module_stack") or {}).values():
                name = kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"
                traced.setdefault(path, name.rsplit(".", 1)[-1])
    params = dict(model.named_parameters())
    layers: list[tuple[str, str]] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            kind = "linear"
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            kind = "conv"
        elif isinstance(module, torch.jit.ScriptModule):
            kind = _CONV_LINEAR.get(getattr(module, "original_name", ""))
        else:
            kind = _CONV_LINEAR.get(traced.get(name, ""))
        weight = f"{name}.weight" if name else "weight"
        if kind is not None and weight in params:
            layers.append((weight, kind))
    return _all_but_classifier(layers)


def _all_but_classifier(layers: list[tuple[str, str]]) -> list[str]:
    """The weights of ``(weight, kind)`` pairs in module order, but the last linear one."""
    final = max((i for i, (_, kind) in enumerate(layers) if kind == "linear"), default=None)
    return [weight for i, (weight, _) in enumerate(layers) if i != final]


def _int8_parameters(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The weights and biases of an int8 model by their float names; None for any other model."""
    from ..training import int8_parameters, is_quantized_state_dict

    state = model.state_dict()
    return int8_parameters(state) if is_quantized_state_dict(state) else None


def _model_class(model: nn.Module) -> str:
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        # TorchScript keeps the original class's qualified name under its own prefix.
        return str(model._c.qualified_name).removeprefix("__torch__.")
    graph = getattr(model, "graph", None)
    if isinstance(model, torch.fx.GraphModule) and graph is not None:
        for node in graph.nodes:
            for path, kind in (node.meta.get("nn_module_stack") or {}).values():
                if path == "":
                    return kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"
    return f"{type(model).__module__}.{type(model).__qualname__}"


def model_record(
    model: nn.Module,
    evaluation: Evaluation,
    *,
    classes: tuple[str, ...] | None,
    device: torch.device,
    dataset: Mapping[str, Any],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``run.json`` of an evaluated model: what ``extra`` says, then what was measured.

    Parameters
    ----------
    model : nn.Module
        The model evaluated, whose class, parameters and sparsity are recorded.
    evaluation : Evaluation
        What it predicted (for ``accuracy``).
    classes : tuple of str or None
    device : torch.device
        Where it ran.
    dataset : mapping
        Measured ``dataset`` entries, over those of ``extra["dataset"]``.
    extra : mapping
        Provenance from the caller, already checked to name nothing measured here.

    Returns
    -------
    dict
        A :func:`pie_audit.interchange.run_record`; entries whose value is ``None`` are left out.
    """
    import torch

    from ..training import int8_weights, sparsity_report
    from ._onnx import OnnxModule

    onnx: dict[str, Any] = {}
    if isinstance(model, OnnxModule):
        # The weights are in the graph, measured when it was read; it ran on its provider.
        onnx = model.run_fields()
        model_class, n_parameters = onnx.pop("model_class", None), onnx.pop("n_parameters", None)
        sparsity, device = onnx.pop("sparsity", None), model.device_name
    else:
        layers = measured_layers(model)
        int8 = _int8_parameters(model)
        with torch.no_grad():
            if int8 is not None:
                # The zeros of int8 weights are their zero points; the report adds their dtypes.
                params = int8
                sparsity = int8_weights(model.state_dict(), names=layers) if layers else None
            else:
                params = {name: p.detach() for name, p in model.named_parameters()}
                sparsity = sparsity_report(params, layers) if layers else None
            n_parameters = int(sum(p.numel() for p in params.values()))
        model_class = _model_class(model)
    fields = {
        "source": SOURCE,
        **{key: value for key, value in extra.items() if key != "dataset"},
        **{key: value for key, value in onnx.items() if key not in ("runtime", "onnx")},
        "model_class": model_class,
        "n_parameters": n_parameters,
        "classes": list(classes) if classes is not None else None,
        "dataset": {**extra.get("dataset", {}), **dataset},
        "sparsity": sparsity,
        "accuracy": evaluation.accuracy,
        "device": str(device),
        "runtime": onnx.get("runtime"),
        "onnx": onnx.get("onnx"),
        "versions": {"pie_audit": __version__, "python": platform.python_version(), "torch": torch.__version__},
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return run_record({key: value for key, value in fields.items() if value is not None})


def write_model(out: Path, evaluation: Evaluation, record: Mapping[str, Any]) -> Path:
    """Write ``out`` (``predictions.parquet`` and ``run.json``) atomically; return it."""
    with atomic_directory(out) as tmp:
        write_predictions(
            tmp / PREDICTIONS_FILE, evaluation.example_ids, evaluation.labels, evaluation.probabilities
        )
        write_json(tmp / RUN_FILE, record)
    return out
