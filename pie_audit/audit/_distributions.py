"""The audit's tests and distributions on :mod:`scipy.special`, without importing :mod:`scipy.stats`.

Importing ``scipy.stats`` costs about a second (1.2 s on the 2-core CI machine), more than all the
statistics of a 1,000-class audit take, and ``statsmodels`` more on top; a CI gate and a notebook
user re-running an audit feel it every time. Every test the audit runs reduces to a few special
functions that ``scipy.special`` provides (0.2 s to import), the very ones ``scipy.stats`` calls:

- Welch's and the paired t-test: the statistics of ``scipy.stats.ttest_ind(equal_var=False)``
  and ``ttest_rel``, two-sided p-values from the t distribution (``special.stdtr``);
- the exact McNemar test: the two-sided binomial test at 1/2 (``special.bdtr``);
- Benjamini-Hochberg q-values, the step-up of ``statsmodels``' ``multipletests(method="fdr_bh")``;
- the power analysis's t quantile and noncentral t tails (``special.stdtrit``, ``nctdtr`` and the
  survival function ``scipy.stats.nct.sf`` uses).

The tests check each against ``scipy.stats`` and ``statsmodels`` (``tests/test_distributions.py``).
Fisher's exact test (the PIE concentration of groups) still comes from ``scipy.stats``, imported
only by a subgroup audit.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "welch_t_test",
    "two_sided_p_value",
    "paired_t_test",
    "binomial_half_p_value",
    "benjamini_hochberg",
    "t_quantile",
    "nct_sf",
    "nct_cdf",
]


def _special():  # noqa: ANN202 - the scipy.special module, imported when first needed
    from scipy import special

    return special


def welch_t_test(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Welch t-test of mean(a) - mean(b), column by column.

    Parameters
    ----------
    a : ndarray of shape (n_a, K)
    b : ndarray of shape (n_b, K)
        At least two rows each, and some variance in each column (the caller handles columns
        that do not vary).

    Returns
    -------
    statistic, p_value : ndarray of shape (K,)
        As ``scipy.stats.ttest_ind(a, b, axis=0, equal_var=False)``.
    """
    n1, n2 = a.shape[0], b.shape[0]
    v1 = _variance(a) / n1
    v2 = _variance(b) / n2
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
        # scipy's rule for 0/0 (both variances zero): one degree of freedom.
        df = np.where(np.isnan(df), 1.0, df)
        t = (a.mean(axis=0) - b.mean(axis=0)) / np.sqrt(v1 + v2)
    return t, _two_sided(t, df)


def paired_t_test(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided paired t-test of mean(a - b), column by column, as ``scipy.stats.ttest_rel(a, b)``.

    Parameters
    ----------
    a, b : ndarray of shape (n, K)
        Row m of ``a`` paired with row m of ``b``; n >= 2.

    Returns
    -------
    statistic, p_value : ndarray of shape (K,)
    """
    d = a - b
    n = d.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = d.mean(axis=0) / np.sqrt(_variance(d) / n)
    return t, _two_sided(t, np.full(t.shape, n - 1.0))


def _variance(x: np.ndarray) -> np.ndarray:
    # scipy's own: the second central moment, rescaled to ddof=1.
    n = x.shape[0]
    centred = x - x.mean(axis=0)
    return (centred * centred).mean(axis=0) * (n / (n - 1))


def two_sided_p_value(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Two-sided p-value of a t statistic: ``2 * scipy.stats.t.sf(|t|, df)``, elementwise."""
    # scipy.stats computes it as 2 * stdtr(df, -|t|).
    return 2 * _special().stdtr(df, -np.abs(t))


_two_sided = two_sided_p_value


def binomial_half_p_value(b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Exact two-sided McNemar p-values from discordant counts, all columns at once.

    Parameters
    ----------
    b, c : ndarray of shape (K,), int
        Examples the baseline model gets right and the pruned one wrong, and the reverse.

    Returns
    -------
    ndarray of shape (K,)
        ``scipy.stats.binomtest(b, b + c, 0.5).pvalue``, which for this symmetric null is
        ``min(1, 2 P(X <= min(b, c)))``; 1 where nothing is discordant.
    """
    b = np.asarray(b, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    n = b + c
    p = np.ones(b.shape)
    some = n > 0
    p[some] = np.minimum(1.0, 2 * _special().bdtr(np.minimum(b, c)[some], n[some], 0.5))
    return p


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values, as ``statsmodels.stats.multitest.multipletests(p, method="fdr_bh")[1]``.

    Parameters
    ----------
    p : ndarray of shape (K,)
        p-values, none NaN.

    Returns
    -------
    ndarray of shape (K,)
    """
    p = np.asarray(p, dtype=float)
    order = np.argsort(p)
    ranked = p[order] / (np.arange(1, p.size + 1) / p.size)
    # The step-up: each q is the smallest rescaled p at or above its rank.
    q_sorted = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1)
    q = np.empty_like(q_sorted)
    q[order] = q_sorted
    return q


def t_quantile(q: float, df: np.ndarray) -> np.ndarray:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (``scipy.stats.t.ppf``)."""
    return _special().stdtrit(df, q)


def nct_cdf(x: np.ndarray, df: np.ndarray, nc: np.ndarray) -> np.ndarray:
    """The noncentral t distribution's CDF (``scipy.stats.nct.cdf``)."""
    return _special().nctdtr(df, nc, x)


def nct_sf(x: np.ndarray, df: np.ndarray, nc: np.ndarray) -> np.ndarray:
    """The noncentral t distribution's survival function (``scipy.stats.nct.sf``).

    ``scipy.stats.nct`` computes it directly rather than as ``1 - cdf``, which loses the far
    upper tail; the same private ufunc is used when this scipy has it.
    """
    from scipy.special import _ufuncs

    direct = getattr(_ufuncs, "_nct_sf", None)
    with np.errstate(over="ignore"):
        if direct is not None:
            return np.clip(direct(x, df, nc), 0, 1)
        return np.clip(1 - _special().nctdtr(df, nc, x), 0, 1)
