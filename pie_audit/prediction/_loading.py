"""Loading untrusted model files: the kind is told before anything is deserialised.

Model files are untrusted input. :func:`load_model_file` reads a file into memory once and tells
its kind from the archive's listing, before anything in it is deserialised:

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

import hashlib
import io
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, FormatError, PieAuditError
from ..interchange import MAX_JSON_BYTES, MAX_MODEL_BYTES, MODEL_FILE, RUN_FILE, RecordError
from ..interchange import parse_json, read_bounded, read_run

if TYPE_CHECKING:
    from torch import nn

    from ..data import Dataset

# torch, and the training wing that needs it, are imported where they are used, so that
# ``import pie_audit`` (and every CLI command) does not pay torch's second of start-up.

__all__ = [
    "load_model_file",
    "LoadedModel",
    "STATE_DICT",
    "TORCHSCRIPT",
    "TORCH_EXPORT",
    "ONNX",
    "KIND_WORDS",
    "check_run_dataset",
    "one_line",
]

#: The kinds of model file :func:`load_model_file` accepts, as ``run.json`` ``source_format`` names them.
STATE_DICT = "state_dict"
TORCHSCRIPT = "torchscript"
TORCH_EXPORT = "torch.export"
ONNX = "onnx"
KIND_WORDS = {
    STATE_DICT: "state dict",
    TORCHSCRIPT: "TorchScript archive",
    TORCH_EXPORT: "torch.export program",
    ONNX: "ONNX model",
}

# Messages are constants so that tests (and users' scripts) see the same wording every time.
NO_SUCH_FILE = "{path}: no such file"
UNREADABLE = "{path}: cannot read it ({reason})"
NOT_A_MODEL = (
    "{path}: not a PyTorch model file ({reason}); expected a state dict saved with torch.save, "
    "a TorchScript archive or a torch.export .pt2"
)
UNPACKS_TOO_LARGE = (
    "{path}: a zip archive that unpacks to {size} bytes, more than the {limit} bytes pie-audit "
    "reads from a model file"
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
TARGET_CONFLICT = (
    "{path}: {run} says the model was trained to predict {found!r}, not {target!r}; pass --target {found}"
)
SPLIT_CONFLICT = (
    "{path}: {run} records {dataset}'s test split as {found}, but it is {now} here; the model was "
    "evaluated on other examples"
)
STATE_DICT_MISMATCH = "{path}: a state dict that does not fit {arch} for {dataset} ({reason})"
IN_FILE = "{path}: {error}"


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model read from a file by :func:`load_model_file`.

    Attributes
    ----------
    module : nn.Module
        Ready to evaluate, on the CPU.
    kind : {"state_dict", "torchscript", "torch.export", "onnx"}
        What the file was (an ONNX model's module is an onnxruntime session wrapped as a module).
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


def read_model_bytes(path: Path) -> tuple[bytes, str]:
    """A model file's bytes, bounded by :data:`MAX_MODEL_BYTES` before any is read, and their SHA-256.

    Raises
    ------
    FormatError
        :data:`NO_SUCH_FILE`, or :data:`UNREADABLE` (too large, not a regular file, an OS error).
    """
    try:
        content = read_bounded(path, limit=MAX_MODEL_BYTES, what="a model file")
    except FileNotFoundError as e:
        raise FormatError(NO_SUCH_FILE.format(path=path)) from e
    except OSError as e:
        raise FormatError(UNREADABLE.format(path=path, reason=e.strerror or e)) from e
    return content, hashlib.sha256(content).hexdigest()


def load_model_file(
    path: str | Path,
    *,
    arch: str | None = None,
    dataset: Dataset,
    trust_code: bool = False,
    provider: str | None = None,
) -> LoadedModel:
    """Load a model file safely, telling its kind from its contents.

    The file is read into memory once, and only a regular file of at most
    :data:`pie_audit.interchange.MAX_MODEL_BYTES` (checked on its descriptor before a byte is
    read; a zip archive's listing may not unpack to more either); its kind is told from the zip
    listing, before anything in it is deserialised, and what is hashed, checked and loaded are the
    same bytes.

    - **state dict** (a ``torch.save`` file): ``torch.load(weights_only=True)``, then built with
      :func:`pie_audit.training._models.build_model` for ``dataset``'s image shape and classes and
      ``load_state_dict(strict=True)``; a compact model of ``structured`` pruning (its ``run.json``
      records a ``structure``) is built at the conv widths recorded there
      (:func:`pie_audit.training.load_compact`), its shapes checked against them; an int8 state
      dict (``q.state_dict()`` of a model from
      :func:`pie_audit.training._quantization.quantize_static`) is rebuilt with
      :func:`pie_audit.training._quantization.load_quantized`. Anything that is not a mapping of names to
      tensors (or an int8 state dict) is refused, and so is any pickle that needs more than
      tensors and plain containers (a whole pickled model, a pickle that would run code).
    - **TorchScript archive** (``torch.jit.save``): ``torch.jit.load``, only with ``trust_code``.
    - **torch.export program** (``torch.export.save``, ``.pt2``): ``torch.export.load``, only
      with ``trust_code``, and only when no part of the archive would be unpickled without
      ``weights_only``.
    - **ONNX model** (a file named ``*.onnx``): parsed by ``onnx`` and run by ONNX Runtime
      (:func:`pie_audit.prediction._onnx.load_onnx_file`), its input and output checked against
      ``dataset``; it holds no pickles, so it needs no ``trust_code``.

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
    provider : str, optional
        The onnxruntime execution provider of an ONNX model; default ``CPUExecutionProvider``.

    Returns
    -------
    LoadedModel

    Raises
    ------
    FormatError, ConfigError
        As :func:`predict_files` describes.
    """
    path = Path(path)
    from ._onnx import is_onnx_file, load_onnx_file

    if is_onnx_file(path):
        module, sha256 = load_onnx_file(
            path, image_shape=dataset.image_shape, num_classes=dataset.num_classes, provider=provider
        )
        return LoadedModel(module=module, kind=ONNX, path=path, sha256=sha256)
    content, sha256 = read_model_bytes(path)
    kind, entries = _sniff(path, content)
    run_file = path.parent / RUN_FILE if path.name == MODEL_FILE else None
    run = read_run(run_file) if run_file is not None and run_file.is_file() else None
    if run is not None:
        check_run_dataset(path, run, run_file, name=dataset.name, target=dataset.target, dataset=dataset)
    if kind == STATE_DICT:
        module, arch, int8 = _load_state_dict(path, content, arch=arch, run=run, run_file=run_file, dataset=dataset)
        return LoadedModel(module=module, kind=kind, path=path, sha256=sha256, arch=arch, run=run, int8=int8)
    if not trust_code:
        raise FormatError(NEEDS_TRUST.format(path=path, kind=KIND_WORDS[kind]))
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
        raise FormatError(CANNOT_LOAD.format(path=path, kind=KIND_WORDS[kind], loader=loader, reason=one_line(e))) from e


def _sniff(path: Path, content: bytes) -> tuple[str, list[str]]:
    """The kind of a model file, from its zip listing alone (nothing is unpickled)."""
    buffer = io.BytesIO(content)
    if not zipfile.is_zipfile(buffer):
        # torch.save's legacy format, or any pickle: only torch.load(weights_only=True) reads it.
        return STATE_DICT, []
    try:
        with zipfile.ZipFile(buffer) as archive:
            infos = archive.infolist()
            # The listing's sizes, before anything is unpacked: a small file may unpack to a huge one.
            unpacked = sum(info.file_size for info in infos)
            if unpacked > MAX_MODEL_BYTES:
                raise FormatError(UNPACKS_TOO_LARGE.format(path=path, size=unpacked, limit=MAX_MODEL_BYTES))
            entries = [info.filename for info in infos]
            format_entries = [n for n in entries if n.count("/") == 1 and n.endswith("/archive_format")]
            is_pt2 = any(archive.read(n).strip() == b"pt2" for n in format_entries)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise FormatError(NOT_A_MODEL.format(path=path, reason=f"a damaged zip archive: {e}")) from e
    if is_pt2:
        return TORCH_EXPORT, entries
    # torch.save and torch.jit.save write every entry under one top-level directory.
    if any(n.count("/") == 1 and n.endswith("/constants.pkl") for n in entries):
        return TORCHSCRIPT, entries
    if any(n.count("/") == 1 and n.endswith("/data.pkl") for n in entries):
        return STATE_DICT, entries
    raise FormatError(UNKNOWN_ZIP.format(path=path))


def check_run_dataset(
    path: Path, run: Mapping[str, Any], run_file: Path, *, name: str, target: str | None = None,
    dataset: Dataset | None = None,
) -> None:
    """Refuse a model whose run.json names another dataset or target, or (given ``dataset``) another test split.

    Parameters
    ----------
    path : Path
        The model file, for messages.
    run : mapping
        The ``run.json`` beside it, read from ``run_file``.
    run_file : Path
    name : str
        The dataset the model is to be evaluated on.
    target : str, optional
        Its target attribute (CelebA's task); a run.json that records another is refused.
        Not checked when ``None``.
    dataset : Dataset, optional
        That dataset, loaded: its :attr:`~pie_audit.data.Dataset.test_hash` (or, for records
        written before the hash covered the images, ``test_label_hash``) must be the recorded one.

    Raises
    ------
    ConfigError
        :data:`DATASET_CONFLICT`, :data:`TARGET_CONFLICT` or :data:`SPLIT_CONFLICT`.
    """
    recorded = run.get("dataset")
    if not isinstance(recorded, Mapping):
        return
    found = recorded.get("name")
    if isinstance(found, str) and found != name:
        raise ConfigError(DATASET_CONFLICT.format(path=path, run=run_file, found=found, dataset=name))
    found = recorded.get("target")
    if target is not None and isinstance(found, str) and found != target:
        # Before the hash, which differs too: the target is what to fix.
        raise ConfigError(TARGET_CONFLICT.format(path=path, run=run_file, found=found, target=target))
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
    from ..training import is_quantized_state_dict, load_compact, load_quantized, recorded_channels

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
        raise FormatError(NOT_A_MODEL.format(path=path, reason=one_line(e))) from e
    except (RuntimeError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError) as e:
        raise FormatError(NOT_A_MODEL.format(path=path, reason=one_line(e))) from e
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
    # A compact model of structured pruning: rebuilt from the architecture's code at the widths
    # its run.json records, then loaded as any state dict (load_compact checks every shape).
    channels = recorded_channels(run, path=run_file, arch=arch) if run is not None else None
    if channels is not None:
        return load_compact(state, arch=arch, **shape, channels=channels, path=path, run=run_file), arch, False
    module = build_model(arch, **shape)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise FormatError(
            STATE_DICT_MISMATCH.format(path=path, arch=arch, dataset=dataset.name, reason=one_line(e))
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
    if len(content) > MAX_JSON_BYTES:
        size = len(content)
        return f"has an unreadable {entry!r} ({size} bytes, more than the {MAX_JSON_BYTES} bytes of a JSON record)"
    try:
        payloads = list(parse_json(content, path=entry)["config"].items())
    except RecordError as e:
        return f"has an unreadable {entry!r} ({e.reason})"
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
        return f"has sample inputs of more than tensors ({_weights_only_refusal(e) or one_line(e, 120)})"
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


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, shortened: torch's messages span many lines."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


