"""Whether predictions agree enough to be compared: the models of one population, and two populations.

Models are compared example by example, so they must have been evaluated on the same examples,
with the same labels and the same class list; every disagreement is a
:class:`~pie_audit.errors.FormatError` naming the two files and the first difference found.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FormatError

if TYPE_CHECKING:
    from ._population import Population

__all__ = [
    "check_populations",
    "check_same_examples",
    "class_difference",
    "MAX_UNNAMED_CLASSES",
    "DIFFERENT_EXAMPLES",
    "LABEL_MISMATCH",
    "CLASS_MISMATCH",
    "TOO_MANY_CLASSES",
    "CLASS_OUT_OF_RANGE",
]

#: Without a class list, classes are numbered 0 .. C-1 from the largest index found; beyond this
#: (more than ImageNet-21k's 21,841 classes several times over) an index is taken for corruption.
MAX_UNNAMED_CLASSES = 100_000

# Messages are constants so that tests (and users' scripts) see the same wording every time.
DIFFERENT_EXAMPLES = "{path}: evaluated on different examples than {reference} ({detail})"
LABEL_MISMATCH = (
    "{path}: label of example_id {example_id} is {label}, but {other} in {reference}"
)
CLASS_MISMATCH = "{path}: class list differs from {reference} ({detail})"
TOO_MANY_CLASSES = (
    "{path}: column '{column}' has value {value}, and no run.json lists the classes; without a "
    "class list pie-audit accepts class indices below {limit:,}: list the classes in run.json "
    "'classes' or check the file"
)
CLASS_OUT_OF_RANGE = (
    "{path}: column '{column}' has value {value}, but {reference} lists only {n} classes"
)


def check_same_examples(
    path: Path | str,
    ids: np.ndarray,
    labels: np.ndarray,
    reference: Path | str,
    ref_ids: np.ndarray,
    ref_labels: np.ndarray,
) -> None:
    """Refuse the predictions of ``path`` unless their examples and labels are ``reference``'s.

    Parameters
    ----------
    path, reference : Path or str
        The two files, for the message.
    ids, labels : ndarray of shape (N,)
        Of ``path``, sorted by id.
    ref_ids, ref_labels : ndarray of shape (N_ref,)
        Of ``reference``, sorted by id.

    Raises
    ------
    FormatError
        :data:`DIFFERENT_EXAMPLES` or :data:`LABEL_MISMATCH`.
    """
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


def class_difference(these: tuple[str, ...], classes: tuple[str, ...]) -> str:
    """The first difference between two class lists, in words, for :data:`CLASS_MISMATCH`."""
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
    check_same_examples(
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
                    detail=class_difference(pruned.classes, baseline.classes),
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
