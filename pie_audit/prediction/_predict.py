"""Evaluating one's own PyTorch models into the interchange format.

:func:`predict` runs a model in memory over a data loader and writes one model directory;
:func:`predict_files` evaluates saved model files on a built-in dataset's test split and writes one
model directory per file into a population (``pie-audit predict``). Both write each directory
atomically, so a reader never sees a half-written model.

Model files are untrusted input. :func:`load_model_file` tells their kind from the archive's
listing before anything in them is deserialised:

- a state dict (``torch.save(model.state_dict())``) is read with
  ``torch.load(weights_only=True)``, which builds tensors and plain containers and refuses every
  other Python object, so a pickle that would run code is refused;
- TorchScript archives and ``torch.export`` programs are programs, not just weights (PyTorch:
  "running untrusted models is equivalent to running untrusted code"; ``torch.export.load``
  also unpickles parts of the file without ``weights_only``). They are loaded only with
  ``trust_code=True``, and a ``torch.export`` archive is even then checked first so that its
  pickles are never read without ``weights_only``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pickle
import platform
import re
import shutil
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._atomic import ALREADY_EXISTS, NOT_A_DIRECTORY, atomic_directory, write_json
from .._version import __version__
from ..errors import ConfigError, FormatError, OutputError, PieAuditError
from ..interchange import MODEL_FILE, PREDICTIONS_FILE, RUN_FILE, read_run, run_record, write_predictions

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..data import Dataset

# torch, and the modules of ours that need it, are imported where they are used, so that
# ``import pie_audit`` (and every CLI command) does not pay torch's second of start-up.

__all__ = [
    "predict",
    "predict_files",
    "load_model_file",
    "LoadedModel",
    "model_name",
    "measured_layers",
    "STATE_DICT",
    "TORCHSCRIPT",
    "TORCH_EXPORT",
    "DEFAULT_BATCH_SIZE",
]

#: The kinds of model file :func:`load_model_file` accepts, as ``run.json`` ``source_format`` names them.
STATE_DICT = "state_dict"
TORCHSCRIPT = "torchscript"
TORCH_EXPORT = "torch.export"
_KIND_WORDS = {
    STATE_DICT: "state dict",
    TORCHSCRIPT: "TorchScript archive",
    TORCH_EXPORT: "torch.export program",
}
#: Test images per forward pass in :func:`predict_files`; the trainer evaluates with the same.
DEFAULT_BATCH_SIZE = 1024
SOURCE = "pie_audit.predict"

# ---- predict(): messages --------------------------------------------------------------------
NOT_A_MODULE = "model must be a torch.nn.Module, got {what}"
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

# ---- predict_files(): messages ----------------------------------------------------------------
NO_FILES = "no model file given"
BAD_BATCH_SIZE = "batch size must be >= 1, got {batch_size}"
NO_SUCH_FILE = "{path}: no such file"
UNREADABLE = "{path}: cannot read it ({reason})"
BAD_MODEL_NAME = "{path}: the model would be named {name!r}, which starts with '.'; rename the file"
SAME_NAME = "{path} and {other} would both be written as model {name!r}; evaluate them into different populations"
NOT_A_MODEL = (
    "{path}: not a PyTorch model file ({reason}); expected a state dict saved with torch.save, "
    "a TorchScript archive or a torch.export .pt2"
)
UNKNOWN_ZIP = (
    "{path}: a zip archive, but not a PyTorch model file (no data.pkl, constants.pkl or "
    "archive_format inside)"
)
UNSAFE_PICKLE = (
    "{path}: refused: a pickle of more than tensors ({detail}); pie-audit reads pickles only with "
    "torch.load(weights_only=True), which never runs code from the file (save model.state_dict() "
    "rather than the model)"
)
NOT_A_STATE_DICT = (
    "{path}: a torch.save file holding {what}, not a state dict (a mapping of parameter names to "
    "tensors){hint}"
)
NEEDS_TRUST = (
    "{path}: a {kind}, which is a program and not just weights: loading and running it runs code "
    "from the file, so pie-audit does so only when told to trust it (--trust-code, "
    "trust_code=True); for a model from an untrusted source, evaluate its state dict instead"
)
UNSAFE_EXPORT = (
    "{path}: refused: a torch.export program that {reason}; torch.export.load would unpickle "
    "that without weights_only, so pie-audit does not load it even when trusted"
)
CANNOT_LOAD = "{path}: a {kind} that {loader} cannot load ({reason})"
NO_ARCH = (
    "{path}: a state dict, which does not name its architecture; pass --arch ({choices}) or keep "
    "the run.json written beside it"
)
ARCH_CONFLICT = "{path}: {run} says arch {found!r}, but {arch!r} was given"
DATASET_CONFLICT = "{path}: {run} says the model was trained on {found!r}, not {dataset!r}; pass --dataset {found}"
SPLIT_CONFLICT = (
    "{path}: {run} records {dataset}'s test split as {found}, but it is {now} here; the model was "
    "evaluated on other examples"
)
STATE_DICT_MISMATCH = "{path}: a state dict that does not fit {arch} for {dataset} ({reason})"
FORWARD_FAILED = "the {kind} fails on {dataset}'s test images of shape {shape} ({reason})"
IN_FILE = "{path}: {error}"

_CONV_LINEAR = {"Conv1d": "conv", "Conv2d": "conv", "Conv3d": "conv", "Linear": "linear"}
_MEASURED = (
    "format", "source", "model_class", "n_parameters", "classes", "sparsity", "accuracy",
    "device", "versions", "finished_at",
)  # fmt: skip
_MEASURED_DATASET = ("n_examples",)


@dataclass(frozen=True, eq=False)
class _Evaluation:
    """What one model predicted, sorted by example id."""

    example_ids: np.ndarray  # (N,) int64, strictly increasing
    labels: np.ndarray  # (N,) int64
    probabilities: np.ndarray  # (N, C) float32

    @property
    def accuracy(self) -> float:
        return float((self.probabilities.argmax(axis=1) == self.labels).mean())


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model read from a file by :func:`load_model_file`.

    Attributes
    ----------
    module : nn.Module
        Ready to evaluate, on the CPU.
    kind : {"state_dict", "torchscript", "torch.export"}
        What the file was.
    path : Path
    sha256 : str
        Hex SHA-256 of the bytes that were loaded.
    arch : str or None
        Registry architecture of a state dict; ``None`` for the other kinds.
    run : dict or None
        The ``run.json`` beside a ``model.pt``, when there is one.
    batch_size : int or None
        The only batch size a ``torch.export`` program exported with a static batch accepts.
    int8 : bool
        An int8 state dict (:mod:`pie_audit.training._quantization`): its kernels run on the CPU only,
        with the x86 quantized engine.
    """

    module: nn.Module
    kind: str
    path: Path
    sha256: str
    arch: str | None = None
    run: dict[str, Any] | None = None
    batch_size: int | None = None
    int8: bool = False


# ============================================================================================
# predict(): one model in memory
# ============================================================================================


def predict(
    model: nn.Module,
    loader: Iterable[Any],
    out: str | Path,
    *,
    classes: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    example_ids: Any = None,
    run: Mapping[str, Any] | None = None,
) -> Path:
    """Evaluate a model on a data loader and write one model directory in the interchange format.

    The model is run in eval mode under ``torch.no_grad()``; its training mode is restored
    afterwards. The directory is written under a temporary name and renamed into place, so it
    appears whole or not at all.

    Parameters
    ----------
    model : nn.Module
        A classifier returning logits of shape (B, C) for inputs of shape (B, ...); the
        probabilities written are their softmax. A model that already returns probabilities
        gets a second softmax: its predictions stay right, its ``prob_*`` columns do not.
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
    if not isinstance(model, nn.Module):
        raise ConfigError(NOT_A_MODULE.format(what=type(model).__name__))
    classes = _check_classes(classes)
    extra = _check_run(run)
    ids = None if example_ids is None else _integers(example_ids)
    target = _resolve_device(device, model)
    model.to(target)
    evaluation = _evaluate(model, model, loader, device=target, example_ids=ids, n_classes=_count(classes))
    # No dataset hash: pie-audit's covers the images, which a loader's examples are too many to keep.
    dataset = {"n_examples": int(evaluation.labels.size)}
    record = _record(model, evaluation, classes=classes, device=target, dataset=dataset, extra=extra)
    return _write(out, evaluation, record)


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


def _evaluate(
    model: nn.Module,
    forward: Callable[[torch.Tensor], Any],
    loader: Iterable[Any],
    *,
    device: torch.device,
    example_ids: np.ndarray | None,
    n_classes: int | None,
) -> _Evaluation:
    """Run ``forward`` (``model`` or a wrapper of it) over ``loader``; validate every batch."""
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
    return _Evaluation(
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


def _record(
    model: nn.Module,
    evaluation: _Evaluation,
    *,
    classes: tuple[str, ...] | None,
    device: torch.device,
    dataset: Mapping[str, Any],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    import torch

    from ..training import sparsity_report
    from ..training import int8_weights

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
        n_parameters = sum(p.numel() for p in params.values())
    record = run_record({"source": SOURCE})
    record |= {key: value for key, value in extra.items() if key != "dataset"}
    record |= {
        "model_class": _model_class(model),
        "n_parameters": int(n_parameters),
        "classes": list(classes) if classes is not None else None,
        "dataset": {**extra.get("dataset", {}), **dataset},
        "sparsity": sparsity,
        "accuracy": evaluation.accuracy,
        "device": str(device),
        "versions": {"pie_audit": __version__, "python": platform.python_version(), "torch": torch.__version__},
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return {key: value for key, value in record.items() if value is not None}


def _write(out: Path, evaluation: _Evaluation, record: Mapping[str, Any]) -> Path:
    with atomic_directory(out) as tmp:
        write_predictions(
            tmp / PREDICTIONS_FILE, evaluation.example_ids, evaluation.labels, evaluation.probabilities
        )
        write_json(tmp / RUN_FILE, record)
    return out


# ============================================================================================
# predict_files(): saved models on a built-in dataset
# ============================================================================================


def model_name(path: str | Path) -> str:
    """The model directory name of a model file: its stem, or its directory's name for ``model.pt``.

    Examples
    --------
    >>> model_name("runs/x/seed-0003/model.pt"), model_name("exports/int8.pt2")
    ('seed-0003', 'int8')
    """
    path = Path(path)
    if path.name == MODEL_FILE:
        return path.absolute().parent.name
    return path.stem


def predict_files(
    files: Sequence[str | Path],
    *,
    dataset: str | Dataset,
    out: str | Path,
    arch: str | None = None,
    data_root: str | Path = "data",
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    trust_code: bool = False,
    command: Sequence[str] | None = None,
) -> list[Path]:
    """Evaluate saved models on a dataset's test split into a population directory.

    Every file is loaded (:func:`load_model_file`) and evaluated before anything is written; then
    one model directory per file is written atomically, named by :func:`model_name`. On any
    error nothing is left behind: no model directory and no new population directory.

    Parameters
    ----------
    files : sequence of str or Path
        Model files: state dicts of a registry architecture (``model.pt`` from
        ``pie-audit train``; int8 ones too, from :mod:`pie_audit.training._quantization`), TorchScript
        archives, or ``torch.export`` programs (``.pt2``).
    dataset : str or Dataset
        A registry name (:data:`pie_audit.data.DATASETS`) or a loaded dataset.
    out : str or Path
        The population directory; created if missing. It must not hold a model of the same name.
    arch : str, optional
        Architecture of state dicts (:data:`pie_audit.training._models.ARCHITECTURES`). Default: the
        ``arch`` of the ``run.json`` beside a ``model.pt``.
    data_root : str or Path, default "data"
        Where the dataset's files are looked up.
    device : str, default "auto"
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"`` or ``"mps"``. Int8 models
        run on the CPU whatever it says, as their kernels exist only there.
    batch_size : int, default 1024
        Test images per forward pass (a ``torch.export`` program with a static batch size is
        fed batches of exactly that size).
    trust_code : bool, default False
        Allow TorchScript archives and ``torch.export`` programs, which are programs and run
        code from the file.
    command : sequence of str, optional
        The command line, recorded in each ``run.json``.

    Returns
    -------
    list of Path
        The model directories written, in the order of ``files``. Each ``run.json`` holds what
        :func:`predict` records, plus ``source_file`` (absolute path), ``source_sha256``,
        ``source_format``, ``arch`` (state dicts), ``classes`` and ``dataset`` (``name``,
        ``split``, ``split_description``, ``n_examples`` and the ``hash`` that
        ``pie-audit train`` records).

    Raises
    ------
    ConfigError
        No files, an unknown dataset, architecture or device, a batch size below 1, a
        state dict without an architecture, or a ``run.json`` naming another dataset or
        architecture.
    FormatError
        A file that is missing, not a model, an unsafe pickle, a program without
        ``trust_code``, a state dict that does not fit the architecture, or a model that fails
        on the dataset or returns the wrong number of classes.
    OutputError
        ``out`` is not a directory, already holds a model of one of the names, or cannot be
        written.
    """
    import torch

    from ..data import Dataset, load_dataset
    from ..training import ARCHITECTURES, UNKNOWN_ARCHITECTURE
    from ..training import resolve_device

    files = [Path(f) for f in files]
    if not files:
        raise ConfigError(NO_FILES)
    if batch_size < 1:
        raise ConfigError(BAD_BATCH_SIZE.format(batch_size=batch_size))
    if arch is not None and arch not in ARCHITECTURES:
        raise ConfigError(UNKNOWN_ARCHITECTURE.format(arch=arch, choices=", ".join(ARCHITECTURES)))
    target = resolve_device(device)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(NOT_A_DIRECTORY.format(path=out))
    names: dict[str, Path] = {}
    for path in files:
        if not path.is_file():
            raise FormatError(NO_SUCH_FILE.format(path=path))
        name = model_name(path)
        if not name or name.startswith("."):
            raise FormatError(BAD_MODEL_NAME.format(path=path, name=name))
        if name in names:
            raise FormatError(SAME_NAME.format(path=names[name], other=path, name=name))
        names[name] = path
        if (out / name).exists() or (out / name).is_symlink():
            raise OutputError(ALREADY_EXISTS.format(path=out / name))
        if isinstance(dataset, str) and path.name == MODEL_FILE and (path.parent / RUN_FILE).is_file():
            # Before the dataset is loaded: a model of another dataset is the likelier mistake.
            _check_run_dataset(path, read_run(path.parent / RUN_FILE), path.parent / RUN_FILE, name=dataset)
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_root=data_root)
    labels = data.y_test.numpy()
    dataset_record = {
        "name": data.name,
        "split": "test",
        "split_description": data.split,
        "n_examples": int(labels.size),
        "hash": data.test_hash,
    }
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x_test, data.y_test), batch_size=batch_size, shuffle=False
    )

    done: list[tuple[str, _Evaluation, dict[str, Any]]] = []
    for name, path in names.items():
        loaded = load_model_file(path, arch=arch, dataset=data, trust_code=trust_code)
        # Int8 kernels exist for the CPU only, whatever device the float models get.
        device = torch.device("cpu") if loaded.int8 else target
        module = loaded.module.to(device)
        forward = _guarded(module, loaded, data)
        try:
            with _runtime(loaded):
                evaluation = _evaluate(
                    module, forward, loader, device=device, example_ids=data.example_ids, n_classes=data.num_classes
                )
        except PieAuditError as e:
            raise type(e)(IN_FILE.format(path=path, error=e)) from e
        extra = {
            "source_file": str(path.resolve()),
            "source_sha256": loaded.sha256,
            "source_format": loaded.kind,
            "arch": loaded.arch,
            "command": list(command) if command is not None else None,
        }
        record = _record(
            module, evaluation, classes=data.classes, device=device, dataset=dataset_record,
            extra={key: value for key, value in extra.items() if value is not None},
        )  # fmt: skip
        done.append((name, evaluation, record))
        del loaded, module, forward  # one model in memory at a time

    created = not out.exists()
    written: list[Path] = []
    try:
        for name, evaluation, record in done:
            written.append(_write(out / name, evaluation, record))
    except BaseException:
        # All or nothing: a population missing some of the files given would pass for complete.
        for directory in written:
            shutil.rmtree(directory, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return written


def _runtime(loaded: LoadedModel) -> contextlib.AbstractContextManager[None]:
    """What a loaded model runs under: the quantized engine its int8 weights were packed for."""
    if not loaded.int8:
        return contextlib.nullcontext()
    from ..training import quantized_engine

    return quantized_engine()


def _guarded(module: nn.Module, loaded: LoadedModel, data: Dataset) -> Callable[[torch.Tensor], Any]:
    """``module``'s forward (``module`` is ``loaded.module``, moved), in batches of the size it
    accepts, its failures told as a FormatError."""
    import torch

    size = loaded.batch_size

    def forward(x: torch.Tensor) -> Any:
        try:
            if size is None:
                return module(x)
            outputs = []
            for start in range(0, len(x), size):
                chunk = x[start : start + size]
                n = len(chunk)
                if n < size:
                    # A program exported with a static batch size accepts no other: pad with
                    # copies of the last image and drop their outputs (eval mode keeps the
                    # examples independent of each other).
                    chunk = torch.cat([chunk, chunk[-1:].expand(size - n, *chunk.shape[1:])])
                outputs.append(module(chunk)[:n])
            return torch.cat(outputs)
        except PieAuditError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever a foreign model raises is reported as its failure
            raise FormatError(
                FORWARD_FAILED.format(
                    kind=_KIND_WORDS[loaded.kind], dataset=data.name,
                    shape=(len(x), *data.image_shape), reason=_one_line(e),
                )
            ) from e  # fmt: skip

    return forward


def _one_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, shortened: torch's messages span many lines."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ============================================================================================
# Loading model files
# ============================================================================================


def load_model_file(
    path: str | Path,
    *,
    arch: str | None = None,
    dataset: Dataset,
    trust_code: bool = False,
) -> LoadedModel:
    """Load a model file safely, telling its kind from its contents.

    The file is read into memory once; its kind is told from the zip listing, before anything in
    it is deserialised, and what is hashed, checked and loaded are the same bytes.

    - **state dict** (a ``torch.save`` file): ``torch.load(weights_only=True)``, then built with
      :func:`pie_audit.training._models.build_model` for ``dataset``'s image shape and classes and
      ``load_state_dict(strict=True)``; an int8 state dict (``q.state_dict()`` of a model from
      :func:`pie_audit.training._quantization.quantize_static`) is rebuilt with
      :func:`pie_audit.training._quantization.load_quantized`. Anything that is not a mapping of names to
      tensors (or an int8 state dict) is refused, and so is any pickle that needs more than
      tensors and plain containers (a whole pickled model, a pickle that would run code).
    - **TorchScript archive** (``torch.jit.save``): ``torch.jit.load``, only with ``trust_code``.
    - **torch.export program** (``torch.export.save``, ``.pt2``): ``torch.export.load``, only
      with ``trust_code``, and only when no part of the archive would be unpickled without
      ``weights_only``.

    Parameters
    ----------
    path : str or Path
    arch : str, optional
        Architecture of a state dict; default the ``arch`` of the ``run.json`` beside a
        ``model.pt``.
    dataset : Dataset
        What the model will be evaluated on: fixes a state dict's input shape and class count,
        and is checked against the ``run.json`` beside a ``model.pt``.
    trust_code : bool, default False
        Allow the two kinds that are programs.

    Returns
    -------
    LoadedModel

    Raises
    ------
    FormatError, ConfigError
        As :func:`predict_files` describes.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
    except FileNotFoundError as e:
        raise FormatError(NO_SUCH_FILE.format(path=path)) from e
    except OSError as e:
        raise FormatError(UNREADABLE.format(path=path, reason=e.strerror or e)) from e
    sha256 = hashlib.sha256(content).hexdigest()
    kind, entries = _sniff(path, content)
    run_file = path.parent / RUN_FILE if path.name == MODEL_FILE else None
    run = read_run(run_file) if run_file is not None and run_file.is_file() else None
    if run is not None:
        _check_run_dataset(path, run, run_file, name=dataset.name, dataset=dataset)
    if kind == STATE_DICT:
        module, arch, int8 = _load_state_dict(path, content, arch=arch, run=run, run_file=run_file, dataset=dataset)
        return LoadedModel(module=module, kind=kind, path=path, sha256=sha256, arch=arch, run=run, int8=int8)
    if not trust_code:
        raise FormatError(NEEDS_TRUST.format(path=path, kind=_KIND_WORDS[kind]))
    if kind == TORCH_EXPORT:
        _check_export_archive(path, content, entries)
    module = _load_program(path, content, kind)
    return LoadedModel(module=module, kind=kind, path=path, sha256=sha256, run=run, batch_size=_static_batch(module))


def _load_program(path: Path, content: bytes, kind: str) -> nn.Module:
    """A TorchScript or torch.export module from trusted bytes (an export's already checked)."""
    import torch

    loader = "torch.jit.load" if kind == TORCHSCRIPT else "torch.export.load"
    try:
        if kind == TORCHSCRIPT:
            with warnings.catch_warnings():
                # Deprecated in favour of torch.export, but still what many teams ship.
                warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
                return torch.jit.load(io.BytesIO(content), map_location="cpu")
        return torch.export.load(io.BytesIO(content)).module()
    except Exception as e:  # noqa: BLE001 - both raise RuntimeError, AssertionError and more for bad archives
        raise FormatError(CANNOT_LOAD.format(path=path, kind=_KIND_WORDS[kind], loader=loader, reason=_one_line(e))) from e


def _sniff(path: Path, content: bytes) -> tuple[str, list[str]]:
    """The kind of a model file, from its zip listing alone (nothing is unpickled)."""
    buffer = io.BytesIO(content)
    if not zipfile.is_zipfile(buffer):
        # torch.save's legacy format, or any pickle: only torch.load(weights_only=True) reads it.
        return STATE_DICT, []
    try:
        with zipfile.ZipFile(buffer) as archive:
            entries = archive.namelist()
            format_entries = [n for n in entries if n.count("/") == 1 and n.endswith("/archive_format")]
            is_pt2 = any(archive.read(n).strip() == b"pt2" for n in format_entries)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise FormatError(NOT_A_MODEL.format(path=path, reason=f"a damaged zip archive: {e}")) from e
    if is_pt2:
        return TORCH_EXPORT, entries
    # torch.save and torch.jit.save write every entry under one top-level directory.
    if any(n.count("/") == 1 and n.endswith("/constants.pkl") for n in entries):
        return TORCHSCRIPT, entries
    if any(n.count("/") == 1 and n.endswith("/data.pkl") for n in entries):
        return STATE_DICT, entries
    raise FormatError(UNKNOWN_ZIP.format(path=path))


def _check_run_dataset(
    path: Path, run: Mapping[str, Any], run_file: Path, *, name: str, dataset: Dataset | None = None
) -> None:
    """Refuse a model whose run.json names another dataset, or (given ``dataset``) another test split."""
    recorded = run.get("dataset")
    if not isinstance(recorded, Mapping):
        return
    found = recorded.get("name")
    if isinstance(found, str) and found != name:
        raise ConfigError(DATASET_CONFLICT.format(path=path, run=run_file, found=found, dataset=name))
    if dataset is None:
        return
    found = recorded.get("hash")
    if not isinstance(found, str):
        return
    now = dataset.test_hash
    # Records written before the hash covered the images hash ids and labels only.
    if found not in (now, dataset.test_label_hash):
        conflict = SPLIT_CONFLICT.format(path=path, run=run_file, dataset=dataset.name, found=found, now=now)
        raise ConfigError(conflict)



def _load_state_dict(
    path: Path,
    content: bytes,
    *,
    arch: str | None,
    run: Mapping[str, Any] | None,
    run_file: Path | None,
    dataset: Dataset,
) -> tuple[nn.Module, str, bool]:
    """The model of a state dict file, its architecture, and whether it is int8."""
    import torch

    from ..training import ARCHITECTURES, UNKNOWN_ARCHITECTURE, build_model
    from ..training import is_quantized_state_dict, load_quantized

    # Loaded before anything else is asked of the file: whatever else is wrong with it, a
    # pickle that is not weights is refused as such.
    try:
        with warnings.catch_warnings():
            # Said of every pickle not written by torch.save; the unpickler refuses what it cannot read.
            warnings.filterwarnings("ignore", category=UserWarning, message="Detected pickle protocol")
            # Said by torch's own rebuilding of quantized tensors (int8 models), not by the file.
            warnings.filterwarnings("ignore", category=UserWarning, message="TypedStorage is deprecated")
            warnings.filterwarnings("ignore", category=UserWarning, message="torch.quantize_per_tensor")
            state = torch.load(io.BytesIO(content), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        detail = _weights_only_refusal(e)
        if detail is not None:
            raise FormatError(UNSAFE_PICKLE.format(path=path, detail=detail)) from e
        raise FormatError(NOT_A_MODEL.format(path=path, reason=_one_line(e))) from e
    except (RuntimeError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError) as e:
        raise FormatError(NOT_A_MODEL.format(path=path, reason=_one_line(e))) from e
    int8 = is_quantized_state_dict(state)
    if not int8 and (
        not isinstance(state, Mapping)
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        what = f"a {type(state).__name__}"
        hint = ""
        if isinstance(state, Mapping):
            keys = ", ".join(repr(k) for k in list(state)[:4])
            what = f"a {type(state).__name__} with keys {keys}"
            hint = "; save model.state_dict() alone"
        raise FormatError(NOT_A_STATE_DICT.format(path=path, what=what, hint=hint))
    recorded = run.get("arch") if run is not None else None
    if arch is None:
        if not isinstance(recorded, str):
            raise ConfigError(NO_ARCH.format(path=path, choices=", ".join(ARCHITECTURES)))
        if recorded not in ARCHITECTURES:
            unknown = UNKNOWN_ARCHITECTURE.format(arch=recorded, choices=", ".join(ARCHITECTURES))
            raise ConfigError(IN_FILE.format(path=run_file, error=unknown))
        arch = recorded
    elif isinstance(recorded, str) and recorded != arch:
        raise ConfigError(ARCH_CONFLICT.format(path=path, run=run_file, found=recorded, arch=arch))
    channels, height, _ = dataset.image_shape
    shape = {"in_channels": channels, "image_size": height, "num_classes": dataset.num_classes}
    if int8:
        try:
            return load_quantized(arch, **shape, state_dict=state), arch, True
        except PieAuditError as e:
            raise type(e)(IN_FILE.format(path=path, error=e)) from e
    module = build_model(arch, **shape)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise FormatError(
            STATE_DICT_MISMATCH.format(path=path, arch=arch, dataset=dataset.name, reason=_one_line(e))
        ) from e
    return module, arch, False


def _weights_only_refusal(error: BaseException) -> str | None:
    """What ``torch.load(weights_only=True)`` refused, or None if it failed for another reason."""
    # torch names the first global or pickle opcode it refused; its advice on allowing it is not ours.
    found = re.search(r"Unsupported global: GLOBAL \S+|Unsupported operand \d+", str(error))
    if found is not None:
        return found.group(0)
    return "weights_only refused it" if "Weights only load failed" in str(error) else None


def _check_export_archive(path: Path, content: bytes, entries: list[str]) -> None:
    """Refuse a ``.pt2`` whose loading would unpickle anything without ``weights_only``.

    ``torch.export.load`` reads pickled weights and constants, "opaque" objects and the legacy
    formats with ``weights_only=False`` or ``pickle.loads``, and retries the sample inputs with
    ``weights_only=False`` when ``weights_only=True`` fails. So: every entry must be one the
    current format writes for plain tensors (an allow-list, so that what it does not know is
    refused), no payload may be pickled, and the sample inputs must load with ``weights_only``.
    Compiled AOTInductor packages (native code) are refused by the same allow-list.
    """
    from torch.export.pt2_archive import constants as pt2

    roots = {entry.split("/", 1)[0] for entry in entries}
    if len(roots) != 1 or any("/" not in entry for entry in entries):
        raise FormatError(UNSAFE_EXPORT.format(path=path, reason="is not one top-level directory"))
    if len(set(entries)) != len(entries):
        # Two entries of one name: this check and torch's reader might read different ones.
        raise FormatError(UNSAFE_EXPORT.format(path=path, reason="holds two entries of one name"))
    root = roots.pop() + "/"
    relative = [entry[len(root) :] for entry in entries]
    allowed = re.compile(
        "|".join(
            [
                re.escape(pt2.ARCHIVE_FORMAT_PATH),
                re.escape(pt2.ARCHIVE_VERSION_PATH),
                r"byteorder|version|\.data/version|\.data/serialization_id|\.format_version|\.storage_alignment",
                re.escape(pt2.MODELS_DIR) + r"[\w.-]+\.json",
                re.escape(pt2.WEIGHTS_DIR) + re.escape(pt2.WEIGHT_FILENAME_PREFIX) + r"\w+",
                re.escape(pt2.WEIGHTS_DIR) + r"[\w.-]+_weights_config\.json",
                re.escape(pt2.CONSTANTS_DIR) + re.escape(pt2.TENSOR_CONSTANT_FILENAME_PREFIX) + r"\w+",
                re.escape(pt2.CONSTANTS_DIR) + r"[\w.-]+_constants_config\.json",
                re.escape(pt2.SAMPLE_INPUTS_DIR) + r"[\w.-]+\.pt",
                re.escape(pt2.EXTRA_DIR) + r".+",
            ]
        )
    )
    for entry in relative:
        if not allowed.fullmatch(entry):
            raise FormatError(UNSAFE_EXPORT.format(path=path, reason=f"holds {entry!r}, which pie-audit does not load"))
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for entry in relative:
            if entry.endswith(("_weights_config.json", "_constants_config.json")):
                prefix = pt2.WEIGHT_FILENAME_PREFIX if "weights" in entry else pt2.TENSOR_CONSTANT_FILENAME_PREFIX
                reason = _pickled_payload(archive.read(root + entry), entry=entry, prefix=prefix)
            elif entry.startswith(pt2.SAMPLE_INPUTS_DIR):
                reason = _unsafe_inputs(archive.read(root + entry))
            else:
                reason = None
            if reason is not None:
                raise FormatError(UNSAFE_EXPORT.format(path=path, reason=reason))


def _pickled_payload(content: bytes, *, entry: str, prefix: str) -> str | None:
    """Why a ``.pt2`` payload config is refused: a payload stored as a pickle or an object."""
    try:
        payloads = list(json.loads(content)["config"].items())
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return f"has an unreadable {entry!r} ({e})"
    for name, payload in payloads:
        if (
            not isinstance(payload, Mapping)
            or payload.get("use_pickle") is not False
            or not str(payload.get("path_name", "")).startswith(prefix)
        ):
            return f"stores {name!r} as a pickle or an object"
    return None


def _unsafe_inputs(content: bytes) -> str | None:
    """Why a ``.pt2``'s sample inputs are refused: torch.export.load would retry them without weights_only."""
    import torch

    if not content:
        return None  # read as no inputs, unpickled by nobody
    try:
        inputs = torch.load(io.BytesIO(content), weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any failure makes torch retry without weights_only
        return f"has sample inputs of more than tensors ({_weights_only_refusal(e) or _one_line(e, 120)})"
    if not isinstance(inputs, (tuple, dict)):
        return "has sample inputs that are not a tuple or dict"
    return None


def _static_batch(module: nn.Module) -> int | None:
    """The batch size a ``torch.export`` module's first input is fixed to, or None if it varies."""
    import torch

    if not isinstance(module, torch.fx.GraphModule):
        return None
    for node in module.graph.nodes:
        if node.op == "placeholder":
            shape = getattr(node.meta.get("val"), "shape", None)
            if shape is not None and len(shape) and isinstance(shape[0], int):
                return int(shape[0])
            return None
    return None
