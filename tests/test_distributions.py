"""The audit's tests on scipy.special against scipy.stats and statsmodels, computed independently."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats
from scipy.interpolate import PchipInterpolator
from statsmodels.stats.multitest import multipletests

from pie_audit.audit._distributions import (
    benjamini_hochberg,
    binomial_half_p_value,
    nct_cdf,
    nct_sf,
    paired_t_test,
    t_quantile,
    welch_t_test,
)
from pie_audit.audit._power import _Pchip, _solve_noncentrality

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("shape", [((2, 5), (2, 5)), ((3, 40), (7, 40)), ((30, 1000), (30, 1000))])
def test_welch_equals_scipy(shape):
    a = RNG.normal(0.5, 0.1, shape[0])
    b = RNG.normal(0.48, 0.02, shape[1])
    t, p = welch_t_test(a, b)
    reference = stats.ttest_ind(a, b, axis=0, equal_var=False)
    np.testing.assert_allclose(t, reference.statistic, rtol=1e-12)
    np.testing.assert_allclose(p, reference.pvalue, rtol=1e-12, atol=1e-300)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # scipy's, on the constant column
def test_welch_with_one_constant_population_equals_scipy():
    a = RNG.normal(0.5, 0.1, (5, 20))
    b = np.full((4, 20), 0.3)
    t, p = welch_t_test(a, b)
    reference = stats.ttest_ind(a, b, axis=0, equal_var=False)
    np.testing.assert_allclose(t, reference.statistic, rtol=1e-12)
    np.testing.assert_allclose(p, reference.pvalue, rtol=1e-12)


@pytest.mark.parametrize("n", [2, 3, 30])
def test_paired_equals_scipy(n):
    a = RNG.normal(0.5, 0.1, (n, 50))
    b = a + RNG.normal(-0.01, 0.01, (n, 50))
    t, p = paired_t_test(b, a)
    reference = stats.ttest_rel(b, a, axis=0)
    np.testing.assert_allclose(t, reference.statistic, rtol=1e-12)
    np.testing.assert_allclose(p, reference.pvalue, rtol=1e-12)


def test_binomial_equals_scipy_binomtest():
    b = np.array([0, 1, 3, 5, 0, 7, 50, 12, 40])
    c = np.array([0, 0, 3, 2, 9, 8, 61, 0, 1])
    expected = [1.0 if k + m == 0 else stats.binomtest(int(k), int(k + m), 0.5).pvalue for k, m in zip(b, c)]
    np.testing.assert_allclose(binomial_half_p_value(b, c), expected, rtol=1e-12)


@pytest.mark.parametrize("size", [1, 2, 17, 1000])
def test_benjamini_hochberg_equals_statsmodels(size):
    p = RNG.uniform(0, 1, size) ** 3
    p[: size // 3] = p[0]  # ties
    np.testing.assert_array_equal(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1])


def test_t_and_noncentral_t_equal_scipy():
    df = np.geomspace(1, 1e6, 200)
    nc = RNG.uniform(0, 30, 200)
    x = RNG.uniform(-4, 8, 200)
    np.testing.assert_allclose(t_quantile(0.975, df), stats.t.ppf(0.975, df), rtol=1e-14)
    np.testing.assert_allclose(nct_cdf(x, df, nc), stats.nct.cdf(x, df, nc), rtol=1e-12, atol=1e-300, equal_nan=True)
    np.testing.assert_allclose(nct_sf(x, df, nc), stats.nct.sf(x, df, nc), rtol=1e-12, atol=1e-300, equal_nan=True)


@pytest.mark.parametrize(("alpha", "power"), [(0.05, 0.8), (0.01, 0.9)])
def test_noncentrality_curve_equals_scipy_pchip(alpha, power):
    df = np.geomspace(1.0, 1e6, 400)
    x, y = np.log(df), _solve_noncentrality(df, alpha=alpha, power=power)
    probe = np.concatenate([x, RNG.uniform(x[0], x[-1], 2000)])
    np.testing.assert_allclose(_Pchip(x, y)(probe), PchipInterpolator(x, y)(probe), rtol=1e-13)


def test_an_audit_imports_neither_scipy_stats_nor_statsmodels():
    # The whole point of the module: a plain audit (no groups, no report) stays light.
    code = (
        "import sys, numpy as np, pie_audit\n"
        "rng = np.random.default_rng(0); y = rng.integers(0, 5, 300)\n"
        "p = lambda m: pie_audit.Population.from_arrays(np.where(rng.random((m, 300)) < .8, y, 0), y)\n"
        "r = pie_audit.compare(p(4), p(4)); pie_audit.power(r)\n"
        "heavy = [m for m in ('scipy.stats', 'scipy.interpolate', 'statsmodels', 'matplotlib') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
