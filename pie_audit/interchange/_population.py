"""Populations: the predictions of many models of one kind, in memory and on disk.

A *population directory* holds one sub-directory per model (or one ``<model>.parquet`` per
model). A *model directory* holds:

``predictions.parquet`` (required)
    One row per test example (:mod:`._predictions`).
``run.json`` (optional)
    Provenance: seed, architecture, dataset, ``classes`` (names indexed by label),
    target and achieved sparsity, training configuration, accuracy, versions (:mod:`._records`).
``model.pt`` (optional)
    A plain ``state_dict`` (masks folded in), loadable with ``torch.load(..., weights_only=True)``.

See ``docs/interchange-format.md`` for the full specification.

:class:`Population` holds the (M, N) predictions, from files (:func:`load_population`) or from
arrays (:meth:`Population.from_arrays`), validated alike; :func:`write_population` writes one.
The readers raise :class:`~pie_audit.errors.FormatError` with a message that names the file and
the problem; see ``docs/audit.md``. That the models agree on their examples, labels and classes
is checked by :mod:`._agreement`, which also tells whether two populations can be compared.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from ._agreement import CLASS_MISMATCH, check_same_examples, class_difference
from ._predictions import (
    DUPLICATE_ID,
    NEGATIVE_VALUE,
    NO_ROWS,
    id_order,
    read_unsorted,
    sort_by_id,
    write_prediction_columns,
    write_predictions,
)
from ._records import (
    BAD_CLASSES,
    GROUPS_FILE,
    POPULATION_FILE,
    PREDICTIONS_FILE,
    RUN_FILE,
    population_record,
    read_population_classes,
    read_run,
)

__all__ = [
    "Population",
    "model_dirs",
    "load_population",
    "write_population",
    "NO_DIRECTORY",
    "NOT_A_DIRECTORY",
    "EMPTY_POPULATION",
    "MIXED_LAYOUT",
    "NO_PREDICTIONS",
    "MISSING_PREDICTIONS",
    "NOT_AN_ARRAY",
    "ARRAY_LENGTH",
    "ARRAY_SHAPE",
    "NO_MODELS",
    "BAD_MODEL_NAMES",
    "BAD_MODEL_DIR_NAME",
    "NO_SUCH_MODEL",
    "PROBABILITIES_DISAGREE",
]

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
NOT_AN_ARRAY = "{what}: not an array of class indices ({reason})"
ARRAY_LENGTH = "{what}: {n} values, but there are {labels} labels"
ARRAY_SHAPE = "{what}: shape {shape}; expected (models, {n}) to match the labels"
NO_MODELS = "{name}: no model; expected predictions of shape (models, examples)"
BAD_MODEL_NAMES = "{name}: model_names must be {n} distinct non-empty names without '/' or a leading '.'"
PROBABILITIES_DISAGREE = "{name}: the arg-max of the probabilities differs from the predictions"
#: A model named with a newline or another control character would split every line that names
#: it (an error, the verdict): refused, and shown escaped.
BAD_MODEL_DIR_NAME = (
    "{path}: model {name} has a control character (a newline, a tab) in its name; rename it"
)
NO_SUCH_MODEL = "{path}: no model directory {name}; expected {file} in it"


def _breaks_lines(text: str) -> bool:
    """Whether ``text`` holds a control character or a line separator (what splits a line)."""
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)


def _shown(path: Path | str) -> str:
    """``path`` as a message shows it: as it is, or escaped (``ascii``) when it would break the line."""
    text = str(path)
    return ascii(text) if _breaks_lines(text) else text


@dataclass(frozen=True, eq=False)
class Population:
    """The predictions of a population of models, aligned by example id.

    Attributes
    ----------
    path : Path or None
        The population directory; ``None`` for one built from arrays.
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
        Class names from ``population.json`` or the models' ``run.json`` files, when any has them.
    classes_source : Path or str or None
        The file the class names were read from (for error messages).
    sources : tuple of (Path or str)
        Where each model's predictions came from, for messages; default each model's
        ``predictions.parquet``, or ``"<name> model <m>"`` for arrays.
    name : str
        Shown in reports and messages; default the directory's name, or ``"population"``.
    probabilities : ndarray of shape (M, N, C), float32, or None
        Softmax outputs given to :meth:`from_arrays`, kept for :func:`write_population`.
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
        """M, the number of models."""
        return self.predictions.shape[0]

    @property
    def n_examples(self) -> int:
        """N, the number of test examples."""
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


def model_dirs(population: Path) -> list[Path]:
    """Model sub-directories of a population directory, sorted by name.

    Hidden entries (including unfinished ``.tmp-*`` writes) and plain files are ignored.
    """
    return sorted(
        p for p in Path(population).iterdir() if p.is_dir() and not p.name.startswith(".")
    )


def load_population(path: Path, *, models: Sequence[str] | None = None) -> Population:
    """Read every model of a population directory and check they agree with each other.

    Parameters
    ----------
    path : Path
        A population directory: one sub-directory per model, each holding
        ``predictions.parquet`` and optionally ``run.json``. Files and hidden entries at the
        top level (``population.json``, unfinished ``.tmp-*`` writes) are ignored.
    models : sequence of str, optional
        Read only these model directories (a study reads the seeds its spec names, not every
        model on disk); each must exist. Default: every model.

    Returns
    -------
    Population
        Predictions of shape (M, N), aligned by example id.

    Raises
    ------
    FormatError
        Missing or empty directory, no prediction files, a model whose name holds a control
        character (:data:`BAD_MODEL_DIR_NAME`), a model of ``models`` that is missing
        (:data:`NO_SUCH_MODEL`), any problem reported by :func:`read_predictions` or
        :func:`read_run`, models evaluated on different examples, labels or class lists that
        disagree between models.
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(NO_DIRECTORY.format(path=_shown(path)))
    if not path.is_dir():
        raise FormatError(NOT_A_DIRECTORY.format(path=_shown(path)))
    if models is not None:
        dirs = [path / name for name in models]
        for directory in dirs:
            if not directory.is_dir():
                name = ascii(directory.name)
                raise FormatError(NO_SUCH_MODEL.format(path=_shown(path), name=name, file=PREDICTIONS_FILE))
        flat = []
    else:
        dirs = model_dirs(path)
        # groups.parquet holds the population's attributes, not a model's predictions.
        flat = sorted(
            p for p in path.glob("*.parquet") if p.is_file() and not p.name.startswith(".") and p.name != GROUPS_FILE
        )
    for model in [*dirs, *flat]:
        if _breaks_lines(model.name):
            raise FormatError(BAD_MODEL_DIR_NAME.format(path=_shown(path), name=ascii(model.name)))
    if dirs and flat:
        raise FormatError(MIXED_LAYOUT.format(path=_shown(path), file=flat[0].name, directory=dirs[0].name))
    if flat:
        # One file per model, named for it: the simplest layout another framework can write.
        files, names = flat, [f.stem for f in flat]
    else:
        if not dirs:
            found = ", ".join(sorted(_shown(p.name) for p in path.iterdir() if not p.name.startswith("."))[:3])
            what = f"found only {found}" if found else "it is empty"
            raise FormatError(EMPTY_POPULATION.format(path=_shown(path), file=PREDICTIONS_FILE, found=what))
        files, names = [d / PREDICTIONS_FILE for d in dirs], [d.name for d in dirs]
        present = [f.is_file() for f in files]
        if not any(present):
            raise FormatError(NO_PREDICTIONS.format(path=_shown(path), file=PREDICTIONS_FILE))
        if not all(present):
            missing = dirs[present.index(False)]
            raise FormatError(MISSING_PREDICTIONS.format(path=missing, file=PREDICTIONS_FILE))

    raw_ids, *columns = read_unsorted(files[0])
    # Models of one population almost always list their examples in the same order: sort that
    # order out once, not once per model (an argsort of N per file is most of a read's time).
    order = id_order(files[0], raw_ids)
    ref_ids, ref_labels, first = sort_by_id(files[0], raw_ids, *columns, order)
    predictions = np.empty((len(files), ref_ids.size), dtype=np.int64)
    predictions[0] = first
    for m, file in enumerate(files[1:], start=1):
        ids, *columns = read_unsorted(file)
        same = ids.shape == raw_ids.shape and np.array_equal(ids, raw_ids)
        ids, labels, row = sort_by_id(file, ids, *columns, order if same else False)
        # Checked before the row is stored: a file with more or fewer rows must be reported
        # against the first one, not fail to fit the matrix.
        check_same_examples(file, ids, labels, files[0], ref_ids, ref_labels)
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
                        path=run_file, reference=source, detail=class_difference(these, classes)
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
    from .._atomic import atomic_directory, write_json

    path = Path(path)
    ids, labels = population.example_ids, population.labels
    with atomic_directory(path) as tmp:
        if population.classes is not None:
            write_json(tmp / POPULATION_FILE, population_record(classes=population.classes))
        for m, model in enumerate(population.models):
            (tmp / model).mkdir()
            if population.probabilities is not None:
                write_predictions(tmp / model / PREDICTIONS_FILE, ids, labels, population.probabilities[m])
            else:
                write_prediction_columns(tmp / model / PREDICTIONS_FILE, ids, labels, population.predictions[m])
            if population.runs[m] is not None:
                write_json(tmp / model / RUN_FILE, population.runs[m])
    return path
