"""Per-class disparate impact of pruning: recalls, t-tests, q-values, bootstrap CIs, power.

For model m and class c, r_mc is the recall and a_m the top-1 accuracy; ā is a population's
mean accuracy. Following the code of Hooker et al. (arXiv 1911.05248), each class is tested
with a two-sided Welch t-test between {r_mc - ā_baseline} over baseline models and
{r_mc - ā_pruned} over pruned models: the *relative* test, whose null hypothesis is "the class
moved by as much as overall accuracy did". Beside it the *absolute* test asks the same of the
uncentred recalls {r_mc}: "did the class lose recall?". Pruned models derived from baseline
models are tested in pairs (paired t-tests), and one model against one model with an exact
McNemar test per class. The degenerate cases (one model, zero variance, zero support) have the
documented results listed in :func:`class_statistics` and ``docs/audit.md``.

Nothing here touches the filesystem.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ._distributions import benjamini_hochberg, binomial_half_p_value, paired_t_test, two_sided_p_value, welch_t_test
from ._pie import ModelResamples, model_resamples
from ._power import PowerInputs, minimum_detectable_effect

__all__ = [
    "CORRECTIONS",
    "TESTS",
    "CLASS_COLUMNS",
    "per_model_accuracy",
    "per_model_recall",
    "class_statistics",
    "power_inputs",
    "harmed_classes",
    "helped_classes",
    "recall_fell",
    "recall_rose",
    "RateTests",
    "rate_tests",
    "check_test_options",
    "mcnemar_p_values",
]

CORRECTIONS = ("fdr_bh", "none")
BAD_CORRECTION = "correction must be one of {choices}, not {value!r}"
#: Per-class test designs: independent populations, pruned models paired with their parents,
#: or a single model on each side.
TESTS = ("welch", "paired", "mcnemar")
BAD_TEST = "test must be one of {choices}, not {value!r}"
BAD_PAIRS = "a paired test needs as many pruned models as baseline models, not {pruned} and {baseline}"
BAD_MCNEMAR = "McNemar's test compares one model with one model, not {baseline} with {pruned}"
BAD_ALPHA = "alpha must lie strictly between 0 and 1, not {value!r}"
BAD_CONFIDENCE = "confidence must lie strictly between 0 and 1, not {value!r}"
#: More resamples than this only cost memory (B x models x classes): intervals do not improve.
MAX_BOOTSTRAP = 100_000
BAD_N_BOOTSTRAP = "n_bootstrap must be an integer from 1 to 100,000, not {value!r}"
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
    "recall_ci_low",
    "recall_ci_high",
    "recall_t_statistic",
    "recall_p_value",
    "recall_q_value",
    "recall_significant",
    "mde",
    "significant",
    "direction",
    "robustness",
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
    test: str = "welch",
    alpha: float = 0.05,
    correction: str = "fdr_bh",
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    n_resamples: int = 100,
) -> pd.DataFrame:
    """Per-class disparate impact of pruning, relative to overall accuracy and absolute.

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
    test : {"welch", "paired", "mcnemar"}, default="welch"
        ``"welch"``: two-sided Welch t-tests between the populations (the paper's test).
        ``"paired"``: paired t-tests; row m of the pruned predictions was derived from row m of
        the baseline's (``M_b == M_p``). ``"mcnemar"``: one model on each side (``M_b == M_p
        == 1``); each class's recall gets an exact McNemar test on its examples.
    alpha : float, default=0.05
        A class is ``significant`` when its q-value is at most ``alpha``.
    correction : {"fdr_bh", "none"}, default="fdr_bh"
        ``"fdr_bh"``: Benjamini-Hochberg q-values across the tested classes, separately for the
        relative and the absolute test. ``"none"``: q-value = p-value, the paper's raw
        ``p <= 0.05`` rule.
    n_bootstrap : int, default=1000
        Resamples of models (within each population, or of pairs) for the intervals.
    confidence : float, default=0.95
        Level of the percentile bootstrap intervals.
    seed : int, default=0
        Seed of the bootstrap's random generator, and of the model resamples.
    n_resamples : int, default=100
        Model resamples for each harmed class's ``robustness`` (those of
        :func:`pie_audit.audit.pie_stability`, with the same seed).

    Returns
    -------
    DataFrame with C rows, one per class in label order, and the columns :data:`CLASS_COLUMNS`
        ``label`` (int64), ``support`` (int64, examples of the class);
        ``baseline_recall_mean``, ``pruned_recall_mean`` (mean recall over models, in [0, 1]);
        ``recall_change`` (pruned minus baseline mean recall);
        ``normalized_change`` (``recall_change`` minus the change of mean accuracy);
        ``ci_low``, ``ci_high``, ``t_statistic``, ``p_value``, ``q_value``: the interval and
        test of ``normalized_change`` (relative: did the class lose more than the models'
        average?); ``recall_ci_low``, ... ``recall_q_value``, ``recall_significant``: the same for
        ``recall_change`` (absolute: did the class lose recall?); ``mde``: the smallest normalized drop the
        relative test detects with power 0.8 (:mod:`._power`); ``significant`` (bool,
        the design's primary test: relative for t-tests, absolute for McNemar); ``direction``;
        ``robustness``: for a harmed class, the fraction of model resamples in which it is still
        significantly harmed (:func:`harm_robustness`); NaN for the others and under McNemar.

    Notes
    -----
    ``direction`` is ``"harmed"`` for a significant class whose recall fell (and, for the
    t-test designs, fell more than accuracy did), ``"helped"`` for one whose recall rose (more
    than accuracy did), and ``"none"`` otherwise: it never calls a class whose recall fell
    "helped", as the paper's rule on ``normalized_change`` alone does when one class collapses
    and lifts the centred change of every other.

    Degenerate cases never produce an accidental NaN; they give these documented results:

    - **No example of the class** (support 0): every float column is NaN (``null`` in JSON);
      ``significant`` is False and ``direction`` is ``"none"``. The class is not tested and
      takes no part in the correction.
    - **Fewer than two models in a population** (t-test designs): the tests, intervals and
      ``mde`` are NaN; no class is significant.
    - **Zero variance in both populations** (every model has the same value, in each
      population; for pairs, every pair the same difference): if the recall itself did not
      change, the class did not move and t = 0, p = 1; if it changed and the tested means
      differ, every model agrees on a shift: t = +-inf and p = 0. ``mde`` is NaN there.
    - Zero variance in one population only is an ordinary Welch test.
    - McNemar with no discordant example in a class gives p = 1.
    """
    base, pruned, labels, n_classes = _check_inputs(
        baseline_predictions, pruned_predictions, labels, n_classes
    )
    check_test_options(
        test=test, alpha=alpha, correction=correction, n_bootstrap=n_bootstrap, confidence=confidence,
        n_baseline=base.shape[0], n_pruned=pruned.shape[0],
    )
    support = np.bincount(labels, minlength=n_classes)
    present = support > 0
    base_r = per_model_recall(base, labels, n_classes=n_classes)
    pruned_r = per_model_recall(pruned, labels, n_classes=n_classes)
    base_a = per_model_accuracy(base, labels)
    pruned_a = per_model_accuracy(pruned, labels)
    mcnemar = _mcnemar(base[0], pruned[0], labels, n_classes) if test == "mcnemar" else None
    # As in the paper's code: centre each population's recalls on its mean accuracy, so the
    # relative null hypothesis is "this class moved by as much as overall accuracy did".
    out = rate_tests(
        base_r,
        pruned_r,
        base_a,
        pruned_a,
        present,
        centre="population",
        test=test,
        alpha=alpha,
        correction=correction,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        seed=seed,
        mcnemar_p=mcnemar,
    )
    harmed = out.direction == "harmed"
    robustness = np.full(n_classes, np.nan)
    if harmed.any() and test != "mcnemar":
        robustness = harm_robustness(
            base_r, pruned_r, base_a, pruned_a, present, harmed,
            resamples=model_resamples(base, pruned, n_resamples=n_resamples, seed=seed),
            centre="population", test=test, alpha=alpha, correction=correction, support=support,
        )  # fmt: skip
    return pd.DataFrame(
        {
            "label": np.arange(n_classes, dtype=np.int64),
            "support": support.astype(np.int64),
            "baseline_recall_mean": out.baseline_mean,
            "pruned_recall_mean": out.pruned_mean,
            "recall_change": out.change,
            "normalized_change": out.normalized,
            "ci_low": out.ci[0],
            "ci_high": out.ci[1],
            "t_statistic": out.t[0],
            "p_value": out.p[0],
            "q_value": out.q[0],
            "recall_ci_low": out.ci[2],
            "recall_ci_high": out.ci[3],
            "recall_t_statistic": out.t[1],
            "recall_p_value": out.p[1],
            "recall_q_value": out.q[1],
            "recall_significant": out.absolute_significant,
            "mde": out.mde,
            "significant": out.significant,
            "direction": out.direction.astype(object),
            "robustness": robustness,
        },
        columns=list(CLASS_COLUMNS),
    )


def check_test_options(
    *,
    test: str,
    alpha: float,
    correction: str,
    n_bootstrap: int,
    confidence: float,
    n_baseline: int,
    n_pruned: int,
) -> None:
    """Refuse test options that :func:`class_statistics` (or the group statistics) cannot honour.

    Raises
    ------
    ConfigError
        An unknown test or correction, a level outside (0, 1), a bootstrap count outside
        1 .. 100,000, or population sizes the design cannot pair.
    """
    if test not in TESTS:
        raise ConfigError(BAD_TEST.format(choices=", ".join(TESTS), value=test))
    if correction not in CORRECTIONS:
        raise ConfigError(BAD_CORRECTION.format(choices=", ".join(CORRECTIONS), value=correction))
    if not 0 < alpha < 1:
        raise ConfigError(BAD_ALPHA.format(value=alpha))
    if not 0 < confidence < 1:
        raise ConfigError(BAD_CONFIDENCE.format(value=confidence))
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or not 1 <= n_bootstrap <= MAX_BOOTSTRAP:
        raise ConfigError(BAD_N_BOOTSTRAP.format(value=n_bootstrap))
    if test == "paired" and n_baseline != n_pruned:
        raise ConfigError(BAD_PAIRS.format(baseline=n_baseline, pruned=n_pruned))
    if test == "mcnemar" and (n_baseline != 1 or n_pruned != 1):
        raise ConfigError(BAD_MCNEMAR.format(baseline=n_baseline, pruned=n_pruned))


@dataclass(frozen=True, eq=False)
class RateTests:
    """The relative and absolute tests of K per-model rates (recalls, group accuracies), side by side.

    Arrays of shape (K,) unless said; row 0 of ``t``, ``p``, ``q`` is the relative test, row 1
    the absolute one; ``ci`` holds (relative low, relative high, absolute low, absolute high).
    """

    baseline_mean: np.ndarray
    pruned_mean: np.ndarray
    change: np.ndarray
    normalized: np.ndarray
    ci: np.ndarray
    t: np.ndarray
    p: np.ndarray
    q: np.ndarray
    mde: np.ndarray
    significant: np.ndarray
    absolute_significant: np.ndarray
    direction: np.ndarray
    power_inputs: PowerInputs


def rate_tests(
    base_rates: np.ndarray,
    pruned_rates: np.ndarray,
    base_accuracy: np.ndarray,
    pruned_accuracy: np.ndarray,
    tested: np.ndarray,
    *,
    centre: str,
    test: str,
    alpha: float,
    correction: str,
    n_bootstrap: int | None,
    confidence: float,
    seed: int,
    mcnemar_p: np.ndarray | None = None,
    power: bool = True,
) -> RateTests:
    """The per-class design applied to any per-model rate: the engine of classes, groups and cells.

    Parameters
    ----------
    base_rates : ndarray of shape (M_b, K)
        Each baseline model's rate in each column (recall of a class, accuracy of a group); for
        ``"paired"``, row m is the parent of pruned row m.
    pruned_rates : ndarray of shape (M_p, K)
    base_accuracy, pruned_accuracy : ndarray of shape (M_b,) and (M_p,)
        Each model's overall accuracy.
    tested : ndarray of shape (K,), bool
        The columns to test; the others get NaN tests and take no part in the correction (their
        means are still computed where defined).
    centre : {"population", "model"}
        What the relative test subtracts: each population's mean accuracy (the paper's choice
        for classes), or each model's own accuracy (groups: the per-model excess gap).
    test, alpha, correction, confidence, seed
        As in :func:`class_statistics`.
    n_bootstrap : int or None
        Resamples for the intervals; ``None`` computes none (NaN).
    mcnemar_p : ndarray of shape (K,), optional
        With ``test="mcnemar"``: the exact test's p-value of each column (the absolute test).
    power : bool, default=True
        Compute ``mde``; without it (resamples that only need the verdicts) it is NaN.
    """
    present = np.asarray(tested, dtype=bool)
    k = present.shape[0]
    base_mean = _column_means(base_rates, present | ~np.isnan(base_rates).any(axis=0))
    pruned_mean = _column_means(pruned_rates, present | ~np.isnan(pruned_rates).any(axis=0))
    change = pruned_mean - base_mean
    normalized = (pruned_mean - pruned_accuracy.mean()) - (base_mean - base_accuracy.mean())

    t = np.full((2, k), np.nan)
    p = np.full((2, k), np.nan)
    ci = np.full((4, k), np.nan)
    mde = np.full(k, np.nan)
    if centre == "population":
        base_rel = base_rates[:, present] - base_accuracy.mean()
        pruned_rel = pruned_rates[:, present] - pruned_accuracy.mean()
        # Centring on a constant leaves the spread alone: the power reads the rates themselves.
        spread = (base_rates, pruned_rates)
    else:
        base_rel = base_rates[:, present] - base_accuracy[:, None]
        pruned_rel = pruned_rates[:, present] - pruned_accuracy[:, None]
        spread = (base_rates - base_accuracy[:, None], pruned_rates - pruned_accuracy[:, None])
    inputs = _power_inputs(test, *spread, present)
    if test == "mcnemar":
        if mcnemar_p is not None:
            p[1, present] = np.asarray(mcnemar_p)[present]
    elif base_rates.shape[0] >= 2 and pruned_rates.shape[0] >= 2 and present.any():
        absolute = (base_rates[:, present], pruned_rates[:, present])
        moved = base_rates[0, present] != pruned_rates[0, present]
        for row, (b, q) in enumerate(((base_rel, pruned_rel), absolute)):
            t[row, present], p[row, present] = _t_test(b, q, paired=test == "paired", recall_moved=moved)
        if n_bootstrap is not None:
            # Resampling models moves a population's mean accuracy too, so the bootstrap works on
            # each model's rate minus its own accuracy; the means are the same point estimate.
            ci[:, present] = _bootstrap_interval(
                np.hstack([base_rates[:, present] - base_accuracy[:, None], base_rates[:, present]]),
                np.hstack([pruned_rates[:, present] - pruned_accuracy[:, None], pruned_rates[:, present]]),
                paired=test == "paired",
                n_bootstrap=n_bootstrap,
                confidence=confidence,
                seed=seed,
            ).reshape(2, 2, -1).transpose(1, 0, 2).reshape(4, -1)
        if power:
            se, df = inputs.se_df()
            mde = minimum_detectable_effect(se, df, alpha=alpha)
    q = np.vstack([_adjust(p[0], correction), _adjust(p[1], correction)])
    primary = 1 if test == "mcnemar" else 0
    significant = np.nan_to_num(q[primary], nan=np.inf) <= alpha
    # The relative change must agree too where the relative test decided.
    fell = (change < 0) & ((normalized < 0) | (primary == 1))
    rose = (change > 0) & ((normalized > 0) | (primary == 1))
    direction = np.where(significant & fell, "harmed", np.where(significant & rose, "helped", "none"))
    return RateTests(
        baseline_mean=base_mean,
        pruned_mean=pruned_mean,
        change=change,
        normalized=normalized,
        ci=ci,
        t=t,
        p=p,
        q=q,
        mde=mde,
        significant=significant,
        absolute_significant=np.nan_to_num(q[1], nan=np.inf) <= alpha,
        direction=direction,
        power_inputs=inputs,
    )


def harm_robustness(
    base_rates: np.ndarray,
    pruned_rates: np.ndarray,
    base_accuracy: np.ndarray,
    pruned_accuracy: np.ndarray,
    tested: np.ndarray,
    harmed: np.ndarray,
    *,
    resamples: ModelResamples,
    centre: str,
    test: str,
    alpha: float,
    correction: str,
    support: np.ndarray | None = None,
) -> np.ndarray:
    """How often each harmed column stays significantly harmed when the models are resampled.

    Each of the B resamples (:func:`._pie.model_resamples`, the resamples of PIE stability) draws
    each population's models with replacement, pairs together for ``"paired"``, and reruns
    :func:`rate_tests` whole, the multiple-testing correction included. A verdict carried by one
    swing model, or sitting just below the q-value threshold, is harmed in few resamples.

    Parameters
    ----------
    base_rates, pruned_rates, base_accuracy, pruned_accuracy, tested
        As in :func:`rate_tests`.
    harmed : ndarray of shape (K,), bool
        The columns the audit found harmed: only they get a robustness.
    resamples : ModelResamples
        Over the rows of ``base_rates`` and ``pruned_rates``.
    centre, test, alpha, correction
        As in :func:`rate_tests`.
    support : ndarray of shape (K,), optional
        Examples behind each rate (a class's support), so that each rate times its support is a
        whole count. With ``centre="population"`` the resamples are then tested from the counts'
        moments, all at once, instead of from gathered copies of the rates: the same tests and
        the same zero-variance rule (decided on integers, exactly), at a tenth of the cost.

    Returns
    -------
    ndarray of shape (K,)
        The fraction of resamples in which the column is harmed, for the harmed columns; NaN for
        the others, and for every column of a McNemar design (one model a side: nothing to resample).
    """
    out = np.full(np.shape(harmed), np.nan)
    harmed = np.asarray(harmed, dtype=bool)
    present = np.asarray(tested, dtype=bool)
    if test == "mcnemar" or not harmed.any() or min(base_rates.shape[0], pruned_rates.shape[0]) < 2:
        return out
    paired = test == "paired"
    if centre == "population" and support is not None:
        hits = _harmed_by_moments(
            base_rates[:, present], pruned_rates[:, present], base_accuracy, pruned_accuracy,
            np.asarray(support)[present], resamples, paired=paired, alpha=alpha, correction=correction,
        )  # fmt: skip
        robustness = np.full(present.shape, np.nan)
        robustness[present] = hits / resamples.baseline_counts.shape[0]
        out[harmed] = robustness[harmed]
        return out
    rows_b = np.stack([resamples.rows(b) for b in range(resamples.baseline_counts.shape[0])])
    # Pairs are drawn together: row m of the pruned rates belongs to row m of the baseline's.
    rows_p = rows_b if paired else np.stack([resamples.rows(b, pruned=True) for b in range(rows_b.shape[0])])
    rates_b, rates_p = base_rates[:, present], pruned_rates[:, present]
    hits = np.zeros(int(present.sum()), dtype=np.int64)
    # Resamples side by side as columns of one t-test call, a block at a time: the same arithmetic
    # as rate_tests, without a Python loop over resamples (100 calls took 12 s at 21,843 classes).
    block = max(1, _ROBUSTNESS_BLOCK // max(1, rows_b.shape[1] * rates_b.shape[1]))
    for start in range(0, rows_b.shape[0], block):
        rb, rp = rows_b[start : start + block], rows_p[start : start + block]
        b, q = rates_b[rb], rates_p[rp]  # (B, M, K)
        acc_b, acc_p = base_accuracy[rb], pruned_accuracy[rp]  # (B, M)
        if centre == "population":
            rel_b = b - acc_b.mean(axis=1)[:, None, None]
            rel_p = q - acc_p.mean(axis=1)[:, None, None]
        else:
            rel_b, rel_p = b - acc_b[:, :, None], q - acc_p[:, :, None]
        n_blocks, k = b.shape[0], b.shape[2]
        _, p = _t_test(
            rel_b.transpose(1, 0, 2).reshape(b.shape[1], -1),
            rel_p.transpose(1, 0, 2).reshape(q.shape[1], -1),
            paired=paired,
            recall_moved=(b[:, 0, :] != q[:, 0, :]).ravel(),
        )
        p = p.reshape(n_blocks, k)
        change = q.mean(axis=1) - b.mean(axis=1)
        normalized = (q.mean(axis=1) - acc_p.mean(axis=1)[:, None]) - (b.mean(axis=1) - acc_b.mean(axis=1)[:, None])
        for i in range(n_blocks):
            qv = _adjust(p[i], correction)
            hits += (np.nan_to_num(qv, nan=np.inf) <= alpha) & (change[i] < 0) & (normalized[i] < 0)
    robustness = np.full(present.shape, np.nan)
    robustness[present] = hits / rows_b.shape[0]
    out[harmed] = robustness[harmed]
    return out


def _harmed_by_moments(
    base_rates: np.ndarray,
    pruned_rates: np.ndarray,
    base_accuracy: np.ndarray,
    pruned_accuracy: np.ndarray,
    support: np.ndarray,
    resamples: ModelResamples,
    *,
    paired: bool,
    alpha: float,
    correction: str,
) -> np.ndarray:
    """Per column (K,), in how many resamples the population-centred test finds it harmed.

    Each resample is a row of model counts, so every sum over its models is a matrix product.
    The rates times their support are whole numbers (counts of correct examples), and so are the
    sums of them and of their squares: whether a resample's values vary at all (the zero-variance
    rule of :func:`_t_test`) is decided exactly.
    """
    weights = []
    for order, counts in ((resamples.baseline_order, resamples.baseline_counts), (resamples.pruned_order, resamples.pruned_counts)):
        w = np.zeros(counts.shape)
        w[:, order] = counts  # counts are over models in canonical order; back to row order
        weights.append(w)
    if paired:
        weights[1] = weights[0]
    w_b, w_p = weights
    n_b, n_p = base_rates.shape[0], pruned_rates.shape[0]
    c_b = np.rint(base_rates * support)
    c_p = np.rint(pruned_rates * support)
    acc_b = w_b @ base_accuracy / n_b  # (B,)
    acc_p = w_p @ pruned_accuracy / n_p
    mean_b = (w_b @ c_b) / (n_b * support)
    mean_p = (w_p @ c_p) / (n_p * support)
    change = mean_p - mean_b
    normalized = (mean_p - acc_p[:, None]) - (mean_b - acc_b[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        if paired:
            d = c_p - c_b
            s1, s2 = w_b @ d, w_b @ (d * d)
            spread = n_b * s2 - s1 * s1  # a whole number: zero exactly when every pair agrees
            var = spread / (n_b * (n_b - 1) * support**2)
            t = normalized / np.sqrt(var / n_b)
            df = np.full(t.shape, n_b - 1.0)
            constant = spread == 0
            recall_moved = s1 != 0
        else:
            s1_b, s1_p = w_b @ c_b, w_p @ c_p
            spread_b = n_b * (w_b @ (c_b * c_b)) - s1_b * s1_b
            spread_p = n_p * (w_p @ (c_p * c_p)) - s1_p * s1_p
            v_b = spread_b / (n_b * (n_b - 1) * support**2) / n_b
            v_p = spread_p / (n_p * (n_p - 1) * support**2) / n_p
            t = normalized / np.sqrt(v_b + v_p)
            df = (v_b + v_p) ** 2 / (v_b**2 / (n_b - 1) + v_p**2 / (n_p - 1))
            df = np.where(np.isnan(df), 1.0, df)
            constant = (spread_b == 0) & (spread_p == 0)
            # The first drawn models' uncentred counts differ; constant, so any drawn model's do.
            recall_moved = s1_b * n_p != s1_p * n_b
    p = np.ones(t.shape)
    moved = constant & (normalized != 0) & recall_moved
    p[moved] = 0.0
    # Only p-values at most alpha can decide anything (a BH q-value is never below its p-value,
    # and whether one at most alpha passes depends only on the others at most alpha), and a
    # t-test's p is at most alpha only where |t| reaches the normal quantile (t's tails are
    # heavier): the rest stay 1, which leaves every decision as it was, at a fraction of the cost.
    reach = float(_special_ndtri(1 - alpha / 2)) * (1 - 1e-9)
    regular = ~constant & (np.abs(t) >= reach)
    p[regular] = two_sided_p_value(t[regular], df[regular])
    hits = np.zeros(base_rates.shape[1], dtype=np.int64)
    for i in range(p.shape[0]):
        q = _adjust(p[i], correction)
        hits += (np.nan_to_num(q, nan=np.inf) <= alpha) & (change[i] < 0) & (normalized[i] < 0)
    return hits


def _special_ndtri(x: float) -> float:
    from scipy.special import ndtri

    return ndtri(x)


#: Values per block of resampled rates in :func:`harm_robustness` (32 MB of float64).
_ROBUSTNESS_BLOCK = 4_000_000


def harmed_classes(classes: pd.DataFrame) -> pd.DataFrame:
    """The classes significantly harmed (``direction``), worst first.

    Parameters
    ----------
    classes : DataFrame
        A table of :func:`class_statistics` (``label``, ``normalized_change``, ``direction``).

    Returns
    -------
    DataFrame
        Its harmed rows, sorted by ``normalized_change``, then ``label``.
    """
    return classes[classes["direction"] == "harmed"].sort_values(["normalized_change", "label"])


def helped_classes(classes: pd.DataFrame) -> pd.DataFrame:
    """The classes significantly helped, most helped first (by ``normalized_change``, then ``label``)."""
    rows = classes[classes["direction"] == "helped"]
    return rows.sort_values(["normalized_change", "label"], ascending=[False, True])


def recall_fell(classes: pd.DataFrame) -> pd.DataFrame:
    """The classes whose recall fell significantly (the absolute test), largest fall first.

    Parameters
    ----------
    classes : DataFrame
        A table of :func:`class_statistics`; one without ``recall_significant`` (no absolute
        test) has no such class.

    Returns
    -------
    DataFrame
        Its rows with ``recall_significant`` and ``recall_change < 0``, sorted by
        ``recall_change``, then ``label``.
    """
    return _recall_moved(classes, -1).sort_values(["recall_change", "label"])


def recall_rose(classes: pd.DataFrame) -> pd.DataFrame:
    """The classes whose recall rose significantly (the absolute test), in label order."""
    return _recall_moved(classes, 1)


def _recall_moved(classes: pd.DataFrame, sign: int) -> pd.DataFrame:
    if "recall_significant" not in classes:
        return classes.iloc[:0]
    return classes[classes["recall_significant"] & (np.sign(classes["recall_change"]) == sign)]


def power_inputs(
    baseline_predictions: np.ndarray,
    pruned_predictions: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int,
    test: str = "welch",
) -> PowerInputs:
    """What the power of each class's relative test depends on (:class:`._power.PowerInputs`).

    Parameters are those of :func:`class_statistics`. For ``"mcnemar"`` (one model a side) every
    variance is NaN: a t-test's power is undefined there.
    """
    base, pruned, labels, n_classes = _check_inputs(baseline_predictions, pruned_predictions, labels, n_classes)
    base_r = per_model_recall(base, labels, n_classes=n_classes)
    pruned_r = per_model_recall(pruned, labels, n_classes=n_classes)
    present = np.bincount(labels, minlength=n_classes) > 0
    return _power_inputs(test, base_r, pruned_r, present)


def _power_inputs(test: str, base_r: np.ndarray, pruned_r: np.ndarray, present: np.ndarray) -> PowerInputs:
    mb, mp = base_r.shape[0], pruned_r.shape[0]
    vb = np.full(present.shape, np.nan)
    vp = np.full(present.shape, np.nan)
    if test == "paired" and mb >= 2:
        # Centring on the populations' mean accuracies shifts every difference alike, so the
        # variance of the relative test's differences is that of the recall differences.
        vb[present] = (pruned_r[:, present] - base_r[:, present]).var(axis=0, ddof=1)
        vp[present] = 0.0
    elif test == "welch" and mb >= 2 and mp >= 2:
        vb[present] = base_r[:, present].var(axis=0, ddof=1)
        vp[present] = pruned_r[:, present].var(axis=0, ddof=1)
    return PowerInputs(
        design="paired" if test == "paired" else "welch",
        n_baseline=mb,
        n_pruned=mp,
        var_baseline=vb,
        var_pruned=vp,
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


def _t_test(
    base: np.ndarray, pruned: np.ndarray, *, paired: bool, recall_moved: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Welch (or paired) t-test per column, with the zero-variance rule of class_statistics.

    ``recall_moved`` says, per column, whether the first models' uncentred recalls differ; it only
    matters for columns whose tested values do not vary at all, where every model agrees.
    """
    t = np.zeros(base.shape[1])
    p = np.ones(base.shape[1])
    if paired:
        diff = pruned - base
        constant = np.ptp(diff, axis=0) == 0
        shift = diff[0]
    else:
        constant = (np.ptp(base, axis=0) == 0) & (np.ptp(pruned, axis=0) == 0)
        shift = pruned[0] - base[0]
    # A class whose recall is the same constant in both populations (say 100% everywhere) did not
    # move; only overall accuracy did, and that carries sampling noise this test cannot see.
    moved = constant & (shift != 0) & recall_moved
    t[moved] = np.sign(shift[moved]) * np.inf
    p[moved] = 0.0
    regular = ~constant
    if regular.any():
        # test(a, b) tests mean(a) - mean(b): pruned first, so t < 0 means a drop.
        if paired:
            t[regular], p[regular] = paired_t_test(pruned[:, regular], base[:, regular])
        else:
            t[regular], p[regular] = welch_t_test(pruned[:, regular], base[:, regular])
    return t, p


def _mcnemar(base: np.ndarray, pruned: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Exact McNemar p-value per class: a two-sided binomial test on the discordant examples.

    ``b`` counts the class's examples the baseline model gets right and the pruned one wrong,
    ``c`` the reverse; under the null hypothesis (the same recall) each discordant example is
    either with probability 1/2.
    """
    base_right, pruned_right = base == labels, pruned == labels
    b = np.bincount(labels[base_right & ~pruned_right], minlength=n_classes)
    c = np.bincount(labels[~base_right & pruned_right], minlength=n_classes)
    return binomial_half_p_value(b, c)


#: Exact McNemar p-values from discordant counts (:func:`._distributions.binomial_half_p_value`).
mcnemar_p_values = binomial_half_p_value


def _adjust(p: np.ndarray, correction: str) -> np.ndarray:
    q = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    if not tested.any():
        return q
    if correction == "none":
        q[tested] = p[tested]
    else:
        q[tested] = benjamini_hochberg(p[tested])
    return q


def _bootstrap_interval(
    base: np.ndarray,
    pruned: np.ndarray,
    *,
    paired: bool,
    n_bootstrap: int,
    confidence: float,
    seed: int,
) -> np.ndarray:
    """Percentile interval of mean(pruned) - mean(base) per column, resampling models.

    Models are resampled within each population, or as pairs when ``paired``. A resample is
    drawn as multinomial counts over models, so each replicate's mean is one row of a
    (B, M) @ (M, K) product instead of a (B, M, K) gather.
    """
    rng = np.random.default_rng(seed)
    tail = (1 - confidence) / 2
    if paired:
        diff = pruned - base
        # Canonical order first, so the interval does not depend on how directories are named.
        diff = diff[np.lexsort(diff.T[::-1])]
        m = diff.shape[0]
        w = rng.multinomial(m, np.full(m, 1 / m), size=n_bootstrap) / m
        return _chunked_quantiles(lambda cols: w @ diff[:, cols], diff.shape[1], n_bootstrap, (tail, 1 - tail))
    base = base[np.lexsort(base.T[::-1])]
    pruned = pruned[np.lexsort(pruned.T[::-1])]
    mb, mp = base.shape[0], pruned.shape[0]
    wb = rng.multinomial(mb, np.full(mb, 1 / mb), size=n_bootstrap) / mb
    wp = rng.multinomial(mp, np.full(mp, 1 / mp), size=n_bootstrap) / mp
    return _chunked_quantiles(
        lambda cols: wp @ pruned[:, cols] - wb @ base[:, cols], base.shape[1], n_bootstrap, (tail, 1 - tail)
    )


#: Replicate values held at once by the bootstrap: (B, K) for 21,843 classes and B = 1,000 would
#: be 350 MB a product; columns are independent, so they go in blocks of this many values.
_BOOTSTRAP_BLOCK = 4_000_000


def _chunked_quantiles(replicates, k: int, n_bootstrap: int, levels: tuple[float, float]) -> np.ndarray:  # noqa: ANN001
    out = np.empty((2, k))
    step = max(1, _BOOTSTRAP_BLOCK // max(1, n_bootstrap))
    for start in range(0, k, step):
        cols = slice(start, min(k, start + step))
        # Each column's replicates contiguous before the partition: quantiles along axis 0 of a
        # (B, K) block walk memory with a stride of K and cost 3x more. Same values.
        out[:, cols] = np.quantile(np.ascontiguousarray(replicates(cols).T), levels, axis=1)
    return out
