"""The JSON records of the format: ``run.json`` (one model) and ``population.json`` (a population).

The one place that knows their ``format`` tags and the file names of a model directory, builds
the records (:func:`run_record`, :func:`population_record`), reads them (:func:`read_run`,
:func:`read_population_classes`, :func:`read_population_spec`: a JSON object, or a one-line
:class:`~pie_audit.errors.FormatError` naming the file) and checks that a model directory is
finished (:func:`incomplete_reason`): ``run.json`` is written last and lists the size and SHA-256
of every file beside it (``docs/interchange-format.md``).

Records and model files are untrusted input, so every read is bounded before it starts
(:func:`read_bounded`): only a regular file (a FIFO or a device would block or never end), at most
:data:`MAX_JSON_BYTES` of a record and :data:`MAX_MODEL_BYTES` of a model, and a record nested at
most :data:`MAX_JSON_DEPTH` deep (deeper values would exhaust the recursion of whatever walks them).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import FormatError

__all__ = [
    "RUN_FORMAT",
    "POPULATION_FORMAT",
    "PREDICTIONS_FILE",
    "POPULATION_FILE",
    "RUN_FILE",
    "MODEL_FILE",
    "GROUPS_FILE",
    "BAD_JSON",
    "NOT_AN_OBJECT",
    "BAD_SPEC",
    "RecordError",
    "BAD_CLASSES",
    "TOO_LARGE",
    "NOT_A_FILE",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_MODEL_BYTES",
    "read_bounded",
    "parse_json",
    "run_record",
    "population_record",
    "read_json_object",
    "read_run",
    "read_population_classes",
    "read_population_spec",
    "json_kind",
    "file_record",
    "file_records",
    "incomplete_reason",
]

#: ``format`` of every ``run.json`` and ``population.json`` that pie-audit writes.
RUN_FORMAT = "pie-audit/run/1"
POPULATION_FORMAT = "pie-audit/population/1"

PREDICTIONS_FILE = "predictions.parquet"
#: Optional, at the top of a population directory: ``{"classes": [...]}`` names the classes once
#: for every model (``pie-audit train`` also records its configuration there, as ``spec``).
POPULATION_FILE = "population.json"
RUN_FILE = "run.json"
MODEL_FILE = "model.pt"
#: A population's own attributes of its test examples (:mod:`._groups`), beside ``population.json``.
GROUPS_FILE = "groups.parquet"

BAD_JSON = "{path}: not valid JSON ({reason})"
NOT_AN_OBJECT = "{path}: expected a JSON object"
BAD_SPEC = "{path}: 'spec' is {kind}, expected an object"
BAD_CLASSES = "{path}: 'classes' must be a non-empty list of strings"
TOO_LARGE = "{path}: {size} bytes, more than the {limit} bytes pie-audit reads from {what}"
NOT_A_FILE = "{path}: not a regular file"
#: The reason :data:`BAD_JSON` gives for a record nested deeper than :data:`MAX_JSON_DEPTH`.
NESTED_TOO_DEEPLY = "nested too deeply"
_NOT_JSON = "not UTF-8 JSON: "

#: The largest ``run.json`` or ``population.json`` read: pie-audit's own are a few kB, and one
#: naming 21,843 classes is under 1 MB.
MAX_JSON_BYTES = 16 * 1024**2
#: The deepest nesting of objects and lists a record may have: pie-audit's own nest 4 deep.
MAX_JSON_DEPTH = 64
#: The largest model file read (``model.pt``, a TorchScript archive, a ``.pt2``): 500 million
#: float32 weights, ten times a ViT-B; pie-audit's own architectures are under 50 MB.
MAX_MODEL_BYTES = 2 * 1024**3


def run_record(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A ``run.json`` record: the format tag, then ``fields`` in their order.

    Parameters
    ----------
    fields : mapping of str to JSON values
        What the model's producer records (``docs/interchange-format.md``); ``format`` is set here.

    Returns
    -------
    dict
    """
    return {"format": RUN_FORMAT, **{k: v for k, v in fields.items() if k != "format"}}


def population_record(*, spec: Mapping[str, Any] | None = None, classes: Iterable[str] | None = None) -> dict[str, Any]:
    """A ``population.json`` record: the format tag, the class names and/or the training spec.

    Parameters
    ----------
    spec : mapping, optional
        How the population was trained (``pie-audit train``), compared on resume.
    classes : iterable of str, optional
        The class names, once for every model.

    Returns
    -------
    dict
    """
    record: dict[str, Any] = {"format": POPULATION_FORMAT}
    if classes is not None:
        record["classes"] = list(classes)
    if spec is not None:
        record["spec"] = dict(spec)
    return record


class RecordError(FormatError):
    """A record that cannot be read, with the problem in words of its own (``reason``, no path).

    The message is the format's (:data:`BAD_JSON`, :data:`NOT_AN_OBJECT`, :data:`BAD_SPEC`);
    ``reason`` lets a caller that owns the file say the same in its own message.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_bounded(path: str | Path, *, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, checked before any is read.

    The file is opened without blocking and checked on its descriptor (``fstat``), so that a
    FIFO, a device or a file swapped in after a check is never read; a file that grows past
    ``limit`` while it is read is refused too.

    Parameters
    ----------
    path : str or Path
    limit : int
        The most bytes read (:data:`MAX_JSON_BYTES`, :data:`MAX_MODEL_BYTES`).
    what : str
        What the file is, for :data:`TOO_LARGE` (``"a model file"``).

    Raises
    ------
    RecordError
        :data:`NOT_A_FILE` or :data:`TOO_LARGE`.
    OSError
        The file cannot be opened or read (missing, no permission).
    """
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RecordError(NOT_A_FILE.format(path=path), reason="not a regular file")
        size = info.st_size
        if size <= limit:
            content = fh.read(limit + 1)
            size = max(size, len(content))
        if size > limit:
            reason = f"{size} bytes, more than the {limit} bytes pie-audit reads from {what}"
            raise RecordError(TOO_LARGE.format(path=path, size=size, limit=limit, what=what), reason=reason)
    return content


def _depth(value: Any) -> int:
    """How deep objects and lists nest in a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= MAX_JSON_DEPTH:  # deeper is refused whatever lies below
            stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json(content: bytes, *, path: str | Path) -> Any:
    """A JSON value from a record's bytes (UTF-8), nested at most :data:`MAX_JSON_DEPTH` deep.

    Raises
    ------
    RecordError
        :data:`BAD_JSON`: not UTF-8, not JSON, or nested too deeply.
    """
    try:
        value = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        shown = NESTED_TOO_DEEPLY if isinstance(e, RecursionError) else e
        raise RecordError(BAD_JSON.format(path=path, reason=shown), reason=f"{_NOT_JSON}{shown}") from e
    if _depth(value) > MAX_JSON_DEPTH:
        reason = f"{_NOT_JSON}{NESTED_TOO_DEEPLY}"
        raise RecordError(BAD_JSON.format(path=path, reason=NESTED_TOO_DEEPLY), reason=reason)
    return value


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file holding an object (``run.json``, ``population.json``).

    Read as :func:`read_bounded` and :func:`parse_json` allow: a regular file of at most
    :data:`MAX_JSON_BYTES`, nested at most :data:`MAX_JSON_DEPTH` deep.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    dict

    Raises
    ------
    RecordError
        :data:`BAD_JSON` (unreadable, not UTF-8, not JSON, nested too deep), :data:`NOT_A_FILE`,
        :data:`TOO_LARGE` or :data:`NOT_AN_OBJECT`.
    """
    path = Path(path)
    try:
        content = read_bounded(path, limit=MAX_JSON_BYTES, what="a JSON record")
    except OSError as e:
        reason = e.strerror or str(e)
        raise RecordError(BAD_JSON.format(path=path, reason=reason), reason=reason) from e
    record = parse_json(content, path=path)
    if not isinstance(record, dict):
        reason = f"expected a JSON object, found {json_kind(record)}"
        raise RecordError(NOT_AN_OBJECT.format(path=path), reason=reason)
    return record


def read_run(path: str | Path) -> dict[str, Any]:
    """Read and validate one ``run.json``; only ``classes`` is checked, when present.

    Raises
    ------
    FormatError
        As :func:`read_json_object`, or :data:`BAD_CLASSES`.
    """
    run = read_json_object(Path(path))
    _check_classes(Path(path), run.get("classes"))
    return run


def read_population_classes(path: str | Path) -> tuple[str, ...] | None:
    """The class names of a ``population.json``, if it lists them (``"classes"``).

    Raises
    ------
    FormatError
        As :func:`read_json_object`, or :data:`BAD_CLASSES`.
    """
    classes = read_json_object(Path(path)).get("classes")
    _check_classes(Path(path), classes)
    return tuple(classes) if classes is not None else None


def _check_classes(path: Path, classes: Any) -> None:
    """``classes``, where given, must be a non-empty list of strings."""
    if classes is not None and not (
        isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)
    ):
        raise FormatError(BAD_CLASSES.format(path=path))


def read_population_spec(path: str | Path) -> dict[str, Any]:
    """The ``spec`` of a ``population.json``; ``{}`` when it has none (the audit's own records).

    Raises
    ------
    RecordError
        As :func:`read_json_object`, or :data:`BAD_SPEC`.
    """
    record = read_json_object(path)
    spec = record.get("spec", {})
    if not isinstance(spec, dict):
        kind = json_kind(spec)
        raise RecordError(BAD_SPEC.format(path=path, kind=kind), reason=f"'spec' is {kind}, expected an object")
    return spec


def json_kind(value: object) -> str:
    """What a JSON value is, in words (``"a list"``), for messages."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true or false"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number")


def file_record(path: str | Path) -> dict[str, Any]:
    """``{"bytes", "sha256"}`` of a file, as ``run.json``'s ``files`` lists it."""
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def file_records(directory: str | Path, names: Iterable[str] = (PREDICTIONS_FILE, MODEL_FILE)) -> dict[str, Any]:
    """``run.json``'s ``files``: :func:`file_record` of each of ``names`` in ``directory``."""
    return {name: file_record(Path(directory) / name) for name in names}


def incomplete_reason(directory: str | Path, *, seed: int) -> str | None:
    """Why ``directory`` is not a finished model of ``seed``; ``None`` when it is one.

    A finished model directory holds ``run.json``, written last, whose ``seed`` is ``seed`` and
    whose ``files`` give the size and SHA-256 of ``predictions.parquet`` and ``model.pt``; both
    files must match. A directory written by pie-audit is renamed into place whole, so only a
    damaged disk, a partial copy or a hand-made directory fails this.

    Parameters
    ----------
    directory : str or Path
    seed : int
        The seed the directory is named for.

    Returns
    -------
    str or None
        The first problem found, in words (``"no run.json"``), or ``None``.
    """
    directory = Path(directory)
    if directory.is_symlink() or not directory.is_dir():
        return "not a directory"
    try:
        run = parse_json(read_bounded(directory / RUN_FILE, limit=MAX_JSON_BYTES, what="a JSON record"),
                         path=directory / RUN_FILE)  # fmt: skip
    except FileNotFoundError:
        return f"no {RUN_FILE}"
    except OSError as e:
        return f"{RUN_FILE} is unreadable ({e.strerror or e})"
    except RecordError as e:
        # The parser's own words where it failed (its cause), else the bound that refused it.
        detail = e.__cause__ if e.__cause__ is not None else e.reason.removeprefix(_NOT_JSON)
        return f"{RUN_FILE} is unreadable ({detail})"
    if not isinstance(run, dict) or run.get("seed") != seed:
        return f"{RUN_FILE} is not the record of seed {seed}"
    files = run.get("files")
    if not isinstance(files, dict) or set(files) != {PREDICTIONS_FILE, MODEL_FILE}:
        return (
            f"{RUN_FILE} does not list the sizes and checksums of {PREDICTIONS_FILE} and "
            f"{MODEL_FILE}"
        )
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            return f"no {name}"
        if name == MODEL_FILE and path.stat().st_size > MAX_MODEL_BYTES:
            # Refused before it is hashed: reading it whole is what the bound is for.
            return f"{name} is larger than the {MAX_MODEL_BYTES} bytes pie-audit reads from a model file"
        if not isinstance(expected, dict) or path.stat().st_size != expected.get("bytes"):
            return f"{name} is not the size {RUN_FILE} records"
        if file_record(path)["sha256"] != expected.get("sha256"):
            return f"{name} does not match the checksum {RUN_FILE} records"
    return None
