"""Label issues among the PIEs: are the examples pruning forgets the ones whose labels look wrong?

Hooker et al.'s human study of ImageNet PIEs found them over-indexed on incorrect or ambiguous
labels. This module makes that claim measurable on any dataset with cleanlab (Northcutt et al.,
"Confident Learning", JAIR 2021), which finds likely label errors from *out-of-sample* predicted
probabilities. The audit's test split is out of sample already: the models were trained on another
split and never saw these labels. The probabilities used are the baseline population's mean softmax
outputs (dense models only, so the flags do not depend on pruning), with cleanlab's defaults:

- ``cleanlab.rank.get_label_quality_scores(labels, pred_probs, method="self_confidence")``: the
  mean probability of the given label, in [0, 1], low for a likely error;
- ``cleanlab.filter.find_label_issues(labels, pred_probs, filter_by="prune_by_noise_rate",
  n_jobs=1)``: the confident-learning flag (one process, so the result does not depend on the
  machine's cores).

The enrichment among PIEs is Fisher's exact test, two-sided, of the 2 x 2 table (PIE or not) x
(label issue or not), as for the groups' PIE concentration.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["LabelIssues", "LabelIssueEnrichment", "label_issues", "label_issue_enrichment", "NO_PROBABILITIES"]

NO_PROBABILITIES = (
    "label issues: the baseline predictions carry no prob_* columns, so no label quality was computed "
    "(write softmax probabilities with the predictions: docs/interchange-format.md)"
)


@dataclass(frozen=True, eq=False)
class LabelIssues:
    """cleanlab's verdict on each example's label.

    Attributes
    ----------
    quality : ndarray of shape (N,), float
        Label quality score in [0, 1] (self-confidence): low is a likely error.
    issue : ndarray of shape (N,), bool
        Flagged as a likely label error by confident learning.
    warnings : tuple of str
        What cleanlab warned about (a class with too few examples to judge, ...).
    """

    quality: np.ndarray
    issue: np.ndarray
    warnings: tuple[str, ...] = ()


def label_issues(labels: np.ndarray, probabilities: np.ndarray) -> LabelIssues:
    """Label quality and label-issue flags of each example, from out-of-sample probabilities.

    Parameters
    ----------
    labels : ndarray of shape (N,)
        The given (possibly wrong) labels, in 0 .. C-1.
    probabilities : ndarray of shape (N, C)
        Out-of-sample predicted probabilities (the baseline's mean softmax), rows summing to 1.

    Returns
    -------
    LabelIssues
    """
    with warnings.catch_warnings():
        # cleanlab imports tqdm.auto, which in a Jupyter kernel without ipywidgets warns that it
        # cannot draw a progress bar: we draw none.
        warnings.simplefilter("ignore")
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    # cleanlab wants rows that sum to 1 exactly; float32 softmax means are off by ~1e-7.
    probs = probs / probs.sum(axis=1, keepdims=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quality = get_label_quality_scores(labels, probs, method="self_confidence")
        issue = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    said = tuple(dict.fromkeys(str(w.message) for w in caught))
    return LabelIssues(quality=np.asarray(quality, dtype=np.float64), issue=np.asarray(issue, dtype=bool), warnings=said)


@dataclass(frozen=True)
class LabelIssueEnrichment:
    """How much more often PIEs carry a likely label issue than the other examples.

    Attributes
    ----------
    fraction : float or None
        Label issues among the PIEs (``None`` without PIEs).
    non_pie_fraction : float or None
        Among the other examples.
    odds_ratio : float or None
        Of the 2 x 2 table, as ``scipy.stats.fisher_exact`` gives it (``inf`` when no non-PIE has
        an issue; ``None`` in JSON).
    p_value : float or None
        Fisher's exact test, two-sided.
    """

    fraction: float | None
    non_pie_fraction: float | None
    odds_ratio: float | None
    p_value: float | None


def label_issue_enrichment(is_pie: np.ndarray, issue: np.ndarray) -> LabelIssueEnrichment:
    """Fisher's exact test of label issues among PIEs against the other examples.

    Parameters
    ----------
    is_pie, issue : ndarray of shape (N,), bool

    Returns
    -------
    LabelIssueEnrichment
        Fractions ``None`` on an empty side; the test ``None`` when either side is empty.
    """
    from scipy.stats import fisher_exact

    is_pie = np.asarray(is_pie, dtype=bool)
    issue = np.asarray(issue, dtype=bool)
    a = int((is_pie & issue).sum())
    b = int((is_pie & ~issue).sum())
    c = int((~is_pie & issue).sum())
    d = int((~is_pie & ~issue).sum())
    fraction = a / (a + b) if a + b else None
    non_pie = c / (c + d) if c + d else None
    if not (a + b) or not (c + d):
        return LabelIssueEnrichment(fraction, non_pie, None, None)
    odds, p = fisher_exact([[a, b], [c, d]], alternative="two-sided")
    return LabelIssueEnrichment(fraction, non_pie, float(odds), float(p))
