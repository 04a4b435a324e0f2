"""The on-disk interchange format: one directory per model.

A *population directory* holds one sub-directory per model. A *model directory* holds:

``predictions.parquet`` (required)
    One row per test example: ``example_id`` (int64, the example's index in the test split),
    ``label`` (int64, the true class), ``prediction`` (int64, the top-1 class) and, when
    written by pie-audit, ``prob_0`` ... ``prob_{C-1}`` (float32 softmax probabilities).
``run.json`` (optional)
    Provenance: seed, architecture, dataset, ``classes`` (names indexed by label),
    target and achieved sparsity, training configuration, accuracy, versions.
``model.pt`` (optional)
    A plain ``state_dict`` (masks folded in), loadable with ``torch.load(..., weights_only=True)``.

See ``docs/interchange-format.md`` for the full specification.

The reading side (:func:`load_population`, :func:`check_populations`) validates everything a
user can get wrong and raises :class:`~pie_audit.errors.FormatError` with a message that names
the file and the problem; see ``docs/audit.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from ._records import (
    BAD_JSON,
    MODEL_FILE,
    NOT_AN_OBJECT,
    POPULATION_FILE,
    PREDICTIONS_FILE,
    RUN_FILE,
    population_record,
    read_json_object,
)

__all__ = [
    "PREDICTIONS_FILE",
    "RUN_FILE",
    "MODEL_FILE",
    "REQUIRED_COLUMNS",
    "probability_column",
    "write_predictions",
    "model_dirs",
    "Population",
    "read_predictions",
    "read_run",
    "load_population",
    "check_populations",
    "write_population",
    "read_population_classes",
    "POPULATION_FILE",
]

REQUIRED_COLUMNS = ("example_id", "label", "prediction")
#: Without a class list, classes are numbered 0 .. C-1 from the largest index found; beyond this
#: (more than ImageNet-21k's 21,841 classes several times over) an index is taken for corruption.
MAX_UNNAMED_CLASSES = 100_000


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
    import pyarrow as pa
    import pyarrow.parquet as pq

    probabilities = np.asarray(probabilities, dtype=np.float32)
    columns: dict[str, Any] = {
        "example_id": pa.array(np.asarray(example_ids, dtype=np.int64)),
        "label": pa.array(np.asarray(labels, dtype=np.int64)),
        "prediction": pa.array(probabilities.argmax(axis=1).astype(np.int64)),
    }
    for k in range(probabilities.shape[1]):
        columns[probability_column(k)] = pa.array(probabilities[:, k])
    pq.write_table(pa.table(columns), path)


def model_dirs(population: Path) -> list[Path]:
    """Model sub-directories of a population directory, sorted by name.

    Hidden entries (including unfinished ``.tmp-*`` writes) and plain files are ignored.
    """
    return sorted(
        p for p in Path(population).iterdir() if p.is_dir() and not p.name.startswith(".")
    )


# --------------------------------------------------------------------------------------------
# Reading side
# --------------------------------------------------------------------------------------------

# Messages are constants so that tests (and users' scripts) see the same wording every time.
NO_DIRECTORY = "{path}: no such directory"
NOT_A_DIRECTORY = "{path}: not a directory"
EMPTY_POPULATION = (
    "{path}: no model found ({found}); expected one sub-directory per model, each with {file}, "
    "or one <model>.parquet file per model"
)
MIXED_LAYOUT = (
    "{path}: holds both a model file ({file}) and a model directory ({directory}); use one layout: "
    "<model>/predictions.parquet or <model>.parquet"
)
NO_PREDICTIONS = "{path}: no prediction files; expected <model>/{file} in each model sub-directory"
MISSING_PREDICTIONS = "{path}: missing {file} (every model sub-directory needs one)"
UNREADABLE_PARQUET = "{path}: not a readable Parquet file ({reason})"
MISSING_COLUMN = "{path}: missing column '{column}'{hint}"
INDEX_HINT = " (the file's index is named '{index}'; write the ids as a column or name the index example_id)"
NOT_INTEGER = "{path}: column '{column}' has type {type}; expected integers"
MISSING_VALUES = "{path}: column '{column}' has {count} missing values"
NEGATIVE_VALUE = "{path}: column '{column}' has negative value {value}; expected class indices >= 0"
NO_ROWS = "{path}: no rows"
DUPLICATE_ID = "{path}: duplicate example_id {value}"
DIFFERENT_EXAMPLES = "{path}: evaluated on different examples than {reference} ({detail})"
LABEL_MISMATCH = (
    "{path}: label of example_id {example_id} is {label}, but {other} in {reference}"
)
NOT_AN_ARRAY = "{what}: not an array of class indices ({reason})"
ARRAY_LENGTH = "{what}: {n} values, but there are {labels} labels"
ARRAY_SHAPE = "{what}: shape {shape}; expected (models, {n}) to match the labels"
NO_MODELS = "{name}: no model; expected predictions of shape (models, examples)"
BAD_MODEL_NAMES = "{name}: model_names must be {n} distinct non-empty names without '/' or a leading '.'"
PROBABILITIES_DISAGREE = "{name}: the arg-max of the probabilities differs from the predictions"
BAD_RUN_JSON = BAD_JSON
RUN_NOT_OBJECT = NOT_AN_OBJECT
BAD_CLASSES = "{path}: 'classes' must be a non-empty list of strings"
CLASS_MISMATCH = "{path}: class list differs from {reference} ({detail})"
TOO_MANY_CLASSES = (
    "{path}: column '{column}' has value {value}, and no run.json lists the classes; without a "
    "class list pie-audit accepts class indices below {limit:,}: list the classes in run.json "
    "'classes' or check the file"
)
CLASS_OUT_OF_RANGE = (
    "{path}: column '{column}' has value {value}, but {reference} lists only {n} classes"
)


@dataclass(frozen=True, eq=False)
class Population:
    """The predictions of a population of models, aligned by example id.

    Attributes
    ----------
    path : Path
        The population directory.
    models : tuple of str
        Model sub-directory names, sorted; row ``m`` of ``predictions`` is ``models[m]``.
    example_ids : ndarray of shape (N,)
        Example ids, strictly increasing.
    labels : ndarray of shape (N,)
        True class of each example.
    predictions : ndarray of shape (M, N)
        Top-1 class predicted by each model for each example.
    runs : tuple of (dict or None)
        Each model's ``run.json``, or ``None`` where a model has none.
    classes : tuple of str or None
        Class names from the models' ``run.json`` files, when any has them.
    classes_source : Path or None
        The ``run.json`` the class names were read from (for error messages).
    """

    path: Path | None
    models: tuple[str, ...]
    example_ids: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    runs: tuple[dict[str, Any] | None, ...]
    classes: tuple[str, ...] | None = None
    classes_source: Path | str | None = None
    sources: tuple[Path | str, ...] = ()
    name: str = ""
    probabilities: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Defaults derived from the path, so that every population can name itself and its files.
        if not self.name:
            object.__setattr__(self, "name", self.path.name if self.path is not None else "population")
        if not self.sources:
            if self.path is not None:
                sources = tuple(self.path / m / PREDICTIONS_FILE for m in self.models)
            else:
                sources = tuple(f"{self.name} model {m}" for m in self.models)
            object.__setattr__(self, "sources", sources)

    @property
    def n_models(self) -> int:
        return self.predictions.shape[0]

    @property
    def n_examples(self) -> int:
        return self.predictions.shape[1]

    @property
    def reference_file(self) -> Path | str:
        """The first model's predictions: what the other models are checked against."""
        return self.sources[0]

    @classmethod
    def from_arrays(
        cls,
        predictions: Any,
        labels: Any,
        *,
        example_ids: Any = None,
        classes: Sequence[str] | None = None,
        model_names: Sequence[str] | None = None,
        probabilities: Any = None,
        name: str = "population",
    ) -> Population:
        """A population from predictions in memory, validated as files are.

        Parameters
        ----------
        predictions : array-like of shape (M, N), or a list of M array-likes of shape (N,)
            Top-1 class of each of M models for each of N test examples.
        labels : array-like of shape (N,)
            True class of each example.
        example_ids : array-like of shape (N,), optional
            Each example's id (unique integers); default ``0 .. N-1``. Examples are put in id order.
        classes : sequence of str, optional
            Class names, indexed by label.
        model_names : sequence of str, optional
            One per model; default ``model-000``, ``model-001``, ...
        probabilities : array-like of shape (M, N, C), optional
            Softmax outputs, kept for :func:`write_population`; each model's arg-max must be its
            prediction.
        name : str, default "population"
            Shown in reports and messages (``"baseline"``, ``"int8"``, ...).

        Returns
        -------
        Population

        Raises
        ------
        FormatError
            Anything :func:`load_population` would refuse in files: shapes that disagree,
            non-integer or negative classes, duplicate ids, a class list that is too short.

        Examples
        --------
        >>> pop = Population.from_arrays([[0, 1, 1], [0, 1, 0]], [0, 1, 1], name="dense")
        >>> pop.n_models, pop.n_examples, pop.models
        (2, 3, ('model-000', 'model-001'))
        """
        return _population_from_arrays(
            predictions, labels, example_ids=example_ids, classes=classes, model_names=model_names,
            probabilities=probabilities, name=name,
        )  # fmt: skip


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
        table = table.append_column("example_id", pa.array(np.arange(start, stop, step, dtype=np.int64)))
    arrays = []
    for column in REQUIRED_COLUMNS:
        chunked = table.column(column)
        if chunked.null_count:
            raise FormatError(
                MISSING_VALUES.format(path=path, column=column, count=chunked.null_count)
            )
        arrays.append(np.asarray(chunked.to_numpy(), dtype=np.int64))
    ids, labels, predictions = arrays
    for column, values in (("label", labels), ("prediction", predictions)):
        low = values.min()
        if low < 0:
            raise FormatError(NEGATIVE_VALUE.format(path=path, column=column, value=low))
    steps = np.diff(ids)
    if not (steps > 0).all():
        order = np.argsort(ids, kind="stable")
        ids, labels, predictions = ids[order], labels[order], predictions[order]
        repeated = np.flatnonzero(np.diff(ids) == 0)
        if repeated.size:
            raise FormatError(DUPLICATE_ID.format(path=path, value=ids[repeated[0]]))
    return ids, labels, predictions


def _range_index(schema: Any, name: str) -> tuple[int, int, int] | None:
    """The (start, stop, step) of a pandas range index called ``name`` kept in the metadata."""
    for index in (schema.pandas_metadata or {}).get("index_columns", []):
        if isinstance(index, dict) and index.get("kind") == "range" and index.get("name") == name:
            return int(index["start"]), int(index["stop"]), int(index["step"])
    return None


def _index_hint(schema: Any) -> str:
    """Why example_id may be missing: the ids were left in an index of another name."""
    indexes = (schema.pandas_metadata or {}).get("index_columns", [])
    for index in indexes:
        named = index.get("name") if isinstance(index, dict) else index
        if isinstance(named, str) and named.startswith("__index_level_"):
            named = None  # pandas' own name for an unnamed index
        if not (isinstance(index, dict) and index.get("kind") == "range" and named is None):
            return INDEX_HINT.format(index=named if named is not None else "(unnamed)")
    return ""


def read_run(path: Path) -> dict[str, Any]:
    """Read and validate one ``run.json``; only ``classes`` is checked, when present."""
    run = read_json_object(Path(path))
    _check_classes(Path(path), run.get("classes"))
    return run


def _check_classes(path: Path, classes: Any) -> None:
    """``classes``, where given, must be a non-empty list of strings."""
    if classes is not None and not (
        isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)
    ):
        raise FormatError(BAD_CLASSES.format(path=path))


def load_population(path: Path) -> Population:
    """Read every model of a population directory and check they agree with each other.

    Parameters
    ----------
    path : Path
        A population directory: one sub-directory per model, each holding
        ``predictions.parquet`` and optionally ``run.json``. Files and hidden entries at the
        top level (``population.json``, unfinished ``.tmp-*`` writes) are ignored.

    Returns
    -------
    Population
        Predictions of shape (M, N), aligned by example id.

    Raises
    ------
    FormatError
        Missing or empty directory, no prediction files, any problem reported by
        :func:`read_predictions` or :func:`read_run`, models evaluated on different examples,
        labels or class lists that disagree between models.
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(NO_DIRECTORY.format(path=path))
    if not path.is_dir():
        raise FormatError(NOT_A_DIRECTORY.format(path=path))
    dirs = model_dirs(path)
    flat = sorted(p for p in path.glob("*.parquet") if p.is_file() and not p.name.startswith("."))
    if dirs and flat:
        raise FormatError(MIXED_LAYOUT.format(path=path, file=flat[0].name, directory=dirs[0].name))
    if flat:
        # One file per model, named for it: the simplest layout another framework can write.
        files, names = flat, [f.stem for f in flat]
    else:
        if not dirs:
            found = ", ".join(sorted(p.name for p in path.iterdir() if not p.name.startswith("."))[:3])
            what = f"found only {found}" if found else "it is empty"
            raise FormatError(EMPTY_POPULATION.format(path=path, file=PREDICTIONS_FILE, found=what))
        files, names = [d / PREDICTIONS_FILE for d in dirs], [d.name for d in dirs]
        present = [f.is_file() for f in files]
        if not any(present):
            raise FormatError(NO_PREDICTIONS.format(path=path, file=PREDICTIONS_FILE))
        if not all(present):
            missing = dirs[present.index(False)]
            raise FormatError(MISSING_PREDICTIONS.format(path=missing, file=PREDICTIONS_FILE))

    ref_ids, ref_labels, first = read_predictions(files[0])
    predictions = np.empty((len(files), ref_ids.size), dtype=np.int64)
    predictions[0] = first
    for m, file in enumerate(files[1:], start=1):
        ids, labels, row = read_predictions(file)
        # Checked before the row is stored: a file with more or fewer rows must be reported
        # against the first one, not fail to fit the matrix.
        _check_same_examples(file, ids, labels, files[0], ref_ids, ref_labels)
        predictions[m] = row

    runs: list[dict[str, Any] | None] = []
    classes: tuple[str, ...] | None = None
    source: Path | None = None
    population_file = path / POPULATION_FILE
    if population_file.is_file():
        # Class names given once for the whole population; every run.json must agree.
        classes = read_population_classes(population_file)
        source = population_file if classes is not None else None
    run_files = [f.parent / RUN_FILE for f in files] if not flat else [None] * len(files)
    for run_file in run_files:
        run = read_run(run_file) if run_file is not None and run_file.is_file() else None
        runs.append(run)
        if run is not None and run.get("classes") is not None:
            these = tuple(run["classes"])
            if classes is None:
                classes, source = these, run_file
            elif these != classes:
                raise FormatError(
                    CLASS_MISMATCH.format(
                        path=run_file, reference=source, detail=_class_difference(these, classes)
                    )
                )
    return Population(
        path=path,
        models=tuple(names),
        example_ids=ref_ids,
        labels=ref_labels,
        predictions=predictions,
        runs=tuple(runs),
        classes=classes,
        classes_source=source,
        sources=tuple(files),
    )


def _population_from_arrays(
    predictions: Any,
    labels: Any,
    *,
    example_ids: Any,
    classes: Sequence[str] | None,
    model_names: Sequence[str] | None,
    probabilities: Any,
    name: str,
) -> Population:
    labels = _integer_array(labels, f"{name} labels", ndim=1)
    n = labels.size
    if n == 0:
        raise FormatError(NO_ROWS.format(path=f"{name} labels"))
    if isinstance(predictions, (list, tuple)):
        rows = [_integer_array(row, f"{name} model {m} predictions", ndim=1) for m, row in enumerate(predictions)]
        for m, row in enumerate(rows):
            if row.size != n:
                raise FormatError(ARRAY_LENGTH.format(what=f"{name} model {m} predictions", n=row.size, labels=n))
        matrix = np.vstack(rows) if rows else np.empty((0, n), dtype=np.int64)
    else:
        matrix = _integer_array(predictions, f"{name} predictions", ndim=2)
        if matrix.shape[1] != n:
            raise FormatError(ARRAY_SHAPE.format(what=f"{name} predictions", shape=matrix.shape, n=n))
    if matrix.shape[0] == 0:
        raise FormatError(NO_MODELS.format(name=name))
    ids = np.arange(n, dtype=np.int64) if example_ids is None else _integer_array(example_ids, f"{name} example_ids", ndim=1)
    if ids.size != n:
        raise FormatError(ARRAY_LENGTH.format(what=f"{name} example_ids", n=ids.size, labels=n))
    for what, values in (("labels", labels), ("predictions", matrix)):
        if values.min() < 0:
            raise FormatError(NEGATIVE_VALUE.format(path=f"{name} {what}", column=what[:-1], value=values.min()))
    order = np.argsort(ids, kind="stable")
    ids, labels, matrix = ids[order], labels[order], matrix[:, order]
    repeated = np.flatnonzero(np.diff(ids) == 0)
    if repeated.size:
        raise FormatError(DUPLICATE_ID.format(path=f"{name} example_ids", value=ids[repeated[0]]))
    names = tuple(model_names) if model_names is not None else tuple(f"model-{m:03d}" for m in range(matrix.shape[0]))
    if len(names) != matrix.shape[0] or len(set(names)) != len(names) or not all(
        isinstance(m, str) and m and "/" not in m and not m.startswith(".") for m in names
    ):
        raise FormatError(BAD_MODEL_NAMES.format(name=name, n=matrix.shape[0]))
    if classes is not None:
        classes = tuple(classes)
        if not classes or not all(isinstance(c, str) for c in classes):
            raise FormatError(BAD_CLASSES.format(path=f"{name} classes"))
    probs = None
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=np.float32)
        if probs.ndim != 3 or probs.shape[:2] != (matrix.shape[0], n):
            raise FormatError(ARRAY_SHAPE.format(what=f"{name} probabilities", shape=probs.shape, n=n))
        probs = probs[:, order]
        if not np.array_equal(probs.argmax(axis=2), matrix):
            raise FormatError(PROBABILITIES_DISAGREE.format(name=name))
    return Population(
        path=None,
        models=names,
        example_ids=ids,
        labels=labels,
        predictions=matrix,
        runs=tuple(None for _ in names),
        classes=classes,
        classes_source=f"{name} classes" if classes is not None else None,
        name=name,
        probabilities=probs,
    )


def _integer_array(values: Any, what: str, *, ndim: int) -> np.ndarray:
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise FormatError(NOT_AN_ARRAY.format(what=what, reason=e)) from e
    if array.ndim != ndim:
        raise FormatError(NOT_AN_ARRAY.format(what=what, reason=f"{array.ndim}-D, expected {ndim}-D"))
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not (np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)) and np.all(array == np.round(array))):
            raise FormatError(NOT_AN_ARRAY.format(what=what, reason=f"dtype {array.dtype}, expected class indices"))
    return array.astype(np.int64)


def write_population(path: str | Path, population: Population) -> Path:
    """Write a population in the interchange format, atomically.

    One ``<model>/predictions.parquet`` per model (with ``prob_*`` columns when the population
    has probabilities), each model's ``run.json`` as read (when it had one), and
    ``population.json`` naming the classes when known. Written under a temporary name and renamed
    into place, so ``path`` appears whole or not at all.

    Parameters
    ----------
    path : str or Path
        The population directory; must not exist yet.
    population : Population
        From :meth:`Population.from_arrays` or :func:`load_population`.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        ``path`` exists, or cannot be written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .._atomic import atomic_directory, write_json

    path = Path(path)
    with atomic_directory(path) as tmp:
        if population.classes is not None:
            write_json(tmp / POPULATION_FILE, population_record(classes=population.classes))
        for m, model in enumerate(population.models):
            (tmp / model).mkdir()
            if population.probabilities is not None:
                write_predictions(
                    tmp / model / PREDICTIONS_FILE, population.example_ids, population.labels, population.probabilities[m]
                )
            else:
                table = pa.table(
                    {
                        "example_id": pa.array(population.example_ids, pa.int64()),
                        "label": pa.array(population.labels, pa.int64()),
                        "prediction": pa.array(population.predictions[m], pa.int64()),
                    }
                )
                pq.write_table(table, tmp / model / PREDICTIONS_FILE)
            if population.runs[m] is not None:
                write_json(tmp / model / RUN_FILE, population.runs[m])
    return path


def read_population_classes(path: Path) -> tuple[str, ...] | None:
    """The class names of a ``population.json``, if it lists them (``"classes"``)."""
    classes = read_json_object(Path(path)).get("classes")
    _check_classes(Path(path), classes)
    return tuple(classes) if classes is not None else None


def _check_same_examples(
    path: Path,
    ids: np.ndarray,
    labels: np.ndarray,
    reference: Path,
    ref_ids: np.ndarray,
    ref_labels: np.ndarray,
) -> None:
    if not np.array_equal(ids, ref_ids):
        raise FormatError(
            DIFFERENT_EXAMPLES.format(
                path=path, reference=reference, detail=_id_difference(ids, ref_ids)
            )
        )
    if not np.array_equal(labels, ref_labels):
        i = int(np.flatnonzero(labels != ref_labels)[0])
        raise FormatError(
            LABEL_MISMATCH.format(
                path=path,
                example_id=ids[i],
                label=labels[i],
                other=ref_labels[i],
                reference=reference,
            )
        )


def _id_difference(ids: np.ndarray, ref_ids: np.ndarray) -> str:
    only_here = np.setdiff1d(ids, ref_ids, assume_unique=True)
    only_there = np.setdiff1d(ref_ids, ids, assume_unique=True)
    parts = [f"{ids.size} examples here, {ref_ids.size} there"]
    if only_here.size:
        parts.append(f"example_id {only_here[0]} only here")
    if only_there.size:
        parts.append(f"example_id {only_there[0]} only there")
    return "; ".join(parts)


def _class_difference(these: tuple[str, ...], classes: tuple[str, ...]) -> str:
    if len(these) != len(classes):
        return f"{len(these)} classes here, {len(classes)} there"
    k = next(i for i, (a, b) in enumerate(zip(these, classes, strict=True)) if a != b)
    return f"class {k} is {these[k]!r} here, {classes[k]!r} there"


def check_populations(baseline: Population, pruned: Population) -> tuple[str, ...]:
    """Check that two populations can be compared, and return the class names.

    Parameters
    ----------
    baseline, pruned : Population
        As returned by :func:`load_population`.

    Returns
    -------
    tuple of str
        One name per class, indexed by label. Taken from ``run.json`` ``classes`` when either
        population has them; otherwise ``str(k)`` for ``k`` in ``0 .. C-1`` where ``C`` is one
        more than the largest label or prediction in either population.

    Raises
    ------
    FormatError
        Different example ids, labels that disagree, class lists that differ, or a label or
        prediction outside the class list.
    """
    _check_same_examples(
        pruned.reference_file,
        pruned.example_ids,
        pruned.labels,
        baseline.reference_file,
        baseline.example_ids,
        baseline.labels,
    )
    if baseline.classes is not None and pruned.classes is not None:
        if baseline.classes != pruned.classes:
            raise FormatError(
                CLASS_MISMATCH.format(
                    path=pruned.classes_source,
                    reference=baseline.classes_source,
                    detail=_class_difference(pruned.classes, baseline.classes),
                )
            )
    named = baseline if baseline.classes is not None else pruned
    largest = [found for population in (baseline, pruned) for found in _largest_indices(population)]
    if named.classes is not None:
        n = len(named.classes)
        for column, high, file in largest:
            if high >= n:
                raise FormatError(
                    CLASS_OUT_OF_RANGE.format(
                        path=file, column=column, value=high, reference=named.classes_source, n=n
                    )
                )
        return named.classes
    for column, high, file in largest:
        if high >= MAX_UNNAMED_CLASSES:
            # Every class up to the largest index gets a row and a name: an index like 10**12 is
            # a corrupt file, not a class count to allocate.
            raise FormatError(
                TOO_MANY_CLASSES.format(path=file, column=column, value=high, limit=MAX_UNNAMED_CLASSES)
            )
    n = 1 + max(high for _, high, _ in largest)
    return tuple(str(k) for k in range(n))


def _largest_indices(population: Population) -> list[tuple[str, int, Path]]:
    """The largest label and the largest prediction of a population, with the file holding each."""
    per_model = population.predictions.max(axis=1)
    m = int(per_model.argmax())
    return [
        ("label", int(population.labels.max()), population.reference_file),
        ("prediction", int(per_model[m]), population.sources[m]),
    ]
