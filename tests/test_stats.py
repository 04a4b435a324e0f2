import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import recall_score
from statsmodels.stats.multitest import multipletests

from pie_audit.errors import ConfigError
from pie_audit.audit._stats import (
    BAD_ALPHA,
    BAD_CORRECTION,
    CLASS_COLUMNS,
    _adjust,
    class_statistics,
    per_model_accuracy,
    per_model_recall,
)
from synthetic import planted_predictions

N_CLASSES = 5


@pytest.fixture
def planted(audit_labels):
    base = planted_predictions(8, audit_labels, accuracy=0.9, n_classes=N_CLASSES, seed=1)
    pruned = planted_predictions(
        6, audit_labels, accuracy=0.88, n_classes=N_CLASSES, seed=2, class_accuracy={2: 0.6}
    )
    return base, pruned, audit_labels


def test_per_model_recall_matches_sklearn(planted):
    base, _, labels = planted
    recall = per_model_recall(base, labels, n_classes=N_CLASSES)
    assert recall.shape == (8, N_CLASSES)
    for m in range(8):
        np.testing.assert_allclose(recall[m], recall_score(labels, base[m], average=None))
    np.testing.assert_allclose(per_model_accuracy(base, labels), (base == labels).mean(axis=1))


def test_per_model_recall_is_nan_for_a_class_without_examples():
    recall = per_model_recall(np.array([[0, 1, 1]]), np.array([0, 1, 1]), n_classes=3)
    np.testing.assert_array_equal(recall[0, :2], [1.0, 1.0])
    assert np.isnan(recall[0, 2])


def test_columns(planted):
    table = class_statistics(*planted)
    assert list(table.columns) == list(CLASS_COLUMNS)
    assert table["label"].tolist() == list(range(N_CLASSES))
    assert table["support"].tolist() == [80] * N_CLASSES


def test_statistics_match_independent_computation(planted):
    base, pruned, labels = planted
    table = class_statistics(base, pruned, labels)
    acc_b = (base == labels).mean(axis=1)
    acc_p = (pruned == labels).mean(axis=1)
    for c in range(N_CLASSES):
        in_c = labels == c
        r_b = (base[:, in_c] == c).mean(axis=1)
        r_p = (pruned[:, in_c] == c).mean(axis=1)
        row = table.iloc[c]
        assert row["baseline_recall_mean"] == pytest.approx(r_b.mean())
        assert row["pruned_recall_mean"] == pytest.approx(r_p.mean())
        assert row["recall_change"] == pytest.approx(r_p.mean() - r_b.mean())
        assert row["normalized_change"] == pytest.approx(
            (r_p.mean() - r_b.mean()) - (acc_p.mean() - acc_b.mean())
        )
        # Welch's t by its textbook formula, the p-value from Student's t distribution.
        x, y = r_p - acc_p.mean(), r_b - acc_b.mean()
        vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
        t = (x.mean() - y.mean()) / np.sqrt(vx + vy)
        df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
        assert row["t_statistic"] == pytest.approx(t)
        assert row["p_value"] == pytest.approx(2 * sps.t.sf(abs(t), df))
        # ...and the paper's scipy call, one class at a time.
        ref = sps.ttest_ind(r_b - acc_b.mean(), r_p - acc_p.mean(), equal_var=False)
        assert row["p_value"] == pytest.approx(ref.pvalue)
        assert row["t_statistic"] == pytest.approx(-ref.statistic)
    q = multipletests(table["p_value"], method="fdr_bh")[1]
    np.testing.assert_allclose(table["q_value"], q)


def test_planted_harm_is_flagged(planted):
    table = class_statistics(*planted)
    harmed = table[table["direction"] == "harmed"]
    assert harmed["label"].tolist() == [2]
    assert harmed["normalized_change"].iloc[0] < -0.15
    assert (table["significant"] == (table["q_value"] <= 0.05)).all()


def test_identical_populations_flag_nothing(planted):
    base, _, labels = planted
    table = class_statistics(base, base[::-1], labels)
    assert not table["significant"].any()
    assert (table["direction"] == "none").all()
    np.testing.assert_allclose(table["normalized_change"], 0, atol=1e-12)
    np.testing.assert_allclose(table["p_value"], 1.0)


def test_benjamini_hochberg_hand_worked():
    p = np.array([0.01, 0.04, 0.03, 0.2, np.nan])
    # Sorted: .01 .03 .04 .2 -> p*m/rank = .04 .06 .0533 .2 -> running minimum from the top.
    np.testing.assert_allclose(_adjust(p, "fdr_bh"), [0.04, 0.16 / 3, 0.16 / 3, 0.2, np.nan])
    np.testing.assert_array_equal(_adjust(p, "none"), p)


def test_correction_none_is_the_raw_p_rule(planted):
    table = class_statistics(*planted, correction="none")
    np.testing.assert_array_equal(table["q_value"], table["p_value"])
    assert (table["significant"] == (table["p_value"] <= 0.05)).all()


def test_alpha_changes_significance(planted):
    loose = class_statistics(*planted, alpha=0.5)
    assert (loose["significant"] == (loose["q_value"] <= 0.5)).all()


def test_bootstrap_interval_brackets_estimate_and_is_seeded(planted):
    table = class_statistics(*planted)
    assert (table["ci_low"] <= table["normalized_change"]).all()
    assert (table["normalized_change"] <= table["ci_high"]).all()
    again = class_statistics(*planted)
    pd.testing.assert_frame_equal(table, again)
    other = class_statistics(*planted, seed=1)
    assert not np.array_equal(other["ci_low"], table["ci_low"])
    pd.testing.assert_series_equal(other["p_value"], table["p_value"])


def test_bootstrap_interval_matches_naive_resampling(planted):
    base, pruned, labels = planted
    table = class_statistics(base, pruned, labels, n_bootstrap=4000)
    rng = np.random.default_rng(123)
    dev_b = per_model_recall(base, labels, n_classes=N_CLASSES) - per_model_accuracy(base, labels)[:, None]
    dev_p = per_model_recall(pruned, labels, n_classes=N_CLASSES) - per_model_accuracy(pruned, labels)[:, None]
    reps = np.array(
        [
            dev_p[rng.integers(0, 6, 6)].mean(axis=0) - dev_b[rng.integers(0, 8, 8)].mean(axis=0)
            for _ in range(4000)
        ]
    )
    low, high = np.quantile(reps, [0.025, 0.975], axis=0)
    np.testing.assert_allclose(table["ci_low"], low, atol=0.01)
    np.testing.assert_allclose(table["ci_high"], high, atol=0.01)


def test_invariant_to_order_of_models_and_examples(planted):
    base, pruned, labels = planted
    table = class_statistics(base, pruned, labels)
    rng = np.random.default_rng(5)
    e = rng.permutation(labels.size)
    shuffled = class_statistics(
        base[rng.permutation(8)][:, e], pruned[rng.permutation(6)][:, e], labels[e]
    )
    pd.testing.assert_frame_equal(shuffled, table, rtol=1e-12)


def test_relabelling_classes_permutes_the_rows(planted):
    base, pruned, labels = planted
    table = class_statistics(base, pruned, labels)
    relabel = np.array([3, 0, 4, 1, 2])
    moved = class_statistics(relabel[base], relabel[pruned], relabel[labels])
    columns = ["support", "normalized_change", "t_statistic", "p_value", "q_value", "direction"]
    pd.testing.assert_frame_equal(
        moved.loc[relabel, columns].reset_index(drop=True), table[columns], rtol=1e-12
    )


def test_single_model_population_is_not_tested(planted):
    base, pruned, labels = planted
    table = class_statistics(base, pruned[:1], labels)
    for column in ("ci_low", "ci_high", "t_statistic", "p_value", "q_value"):
        assert table[column].isna().all()
    assert not table["significant"].any()
    assert (table["direction"] == "none").all()
    assert table["normalized_change"].notna().all()


def test_class_without_examples_is_reported_but_not_tested(planted):
    base, pruned, labels = planted
    table = class_statistics(base, pruned, labels, n_classes=N_CLASSES + 1)
    empty = table.iloc[N_CLASSES]
    assert empty["support"] == 0
    for column in CLASS_COLUMNS[2:11]:
        assert np.isnan(empty[column])
    assert not empty["significant"] and empty["direction"] == "none"
    # The empty class takes no part in the correction.
    full = class_statistics(base, pruned, labels)
    pd.testing.assert_frame_equal(table.iloc[:N_CLASSES], full)


def test_zero_variance_in_both_populations():
    # Class 0 always right in both populations; class 1 always right in baseline and always
    # wrong in pruned; class 2 varies in baseline only. Mean accuracy: 0.875 -> 0.5.
    labels = np.array([0, 0, 1, 2])
    base = np.array([[0, 0, 1, 2], [0, 0, 1, 0]])
    pruned = np.array([[0, 0, 0, 0], [0, 0, 0, 1]])
    table = class_statistics(base, pruned, labels)
    # Class 0: recall 1 everywhere while accuracy fell by 0.375: the class itself did not move,
    # so it is not flagged, though its normalized change is reported.
    assert table.loc[0, "normalized_change"] == pytest.approx(0.375)
    assert table.loc[0, "t_statistic"] == 0.0 and table.loc[0, "p_value"] == 1.0
    assert table.loc[0, "direction"] == "none"
    assert table.loc[1, "normalized_change"] == pytest.approx(-1 + 0.375)
    assert table.loc[1, "t_statistic"] == -np.inf and table.loc[1, "p_value"] == 0.0
    assert table.loc[1, "direction"] == "harmed"
    assert np.isfinite(table.loc[2, "p_value"])
    # Equal constant recalls and equal accuracies: no movement at all.
    same = class_statistics(np.array([[0, 1], [0, 0]]), np.array([[0, 0], [0, 1]]), np.array([0, 1]))
    assert same.loc[0, "t_statistic"] == 0.0 and same.loc[0, "p_value"] == 1.0


def test_zero_variance_in_one_population_is_an_ordinary_welch_test():
    labels = np.array([0, 0, 1, 1])
    base = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]])
    pruned = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]])
    table = class_statistics(base, pruned, labels)
    r_p = np.array([0.5, 1.0, 0.0])
    acc_p = np.array([0.75, 1.0, 0.5])
    ref = sps.ttest_ind(r_p - acc_p.mean(), np.zeros(3), equal_var=False)
    assert table.loc[0, "p_value"] == pytest.approx(ref.pvalue)


def test_rejects_bad_settings(planted):
    with pytest.raises(ConfigError) as e:
        class_statistics(*planted, correction="holm")
    assert str(e.value) == BAD_CORRECTION.format(choices="fdr_bh, none", value="holm")
    with pytest.raises(ConfigError) as e:
        class_statistics(*planted, alpha=1.5)
    assert str(e.value) == BAD_ALPHA.format(value=1.5)
    with pytest.raises(ConfigError):
        class_statistics(*planted, n_bootstrap=0)
    with pytest.raises(ConfigError):
        class_statistics(*planted, n_classes=2)


def test_rejects_mismatched_shapes(planted):
    base, pruned, labels = planted
    with pytest.raises(ConfigError):
        class_statistics(base, pruned[:, :-1], labels)


# --- absolute effects, designs, direction ------------------------------------------------------


def test_absolute_test_matches_scipy_and_statsmodels(planted):
    base, pruned, labels = planted
    table = class_statistics(base, pruned, labels)
    p = []
    for c in range(N_CLASSES):
        in_c = labels == c
        rb = (base[:, in_c] == c).mean(axis=1)
        rp = (pruned[:, in_c] == c).mean(axis=1)
        expected = sps.ttest_ind(rp, rb, equal_var=False)
        assert table.loc[c, "recall_t_statistic"] == pytest.approx(expected.statistic)
        assert table.loc[c, "recall_p_value"] == pytest.approx(expected.pvalue)
        p.append(expected.pvalue)
    np.testing.assert_allclose(table["recall_q_value"], multipletests(p, method="fdr_bh")[1])
    # The absolute interval brackets the absolute change.
    assert (table["recall_ci_low"] <= table["recall_change"]).all()
    assert (table["recall_change"] <= table["recall_ci_high"]).all()


def test_paired_test_matches_ttest_rel(audit_labels):
    rng = np.random.default_rng(3)
    # Seeds differ a lot on class 2 (50% to 90% recall); pruning costs each model about 10 of
    # its class-2 examples, plus a few mistakes elsewhere.
    base = np.vstack([
        planted_predictions(1, audit_labels, accuracy=0.9, n_classes=N_CLASSES, seed=10 + m,
                            class_accuracy={2: 0.5 + 0.08 * m})
        for m in range(6)
    ])  # fmt: skip
    pruned = base.copy()
    for m in range(6):
        right = np.flatnonzero((audit_labels == 2) & (base[m] == 2))
        hurt = rng.choice(right, size=10 + m % 2, replace=False)
        hurt = np.union1d(hurt, np.flatnonzero(rng.random(audit_labels.size) < 0.01))
        pruned[m, hurt] = (audit_labels[hurt] + 1) % N_CLASSES
    table = class_statistics(base, pruned, audit_labels, test="paired")
    acc_b, acc_p = (base == audit_labels).mean(axis=1), (pruned == audit_labels).mean(axis=1)
    for c in range(N_CLASSES):
        in_c = audit_labels == c
        rb = (base[:, in_c] == c).mean(axis=1)
        rp = (pruned[:, in_c] == c).mean(axis=1)
        relative = sps.ttest_rel(rp - acc_p.mean(), rb - acc_b.mean())
        absolute = sps.ttest_rel(rp, rb)
        assert table.loc[c, "t_statistic"] == pytest.approx(relative.statistic)
        assert table.loc[c, "p_value"] == pytest.approx(relative.pvalue)
        assert table.loc[c, "recall_p_value"] == pytest.approx(absolute.pvalue)
    assert table.loc[2, "direction"] == "harmed"
    # Pairing removes the seed-to-seed spread: the paired test is far more sensitive here.
    welch = class_statistics(base, pruned, audit_labels, test="welch")
    assert table.loc[2, "p_value"] < welch.loc[2, "p_value"]


def test_mcnemar_matches_binomtest(audit_labels):
    base = planted_predictions(1, audit_labels, accuracy=0.9, n_classes=N_CLASSES, seed=5)
    pruned = planted_predictions(1, audit_labels, accuracy=0.9, n_classes=N_CLASSES, seed=6, class_accuracy={2: 0.5})
    table = class_statistics(base, pruned, audit_labels, test="mcnemar")
    p = []
    for c in range(N_CLASSES):
        in_c = audit_labels == c
        right_b, right_p = base[0, in_c] == c, pruned[0, in_c] == c
        b, d = int((right_b & ~right_p).sum()), int((~right_b & right_p).sum())
        expected = sps.binomtest(b, b + d, 0.5).pvalue if b + d else 1.0
        assert table.loc[c, "recall_p_value"] == pytest.approx(expected)
        p.append(expected)
    np.testing.assert_allclose(table["recall_q_value"], multipletests(p, method="fdr_bh")[1])
    assert table["p_value"].isna().all() and table["mde"].isna().all()
    assert table["significant"].tolist() == (table["recall_q_value"] <= 0.05).tolist()
    assert table.loc[2, "direction"] == "harmed"


def test_mcnemar_hand_worked_case():
    # Class 0: 4 examples the baseline gets right and the pruned model wrong, none the reverse:
    # a two-sided binomial test of 4 of 4 at 1/2 gives p = 2 * 0.5**4 = 0.125.
    labels = np.array([0, 0, 0, 0, 0, 1, 1])
    base = np.array([[0, 0, 0, 0, 0, 1, 1]])
    pruned = np.array([[1, 1, 1, 1, 0, 1, 1]])
    table = class_statistics(base, pruned, labels, test="mcnemar", correction="none")
    assert table.loc[0, "recall_p_value"] == pytest.approx(0.125)
    assert table.loc[1, "recall_p_value"] == 1.0
    assert table["direction"].tolist() == ["none", "none"]


def test_designs_need_matching_models(planted):
    base, pruned, labels = planted
    with pytest.raises(ConfigError, match="as many pruned models as baseline models"):
        class_statistics(base, pruned, labels, test="paired")
    with pytest.raises(ConfigError, match="one model with one model"):
        class_statistics(base, pruned, labels, test="mcnemar")
    with pytest.raises(ConfigError, match="test must be one of"):
        class_statistics(base, pruned, labels, test="anova")


def test_a_collapsing_class_never_makes_another_that_lost_recall_helped():
    """One class collapses; the others lose a little or nothing. None of them is 'helped'."""
    rng = np.random.default_rng(11)
    n_classes, per_class, m = 10, 200, 12
    labels = np.repeat(np.arange(n_classes), per_class)

    def population(seed, collapse):
        r = np.random.default_rng(seed)
        preds = np.tile(labels, (m, 1))
        for k in range(m):
            wrong = r.random(labels.size) < 0.03
            if collapse:
                wrong |= (labels == 0) & (r.random(labels.size) < 0.6)
                # Class 1 loses a few examples more, class 2 exactly none.
                wrong |= (labels == 1) & (r.random(labels.size) < 0.005)
            wrong &= labels != 2
            preds[k, wrong] = (labels[wrong] + 1 + r.integers(0, n_classes - 1, wrong.sum())) % n_classes
        return preds

    base, pruned = population(1, False), population(2, True)
    table = class_statistics(base, pruned, labels, n_bootstrap=200)
    assert table.loc[0, "direction"] == "harmed"
    # The normalized change lifts the bystanders (the paper's rule would call many "helped")...
    assert (table.loc[1:, "normalized_change"] > 0).all()
    assert table.loc[1:, "significant"].sum() >= 3
    # ...but a class whose recall fell or held is never "helped".
    for row in table.itertuples():
        if row.recall_change <= 0:
            assert row.direction != "helped", row
        if row.recall_change >= 0:
            assert row.direction != "harmed", row
    assert table.loc[2, "recall_change"] == 0 and table.loc[2, "direction"] == "none"
    rng.random()  # the generator above is per population; this one only documents the seed


def test_mde_is_reported_per_tested_class(planted):
    table = class_statistics(*planted)
    assert (table["mde"] > 0).all()
    # Noisier classes are harder to test: the planted class varies most across pruned models.
    assert table["mde"].idxmax() == 2
