"""A population's mean softmax probabilities, read model by model from ``prob_*`` columns.

``predictions.parquet`` may carry ``prob_0`` .. ``prob_{C-1}`` (:mod:`._predictions`); the audit
reads only the top-1 predictions, and the risk ranking and the label-issue finder want the
population's *mean* probabilities, shape (N, C). They are accumulated one model, and a block of
columns, at a time: the (M, N, C) stack is never built (at 21,843 classes and 50,000 examples,
one model's probabilities are 4 GB in float32; sixteen of them would not fit).

A population whose files carry no ``prob_*`` column has no mean (``None``): the caller says so
in a note, it is not an error. Anything else that is not a complete, valid set of probabilities
for every model is a :class:`~pie_audit.errors.FormatError` naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from ._population import Population, load_population
from ._predictions import UNREADABLE_PARQUET, id_order, probability_column, read_unsorted

__all__ = [
    "mean_probabilities",
    "probability_columns",
    "SUM_TOLERANCE",
    "BLOCK_COLUMNS",
    "SOME_WITHOUT",
    "COUNT_MISMATCH",
    "GAP_IN_COLUMNS",
    "NOT_FLOAT",
    "MISSING_PROBABILITIES",
    "BAD_PROBABILITY",
    "BAD_SUM",
    "TOO_FEW_COLUMNS",
    "CLASS_COUNT",
]

#: How far a row of probabilities may sum from 1: float32 softmax outputs over tens of thousands
#: of classes round to within about 1e-3 of it; logits, log-probabilities or scores miss it by far.
SUM_TOLERANCE = 1e-2
#: Probability columns read at once: bounds the memory of one read to N x BLOCK_COLUMNS floats.
BLOCK_COLUMNS = 256

_COLUMN = re.compile(r"prob_(0|[1-9][0-9]*)")

# Messages are constants so that tests (and users' scripts) see the same wording every time.
SOME_WITHOUT = (
    "{path}: no probability columns (prob_0, prob_1, ...), but {reference} has {count}; give every "
    "model of a population its probabilities, or none"
)
COUNT_MISMATCH = "{path}: {count} probability columns, but {reference} has {expected}"
GAP_IN_COLUMNS = "{path}: probability columns must be prob_0 .. prob_{last}, each once; '{column}' is {problem}"
NOT_FLOAT = "{path}: column '{column}' has type {type}; expected floating-point probabilities"
MISSING_PROBABILITIES = "{path}: column '{column}' has {count} missing values"
#: A non-finite or negative value.
BAD_PROBABILITY = "{path}: column '{column}' holds {value} at example_id {example_id}; expected probabilities in [0, 1]"
BAD_SUM = (
    "{path}: the probabilities of example_id {example_id} sum to {total:.6g}, not 1 (within {tolerance}); "
    "expected softmax outputs, not logits or scores"
)
TOO_FEW_COLUMNS = "{path}: {count} probability columns, but column '{column}' has class {value}"
CLASS_COUNT = "{path}: {count} probability columns, but {source} names {classes} classes"


def probability_columns(names: Any, path: Path | str) -> list[str]:
    """The ``prob_*`` columns among a file's column names, in class order; ``[]`` when none.

    Raises
    ------
    FormatError
        :data:`GAP_IN_COLUMNS`: the columns are not ``prob_0`` .. ``prob_{C-1}``, each once.
    """
    found = sorted(int(m.group(1)) for n in names if (m := _COLUMN.fullmatch(str(n))))
    for k, index in enumerate(found):
        if index != k:
            problem = "repeated" if index < k else "missing"
            column = probability_column(index if index < k else k)
            raise FormatError(GAP_IN_COLUMNS.format(path=path, last=found[-1], column=column, problem=problem))
    return [probability_column(k) for k in range(len(found))]


def mean_probabilities(population: str | Path | Population) -> np.ndarray | None:
    """The population's mean softmax probabilities over its models, per example.

    Parameters
    ----------
    population : str, Path or Population
        A population directory (read with :func:`load_population`), a population read from
        one (its models' files are read again, for their ``prob_*`` columns only), or one built
        with :meth:`Population.from_arrays` (its ``probabilities``).

    Returns
    -------
    ndarray of shape (N, C), float64, or None
        Row ``i`` is the mean over the M models of their probabilities for the example
        ``population.example_ids[i]`` (the order :func:`load_population` gives, by example id,
        whatever order each file lists its rows in). ``None`` when no model's file has a
        ``prob_*`` column, or a population from arrays was given none.

    Raises
    ------
    FormatError
        Naming the file: some models with probability columns and some without
        (:data:`SOME_WITHOUT`), a different number of them (:data:`COUNT_MISMATCH`), a gap in
        their numbering (:data:`GAP_IN_COLUMNS`), non-float (:data:`NOT_FLOAT`), missing
        (:data:`MISSING_PROBABILITIES`), non-finite or negative values (:data:`BAD_PROBABILITY`), a row that does not sum to 1 within
        :data:`SUM_TOLERANCE` (:data:`BAD_SUM`), fewer columns than the classes in the labels
        or predictions need (:data:`TOO_FEW_COLUMNS`), or another number of them than the
        classes ``population.json`` or ``run.json`` names (:data:`CLASS_COUNT`); and whatever
        :func:`load_population` refuses.

    Examples
    --------
    >>> pop = Population.from_arrays([[0, 1], [0, 0]], [0, 1],
    ...                              probabilities=[[[0.9, 0.1], [0.4, 0.6]], [[0.7, 0.3], [0.8, 0.2]]])
    >>> mean_probabilities(pop).round(3).tolist()
    [[0.8, 0.2], [0.6, 0.4]]
    """
    if not isinstance(population, Population):
        population = load_population(Path(population))
    if population.probabilities is not None:
        return _mean_of_arrays(population)
    if population.path is None:
        return None
    return _mean_of_files(population)


def _mean_of_arrays(population: Population) -> np.ndarray:
    probabilities = population.probabilities
    m, n, c = probabilities.shape
    _check_class_count(population, c, population.name)
    total = np.zeros((n, c), dtype=np.float64)
    columns = [probability_column(j) for j in range(c)]
    for k in range(m):
        block = probabilities[k].astype(np.float64)
        _check_block(population.sources[k], block, columns, population.example_ids)
        _check_sums(population.sources[k], block.sum(axis=1), population.example_ids)
        total += block
    return total / m


def _mean_of_files(population: Population) -> np.ndarray | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [Path(f) for f in population.sources]
    schemas = [_schema(f) for f in files]
    columns = [probability_columns(schema.names, f) for f, schema in zip(files, schemas, strict=True)]
    with_columns = [k for k, names in enumerate(columns) if names]
    if not with_columns:
        return None
    reference = with_columns[0]
    c = len(columns[reference])
    for k, names in enumerate(columns):
        if not names:
            raise FormatError(SOME_WITHOUT.format(path=files[k], reference=files[reference], count=c))
        if len(names) != c:
            raise FormatError(COUNT_MISMATCH.format(path=files[k], count=len(names), reference=files[reference], expected=c))
    _check_class_count(population, c, files[reference])
    ids = population.example_ids
    n = ids.size
    total = np.zeros((n, c), dtype=np.float64)
    for file, schema, names in zip(files, schemas, columns, strict=True):
        for name in names:
            kind = schema.field(name).type
            if not pa.types.is_floating(kind):
                raise FormatError(NOT_FLOAT.format(path=file, column=name, type=kind))
        # load_population checked that every file holds the same ids; only their order may differ.
        file_ids = read_unsorted(file)[0]
        order = id_order(file, file_ids)
        sums = np.zeros(n, dtype=np.float64)
        for start in range(0, c, BLOCK_COLUMNS):
            chunk = names[start : start + BLOCK_COLUMNS]
            try:
                table = pq.read_table(file, columns=chunk)
            except (OSError, pa.ArrowException) as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise FormatError(UNREADABLE_PARQUET.format(path=file, reason=reason)) from e
            for name in chunk:
                nulls = table.column(name).null_count
                if nulls:
                    raise FormatError(MISSING_PROBABILITIES.format(path=file, column=name, count=nulls))
            block = np.column_stack([table.column(name).to_numpy().astype(np.float64, copy=False) for name in chunk])
            del table
            if order is not None:
                block = block[order]
            _check_block(file, block, chunk, ids)
            sums += block.sum(axis=1)
            total[:, start : start + len(chunk)] += block
        _check_sums(file, sums, ids)
    return total / len(files)


def _schema(file: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(file)
    except (OSError, pa.ArrowException) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FormatError(UNREADABLE_PARQUET.format(path=file, reason=reason)) from e


def _check_class_count(population: Population, c: int, path: Path | str) -> None:
    """Refuse fewer columns than the classes the population's labels, predictions or names need."""
    for column, values in (("label", population.labels), ("prediction", population.predictions)):
        high = int(values.max())
        if high >= c:
            raise FormatError(TOO_FEW_COLUMNS.format(path=path, count=c, column=column, value=high))
    if population.classes is not None and len(population.classes) != c:
        raise FormatError(
            CLASS_COUNT.format(path=path, count=c, source=population.classes_source, classes=len(population.classes))
        )


def _check_block(path: Path | str, block: np.ndarray, columns: list[str], ids: np.ndarray) -> None:
    """Refuse a non-finite or a negative probability, naming its column and example."""
    bad = ~(block >= 0)  # NaN compares false: caught with the negatives
    bad |= np.isinf(block)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise FormatError(
            BAD_PROBABILITY.format(path=path, column=columns[column], value=block[row, column], example_id=ids[row])
        )


def _check_sums(path: Path | str, sums: np.ndarray, ids: np.ndarray) -> None:
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise FormatError(BAD_SUM.format(path=path, example_id=ids[row], total=sums[row], tolerance=SUM_TOLERANCE))
