"""Statistical power of the per-class tests: what an audit could have detected, and what it needs.

A passing gate means "no class was *shown* to drop by more than the limit", which is worth little
when the test could not have shown it. For each class, from the population sizes and the observed
spread of its per-model values, this module gives the *minimum detectable effect* (``mde``): the
smallest drop that the class's two-sided t-test at level ``alpha`` detects with the target power
(0.8 by default), and how many models per population a drop of a given size needs.

Power is that of Welch's t-test (or the paired t-test): with standard error
``SE = sqrt(s_b^2 / n_b + s_p^2 / n_p)`` and Welch-Satterthwaite degrees of freedom ``df``
(``SE = s_d / sqrt(n)``, ``df = n - 1`` for pairs), a true shift ``delta`` gives the test
statistic a noncentral t distribution with noncentrality ``delta / SE``, and

    power(delta) = P(T > t_crit) + P(T < -t_crit),   T ~ nct(df, delta / SE),

``t_crit`` the ``1 - alpha/2`` quantile of t(df). The observed variances stand in for the true
ones, as in any pilot-based power analysis. ``alpha`` is the per-class level before any
multiple-testing correction, so with the Benjamini-Hochberg correction the detectable drops are
somewhat larger. A class whose values do not vary at all has no defined power (NaN).

Pure functions over arrays; nothing here reads files.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._distributions import nct_cdf, nct_sf, t_quantile

__all__ = [
    "DEFAULT_POWER",
    "DEFAULT_DETECT",
    "PowerInputs",
    "PowerSummary",
    "t_test_power",
    "minimum_detectable_effect",
    "noncentrality",
    "models_needed",
    "summarise_power",
]

DEFAULT_POWER = 0.8
#: The drop of interest when the ``max-class-drop`` rule is off: 2 points.
DEFAULT_DETECT = 0.02
#: Largest population size :func:`models_needed` searches; beyond it the answer is "more".
MAX_MODELS = 100_000


@dataclass(frozen=True, eq=False)
class PowerInputs:
    """What the power of each class's test depends on.

    Attributes
    ----------
    design : {"welch", "paired"}
    n_baseline, n_pruned : int
        Models per population (pairs: both are the number of pairs).
    var_baseline, var_pruned : ndarray of shape (C,)
        Sample variances (ddof=1) of the tested per-model values; for ``"paired"``,
        ``var_baseline`` holds the variance of the pairs' differences and ``var_pruned`` zeros.
    """

    design: str
    n_baseline: int
    n_pruned: int
    var_baseline: np.ndarray
    var_pruned: np.ndarray

    def subset(self, classes) -> PowerInputs:
        """The same inputs for some classes only."""
        return PowerInputs(
            self.design, self.n_baseline, self.n_pruned, self.var_baseline[classes], self.var_pruned[classes]
        )

    def se_df(self, n_baseline: float | None = None, n_pruned: float | None = None):
        """Standard error and degrees of freedom per class, for these or other population sizes."""
        nb = self.n_baseline if n_baseline is None else n_baseline
        npr = self.n_pruned if n_pruned is None else n_pruned
        if self.design == "paired":
            se = np.sqrt(self.var_baseline / nb)
            return se, np.broadcast_to(np.asarray(nb, dtype=float) - 1, se.shape).copy()
        vb, vp = self.var_baseline / nb, self.var_pruned / npr
        se = np.sqrt(vb + vp)
        with np.errstate(invalid="ignore", divide="ignore"):
            df = (vb + vp) ** 2 / (vb**2 / (nb - 1) + vp**2 / (npr - 1))
        return se, df


def t_test_power(delta: float | np.ndarray, se: np.ndarray, df: np.ndarray, *, alpha: float) -> np.ndarray:
    """Power of a two-sided t-test at level ``alpha`` against a true shift ``delta``.

    Parameters
    ----------
    delta : float or ndarray of shape (C,)
        The true shift (its sign does not matter).
    se : ndarray of shape (C,)
        Standard error of the estimated shift.
    df : ndarray of shape (C,)
        Degrees of freedom.
    alpha : float

    Returns
    -------
    ndarray of shape (C,)
        NaN where ``se`` is 0 or ``df`` undefined.
    """
    se, df = np.asarray(se, dtype=float), np.asarray(df, dtype=float)
    out = np.full(np.broadcast(se, df, np.asarray(delta)).shape, np.nan)
    ok = (se > 0) & np.isfinite(df) & (df > 0)
    if not ok.any():
        return out
    d, s, f = (np.broadcast_to(np.abs(np.asarray(delta, dtype=float)), out.shape)[ok], se[ok], df[ok])
    crit = t_quantile(1 - alpha / 2, f)
    nc = d / s
    upper = nct_sf(crit, f, nc)
    lower = nct_cdf(-crit, f, nc)
    # scipy's noncentral t returns NaN deep in a tail (a probability ~1e-17 at few degrees of
    # freedom and a large shift): that tail is then 0, and the upper one 1 if it is the far side.
    lower = np.where(np.isnan(lower), 0.0, lower)
    upper = np.where(np.isnan(upper) & (nc > crit), 1.0, upper)
    out[ok] = upper + lower
    return out


#: Up to this many tests, ``minimum_detectable_effect(..., exact=True)`` solves each one directly.
EXACT_SOLVE_LIMIT = 256


def minimum_detectable_effect(
    se: np.ndarray, df: np.ndarray, *, alpha: float, power: float = DEFAULT_POWER, exact: bool = False
) -> np.ndarray:
    """The smallest shift a two-sided t-test detects with probability ``power``.

    Parameters
    ----------
    se, df : ndarray of shape (C,)
        Standard error and degrees of freedom of each class's test.
    alpha : float
    power : float, default=0.8
    exact : bool, default=False
        Solve each test's noncentrality by bisection instead of reading the interpolated curve of
        ``alpha`` (up to :data:`EXACT_SOLVE_LIMIT` tests): for a level asked once, such as the
        gate's level for one more discovery, building that curve (0.35 s) costs far more than
        solving a few tests.

    Returns
    -------
    ndarray of shape (C,)
        ``lambda(df) * se``, where the noncentrality ``lambda`` gives exactly ``power`` at each
        class's ``df``; NaN where ``se`` is 0 or ``df`` undefined.
    """
    se, df = np.asarray(se, dtype=float), np.asarray(df, dtype=float)
    out = np.full(se.shape, np.nan)
    ok = (se > 0) & np.isfinite(df) & (df > 0)
    if ok.any():
        if exact and int(ok.sum()) <= EXACT_SOLVE_LIMIT:
            out[ok] = _solve_noncentrality(np.clip(df[ok], 1.0, 1e6), alpha=alpha, power=power) * se[ok]
        else:
            out[ok] = noncentrality(df[ok], alpha=alpha, power=power) * se[ok]
    return out


def noncentrality(df: np.ndarray, *, alpha: float, power: float = DEFAULT_POWER) -> np.ndarray:
    """The noncentrality at which a two-sided t-test with ``df`` degrees of freedom has ``power``.

    Solved by bisection on a grid of degrees of freedom (log-spaced, 1 to 10^6; a t-test of two
    models a side has at least 1) and
    interpolated (monotone cubic) in log df, where it is smooth: the power at the result is
    within 1e-4 of the target (measured from 1 to 10^6 degrees of freedom), at a fraction of the
    cost of solving a thousand classes one by one.
    """
    spline = _noncentrality_spline(float(alpha), float(power))
    return spline(np.log(np.clip(df, 1.0, 1e6)))


@functools.lru_cache(maxsize=16)
def _noncentrality_spline(alpha: float, power: float) -> _Pchip:
    df = np.geomspace(1.0, 1e6, 400)
    return _Pchip(np.log(df), _solve_noncentrality(df, alpha=alpha, power=power))


class _Pchip:
    """The monotone cubic interpolant of ``scipy.interpolate.PchipInterpolator``, inside its knots.

    Written out (Fritsch-Butland derivatives, Moler's end points, cubic Hermite pieces; the
    tests hold it to scipy's to 1e-13) because importing ``scipy.interpolate`` costs 0.4 s,
    a fifth of a whole 1,000-class audit, for one curve of 400 points.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        h = np.diff(x)
        m = np.diff(y) / h
        d = np.zeros_like(y)
        w1 = 2 * h[1:] + h[:-1]
        w2 = h[1:] + 2 * h[:-1]
        flat = (np.sign(m[1:]) != np.sign(m[:-1])) | (m[1:] == 0) | (m[:-1] == 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = (w1 / m[:-1] + w2 / m[1:]) / (w1 + w2)
        d[1:-1] = np.where(flat, 0.0, 1.0 / mean)
        d[0] = self._end(h[0], h[1], m[0], m[1])
        d[-1] = self._end(h[-1], h[-2], m[-1], m[-2])
        # Each piece as a cubic in (x - x_i), highest power first, as scipy's PPoly holds it.
        self.x = x
        self.c = np.stack([(d[:-1] + d[1:] - 2 * m) / h**2, (3 * m - 2 * d[:-1] - d[1:]) / h, d[:-1], y[:-1]])

    @staticmethod
    def _end(h0: float, h1: float, m0: float, m1: float) -> float:
        # One-sided three-point estimate, kept shape-preserving.
        d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(d) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(d) > 3 * abs(m0):
            return 3 * m0
        return d

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        i = np.clip(np.searchsorted(self.x, x, side="right") - 1, 0, self.x.size - 2)
        t = x - self.x[i]
        c = self.c[:, i]
        return ((c[0] * t + c[1]) * t + c[2]) * t + c[3]


def _solve_noncentrality(df: np.ndarray, *, alpha: float, power: float) -> np.ndarray:
    # Power grows with the noncentrality; bracket it and bisect, all degrees of freedom at once.
    low = np.zeros_like(df)
    high = np.full_like(df, 4.0)
    one = np.ones_like(df)
    while True:
        # NaN (scipy's noncentral t at extreme arguments) counts as short of the power too.
        short = ~(t_test_power(high, one, df, alpha=alpha) >= power) & (high < 1e6)
        if not short.any():
            break
        high[short] *= 2
    for _ in range(50):  # the bracket halves 50 times: far below any reported digit
        mid = (low + high) / 2
        enough = t_test_power(mid, one, df, alpha=alpha) >= power
        high = np.where(enough, mid, high)
        low = np.where(enough, low, mid)
    return high


def models_needed(
    inputs: PowerInputs, delta: float | np.ndarray, *, alpha: float, power: float = DEFAULT_POWER
) -> np.ndarray:
    """Models per population (or pairs) each class needs to detect ``delta`` with ``power``.

    Both populations are taken to have the same size ``n`` and the observed variances.

    Parameters
    ----------
    inputs : PowerInputs
        For C classes.
    delta : float or ndarray of shape (C,)
        The drop to detect, one for all classes or one each.

    Returns
    -------
    ndarray of shape (C,), float
        The smallest ``n >= 2``; NaN where the variance is 0 (no test is needed or possible) or
        ``delta <= 0``, and ``inf`` beyond :data:`MAX_MODELS`.
    """
    c = inputs.var_baseline.shape[0]
    out = np.full(c, np.nan)
    delta = np.broadcast_to(np.asarray(delta, dtype=float), (c,))
    defined = ((inputs.var_baseline + inputs.var_pruned) > 0) & (delta > 0)
    if not defined.any():
        return out

    def powered(n: np.ndarray, rows: np.ndarray) -> np.ndarray:
        # Only the rows still searching: each row's power is its own, and at 21,843 classes the
        # noncentral t of every row on every step cost a second.
        part = inputs.subset(rows)
        se, df = part.se_df(n[rows], n[rows])
        return t_test_power(delta[rows], se, df, alpha=alpha) >= power

    low = np.full(c, 1.0)  # never enough: a t-test needs two models
    high = np.full(c, 2.0)
    searching = np.flatnonzero(defined)
    while searching.size:
        short = searching[~powered(high, searching) & (high[searching] < MAX_MODELS)]
        low[short] = high[short]
        high[short] = np.minimum(high[short] * 2, MAX_MODELS)
        searching = short
    candidates = np.flatnonzero(defined)
    reachable = np.zeros(c, dtype=bool)
    reachable[candidates] = powered(high, candidates)
    gap = np.flatnonzero(reachable & (high - low > 1))
    while gap.size:
        mid = np.floor((low[gap] + high[gap]) / 2)
        trial = high.copy()
        trial[gap] = mid
        enough = powered(trial, gap)
        high[gap[enough]] = mid[enough]
        low[gap[~enough]] = mid[~enough]
        gap = gap[high[gap] - low[gap] > 1]
    out[reachable] = high[reachable]
    out[defined & ~reachable] = np.inf
    return out


@dataclass(frozen=True)
class PowerSummary:
    """What an audit could detect, over its classes.

    Attributes
    ----------
    detect : float
        The drop of interest (a fraction): the ``max-class-drop`` limit unless set otherwise.
    target : float
        The power asked for (0.8).
    alpha : float
        The per-class test's level.
    median_mde : float or None
        The median class's minimum detectable effect; ``None`` when no class has one.
    power_at_detect : float or None
        The median class's power against a drop of ``detect``.
    models_needed : int or None
        Models per population the median class (by the spread of its per-model values) needs
        for ``target`` power at ``detect``; ``None`` when undefined (no class with varying
        values, or more than 100,000).
    underpowered_classes : int
        Tested classes whose ``mde`` exceeds ``detect``.
    undetectable_classes : int
        Tested classes whose ``mde`` exceeds their own range (the largest drop they can show: their
        baseline rate): these models cannot detect any drop of them.
    median_detectable : bool
        Whether the median class's ``mde`` lies within its own range; when not, no drop of the
        median class can be detected and the power sentence says so instead of quoting a number.
    worst : tuple of (str, float, bool)
        The :data:`WORST_SHOWN` least powered classes, least first: name, ``mde`` and whether it
        lies within the class's range. A pass is only as strong as these.
    """

    detect: float
    target: float
    alpha: float
    median_mde: float | None
    power_at_detect: float | None
    models_needed: int | None
    underpowered_classes: int
    undetectable_classes: int = 0
    median_detectable: bool = True
    worst: tuple[tuple[str, float, bool], ...] = ()

    @property
    def underpowered(self) -> bool:
        """Whether the median class cannot detect a drop of ``detect`` with the target power."""
        return self.median_mde is None or self.median_mde > self.detect

    def to_dict(self) -> dict:
        return {
            "detect": self.detect,
            "target_power": self.target,
            "median_mde": self.median_mde,
            "power_at_detect": self.power_at_detect,
            "models_needed": self.models_needed,
            "underpowered_classes": self.underpowered_classes,
            "undetectable_classes": self.undetectable_classes,
            "median_detectable": self.median_detectable,
            "worst": [{"name": n, "mde": m, "detectable": d} for n, m, d in self.worst],
        }


def _median(values: np.ndarray) -> float | None:
    finite = values[~np.isnan(values)]
    if not finite.size:
        return None
    # The upper median, so that "the median class" is an actual class and not an average of two.
    return float(np.sort(finite)[finite.size // 2])


#: Least powered classes (groups) a :class:`PowerSummary` names.
WORST_SHOWN = 3


def summarise_power(
    inputs: PowerInputs,
    mde: np.ndarray,
    *,
    detect: float,
    alpha: float,
    target: float = DEFAULT_POWER,
    reach: np.ndarray | None = None,
    names: Sequence[str] | None = None,
) -> PowerSummary:
    """Reduce per-class power to the audit's :class:`PowerSummary`.

    Parameters
    ----------
    inputs : PowerInputs
    mde : ndarray of shape (C,)
        :func:`minimum_detectable_effect` per class (NaN where undefined).
    detect : float
    alpha : float
    target : float, default=0.8
    reach : ndarray of shape (C,), optional
        The largest drop each class can show (its baseline mean rate: a recall cannot fall below
        0); default 1 (100 points) for every class.
    names : sequence of str, optional
        Each class's name, for :attr:`PowerSummary.worst`; default its index.
    """
    se, df = inputs.se_df()
    power = t_test_power(detect, se, df, alpha=alpha)
    n = None
    spread = inputs.var_baseline + inputs.var_pruned
    defined = np.flatnonzero(np.nan_to_num(spread) > 0)
    if defined.size:
        # The median class by spread (the upper median, an actual class): what it needs.
        median = defined[np.argsort(spread[defined], kind="stable")[defined.size // 2]]
        n = float(models_needed(inputs.subset([median]), detect, alpha=alpha, power=target)[0])
    mde = np.asarray(mde, dtype=float)
    reach = np.ones(mde.shape) if reach is None else np.minimum(np.asarray(reach, dtype=float), 1.0)
    defined_mde = np.flatnonzero(~np.isnan(mde))
    median_mde = _median(mde)
    median_detectable = True
    worst: list[tuple[str, float, bool]] = []
    if defined_mde.size:
        order = defined_mde[np.argsort(mde[defined_mde], kind="stable")]
        # The class the upper median is (as _median picks it), against its own range.
        median_class = order[defined_mde.size // 2]
        median_detectable = bool(mde[median_class] <= reach[median_class])
        for k in order[::-1][:WORST_SHOWN]:
            name = str(names[k]) if names is not None else str(int(k))
            worst.append((name, float(mde[k]), bool(mde[k] <= reach[k])))
    return PowerSummary(
        detect=float(detect),
        target=float(target),
        alpha=float(alpha),
        median_mde=median_mde,
        power_at_detect=_median(power),
        models_needed=int(n) if n is not None and np.isfinite(n) else None,
        underpowered_classes=int(np.sum(mde > detect)),
        undetectable_classes=int(np.sum(mde > reach)),
        median_detectable=median_detectable,
        worst=tuple(worst),
    )
