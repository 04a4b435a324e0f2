"""Intensification (Good et al. 2022): Spearman's rho of dense deficit against normalized change."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import pie_audit
from pie_audit import Population
from pie_audit.audit import intensification, spearman

from synthetic import planted_predictions


@pytest.mark.parametrize("seed", range(5))
def test_spearman_equals_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)
    x[:5] = x[5]  # ties take average ranks
    rho, p = spearman(x, y)
    expected = stats.spearmanr(x, y)
    assert rho == pytest.approx(expected.statistic, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)


@pytest.mark.parametrize("n", [4, 6, 7])
def test_small_samples_get_the_exact_permutation_p_value(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = x + rng.normal(scale=0.5, size=n)
    rho, p = spearman(x, y)
    exact = stats.permutation_test(
        (y,), lambda yy: stats.spearmanr(x, yy).statistic, permutation_type="pairings", n_resamples=np.inf
    )
    assert rho == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-12)
    assert p == pytest.approx(exact.pvalue, rel=1e-9)
    # Four points in perfect order: 2 of the 24 orders are as extreme, not p = 0.
    assert spearman(np.arange(4.0), np.arange(4.0))[1] == pytest.approx(2 / 24)


def _audit(class_accuracy_pruned, seed=0):
    """12 classes whose dense recall ranges from 60% to 95%; the pruned models move each as given."""
    labels = np.repeat(np.arange(12), 200)
    dense = {c: 0.6 + 0.03 * c for c in range(12)}
    base = planted_predictions(8, labels, accuracy=0.8, n_classes=12, seed=seed, class_accuracy=dense)
    pruned = planted_predictions(8, labels, accuracy=0.8, n_classes=12, seed=seed + 1, class_accuracy=class_accuracy_pruned(dense))
    return pie_audit.compare(Population.from_arrays(base, labels), Population.from_arrays(pruned, labels, name="p"), n_bootstrap=10)


def test_intensification_holds_where_hard_classes_lose_most():
    # Pruning pulls every class away from the mean: the hard ones lose, the easy ones gain.
    result = _audit(lambda dense: {c: a - 0.5 * (0.775 - a) for c, a in dense.items()})
    found = result.intensification
    classes = result.classes
    deficit = classes["baseline_recall_mean"] - result.baseline.accuracy_mean
    expected = stats.spearmanr(deficit, classes["normalized_change"])
    assert found.rho == pytest.approx(expected.statistic, rel=1e-12) and found.n == 12
    assert found.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert found.rho > 0.8 and found.p_value < 0.01
    assert found.sentence().startswith("classes the dense models found hard lost more: rho = ")
    summary = result.to_summary()["intensification"]
    assert summary["rho"] == found.rho and summary["n_classes"] == 12 and summary["groups"] is None


def test_no_intensification_where_every_class_loses_alike():
    result = _audit(lambda dense: {c: a - 0.03 for c, a in dense.items()}, seed=3)
    found = result.intensification
    classes = result.classes
    expected = stats.spearmanr(classes["baseline_recall_mean"] - result.baseline.accuracy_mean, classes["normalized_change"])
    assert found.rho == pytest.approx(expected.statistic, rel=1e-12)
    assert found.p_value > 0.05
    assert found.sentence().startswith("no significant sign that classes the dense models found hard lost more")


def test_intensification_over_groups_and_degenerate_cases():
    labels = np.repeat(np.arange(4), 300)
    site = np.tile(np.repeat(np.array(list("abcdef")), 50), 4)
    base = planted_predictions(6, labels, accuracy=0.85, n_classes=4, seed=1)
    pruned = planted_predictions(6, labels, accuracy=0.85, n_classes=4, seed=2)
    result = pie_audit.compare(
        Population.from_arrays(base, labels), Population.from_arrays(pruned, labels, name="p"),
        groups=pd.DataFrame({"example_id": np.arange(1200), "site": site}), n_bootstrap=10,
    )  # fmt: skip
    groups = result.groups[result.groups["tested"]]
    expected = stats.spearmanr(groups["baseline_accuracy_mean"] - result.baseline.accuracy_mean, groups["normalized_change"])
    assert result.group_intensification.rho == pytest.approx(expected.statistic, rel=1e-12)
    assert result.to_summary()["intensification"]["groups"]["n_groups"] == 6
    # Two points: no correlation is stated.
    table = pd.DataFrame({"baseline_recall_mean": [0.5, 0.9], "normalized_change": [-0.1, 0.1]})
    found = intensification(table, baseline_accuracy=0.7)
    assert found.rho is None and found.p_value is None and found.n == 2
    assert "too few" in found.sentence()
