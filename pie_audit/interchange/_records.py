"""The JSON records of the format: ``run.json`` (one model) and ``population.json`` (a population).

The one place that knows their ``format`` tags and the file names of a model directory, builds
the records (:func:`run_record`, :func:`population_record`), reads them (:func:`read_run`,
:func:`read_population_classes`, :func:`read_population_spec`: a JSON object, or a one-line
:class:`~pie_audit.errors.FormatError` naming the file) and checks that a model directory is
finished (:func:`incomplete_reason`): ``run.json`` is written last and lists the size and SHA-256
of every file beside it (``docs/interchange-format.md``).
"""

from __future__ import annotations

import hashlib
import json
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


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file holding an object (``run.json``, ``population.json``).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    dict

    Raises
    ------
    RecordError
        :data:`BAD_JSON` (unreadable, not UTF-8, not JSON, nested too deep) or :data:`NOT_AN_OBJECT`.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
    except OSError as e:
        reason = e.strerror or str(e)
        raise RecordError(BAD_JSON.format(path=path, reason=reason), reason=reason) from e
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        shown = "nested too deeply" if isinstance(e, RecursionError) else e
        raise RecordError(BAD_JSON.format(path=path, reason=shown), reason=f"not UTF-8 JSON: {e}") from e
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
        with open(directory / RUN_FILE, encoding="utf-8") as fh:
            run = json.load(fh)
    except FileNotFoundError:
        return f"no {RUN_FILE}"
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        return f"{RUN_FILE} is unreadable ({e})"
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
        if not isinstance(expected, dict) or path.stat().st_size != expected.get("bytes"):
            return f"{name} is not the size {RUN_FILE} records"
        if file_record(path)["sha256"] != expected.get("sha256"):
            return f"{name} does not match the checksum {RUN_FILE} records"
    return None
