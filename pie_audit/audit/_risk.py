"""Who will pay before you prune: a risk score per example from the dense (baseline) models alone.

A PIE is an example whose modal prediction moves when the models are pruned (:mod:`._pie`). A
modal vote moves most easily where it is already contested: where the baseline's models split
between two labels, or where their mean softmax output barely separates the top class from the
next. Iofinova et al. (CVPR 2023, arXiv 2304.12622) find that the dense model's uncertainty
identifies the samples most susceptible to pruning, and Tran et al. (NeurIPS 2022, arXiv
2205.13574) tie pruning's disparate impact to examples near the decision boundary. So:

``vote_margin``
    The share of baseline models voting the modal label minus the share voting the runner-up
    (0 for a tie, 1 when the models are unanimous).
``prob_margin``
    The mean probability of the top class minus that of the second, from the baseline's mean
    softmax probabilities (:func:`pie_audit.interchange.mean_probabilities`); a soft distance to
    the decision boundary, and what separates examples whose votes tie.
``risk``
    ``1 - (vote_margin + prob_margin) / 2`` with probabilities, ``1 - vote_margin`` without: in
    [0, 1], higher is more at risk. The two margins are on one scale (a share of the models, a
    share of the probability mass) and weigh alike: the vote margin is what a PIE flips, the
    probability margin ranks within its few levels (at most M + 1 with M models).

The score reads nothing of a pruned population: it can be computed before any pruning, and
:func:`risk_auc` and :func:`top_share` then measure how well it foretold the PIEs pruning made.
``label_vote`` and ``label_prob`` (the share of models, and the mean probability, on the true
label) are reported beside it but are not part of it: a PIE is defined without the label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..interchange import Population, load_population, mean_probabilities
from ._pie import _check_predictions, _compact, modal_labels

__all__ = [
    "RISK_COLUMNS",
    "CLASS_RISK_COLUMNS",
    "RISK_TOP",
    "BaselineRisk",
    "baseline_risk",
    "risk_scores",
    "class_risk",
    "risk_auc",
    "top_share",
    "top_mask",
    "NO_PROBABILITIES",
    "ONE_MODEL",
    "ONE_MODEL_PROBABILITIES",
]

#: Columns of :func:`risk_scores`, in order (:class:`BaselineRisk` puts ``example_id`` first).
RISK_COLUMNS = ("label", "baseline_modal", "risk", "vote_margin", "prob_margin", "label_vote", "label_prob")
#: Columns of :func:`class_risk`, in order (:class:`BaselineRisk` adds ``name`` after ``label``).
CLASS_RISK_COLUMNS = (
    "label", "n_examples", "baseline_recall_mean", "dense_deficit", "risk_mean", "high_risk", "high_risk_share",
)  # fmt: skip
#: Default fraction of the riskiest examples called high-risk.
RISK_TOP = 0.05

BAD_PREDICTION_VALUES = "baseline_predictions must hold class indices (integers >= 0)"
BAD_LABELS = "labels must be a 1-D array of {n} class indices >= 0, got shape {shape}"
BAD_PROBABILITIES = "probabilities must have shape ({n}, C) with C > {label}, got shape {shape}"
BAD_N_CLASSES = "n_classes is {n_classes}, but the {what} hold class {value}"
BAD_FRACTION = "{what} must be a fraction in (0, 1], got {value!r}"
BAD_RISK = "risk must be a 1-D array of finite scores, one per example, got shape {shape}"
LENGTH_MISMATCH = "{what} has {got} entries, but there are {n} examples"
LABELS_DISAGREE = "labels differ from the scores' own label column"

NO_PROBABILITIES = (
    "the baseline's predictions carry no prob_* columns, so the risk is 1 minus the vote margin alone, "
    "with many ties (write the softmax probabilities with the predictions to rank within them)"
)
ONE_MODEL = (
    "one baseline model and no probabilities: every vote margin is 1, so every example has risk 0 "
    "and the ranking says nothing; train more seeds or write the probabilities"
)
ONE_MODEL_PROBABILITIES = (
    "one baseline model: its vote margin is 1 everywhere, so the risk is from the probability margin "
    "alone (at most 0.5)"
)


def _as_labels(labels: Any, n: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1 or array.size != n or not np.issubdtype(array.dtype, np.integer) or (array.size and array.min() < 0):
        raise ConfigError(BAD_LABELS.format(n=n, shape=array.shape))
    return array.astype(np.int64, copy=False)


def _check_fraction(value: Any, what: str) -> float:
    try:
        fraction = float(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(BAD_FRACTION.format(what=what, value=value)) from e
    if not 0 < fraction <= 1:  # also refuses NaN
        raise ConfigError(BAD_FRACTION.format(what=what, value=value))
    return fraction


def _top_two(predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest and second-largest vote count of each example, shape (N,) each; no (N, C) array."""
    m = predictions.shape[0]
    votes = np.sort(_compact(predictions).T, axis=1)  # (N, M): equal labels form runs
    ends = np.ones(votes.shape, dtype=bool)
    np.not_equal(votes[:, 1:], votes[:, :-1], out=ends[:, :-1])
    position = np.arange(m)
    starts = np.ones(votes.shape, dtype=bool)
    np.not_equal(votes[:, 1:], votes[:, :-1], out=starts[:, 1:])
    run_start = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    lengths = np.where(ends, position - run_start + 1, 0)  # each run's length, at its last vote
    if m == 1:
        return lengths[:, 0], np.zeros(lengths.shape[0], dtype=lengths.dtype)
    top = np.partition(lengths, (m - 2, m - 1), axis=1)
    return top[:, m - 1], top[:, m - 2]


#: Rows of probabilities partitioned at once: a copy of at most this many values, not of all (N, C).
_PARTITION_VALUES = 1 << 24


def _probability_margin(probs: np.ndarray) -> np.ndarray:
    """Top probability minus the second, per row, in [0, 1]."""
    n, c = probs.shape
    if c == 1:
        return np.clip(probs[:, 0], 0.0, 1.0)
    margin = np.empty(n)
    step = max(1, _PARTITION_VALUES // c)
    for start in range(0, n, step):
        top = np.partition(probs[start : start + step], (c - 2, c - 1), axis=1)
        margin[start : start + step] = top[:, c - 1] - top[:, c - 2]
    return np.clip(margin, 0.0, 1.0)


def risk_scores(
    baseline_predictions: Any,
    labels: Any,
    *,
    probabilities: Any = None,
    n_classes: int | None = None,
    tie_break: str = "lowest",
) -> pd.DataFrame:
    """Each example's risk of becoming a PIE, from the baseline population alone.

    Parameters
    ----------
    baseline_predictions : array-like of shape (M, N)
        Top-1 class of each of the M baseline (dense) models for each of N examples.
    labels : array-like of shape (N,)
        True class of each example.
    probabilities : array-like of shape (N, C), optional
        The baseline's mean softmax probabilities (:func:`pie_audit.interchange.mean_probabilities`).
        Without them, ``prob_margin``, ``label_prob`` are NaN and the risk is the vote's alone.
    n_classes : int, optional
        C, when known: labels, predictions and the probabilities' width are checked against it.
    tie_break : {"lowest", "highest"}, default="lowest"
        Which of tied labels is ``baseline_modal`` (:func:`modal_labels`); the margins do not
        depend on it.

    Returns
    -------
    DataFrame
        One row per example, in the order given, with :data:`RISK_COLUMNS`: ``label``,
        ``baseline_modal`` (the baseline's modal label), ``risk`` (in [0, 1], higher is more at
        risk: ``1 - (vote_margin + prob_margin) / 2``, or ``1 - vote_margin`` without
        probabilities), ``vote_margin`` (share of models voting the modal label minus the
        runner-up's, in [0, 1]), ``prob_margin`` (mean probability of the top class minus the
        second's), ``label_vote`` (share of models voting the true label), ``label_prob`` (mean
        probability of the true label). The caller adds ``example_id``.

    Raises
    ------
    ConfigError
        Shapes that disagree, negative or non-integer classes, probabilities narrower than the
        classes, a class at or above ``n_classes``.

    Examples
    --------
    >>> scores = risk_scores([[0, 1, 2], [0, 1, 1], [0, 2, 1], [0, 2, 0]], [0, 1, 1])
    >>> scores["vote_margin"].tolist(), scores["risk"].tolist()
    ([1.0, 0.0, 0.25], [0.0, 1.0, 0.75])
    >>> scores["label_vote"].tolist()
    [1.0, 0.5, 0.5]
    """
    predictions = _check_predictions(baseline_predictions)
    m, n = predictions.shape
    if not np.issubdtype(predictions.dtype, np.integer) or predictions.min() < 0:
        raise ConfigError(BAD_PREDICTION_VALUES)
    labels = _as_labels(labels, n)
    if n_classes is not None:
        for what, values in (("labels", labels), ("predictions", predictions)):
            if int(values.max()) >= n_classes:
                raise ConfigError(BAD_N_CLASSES.format(n_classes=n_classes, what=what, value=int(values.max())))
    vote = modal_labels(predictions, tie_break=tie_break)
    first, second = _top_two(predictions)
    vote_margin = (first - second) / m
    label_vote = np.count_nonzero(predictions == labels, axis=0) / m
    prob_margin = label_prob = np.full(n, np.nan)
    risk = 1.0 - vote_margin
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=np.float64)
        high = int(max(labels.max(), predictions.max()))
        if probs.ndim != 2 or probs.shape[0] != n or probs.shape[1] <= high or (
            n_classes is not None and probs.shape[1] != n_classes
        ):
            raise ConfigError(BAD_PROBABILITIES.format(n=n, label=high, shape=probs.shape))
        prob_margin = _probability_margin(probs)
        label_prob = probs[np.arange(n), labels]
        risk = 1.0 - (vote_margin + prob_margin) / 2
    return pd.DataFrame(
        {
            "label": labels,
            "baseline_modal": vote.labels,
            "risk": risk,
            "vote_margin": vote_margin,
            "prob_margin": prob_margin,
            "label_vote": label_vote,
            "label_prob": label_prob,
        },
        columns=list(RISK_COLUMNS),
    )


def _as_risk(risk: Any) -> np.ndarray:
    array = np.asarray(risk, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or not np.isfinite(array).all():
        raise ConfigError(BAD_RISK.format(shape=array.shape))
    return array


def _as_flags(flags: Any, n: int, what: str) -> np.ndarray:
    array = np.asarray(flags)
    if array.ndim != 1 or array.size != n:
        raise ConfigError(LENGTH_MISMATCH.format(what=what, got=array.size, n=n))
    return array.astype(bool)


def top_mask(risk: Any, fraction: float) -> np.ndarray:
    """Which examples are the top ``fraction`` riskiest, shape (N,), bool.

    The top holds ``ceil(fraction * N)`` examples (at least one). Ties at the cut are broken by
    position: among equal risks, the example that comes first (in a population's order, the
    lowest example id) is taken, so the same scores always give the same top.

    Parameters
    ----------
    risk : array-like of shape (N,)
    fraction : float in (0, 1]

    Returns
    -------
    ndarray of shape (N,), bool

    Examples
    --------
    >>> top_mask([0.2, 0.9, 0.5, 0.9], 0.5).tolist()
    [False, True, False, True]
    >>> top_mask([0.5, 0.5, 0.5, 0.5], 0.25).tolist()
    [True, False, False, False]
    """
    risk = _as_risk(risk)
    fraction = _check_fraction(fraction, "fraction")
    n = risk.size
    # Rounded first: 0.07 * 100 is 7.000000000000001, whose ceiling would take one example too many.
    k = min(n, max(1, math.ceil(round(fraction * n, 9))))
    order = np.argsort(-risk, kind="stable")  # stable: equal risks keep their order
    mask = np.zeros(n, dtype=bool)
    mask[order[:k]] = True
    return mask


def top_share(risk: Any, is_pie: Any, fraction: float) -> float:
    """The share of PIEs among the top ``fraction`` riskiest examples (the ranking's precision there).

    Parameters
    ----------
    risk : array-like of shape (N,)
        Higher is riskier (:func:`risk_scores`).
    is_pie : array-like of shape (N,), bool
    fraction : float in (0, 1]
        0.01 and 0.05: the riskiest 1% and 5%; the top is :func:`top_mask` (``ceil(fraction * N)``
        examples, ties broken by position).

    Returns
    -------
    float
        In [0, 1]. Against the PIE fraction, what a random ranking would give.

    Examples
    --------
    >>> top_share([0.9, 0.1, 0.8, 0.3], [True, False, False, False], 0.5)
    0.5
    """
    mask = top_mask(risk, fraction)
    flags = _as_flags(is_pie, mask.size, "is_pie")
    return float(flags[mask].mean())


def risk_auc(risk: Any, is_pie: Any) -> float | None:
    """ROC AUC of the risk score for the PIE flag, as ``sklearn.metrics.roc_auc_score`` gives it.

    Computed as the Mann-Whitney statistic over average ranks (the same number, ties counting
    half; ``tests/test_risk.py`` checks it against sklearn), so that an audit does not import
    scikit-learn and with it ``scipy.stats``: a second of start-up in every ``compare``.

    Parameters
    ----------
    risk : array-like of shape (N,)
    is_pie : array-like of shape (N,), bool

    Returns
    -------
    float or None
        The probability that a random PIE has a higher risk than a random non-PIE (ties count
        half): 1 ranks every PIE first, 0.5 is chance. ``None`` when there is no PIE, or every
        example is one: the AUC is undefined.

    Examples
    --------
    >>> risk_auc([0.9, 0.1, 0.8, 0.3], [True, False, False, False])
    1.0
    >>> risk_auc([0.9, 0.1], [False, False]) is None
    True
    """
    risk = _as_risk(risk)
    flags = _as_flags(is_pie, risk.size, "is_pie")
    if flags.all() or not flags.any():
        return None
    ranks = pd.Series(risk).rank(method="average").to_numpy()
    positives = int(flags.sum())
    negatives = flags.size - positives
    return float((ranks[flags].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def class_risk(
    scores: pd.DataFrame,
    labels: Any,
    *,
    n_classes: int,
    accuracy: float | None = None,
    top: float = RISK_TOP,
) -> pd.DataFrame:
    """Per class: how hard the dense models find it, and how many of its examples are high-risk.

    Parameters
    ----------
    scores : DataFrame
        :func:`risk_scores`' rows (``risk`` and ``label_vote`` are read), one per example.
    labels : array-like of shape (N,)
        True class of each example (checked against ``scores["label"]`` when it has one).
    n_classes : int
        C: one row per class ``0 .. C-1``, also for a class without examples.
    accuracy : float, optional
        The baseline's mean accuracy over models; default the mean of ``label_vote``, which is
        the same number (the share of models right on an example, averaged over examples).
    top : float in (0, 1], default=RISK_TOP
        The fraction of riskiest examples called high-risk (:func:`top_mask`).

    Returns
    -------
    DataFrame
        One row per class with :data:`CLASS_RISK_COLUMNS`: ``label``, ``n_examples``,
        ``baseline_recall_mean`` (mean over models of the class's recall: the mean
        ``label_vote`` of its examples), ``dense_deficit`` (that minus ``accuracy``: negative for
        a class the dense models find harder than average, as in the intensification test),
        ``risk_mean``, ``high_risk`` (its examples in the top ``top``) and ``high_risk_share``
        (``high_risk / n_examples``; against ``top``, a class's over-representation). NaN
        rates for a class without examples.

    Examples
    --------
    >>> scores = risk_scores([[0, 1, 1, 1], [0, 0, 1, 1]], [0, 0, 1, 1])
    >>> table = class_risk(scores, [0, 0, 1, 1], n_classes=2, top=0.25)
    >>> table[["label", "baseline_recall_mean", "dense_deficit", "high_risk"]].values.tolist()
    [[0.0, 0.75, -0.125, 1.0], [1.0, 1.0, 0.125, 0.0]]
    """
    risk = _as_risk(scores["risk"].to_numpy())
    labels = _as_labels(labels, risk.size)
    if "label" in scores and not np.array_equal(scores["label"].to_numpy(), labels):
        raise ConfigError(LABELS_DISAGREE)
    if int(labels.max()) >= n_classes:
        raise ConfigError(BAD_N_CLASSES.format(n_classes=n_classes, what="labels", value=int(labels.max())))
    label_vote = scores["label_vote"].to_numpy(dtype=np.float64)
    accuracy = float(label_vote.mean()) if accuracy is None else float(accuracy)
    high = top_mask(risk, _check_fraction(top, "top"))
    counts = np.bincount(labels, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.bincount(labels, weights=label_vote, minlength=n_classes) / counts
        risk_mean = np.bincount(labels, weights=risk, minlength=n_classes) / counts
        high_count = np.bincount(labels[high], minlength=n_classes)
        high_share = high_count / counts
    return pd.DataFrame(
        {
            "label": np.arange(n_classes, dtype=np.int64),
            "n_examples": counts.astype(np.int64),
            "baseline_recall_mean": recall,
            "dense_deficit": recall - accuracy,
            "risk_mean": risk_mean,
            "high_risk": high_count.astype(np.int64),
            "high_risk_share": high_share,
        },
        columns=list(CLASS_RISK_COLUMNS),
    )


@dataclass(frozen=True, eq=False)
class BaselineRisk:
    """The risk ranking of one baseline population: what ``pie-audit risk`` writes.

    Attributes
    ----------
    name : str
        The population's name.
    path : Path or None
        Its directory; ``None`` for one built from arrays.
    n_models : int
    top : float
        The fraction of riskiest examples called high-risk.
    has_probabilities : bool
        Whether the baseline's mean probabilities entered the score.
    table : DataFrame
        One row per example in example-id order: ``example_id``, then :data:`RISK_COLUMNS`.
    classes : DataFrame
        One row per class: ``label``, ``name``, then the rest of :data:`CLASS_RISK_COLUMNS`.
    notes : tuple of str
        What limits the ranking (no probabilities, one model).
    """

    name: str
    path: Path | None
    n_models: int
    top: float
    has_probabilities: bool
    table: pd.DataFrame
    classes: pd.DataFrame
    notes: tuple[str, ...]

    @property
    def n_examples(self) -> int:
        return len(self.table)

    def riskiest(self, n: int) -> pd.DataFrame:
        """The ``n`` riskiest rows of :attr:`table`, riskiest first (ties by example id)."""
        order = np.argsort(-self.table["risk"].to_numpy(), kind="stable")[:n]
        return self.table.iloc[order].reset_index(drop=True)


def baseline_risk(
    baseline: str | Path | Population, *, top: float = RISK_TOP, tie_break: str = "lowest"
) -> BaselineRisk:
    """The risk ranking of a baseline population: :func:`risk_scores` and :func:`class_risk` on it.

    Parameters
    ----------
    baseline : str, Path or Population
        A population directory, or a population already read or built from arrays. Its mean
        probabilities are used when its files carry ``prob_*`` columns
        (:func:`pie_audit.interchange.mean_probabilities`).
    top : float in (0, 1], default=RISK_TOP
    tie_break : {"lowest", "highest"}, default="lowest"

    Returns
    -------
    BaselineRisk

    Raises
    ------
    FormatError
        The population cannot be read, or its probability columns are malformed.
    ConfigError
        ``top`` is not a fraction in (0, 1].
    """
    top = _check_fraction(top, "top")
    population = baseline if isinstance(baseline, Population) else load_population(Path(baseline))
    probabilities = mean_probabilities(population)
    if probabilities is not None:
        n_classes = probabilities.shape[1]
    elif population.classes is not None:
        n_classes = len(population.classes)
    else:
        n_classes = int(max(population.labels.max(), population.predictions.max())) + 1
    n_classes = max(n_classes, int(max(population.labels.max(), population.predictions.max())) + 1)
    scores = risk_scores(population.predictions, population.labels, probabilities=probabilities, tie_break=tie_break)
    table = pd.concat([pd.DataFrame({"example_id": population.example_ids}), scores], axis=1)
    classes = class_risk(scores, population.labels, n_classes=n_classes, top=top)
    names = list(population.classes) if population.classes is not None else []
    names += [str(k) for k in range(len(names), n_classes)]
    classes.insert(1, "name", names[:n_classes])
    notes = []
    m = population.n_models
    if probabilities is None:
        notes.append(ONE_MODEL if m == 1 else NO_PROBABILITIES)
    elif m == 1:
        notes.append(ONE_MODEL_PROBABILITIES)
    return BaselineRisk(
        name=population.name,
        path=population.path,
        n_models=m,
        top=top,
        has_probabilities=probabilities is not None,
        table=table,
        classes=classes,
        notes=tuple(notes),
    )
