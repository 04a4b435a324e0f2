"""ONNX models, evaluated by ONNX Runtime: the file that is deployed, not the module it came from.

:func:`load_onnx_file` reads an ``.onnx`` file once (bounded as every model file is), parses it
with ``onnx`` (an ONNX file is a protobuf message: nothing in it is unpickled or executed as
Python), refuses what pie-audit cannot evaluate faithfully (tensors stored in other files,
operators of custom domains, a graph whose input and output do not fit the dataset), and opens
an ``onnxruntime.InferenceSession`` on the same bytes. :class:`OnnxModule` wraps the session as a
``torch.nn.Module`` so that :func:`~._predict.evaluate` and :func:`~._files.predict_files` run it
as they run every other model; :func:`onnx_session` wraps a session made by the caller. A file's
``run.json`` records its ``cost`` as ``pie-audit train`` records a model's (``docs/cost.md``),
measured from the graph and on onnxruntime's CPU provider.

``onnx`` and ``onnxruntime`` are an optional extra (``pip install 'pie-audit[onnx]'``), imported
here only, and only when an ONNX model is evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, FormatError
from ._loading import ONNX, one_line, read_model_bytes  # noqa: F401 - ONNX, the source_format, re-exported

__all__ = [
    "ONNX",
    "ONNX_SUFFIX",
    "RUNTIME",
    "DEFAULT_PROVIDER",
    "OnnxModule",
    "load_onnx_file",
    "onnx_session",
    "is_onnx_file",
    "is_session",
    "check_provider",
]

ONNX_SUFFIX = ".onnx"
RUNTIME = "onnxruntime"
#: What an ONNX model runs on unless told otherwise: present in every onnxruntime build.
DEFAULT_PROVIDER = "CPUExecutionProvider"
#: Operator domains onnxruntime implements itself; any other needs a custom-op library, which
#: pie-audit never loads (it would be native code from elsewhere).
KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training")
#: Input element types fed as the matching numpy type; images are cast to it.
INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
_DEVICES = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}

# Messages are constants so that tests (and users' scripts) see the same wording every time.
NO_RUNTIME = "{what}: an ONNX model, which needs onnx and onnxruntime ({reason}); pip install 'pie-audit[onnx]'"
NOT_ONNX = "{path}: not an ONNX model ({reason}); expected a model saved by torch.onnx.export or onnx.save"
EXTERNAL_DATA = (
    "{path}: an ONNX model whose tensor {name!r} is stored outside the file; pie-audit reads one file "
    "(save it with onnx.save(model, path, save_as_external_data=False))"
)
CUSTOM_OP = (
    "{path}: an ONNX model using operator {op!r} of domain {domain!r}, which onnxruntime does not "
    "provide; pie-audit loads no custom operator library"
)
CANNOT_LOAD = "{path}: an ONNX model that onnxruntime cannot load ({reason})"
UNKNOWN_PROVIDER = "execution provider {provider!r} is not available here; available: {available}"
INPUT_COUNT = "{path}: an ONNX model with {n} inputs ({names}); expected one, the images"
INPUT_TYPE = "{path}: an ONNX model whose input {name!r} is a {type}; expected tensor(float), tensor(float16) or tensor(double)"
INPUT_SHAPE = "{path}: an ONNX model whose input {name!r} has shape {shape}; the images are batches of shape {expected}"
UNBOUND = (
    "{path}: an ONNX model whose input {name!r} has shape {shape}: its dimension {symbol!r} cannot "
    "be both {first} and {second}"
)
OUTPUT_SHAPE = "{path}: an ONNX model whose output {name!r} has shape {shape}; expected (batch, {n}), one logit per class"
BATCH_SHAPE = "inputs of shape {shape}, but the ONNX model's input {name!r} has shape {expected}"
RUN_FAILED = "onnxruntime fails on inputs of shape {shape} ({reason})"


def is_onnx_file(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX file (told by its suffix, ``.onnx``)."""
    return Path(path).suffix.lower() == ONNX_SUFFIX


def is_session(value: Any) -> bool:
    """Whether ``value`` is an ``onnxruntime.InferenceSession``, told without importing onnxruntime."""
    return any(c.__name__ == "InferenceSession" and c.__module__.startswith("onnxruntime") for c in type(value).__mro__)


def _runtime(what: object) -> tuple[Any, Any]:
    """The ``onnx`` and ``onnxruntime`` modules, or the install hint."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ConfigError(NO_RUNTIME.format(what=what, reason=one_line(e))) from e
    return onnx, onnxruntime


class OnnxModule(nn.Module):
    """An ONNX Runtime session as a module: ``forward`` maps images (B, C, H, W) to logits (B, K).

    It has no parameters (its weights are in the session), so moving it is a no-op. A graph
    whose output is a ``Softmax`` gives probabilities, not logits: ``forward`` returns their
    logarithm, whose softmax (what :func:`~._predict.evaluate` takes) is the same probabilities.
    A graph with a fixed batch size is fed batches of exactly that size, the last one padded with
    copies of its last image whose outputs are dropped.

    Attributes
    ----------
    session : onnxruntime.InferenceSession
    input_name, output_name : str
    input_shape : tuple
        The input's dimensions: ints where the graph fixes them, ``None`` where they vary.
    batch_size : int or None
        The fixed batch size, or ``None`` for a dynamic one.
    probabilities : bool
        The graph's output is produced by a ``Softmax``.
    fields : dict
        What ``run.json`` says of the model, but the provider and the cost (:meth:`run_fields`).
    graph : bytes or None
        The ONNX file's bytes, whose cost :meth:`run_fields` measures; ``None`` for a session.
    """

    def __init__(
        self,
        session: Any,
        *,
        input_shape: tuple[int | None, ...],
        input_type: Any,
        probabilities: bool,
        fields: Mapping[str, Any],
        label: str,
        graph: bytes | None = None,
    ) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.input_shape = input_shape
        self.input_type = input_type
        self.batch_size = input_shape[0]
        self.probabilities = probabilities
        self.fields = dict(fields)
        self.label = label
        self.graph = graph
        # One example's shape as fed, for a graph that leaves its dimensions open.
        self.example_shape: tuple[int, ...] | None = None
        self._cost: dict[str, Any] | None = None

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def device_name(self) -> str:
        """Where it runs, in ``run.json``'s ``device`` words: ``cpu``, ``cuda``, or the provider."""
        return _DEVICES.get(self.provider, self.provider)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        if len(shape) != len(self.input_shape) or any(
            want is not None and have != want for have, want in zip(shape[1:], self.input_shape[1:])
        ):
            expected = _shape_words(("batch", *self.input_shape[1:]))
            raise FormatError(BATCH_SHAPE.format(shape=shape, name=self.input_name, expected=expected))
        if self.example_shape is None:
            self.example_shape = shape[1:]
        images = x.detach().cpu().numpy().astype(self.input_type, copy=False)
        size = self.batch_size
        try:
            if size is None:
                out = self._run(images)
            else:
                outputs = []
                for start in range(0, len(images), size):
                    chunk = images[start : start + size]
                    n = len(chunk)
                    if n < size:
                        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - n, axis=0)])
                    outputs.append(self._run(chunk)[:n])
                out = np.concatenate(outputs)
        except FormatError:
            raise
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors have no common base but Exception
            raise FormatError(RUN_FAILED.format(shape=shape, reason=one_line(e))) from e
        result = torch.from_numpy(np.ascontiguousarray(out))
        if self.probabilities and result.is_floating_point():
            # softmax(log p) is p again; the floor keeps a probability of 0 finite.
            result = torch.log(result.float().clamp_min(torch.finfo(torch.float32).tiny))
        return result.to(x.device)

    def _run(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run([self.output_name], {self.input_name: images})[0])

    def run_fields(self) -> dict[str, Any]:
        """What ``run.json`` records of the model: ``model_class``, ``n_parameters``, ``sparsity``
        (when the graph is known), ``runtime`` (name, version, provider), ``onnx`` (opset, ...),
        and of a file ``source_bytes`` and ``cost``
        (:func:`pie_audit.training.onnx_cost`: parameters and FLOPs from the graph,
        latency timed on onnxruntime's CPU provider whatever provider evaluated it, the file's
        size), measured on the first call, once the model has been fed."""
        fields = {key: value for key, value in self.fields.items() if value is not None}
        fields["runtime"] = {**self.fields["runtime"], "provider": self.provider}
        if self.graph is not None:
            if self._cost is None:
                from ..training import onnx_cost

                shape = self.input_shape[1:]
                fixed = all(isinstance(d, int) for d in shape)
                cost = onnx_cost(self.graph, tuple(shape) if fixed else self.example_shape)
                self._cost = cost | {"file_bytes": self.fields.get("source_bytes")}
            fields["cost"] = self._cost
        return fields


def load_onnx_file(
    path: str | Path,
    *,
    image_shape: Sequence[int] | None,
    num_classes: int | None,
    provider: str | None = None,
) -> tuple[OnnxModule, str]:
    """An ONNX file as an :class:`OnnxModule`, checked against the images it will be fed.

    Parameters
    ----------
    path : str or Path
        An ``.onnx`` file of at most :data:`pie_audit.interchange.MAX_MODEL_BYTES`, with its
        weights inside it.
    image_shape : sequence of int, optional
        ``(C, H, W)`` of the dataset's images; the graph's input must be ``(batch, C, H, W)``.
        Not checked when ``None`` (:func:`pie_audit.predict` checks each batch instead).
    num_classes : int, optional
        The graph's output must be ``(batch, num_classes)``.
    provider : str, optional
        An onnxruntime execution provider; default :data:`DEFAULT_PROVIDER`.

    Returns
    -------
    (OnnxModule, str)
        The model, and the hex SHA-256 of the file's bytes (those that were parsed and loaded).

    Raises
    ------
    ConfigError
        onnx or onnxruntime missing, or an unavailable provider.
    FormatError
        A file that is missing, too large, not an ONNX model, stores tensors elsewhere, uses a
        custom operator, does not load, or whose input or output does not fit.
    """
    path = Path(path)
    onnx, ort = _runtime(path)
    provider = _check_provider(ort, provider)
    content, sha256 = read_model_bytes(path)
    try:
        model = onnx.load_from_string(content)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and others for bytes that are no model
        raise FormatError(NOT_ONNX.format(path=path, reason=one_line(e))) from e
    if not model.HasField("graph") or not model.graph.node:
        raise FormatError(NOT_ONNX.format(path=path, reason="no graph in it"))
    _check_self_contained(path, onnx, model)
    try:
        session = ort.InferenceSession(content, providers=[provider])
    except Exception as e:  # noqa: BLE001 - InvalidGraph, Fail, InvalidProtobuf... share only Exception
        raise FormatError(CANNOT_LOAD.format(path=path, reason=one_line(e))) from e
    fields = _graph_fields(onnx, model, ort)
    fields["source_bytes"] = len(content)
    module = _wrap(session, fields, label=str(path), image_shape=image_shape, num_classes=num_classes,
                   probabilities=_ends_in_softmax(model), graph=content)  # fmt: skip
    return module, sha256


def onnx_session(session: Any, *, num_classes: int | None) -> OnnxModule:
    """A caller's ``onnxruntime.InferenceSession`` as an :class:`OnnxModule`.

    A session does not expose its graph, so its opset, parameters and sparsity are not
    recorded, and an output that is already probabilities cannot be told: it is taken as logits.
    """
    _, ort = _runtime("the session")
    fields = {"runtime": {"name": RUNTIME, "version": ort.__version__}}
    meta = session.get_modelmeta()
    fields["onnx"] = {"producer": meta.producer_name or None, "graph": meta.graph_name or None}
    return _wrap(session, fields, label="the session", image_shape=None, num_classes=num_classes, probabilities=False)


def _check_provider(ort: Any, provider: str | None) -> str:
    available = ort.get_available_providers()
    provider = DEFAULT_PROVIDER if provider is None else provider
    if provider not in available:
        raise ConfigError(UNKNOWN_PROVIDER.format(provider=provider, available=", ".join(available)))
    return provider


def check_provider(provider: str | None) -> str:
    """``provider``, or :data:`DEFAULT_PROVIDER`, if this onnxruntime has it; before a file is read."""
    _, ort = _runtime(f"--provider {provider}")
    return _check_provider(ort, provider)


def _check_self_contained(path: Path, onnx: Any, model: Any) -> None:
    """Refuse tensors stored in other files (onnxruntime would open any path they name) and
    operators of domains onnxruntime does not implement."""
    external = onnx.TensorProto.EXTERNAL
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        tensors = list(graph.initializer)
        tensors += [t for s in graph.sparse_initializer for t in (s.values, s.indices)]
        for node in graph.node:
            if node.domain not in KNOWN_DOMAINS:
                raise FormatError(CUSTOM_OP.format(path=path, op=node.op_type, domain=node.domain))
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    tensors.append(attribute.t)
                tensors.extend(attribute.tensors)
                sparse = [attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []
                tensors += [t for s in [*sparse, *attribute.sparse_tensors] for t in (s.values, s.indices)]
                if attribute.HasField("g"):
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)
        for tensor in tensors:
            if tensor.data_location == external or tensor.external_data:
                raise FormatError(EXTERNAL_DATA.format(path=path, name=tensor.name))
    for function in model.functions:
        for node in function.node:
            if node.domain not in KNOWN_DOMAINS and node.domain != function.domain:
                raise FormatError(CUSTOM_OP.format(path=path, op=node.op_type, domain=node.domain))


def _graph_fields(onnx: Any, model: Any, ort: Any) -> dict[str, Any]:
    """What ``run.json`` records of a parsed graph: the runtime, opset, parameters, sparsity."""
    from ..training import sparsity_report

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    initializers = {t.name: t for t in model.graph.initializer}
    weights = {}
    layers: list[tuple[str, str]] = []
    for node in model.graph.node:
        kind = {"Conv": "conv", "Gemm": "linear", "MatMul": "linear"}.get(node.op_type)
        if kind is not None and len(node.input) > 1 and node.input[1] in initializers:
            name = node.input[1]
            weights[name] = torch.from_numpy(onnx.numpy_helper.to_array(initializers[name]).copy())
            layers.append((name, kind))
    # All but the last linear layer, the classifier that pruning leaves dense (as measured_layers).
    final = max((i for i, (_, kind) in enumerate(layers) if kind == "linear"), default=None)
    measured = [name for i, (name, _) in enumerate(layers) if i != final]
    n_parameters = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    return {
        "model_class": f"onnx:{model.graph.name}" if model.graph.name else "onnx",
        "n_parameters": n_parameters,
        "sparsity": sparsity_report(weights, measured) if measured else None,
        "runtime": {"name": RUNTIME, "version": ort.__version__},
        "onnx": {
            "opset": opset,
            "ir_version": int(model.ir_version),
            "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p) or None,
            "graph": model.graph.name or None,
        },
    }


def _ends_in_softmax(model: Any) -> bool:
    """Whether the graph's first output is produced by a Softmax over its last axis."""
    output = model.graph.output[0].name if model.graph.output else None
    for node in model.graph.node:
        if output in node.output and node.op_type == "Softmax":
            axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
            return axis in (-1, 1)
    return False


def _wrap(
    session: Any, fields: dict[str, Any], *, label: str, image_shape: Sequence[int] | None,
    num_classes: int | None, probabilities: bool, graph: bytes | None = None,
) -> OnnxModule:  # fmt: skip
    """Check the session's input and output against the images and classes; wrap it."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs)
        raise FormatError(INPUT_COUNT.format(path=label, n=len(inputs), names=names))
    single, output = inputs[0], outputs[0]
    if single.type not in INPUT_TYPES:
        raise FormatError(INPUT_TYPE.format(path=label, name=single.name, type=single.type))
    dims = list(single.shape or [])
    expected = ("batch", *image_shape) if image_shape is not None else None
    # Without a dataset (pie_audit.predict) any known rank will do: each batch is checked instead.
    rank = len(expected) if expected is not None else max(len(dims), 1)
    if len(dims) != rank or (expected is not None and any(isinstance(d, int) and d != e for d, e in zip(dims[1:], expected[1:]))):
        shown = _shape_words(("batch", "...") if expected is None else expected)
        raise FormatError(INPUT_SHAPE.format(path=label, name=single.name, shape=_shape_words(dims), expected=shown))
    if isinstance(dims[0], int) and dims[0] < 1:
        raise FormatError(INPUT_SHAPE.format(path=label, name=single.name, shape=_shape_words(dims), expected="(batch, ...)"))
    # A named dimension stands for one value wherever it appears: the dataset's, or the batch.
    bound: dict[str, Any] = {}
    for dim, value in zip(dims, ("batch", *(expected[1:] if expected else (None,) * (rank - 1)))):
        if isinstance(dim, str) and dim:
            if value is not None and bound.setdefault(dim, value) != value:
                raise FormatError(UNBOUND.format(path=label, name=single.name, shape=_shape_words(dims), symbol=dim,
                                                 first=bound[dim], second=value))  # fmt: skip
    out_dims = list(output.shape or [])
    n = num_classes if num_classes is not None else "classes"
    if len(out_dims) != 2 or (num_classes is not None and isinstance(out_dims[1], int) and out_dims[1] != num_classes):
        raise FormatError(OUTPUT_SHAPE.format(path=label, name=output.name, shape=_shape_words(out_dims), n=n))
    fixed = tuple(d if isinstance(d, int) else None for d in dims)
    input_shape = fixed if expected is None else (fixed[0], *image_shape)
    fields["onnx"] = {**fields.get("onnx", {}), "output": "probabilities" if probabilities else "logits",
                      "batch_size": fixed[0]}  # fmt: skip
    return OnnxModule(session, input_shape=input_shape, input_type=INPUT_TYPES[single.type],
                      probabilities=probabilities, fields=fields, label=label, graph=graph)  # fmt: skip


def _shape_words(dims: Sequence[Any]) -> str:
    """A shape as ``(batch, 1, 8, 8)``, its varying dimensions by name or ``?``."""
    return "(" + ", ".join(str(d) if d not in (None, "") else "?" for d in dims) + ")" if dims else "unknown"

