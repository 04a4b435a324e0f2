"""Per-class disparate impact of pruning: recalls, Welch t-tests, q-values, bootstrap CIs.

For model m and class c, r_mc is the recall and a_m the top-1 accuracy; ā is a population's
mean accuracy. Following the code of Hooker et al. (arXiv 1911.05248), each class is tested
with a two-sided Welch t-test between {r_mc - ā_baseline} over baseline models and
{r_mc - ā_pruned} over pruned models. Its null hypothesis: the class moved by as much as
overall accuracy did. The degenerate cases (one model, zero variance, zero support) have the
documented results listed in :func:`class_statistics` and ``docs/audit.md``.

Nothing here touches the filesystem.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .errors import ConfigError

__all__ = [
    "CORRECTIONS",
    "CLASS_COLUMNS",
    "per_model_accuracy",
    "per_model_recall",
    "class_statistics",
]

CORRECTIONS = ("fdr_bh", "none")
BAD_CORRECTION = "correction must be one of {choices}, not {value!r}"
BAD_ALPHA = "alpha must lie strictly between 0 and 1, not {value!r}"
BAD_CONFIDENCE = "confidence must lie strictly between 0 and 1, not {value!r}"
BAD_N_BOOTSTRAP = "n_bootstrap must be a positive integer, not {value!r}"
BAD_SHAPES = (
    "predictions of shape {baseline} and {pruned} do not match {n} labels; "
    "expected (M, N) arrays with N = {n}"
)
LABEL_OUT_OF_RANGE = "labels and predictions must lie in 0 .. {high} for n_classes={n_classes}"

CLASS_COLUMNS = (
    "label",
    "support",
    "baseline_recall_mean",
    "pruned_recall_mean",
    "recall_change",
    "normalized_change",
    "ci_low",
    "ci_high",
    "t_statistic",
    "p_value",
    "q_value",
    "significant",
    "direction",
)


def per_model_accuracy(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Top-1 accuracy of each model.

    Parameters
    ----------
    predictions : ndarray of shape (M, N)
    labels : ndarray of shape (N,)

    Returns
    -------
    ndarray of shape (M,), float64
    """
    predictions = np.asarray(predictions)
    return (predictions == np.asarray(labels)).mean(axis=1)


def per_model_recall(predictions: np.ndarray, labels: np.ndarray, *, n_classes: int) -> np.ndarray:
    """Recall of each class for each model.

    Parameters
    ----------
    predictions : ndarray of shape (M, N)
    labels : ndarray of shape (N,)
    n_classes : int
        C; labels lie in ``0 .. C-1``.

    Returns
    -------
    ndarray of shape (M, C), float64
        NaN in the columns of classes with no example (recall is undefined there).
    """
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    m = predictions.shape[0]
    support = np.bincount(labels, minlength=n_classes)
    model, example = np.nonzero(predictions == labels)
    correct = np.bincount(model * n_classes + labels[example], minlength=m * n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return correct.reshape(m, n_classes) / np.where(support > 0, support, np.nan)


def class_statistics(
    baseline_predictions: np.ndarray,
    pruned_predictions: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int | None = None,
    alpha: float = 0.05,
    correction: str = "fdr_bh",
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-class disparate impact of pruning.

    Parameters
    ----------
    baseline_predictions : array-like of shape (M_b, N)
        Top-1 class of each baseline model for each example.
    pruned_predictions : array-like of shape (M_p, N)
        Same for the pruned models, on the same examples.
    labels : array-like of shape (N,)
        True classes.
    n_classes : int, optional
        C. Defaults to one more than the largest label or prediction.
    alpha : float, default=0.05
        A class is ``significant`` when its q-value is at most ``alpha``.
    correction : {"fdr_bh", "none"}, default="fdr_bh"
        ``"fdr_bh"``: Benjamini-Hochberg q-values across the tested classes.
        ``"none"``: q-value = p-value, the paper's raw ``p <= 0.05`` rule.
    n_bootstrap : int, default=1000
        Resamples of models (within each population) for the confidence interval.
    confidence : float, default=0.95
        Level of the percentile bootstrap interval for ``normalized_change``.
    seed : int, default=0
        Seed of the bootstrap's random generator.

    Returns
    -------
    DataFrame with C rows, one per class in label order, and columns
        ``label`` (int64), ``support`` (int64, examples of the class),
        ``baseline_recall_mean``, ``pruned_recall_mean`` (mean recall over models, in [0, 1]),
        ``recall_change`` (pruned minus baseline mean recall),
        ``normalized_change`` (``recall_change`` minus the change of mean accuracy),
        ``ci_low``, ``ci_high`` (bootstrap interval of ``normalized_change``),
        ``t_statistic``, ``p_value``, ``q_value`` (Welch test), ``significant`` (bool),
        ``direction`` (``"harmed"``, ``"helped"`` or ``"none"``).

    Notes
    -----
    Degenerate cases never produce an accidental NaN; they give these documented results:

    - **No example of the class** (support 0): every float column is NaN (``null`` in JSON);
      ``significant`` is False and ``direction`` is ``"none"``. The class is not tested and
      takes no part in the correction.
    - **Fewer than two models in a population**: Welch's test and the bootstrap are undefined.
      Means and changes are reported; ``ci_low``, ``ci_high``, ``t_statistic``, ``p_value``
      and ``q_value`` are NaN; no class is significant.
    - **Zero variance in both populations** (every model has the same recall, in each
      population): if the recall itself did not change (say 100% in every model of both), the
      class did not move and t = 0, p = 1, even though overall accuracy moved; if it changed
      and the centred means differ, every model agrees on a shift: t = ±inf and p = 0. These
      p-values take part in the correction.
    - Zero variance in one population only is an ordinary Welch test.

    ``direction`` is ``"harmed"`` for a significant class with ``normalized_change < 0``,
    ``"helped"`` for one with ``normalized_change > 0``, and ``"none"`` otherwise.
    """
    base, pruned, labels, n_classes = _check_inputs(
        baseline_predictions, pruned_predictions, labels, n_classes
    )
    if correction not in CORRECTIONS:
        raise ConfigError(BAD_CORRECTION.format(choices=", ".join(CORRECTIONS), value=correction))
    if not 0 < alpha < 1:
        raise ConfigError(BAD_ALPHA.format(value=alpha))
    if not 0 < confidence < 1:
        raise ConfigError(BAD_CONFIDENCE.format(value=confidence))
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 1:
        raise ConfigError(BAD_N_BOOTSTRAP.format(value=n_bootstrap))

    support = np.bincount(labels, minlength=n_classes)
    present = support > 0
    base_r = per_model_recall(base, labels, n_classes=n_classes)
    pruned_r = per_model_recall(pruned, labels, n_classes=n_classes)
    base_a = per_model_accuracy(base, labels)
    pruned_a = per_model_accuracy(pruned, labels)
    base_recall = _column_means(base_r, present)
    pruned_recall = _column_means(pruned_r, present)
    normalized = (pruned_recall - pruned_a.mean()) - (base_recall - base_a.mean())

    testable = base.shape[0] >= 2 and pruned.shape[0] >= 2
    t = np.full(n_classes, np.nan)
    p = np.full(n_classes, np.nan)
    ci = np.full((2, n_classes), np.nan)
    if testable:
        # As in the paper's code: centre each population's recalls on its mean accuracy, so
        # the null hypothesis is "this class moved by as much as overall accuracy did".
        t[present], p[present] = _welch(
            base_r[:, present] - base_a.mean(),
            pruned_r[:, present] - pruned_a.mean(),
            recall_moved=base_r[0, present] != pruned_r[0, present],
        )
        # Resampling models moves a population's mean accuracy too, so the bootstrap works on
        # each model's recall minus its own accuracy; the means are the same point estimate.
        ci[:, present] = _bootstrap_interval(
            base_r[:, present] - base_a[:, None],
            pruned_r[:, present] - pruned_a[:, None],
            n_bootstrap=n_bootstrap,
            confidence=confidence,
            seed=seed,
        )
    q = _adjust(p, correction)
    significant = np.nan_to_num(q, nan=np.inf) <= alpha
    direction = np.where(
        significant & (normalized < 0), "harmed", np.where(significant & (normalized > 0), "helped", "none")
    )
    return pd.DataFrame(
        {
            "label": np.arange(n_classes, dtype=np.int64),
            "support": support.astype(np.int64),
            "baseline_recall_mean": base_recall,
            "pruned_recall_mean": pruned_recall,
            "recall_change": pruned_recall - base_recall,
            "normalized_change": normalized,
            "ci_low": ci[0],
            "ci_high": ci[1],
            "t_statistic": t,
            "p_value": p,
            "q_value": q,
            "significant": significant,
            "direction": direction.astype(object),
        },
        columns=list(CLASS_COLUMNS),
    )


def _check_inputs(
    baseline_predictions: np.ndarray,
    pruned_predictions: np.ndarray,
    labels: np.ndarray,
    n_classes: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    base = np.asarray(baseline_predictions, dtype=np.int64)
    pruned = np.asarray(pruned_predictions, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.size
    if labels.ndim != 1 or base.ndim != 2 or pruned.ndim != 2 or n == 0:
        raise ConfigError(BAD_SHAPES.format(baseline=base.shape, pruned=pruned.shape, n=n))
    if base.shape[1] != n or pruned.shape[1] != n or base.shape[0] == 0 or pruned.shape[0] == 0:
        raise ConfigError(BAD_SHAPES.format(baseline=base.shape, pruned=pruned.shape, n=n))
    high = max(int(labels.max()), int(base.max()), int(pruned.max()))
    low = min(int(labels.min()), int(base.min()), int(pruned.min()))
    if n_classes is None:
        n_classes = high + 1
    if low < 0 or high >= n_classes:
        raise ConfigError(LABEL_OUT_OF_RANGE.format(high=n_classes - 1, n_classes=n_classes))
    return base, pruned, labels, int(n_classes)


def _column_means(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    out = np.full(values.shape[1], np.nan)
    out[present] = values[:, present].mean(axis=0)
    return out


def _welch(
    base: np.ndarray, pruned: np.ndarray, *, recall_moved: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Welch t-test per column, with the zero-variance rule of class_statistics.

    ``recall_moved`` says, per column, whether the uncentred recall differs between the first
    baseline and the first pruned model; it only matters for columns constant in both populations.
    """
    from scipy import stats

    t = np.zeros(base.shape[1])
    p = np.ones(base.shape[1])
    constant = (np.ptp(base, axis=0) == 0) & (np.ptp(pruned, axis=0) == 0)
    shift = pruned[0] - base[0]
    # A class whose recall is the same constant in both populations (say 100% everywhere) did not
    # move; only overall accuracy did, and that carries sampling noise this test cannot see.
    moved = constant & (shift != 0) & recall_moved
    t[moved] = np.sign(shift[moved]) * np.inf
    p[moved] = 0.0
    regular = ~constant
    if regular.any():
        with warnings.catch_warnings():
            # scipy warns when a column is nearly constant in one population; Welch's test is
            # still defined there (that population's variance is ~0), so the result stands.
            warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
            # ttest_ind(a, b) tests mean(a) - mean(b): pruned first, so t < 0 means harmed.
            result = stats.ttest_ind(pruned[:, regular], base[:, regular], axis=0, equal_var=False)
        t[regular] = result.statistic
        p[regular] = result.pvalue
    return t, p


def _adjust(p: np.ndarray, correction: str) -> np.ndarray:
    q = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    if not tested.any():
        return q
    if correction == "none":
        q[tested] = p[tested]
    else:
        from statsmodels.stats.multitest import multipletests

        q[tested] = multipletests(p[tested], method="fdr_bh")[1]
    return q


def _bootstrap_interval(
    base: np.ndarray,
    pruned: np.ndarray,
    *,
    n_bootstrap: int,
    confidence: float,
    seed: int,
) -> np.ndarray:
    """Percentile interval of mean(pruned) - mean(base), resampling models within each population.

    A resample is drawn as multinomial counts over models, so each replicate's mean is one row
    of a (B, M) @ (M, C) product instead of a (B, M, C) gather.
    """
    # Put models in a canonical order first, so the interval does not depend on how the model
    # directories happen to be named or listed.
    base = base[np.lexsort(base.T[::-1])]
    pruned = pruned[np.lexsort(pruned.T[::-1])]
    rng = np.random.default_rng(seed)
    mb, mp = base.shape[0], pruned.shape[0]
    wb = rng.multinomial(mb, np.full(mb, 1 / mb), size=n_bootstrap) / mb
    wp = rng.multinomial(mp, np.full(mp, 1 / mp), size=n_bootstrap) / mp
    replicates = wp @ pruned - wb @ base  # (B, C)
    tail = (1 - confidence) / 2
    return np.quantile(replicates, [tail, 1 - tail], axis=0)
