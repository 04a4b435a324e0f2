"""``predictions.parquet``: one model's predictions, one row per test example.

Columns: ``example_id`` (int64, the example's index in the test split), ``label`` (int64, the
true class), ``prediction`` (int64, the top-1 class) and, when written with probabilities,
``prob_0`` ... ``prob_{C-1}`` (float32 softmax probabilities). Only the first three are read
back; every problem a user can make in them is a :class:`~pie_audit.errors.FormatError` that
names the file, the column and the value (``docs/interchange-format.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError

__all__ = [
    "REQUIRED_COLUMNS",
    "probability_column",
    "write_predictions",
    "write_prediction_columns",
    "read_predictions",
    "UNREADABLE_PARQUET",
    "MISSING_COLUMN",
    "INDEX_HINT",
    "BAD_RANGE_INDEX",
    "NOT_INTEGER",
    "MISSING_VALUES",
    "NEGATIVE_VALUE",
    "OUT_OF_RANGE",
    "NO_ROWS",
    "DUPLICATE_ID",
]

REQUIRED_COLUMNS = ("example_id", "label", "prediction")

# Messages are constants so that tests (and users' scripts) see the same wording every time.
UNREADABLE_PARQUET = "{path}: not a readable Parquet file ({reason})"
MISSING_COLUMN = "{path}: missing column '{column}'{hint}"
BAD_RANGE_INDEX = (
    "{path}: missing column 'example_id' (the file's range index named example_id has {count} "
    "entries, but the file has {rows} rows)"
)
INDEX_HINT = " (the file's index is named '{index}'; write the ids as a column or name the index example_id)"
NOT_INTEGER = "{path}: column '{column}' has type {type}; expected integers"
MISSING_VALUES = "{path}: column '{column}' has {count} missing values"
NEGATIVE_VALUE = "{path}: column '{column}' has negative value {value}; expected class indices >= 0"
OUT_OF_RANGE = "{path}: column '{column}' has value {value}, out of range; expected integers up to {largest} (int64)"
NO_ROWS = "{path}: no rows"
DUPLICATE_ID = "{path}: duplicate example_id {value}"


def probability_column(k: int) -> str:
    """Name of the column holding the probability of class ``k``."""
    return f"prob_{k}"


def write_predictions(
    path: Path,
    example_ids: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
) -> None:
    """Write one model's predictions in the interchange format.

    Parameters
    ----------
    path : Path
        Destination ``predictions.parquet``.
    example_ids : ndarray of shape (N,)
        Index of each example in the test split.
    labels : ndarray of shape (N,)
        True class of each example.
    probabilities : ndarray of shape (N, C)
        Softmax probabilities; the prediction is their arg-max.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    write_prediction_columns(path, example_ids, labels, probabilities.argmax(axis=1), probabilities)


def write_prediction_columns(
    path: Path,
    example_ids: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    probabilities: np.ndarray | None = None,
) -> None:
    """Write ``predictions.parquet`` from its columns; ``prob_*`` ones only with ``probabilities``.

    Parameters
    ----------
    path : Path
        Destination ``predictions.parquet``.
    example_ids, labels, predictions : ndarray of shape (N,)
        Each example's id, true class and predicted (top-1) class.
    probabilities : ndarray of shape (N, C), float32, optional
        Written as ``prob_0`` .. ``prob_{C-1}``; the caller makes ``predictions`` their arg-max.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, Any] = {
        "example_id": pa.array(np.asarray(example_ids, dtype=np.int64)),
        "label": pa.array(np.asarray(labels, dtype=np.int64)),
        "prediction": pa.array(np.asarray(predictions, dtype=np.int64)),
    }
    if probabilities is not None:
        for k in range(probabilities.shape[1]):
            columns[probability_column(k)] = pa.array(probabilities[:, k])
    pq.write_table(pa.table(columns), path)


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read and validate one ``predictions.parquet``, sorted by example id.

    Only the three required columns are read.

    Parameters
    ----------
    path : Path
        A ``predictions.parquet`` file.

    Returns
    -------
    example_ids, labels, predictions : ndarray of shape (N,), int64
        Sorted by ``example_id``.

    Raises
    ------
    FormatError
        Unreadable file, missing or non-integer column, missing or negative values,
        duplicate example ids, or no rows.
    """
    return sort_by_id(path, *read_unsorted(path))


def read_unsorted(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`read_predictions` in file order: every check but the order and duplicates of the ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        schema = pq.read_schema(path)
        names = set(schema.names)
        # pandas keeps a DataFrame's index in its metadata: a range index named example_id
        # holds no column at all, yet is the ids the user meant.
        range_ids = _range_index(schema, "example_id") if "example_id" not in names else None
        for column in REQUIRED_COLUMNS:
            if column not in names:
                if column == "example_id" and range_ids is not None:
                    continue
                hint = _index_hint(schema) if column == "example_id" else ""
                raise FormatError(MISSING_COLUMN.format(path=path, column=column, hint=hint))
            kind = schema.field(column).type
            if not pa.types.is_integer(kind):
                raise FormatError(NOT_INTEGER.format(path=path, column=column, type=kind))
        table = pq.read_table(path, columns=[c for c in REQUIRED_COLUMNS if c in names])
    except FormatError:
        raise
    except (OSError, pa.ArrowException) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FormatError(UNREADABLE_PARQUET.format(path=path, reason=reason)) from e
    if table.num_rows == 0:
        raise FormatError(NO_ROWS.format(path=path))
    if range_ids is not None:
        start, stop, step = range_ids
        count = len(range(start, stop, step))
        if count != table.num_rows:
            raise FormatError(BAD_RANGE_INDEX.format(path=path, count=count, rows=table.num_rows))
        table = table.append_column("example_id", pa.array(np.arange(start, stop, step, dtype=np.int64)))
    arrays = []
    for column in REQUIRED_COLUMNS:
        chunked = table.column(column)
        if chunked.null_count:
            raise FormatError(
                MISSING_VALUES.format(path=path, column=column, count=chunked.null_count)
            )
        _check_fits_int64(path, column, chunked)
        arrays.append(np.asarray(chunked.to_numpy(), dtype=np.int64))
    ids, labels, predictions = arrays
    for column, values in (("label", labels), ("prediction", predictions)):
        low = values.min()
        if low < 0:
            raise FormatError(NEGATIVE_VALUE.format(path=path, column=column, value=low))
    return ids, labels, predictions


_INT64_MAX = int(np.iinfo(np.int64).max)


def _check_fits_int64(path: Path, column: str, chunked: Any) -> None:
    """Refuse an unsigned column holding a value int64 cannot: the cast would wrap it negative."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_uint64(chunked.type) or len(chunked) == 0:
        return
    largest = pc.max(chunked).as_py()
    if largest is not None and largest > _INT64_MAX:
        raise FormatError(OUT_OF_RANGE.format(path=path, column=column, value=largest, largest=_INT64_MAX))


def id_order(path: Path, ids: np.ndarray) -> np.ndarray | None:
    """The permutation that sorts a file's example ids, ``None`` when they are sorted already.

    Raises
    ------
    FormatError
        An example id appears twice.
    """
    if (np.diff(ids) > 0).all():
        return None
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(np.diff(ids[order]) == 0)
    if repeated.size:
        raise FormatError(DUPLICATE_ID.format(path=path, value=ids[order][repeated[0]]))
    return order


def sort_by_id(
    path: Path, ids: np.ndarray, labels: np.ndarray, predictions: np.ndarray, order: np.ndarray | None | bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A file's columns sorted by example id; ``order`` from :func:`id_order` when already known."""
    if order is False:
        order = id_order(path, ids)
    if order is None:
        return ids, labels, predictions
    return ids[order], labels[order], predictions[order]


def _pandas_metadata(schema: Any) -> dict[str, Any]:
    """The pandas metadata of a file, ``{}`` when it has none or none that can be read.

    It only helps name the ids (a range index, a hint), so metadata that is not a JSON object,
    or is nested too deeply to parse, counts as none rather than failing the file.
    """
    from ._records import RecordError, parse_json

    raw = (schema.metadata or {}).get(b"pandas")
    if raw is None:
        return {}
    try:
        metadata = parse_json(raw, path="pandas metadata")
    except RecordError:
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _range_index(schema: Any, name: str) -> tuple[int, int, int] | None:
    """The (start, stop, step) of a pandas range index called ``name`` kept in the metadata."""
    indexes = _pandas_metadata(schema).get("index_columns", [])
    for index in indexes if isinstance(indexes, list) else []:
        if isinstance(index, dict) and index.get("kind") == "range" and index.get("name") == name:
            bounds = tuple(index.get(key) for key in ("start", "stop", "step"))
            if all(isinstance(b, int) and not isinstance(b, bool) for b in bounds) and bounds[2] != 0:
                return bounds  # type: ignore[return-value]
    return None


def _index_hint(schema: Any) -> str:
    """Why example_id may be missing: the ids were left in an index of another name."""
    indexes = _pandas_metadata(schema).get("index_columns", [])
    for index in indexes if isinstance(indexes, list) else []:
        named = index.get("name") if isinstance(index, dict) else index
        if isinstance(named, str) and named.startswith("__index_level_"):
            named = None  # pandas' own name for an unnamed index
        if not (isinstance(index, dict) and index.get("kind") == "range" and named is None):
            return INDEX_HINT.format(index=named if named is not None else "(unnamed)")
    return ""
