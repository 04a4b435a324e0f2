"""Intensification: do the classes the dense models already found hard lose the most?

Good et al. ("Recall Distortion in Neural Network Pruning", NeurIPS 2022) find that pruning
*intensifies* what the dense model does: classes whose dense recall is below the dense accuracy
lose recall, the others gain. Over an audit's tested classes (or groups), this module measures it as
Spearman's rank correlation between the **dense deficit** (the class's baseline mean recall minus
the baseline's mean accuracy) and the class's ``normalized_change``: intensification is a positive
correlation (hard classes, negative deficit, lose most, negative change).

Spearman's rho is the Pearson correlation of the average ranks. Its p-value is two-sided: from
10 points on, the t approximation ``t = rho * sqrt((n - 2) / (1 - rho^2))`` on ``n - 2`` degrees
of freedom, as ``scipy.stats.spearmanr`` computes it; up to 9 points, exact, over every
permutation of the ranks (the approximation gives p = 0 for 4 points in perfect order, where the
exact answer is 1/12). ``tests/test_intensification.py`` checks both against scipy, without
``scipy.stats`` imported here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._distributions import two_sided_p_value

__all__ = ["Intensification", "intensification", "spearman"]

#: Fewer tested classes (groups) than this: no correlation is stated.
MIN_POINTS = 3
#: Up to this many points the p-value is exact (every permutation of the ranks); beyond, the t
#: approximation of ``scipy.stats.spearmanr``.
EXACT_POINTS = 9


@dataclass(frozen=True)
class Intensification:
    """Spearman's correlation between dense deficit and normalized change.

    Attributes
    ----------
    rho : float or None
        ``None`` with fewer than :data:`MIN_POINTS` points, or when either side does not vary.
    p_value : float or None
        Two-sided.
    n : int
        Points (tested classes or groups) it was computed over.
    what : {"classes", "groups"}
    """

    rho: float | None
    p_value: float | None
    n: int
    what: str = "classes"

    def to_dict(self) -> dict:
        key = "n_classes" if self.what == "classes" else "n_groups"
        return {"rho": self.rho, "p_value": self.p_value, key: self.n}

    def sentence(self, *, alpha: float = 0.05) -> str:
        """The finding in words: ``classes the dense models found hard lost more: rho = 0.61, p = 0.01``."""
        hard = "classes" if self.what == "classes" else "groups"
        if self.rho is None:
            return f"no rank correlation over {self.n} tested {hard} (too few, or no variation)"
        p = _p(self.p_value)
        stat = f"rho = {self.rho:.2f}, p {p if p.startswith('<') else '= ' + p}, {self.n} {hard}"
        if self.p_value is not None and self.p_value <= alpha:
            verb = "lost more" if self.rho > 0 else "lost less"
            return f"{hard} the dense models found hard {verb}: {stat}"
        return f"no significant sign that {hard} the dense models found hard lost more: {stat}"


def _p(p: float | None) -> str:
    if p is None:
        return "undefined"
    if p < 1e-16:
        return "< 1e-16"  # a perfect order of 10 or more: below what doubles tell apart from 0
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value (as ``scipy.stats.spearmanr(x, y)`` from 10 points,
    exact by permutation below).

    Parameters
    ----------
    x, y : ndarray of shape (n,)
        Finite values, ``n >= 3``.

    Returns
    -------
    rho, p_value : float
        NaN when either side is constant.
    """
    rx = pd.Series(x).rank(method="average").to_numpy()
    ry = pd.Series(y).rank(method="average").to_numpy()
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    if denominator == 0:
        return float("nan"), float("nan")
    rho = float(np.clip((rx * ry).sum() / denominator, -1.0, 1.0))
    n = x.shape[0]
    if n <= EXACT_POINTS:
        return rho, _exact_p(rx, ry, rho)
    r = np.float64(rho)
    with np.errstate(divide="ignore"):
        # |rho| = 1: t is infinite and p = 0, as scipy gives.
        t = r * np.sqrt((n - 2) / ((1.0 - r) * (1.0 + r)))
    return rho, float(two_sided_p_value(np.asarray([t]), np.asarray([n - 2.0]))[0])


def _exact_p(rx: np.ndarray, ry: np.ndarray, rho: float) -> float:
    """Two-sided p of rho under every permutation of the ranks (``n! <= 362,880``).

    The t approximation gives p = 0 for a perfect correlation of 4 points, where the exact
    answer is 2/24: at this size the permutation distribution is the honest one.
    """
    from itertools import permutations

    n = rx.shape[0]
    orders = np.fromiter((i for order in permutations(range(n)) for i in order), dtype=np.int8).reshape(-1, n)
    rhos = (ry[orders] * rx).sum(axis=1) / np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))


def intensification(
    table: pd.DataFrame, *, baseline_accuracy: float, rate: str = "recall", tested: np.ndarray | None = None
) -> Intensification:
    """Spearman's correlation between each class's dense deficit and its normalized change.

    Parameters
    ----------
    table : DataFrame
        The classes (:func:`pie_audit.audit.class_statistics`: ``baseline_recall_mean``,
        ``normalized_change``) or groups (``rate="accuracy"``: ``baseline_accuracy_mean``).
    baseline_accuracy : float
        The baseline's mean accuracy: the deficit is the class's baseline rate minus it.
    rate : {"recall", "accuracy"}
    tested : ndarray of shape (len(table),), bool, optional
        The rows to use; default those with a defined rate and change (classes with examples).

    Returns
    -------
    Intensification
    """
    base = table[f"baseline_{rate}_mean"].to_numpy(dtype=float)
    change = table["normalized_change"].to_numpy(dtype=float)
    use = np.isfinite(base) & np.isfinite(change)
    if tested is not None:
        use &= np.asarray(tested, dtype=bool)
    what = "classes" if rate == "recall" else "groups"
    n = int(use.sum())
    if n < MIN_POINTS:
        return Intensification(None, None, n, what)
    rho, p = spearman(base[use] - baseline_accuracy, change[use])
    if np.isnan(rho):
        return Intensification(None, None, n, what)
    return Intensification(rho, p, n, what)
