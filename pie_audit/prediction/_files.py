"""Evaluating saved model files on a built-in dataset's test split into a population.

:func:`predict_files` (``pie-audit predict``) loads every file (:func:`~._loading.load_model_file`,
which never runs code from an untrusted file), evaluates it as :func:`~._predict.predict` does, and
only then writes one model directory per file: all of them or none. A dataset with attributes
(CelebA) also gets its test examples' attributes written as the population's ``groups.parquet``.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._atomic import ALREADY_EXISTS, NOT_A_DIRECTORY, check_unlocked, exclusive_lock, resolve_output
from ..errors import ConfigError, FormatError, OutputError, PieAuditError
from ..interchange import GROUPS_FILE, MODEL_FILE, RUN_FILE, read_run, write_groups
from ._loading import IN_FILE, KIND_WORDS, NO_SUCH_FILE, ONNX, LoadedModel, check_run_dataset, load_model_file, one_line
from ._predict import Evaluation, evaluate, model_record, write_model

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..data import Dataset

__all__ = ["predict_files", "model_name", "DEFAULT_BATCH_SIZE"]

#: Test images per forward pass in :func:`predict_files`; the trainer evaluates with the same.
DEFAULT_BATCH_SIZE = 1024

# Messages are constants so that tests (and users' scripts) see the same wording every time.
NO_FILES = "no model file given"
BAD_BATCH_SIZE = "batch size must be >= 1, got {batch_size}"
BAD_MODEL_NAME = "{path}: the model would be named {name!r}, which starts with '.'; rename the file"
SAME_NAME = "{path} and {other} would both be written as model {name!r}; evaluate them into different populations"
FORWARD_FAILED = "the {kind} fails on {dataset}'s test images of shape {shape} ({reason})"
#: A FIFO or a device is never opened (open() on a FIFO blocks): only regular files are models.
NOT_A_MODEL_FILE = "{path}: not a regular file; expected a model file"
TARGET_OF_LOADED = "target {target!r} given with a loaded dataset, whose target is {own!r}; pass a dataset name"


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
    target: str | None = None,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    trust_code: bool = False,
    command: Sequence[str] | None = None,
    provider: str | None = None,
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
        archives, ``torch.export`` programs (``.pt2``), or ONNX models (``.onnx``, run by ONNX
        Runtime; :mod:`pie_audit.prediction._onnx`).
    dataset : str or Dataset
        A registry name (:data:`pie_audit.data.DATASETS`) or a loaded dataset.
    out : str or Path
        The population directory; created if missing. It must not hold a model of the same name.
    arch : str, optional
        Architecture of state dicts (:data:`pie_audit.training._models.ARCHITECTURES`). Default: the
        ``arch`` of the ``run.json`` beside a ``model.pt``.
    data_root : str or Path, default "data"
        Where the dataset's files are looked up.
    target : str, optional
        The dataset's target attribute (CelebA's task, :func:`pie_audit.data.resolve_target`).
        Default: the target recorded in the ``run.json`` beside a ``model.pt``, else the
        dataset's default; a ``run.json`` recording another target is refused.
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
    provider : str, optional
        The onnxruntime execution provider of ``.onnx`` files (``device`` is for torch models);
        default ``CPUExecutionProvider``. An unavailable one is refused before any file is read.

    Returns
    -------
    list of Path
        The model directories written, in the order of ``files``. Each ``run.json`` holds what
        :func:`predict` records, plus ``source_file`` (absolute path), ``source_sha256``,
        ``source_format``, ``arch`` (state dicts), ``classes`` and ``dataset`` (``name``,
        ``split``, ``split_description``, ``n_examples``, the ``hash`` and, for CelebA, the
        ``target`` that ``pie-audit train`` records). For a dataset with attributes, ``out``
        also gets ``groups.parquet`` (:data:`pie_audit.interchange.GROUPS_FILE`).

    Raises
    ------
    ConfigError
        No files, an unknown dataset, target, architecture or device, a batch size below 1, a
        state dict without an architecture, or a ``run.json`` naming another dataset, target or
        architecture.
    FormatError
        A file that is missing, not a model, an unsafe pickle, a program without
        ``trust_code``, a state dict that does not fit the architecture, or a model that fails
        on the dataset or returns the wrong number of classes.
    OutputError
        ``out`` is not a directory (or a loop of symbolic links), already holds a model of one of
        the names, is being written by another process (:data:`pie_audit._atomic.LOCKED`: the
        lock ``pie-audit train`` holds), or cannot be written.
    """
    import torch

    from ..data import DATASETS, Dataset, load_dataset, resolve_target
    from ..training import ARCHITECTURES, UNKNOWN_ARCHITECTURE
    from ..training import resolve_device

    files = [Path(f) for f in files]
    if not files:
        raise ConfigError(NO_FILES)
    if batch_size < 1:
        raise ConfigError(BAD_BATCH_SIZE.format(batch_size=batch_size))
    if arch is not None and arch not in ARCHITECTURES:
        raise ConfigError(UNKNOWN_ARCHITECTURE.format(arch=arch, choices=", ".join(ARCHITECTURES)))
    if isinstance(dataset, Dataset):
        if target is not None and target != dataset.target:
            raise ConfigError(TARGET_OF_LOADED.format(target=target, own=dataset.target))
    elif target is not None and dataset in DATASETS:
        resolve_target(dataset, target)  # an unknown target, before any file is read
    where = resolve_device(device)
    if provider is not None:
        from ._onnx import check_provider

        check_provider(provider)
    out = Path(out)
    resolve_output(out)  # a loop of symbolic links is refused by name
    if out.exists() and not out.is_dir():
        raise OutputError(NOT_A_DIRECTORY.format(path=out))
    # The lock pie-audit train holds on a population: refused now, not after every model ran.
    check_unlocked(out)
    names: dict[str, Path] = {}
    for path in files:
        if not path.is_file():
            raise FormatError((NOT_A_MODEL_FILE if path.exists() else NO_SUCH_FILE).format(path=path))
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
            run = read_run(path.parent / RUN_FILE)
            check_run_dataset(path, run, path.parent / RUN_FILE, name=dataset, target=target)
            if target is None:
                # The task the model was trained for, unless told: a re-predicted population
                # is evaluated on the same labels.
                target = _recorded_target(run)
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_root=data_root, target=target)
    labels = data.y_test.numpy()
    dataset_record = {
        "name": data.name,
        "split": "test",
        "split_description": data.split,
        "n_examples": int(labels.size),
        "hash": data.test_hash,
        **({"target": data.target} if data.target is not None else {}),
    }
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x_test, data.y_test), batch_size=batch_size, shuffle=False
    )

    done: list[tuple[str, Evaluation, dict[str, Any]]] = []
    for name, path in names.items():
        loaded = load_model_file(path, arch=arch, dataset=data, trust_code=trust_code, provider=provider)
        # Int8 kernels exist for the CPU only, whatever device the float models get; an ONNX
        # model is fed from host memory and runs on its provider.
        device = torch.device("cpu") if loaded.int8 or loaded.kind == ONNX else where
        module = loaded.module.to(device)
        forward = _guarded(module, loaded, data)
        try:
            with _runtime(loaded):
                evaluation = evaluate(
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
        record = model_record(
            module, evaluation, classes=data.classes, device=device, dataset=dataset_record,
            extra={key: value for key, value in extra.items() if value is not None},
        )  # fmt: skip
        done.append((name, evaluation, record))
        del loaded, module, forward  # one model in memory at a time

    created = not out.exists()
    written: list[Path] = []
    # One writer at a time, as pie-audit train: the same lock, held while the models are written.
    with exclusive_lock(out):
        try:
            for name, evaluation, record in done:
                written.append(write_model(out / name, evaluation, record))
            if data.attributes is not None:
                write_groups(data.attributes, out / GROUPS_FILE)
        except BaseException:
            # All or nothing: a population missing some of the files given would pass for complete.
            for directory in written:
                shutil.rmtree(directory, ignore_errors=True)
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise
    return written


def _recorded_target(run: Any) -> str | None:
    """The ``dataset.target`` a ``run.json`` records, if any."""
    recorded = run.get("dataset") if isinstance(run, dict) else None
    found = recorded.get("target") if isinstance(recorded, dict) else None
    return found if isinstance(found, str) else None


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
                    kind=KIND_WORDS[loaded.kind], dataset=data.name,
                    shape=(len(x), *data.image_shape), reason=one_line(e),
                )
            ) from e  # fmt: skip

    return forward
