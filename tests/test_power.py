"""Power: the minimum detectable effect checked by simulation, sample sizes, the summary."""

import numpy as np
import pytest
from scipy import stats as sps

from pie_audit.audit._power import (
    PowerInputs,
    minimum_detectable_effect,
    models_needed,
    summarise_power,
    t_test_power,
)


def welch_inputs(nb, npr, sb, sp):
    return PowerInputs("welch", nb, npr, np.array([sb**2]), np.array([sp**2]))


@pytest.mark.parametrize(("nb", "npr", "sb", "sp"), [(8, 8, 0.02, 0.03), (5, 12, 0.05, 0.01), (30, 30, 0.01, 0.01)])
def test_mde_has_the_target_power_by_simulation(nb, npr, sb, sp):
    """Draw populations whose true means differ by the mde: Welch's test rejects ~80% of the time."""
    inputs = welch_inputs(nb, npr, sb, sp)
    se, df = inputs.se_df()
    mde = minimum_detectable_effect(se, df, alpha=0.05)[0]
    rng = np.random.default_rng(0)
    sims = 20_000
    b = rng.normal(0.0, sb, size=(sims, nb))
    p = rng.normal(-mde, sp, size=(sims, npr))
    rejected = sps.ttest_ind(p, b, axis=1, equal_var=False).pvalue <= 0.05
    # Welch's df uses the sample variances, so the exact power differs slightly from the
    # noncentral-t approximation; the simulation's own error is ~0.003.
    assert rejected.mean() == pytest.approx(0.8, abs=0.02)


def test_paired_mde_by_simulation():
    inputs = PowerInputs("paired", 10, 10, np.array([0.03**2]), np.array([0.0]))
    se, df = inputs.se_df()
    mde = minimum_detectable_effect(se, df, alpha=0.05)[0]
    rng = np.random.default_rng(1)
    d = rng.normal(-mde, 0.03, size=(20_000, 10))
    rejected = sps.ttest_1samp(d, 0.0, axis=1).pvalue <= 0.05
    # The paired t statistic is exactly noncentral t: the match is within simulation error.
    assert rejected.mean() == pytest.approx(0.8, abs=0.01)


def test_power_is_monotone_and_matches_the_textbook_approximation():
    se, df = np.array([0.01]), np.array([20.0])
    powers = [t_test_power(d, se, df, alpha=0.05)[0] for d in (0.0, 0.01, 0.02, 0.03, 0.05)]
    assert powers[0] == pytest.approx(0.05, abs=1e-9)
    assert all(a < b for a, b in zip(powers, powers[1:]))
    mde = minimum_detectable_effect(se, df, alpha=0.05)[0]
    approx = (sps.t.ppf(0.975, 20) + sps.t.ppf(0.8, 20)) * 0.01
    assert mde == pytest.approx(approx, rel=0.01)
    assert t_test_power(mde, se, df, alpha=0.05)[0] == pytest.approx(0.8, abs=1e-6)


def test_undefined_without_variance():
    inputs = PowerInputs("welch", 4, 4, np.array([0.0, 1e-4]), np.array([0.0, 1e-4]))
    se, df = inputs.se_df()
    mde = minimum_detectable_effect(se, df, alpha=0.05)
    assert np.isnan(mde[0]) and mde[1] > 0
    assert np.isnan(models_needed(inputs, 0.02, alpha=0.05)[0])


def test_models_needed_is_the_smallest_sufficient_size():
    inputs = welch_inputs(8, 8, 0.03, 0.03)
    n = models_needed(inputs, 0.02, alpha=0.05)[0]
    for size, enough in ((n, True), (n - 1, False)):
        se, df = inputs.se_df(size, size)
        assert bool(t_test_power(0.02, se, df, alpha=0.05)[0] >= 0.8) == enough
    # A drop that small against that much noise needs more models than anyone trains.
    assert models_needed(welch_inputs(8, 8, 3.0, 3.0), 1e-4, alpha=0.05)[0] == np.inf


def test_summary():
    inputs = PowerInputs("welch", 8, 8, np.array([1e-4, 4e-4, 9e-4, np.nan]), np.array([1e-4, 4e-4, 9e-4, np.nan]))
    se, df = inputs.se_df()
    mde = minimum_detectable_effect(se, df, alpha=0.05)
    summary = summarise_power(inputs, mde, detect=0.02, alpha=0.05)
    assert summary.median_mde == pytest.approx(mde[1])  # the upper median of three classes
    assert summary.underpowered_classes == int((mde[:3] > 0.02).sum()) == 2
    assert summary.underpowered
    assert summary.models_needed == int(models_needed(inputs, 0.02, alpha=0.05)[1])
    assert summary.to_dict()["detect"] == 0.02
