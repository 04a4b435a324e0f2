"""Groups tables: the attributes of each test example (sex, age band, subject), read and checked.

A groups table has one row per example: ``example_id`` (int64) and one or more *attribute*
columns holding strings, integers or booleans, as Parquet or CSV (``docs/groups.md``). A
population may carry its own as ``groups.parquet`` (:data:`GROUPS_FILE`), which the trainer
writes for datasets that have attributes (CelebA). :func:`read_groups` checks a table against
the examples of the populations being audited and aligns it to them; every refusal names the
file and the column, so that a user knows what to fix. The statistics over the groups live in
:mod:`pie_audit.audit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import atomic_file
from ..errors import ConfigError, FormatError
from ._records import GROUPS_FILE

__all__ = [
    "GROUPS_FILE",
    "MAX_GROUP_VALUES",
    "GroupTable",
    "read_groups",
    "write_groups",
    "NO_GROUPS_FILE",
    "BAD_GROUPS_SUFFIX",
    "UNREADABLE_GROUPS",
    "NO_EXAMPLE_ID",
    "BAD_EXAMPLE_ID",
    "NO_ATTRIBUTES",
    "UNKNOWN_ATTRIBUTE",
    "EMPTY_GROUP_BY",
    "REPEATED_ATTRIBUTE",
    "DUPLICATE_EXAMPLE",
    "MISSING_EXAMPLES",
    "MISSING_VALUES",
    "FLOAT_ATTRIBUTE",
    "BAD_ATTRIBUTE_TYPE",
    "TOO_MANY_VALUES",
    "SINGLE_VALUE",
]

#: An attribute with more distinct values than this is a measurement, not a grouping.
MAX_GROUP_VALUES = 50

NO_GROUPS_FILE = "{name}: no such file"
BAD_GROUPS_SUFFIX = "{name}: a groups table must be a .parquet or .csv file"
UNREADABLE_GROUPS = "{name}: cannot be read as {kind} ({reason})"
NO_EXAMPLE_ID = "{name}: no example_id column; a groups table has example_id and one column per attribute"
BAD_EXAMPLE_ID = "{name}: column 'example_id' must hold integers without gaps, not {dtype} values"
NO_ATTRIBUTES = "{name}: no attribute column besides example_id"
UNKNOWN_ATTRIBUTE = "{name}: no column {column!r} to group by; its attribute columns are: {known}"
EMPTY_GROUP_BY = "{name}: group-by names no column"
REPEATED_ATTRIBUTE = "{name}: column {column!r} is named twice in group-by"
DUPLICATE_EXAMPLE = "{name}: example_id {example_id} has {count} rows; a groups table has one row per example"
MISSING_EXAMPLES = (
    "{name}: no row for {count} example(s) of the populations, such as example_id {example_id}; "
    "every example needs a row"
)
MISSING_VALUES = (
    "{name}: column {column!r} has {count} missing value(s), such as at example_id {example_id}; "
    "every example needs a value"
)
FLOAT_ATTRIBUTE = (
    "{name}: column {column!r} holds floats; groups are values, not measurements: bin it first "
    "(for example into bands of age) and write the bins as strings or integers"
)
BAD_ATTRIBUTE_TYPE = "{name}: column {column!r} holds {dtype} values; an attribute holds strings, integers or booleans"
TOO_MANY_VALUES = (
    "{name}: column {column!r} has {count} distinct values among the populations' examples, more "
    "than {limit}; bin it first"
)
SINGLE_VALUE = (
    "{name}: column {column!r} has a single value ({value!r}) among the populations' examples, so it "
    "defines no group to compare; leave it out of group-by"
)


@dataclass(frozen=True, eq=False)
class GroupTable:
    """A checked groups table, aligned to the populations' examples.

    Attributes
    ----------
    attributes : DataFrame of shape (N, A)
        One row per example of the populations, in their ``example_ids`` order, one column per
        selected attribute (strings, integers or booleans; no missing value), ``RangeIndex``.
    source : Path or None
        The file it was read from; ``None`` for a table given in memory.
    ignored_rows : int
        Rows of the file for examples the populations do not have (ignored).
    """

    attributes: pd.DataFrame
    source: Path | None
    ignored_rows: int

    @property
    def names(self) -> tuple[str, ...]:
        """The selected attributes, in order."""
        return tuple(self.attributes.columns)


def write_groups(attributes: pd.DataFrame, path: str | Path) -> Path:
    """Write a groups table as Parquet, atomically.

    Parameters
    ----------
    attributes : DataFrame
        ``example_id`` (integers) and one or more attribute columns.
    path : str or Path
        The destination, usually ``<population>/groups.parquet`` (:data:`GROUPS_FILE`).

    Returns
    -------
    Path
        ``path``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if "example_id" not in attributes.columns:
        raise ConfigError(NO_EXAMPLE_ID.format(name=path))
    if len(attributes.columns) < 2:
        raise ConfigError(NO_ATTRIBUTES.format(name=path))
    frame = attributes.reset_index(drop=True).copy()
    frame["example_id"] = frame["example_id"].astype(np.int64)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with atomic_file(path, "wb") as fh:
        pq.write_table(table, fh)
    return path


def read_groups(
    source: str | Path | pd.DataFrame,
    example_ids: np.ndarray,
    *,
    group_by: Sequence[str] | None = None,
) -> GroupTable:
    """Read a groups table and check it against the populations' examples.

    Parameters
    ----------
    source : str, Path or DataFrame
        A ``.parquet`` or ``.csv`` file, or the table itself.
    example_ids : ndarray of shape (N,)
        The populations' examples; the result's rows follow this order.
    group_by : sequence of str, optional
        The attribute columns to use, in order; default every column but ``example_id``.

    Returns
    -------
    GroupTable

    Raises
    ------
    FormatError
        The file is missing or unreadable, or the table is not one row per example with
        usable attribute values (see the module's messages).
    ConfigError
        ``group_by`` is empty, repeats a column or names one the table does not have.
    """
    name, frame, path = _load(source)
    if "example_id" not in frame.columns:
        raise FormatError(NO_EXAMPLE_ID.format(name=name))
    ids = frame["example_id"]
    if not pd.api.types.is_integer_dtype(ids.dtype) or isinstance(ids.dtype, pd.BooleanDtype) or ids.dtype == bool:
        raise FormatError(BAD_EXAMPLE_ID.format(name=name, dtype=ids.dtype))
    known = [str(c) for c in frame.columns if c != "example_id"]
    if not known:
        raise FormatError(NO_ATTRIBUTES.format(name=name))
    selected = _selected(name, known, group_by)

    ids = ids.to_numpy(dtype=np.int64)
    unique, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        k = int(np.argmax(counts > 1))
        raise FormatError(DUPLICATE_EXAMPLE.format(name=name, example_id=int(unique[k]), count=int(counts[k])))
    wanted = np.asarray(example_ids, dtype=np.int64)
    where = np.searchsorted(unique, wanted)
    where = np.minimum(where, len(unique) - 1)
    found = unique[where] == wanted
    if not found.all():
        raise FormatError(
            MISSING_EXAMPLES.format(name=name, count=int((~found).sum()), example_id=int(wanted[~found][0]))
        )
    rows = first[where]
    attributes = frame.iloc[rows][selected].reset_index(drop=True)
    attributes.columns = [str(c) for c in attributes.columns]
    for column in attributes.columns:
        attributes[column] = _checked_column(name, column, attributes[column], wanted)
    return GroupTable(attributes=attributes, source=path, ignored_rows=int(len(frame) - len(wanted)))


def _load(source: str | Path | pd.DataFrame) -> tuple[str, pd.DataFrame, Path | None]:
    if isinstance(source, pd.DataFrame):
        return "groups table", source, None
    path = Path(source)
    name = str(path)
    if not path.is_file():
        raise FormatError(NO_GROUPS_FILE.format(name=name))
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            frame = pq.read_table(path).to_pandas()
        except Exception as e:  # pyarrow raises several types for a file that is not Parquet
            raise FormatError(UNREADABLE_GROUPS.format(name=name, kind="Parquet", reason=_first_line(e))) from e
    elif suffix == ".csv":
        try:
            # Strings stay strings: "01" is a value, not the number 1, unless the whole column is numeric.
            frame = pd.read_csv(path, keep_default_na=True)
        except (ValueError, OSError, UnicodeDecodeError) as e:
            raise FormatError(UNREADABLE_GROUPS.format(name=name, kind="CSV", reason=_first_line(e))) from e
    else:
        raise FormatError(BAD_GROUPS_SUFFIX.format(name=name))
    return name, frame, path


def _selected(name: str, known: list[str], group_by: Sequence[str] | None) -> list[str]:
    if group_by is None:
        return known
    if isinstance(group_by, str):
        group_by = [group_by]
    selected = [str(c) for c in group_by]
    if not selected:
        raise ConfigError(EMPTY_GROUP_BY.format(name=name))
    for column in selected:
        if column not in known:
            raise ConfigError(UNKNOWN_ATTRIBUTE.format(name=name, column=column, known=", ".join(known)))
        if selected.count(column) > 1:
            raise ConfigError(REPEATED_ATTRIBUTE.format(name=name, column=column))
    return selected


def _checked_column(name: str, column: str, values: pd.Series, example_ids: np.ndarray) -> pd.Series:
    missing = values.isna().to_numpy()
    if missing.any():
        raise FormatError(
            MISSING_VALUES.format(
                name=name, column=column, count=int(missing.sum()), example_id=int(example_ids[missing][0])
            )
        )
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        values = values.astype(dtype.categories.dtype)
        dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        values = values.astype(bool)
    elif pd.api.types.is_integer_dtype(dtype):
        values = values.astype(np.int64)
    elif pd.api.types.is_float_dtype(dtype):
        raise FormatError(FLOAT_ATTRIBUTE.format(name=name, column=column))
    elif pd.api.types.is_string_dtype(dtype) or dtype == object:
        if not all(isinstance(v, str) for v in values):
            if any(isinstance(v, (float, np.floating)) for v in values):
                raise FormatError(FLOAT_ATTRIBUTE.format(name=name, column=column))
            # Mixed strings and numbers (a CSV column "1", "b"): compare them as text.
            values = values.map(str)
        values = values.astype(object)
    else:
        raise FormatError(BAD_ATTRIBUTE_TYPE.format(name=name, column=column, dtype=dtype))
    distinct = pd.unique(values)
    if len(distinct) > MAX_GROUP_VALUES:
        raise FormatError(TOO_MANY_VALUES.format(name=name, column=column, count=len(distinct), limit=MAX_GROUP_VALUES))
    if len(distinct) == 1:
        raise FormatError(SINGLE_VALUE.format(name=name, column=column, value=_plain(distinct[0])))
    return values


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
