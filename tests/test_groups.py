"""The subgroup audit: every group statistic against an independent computation.

The populations have a planted harm to one intersection: the pruned models lose 10 points of
accuracy on ``sex=F & age=old`` and 2 points everywhere else, nothing more. Each column of
``result.groups`` and ``result.group_cells`` is recomputed here from the predictions with scipy
(``ttest_ind``, ``ttest_rel``, ``binomtest``, ``fisher_exact``) and statsmodels
(``multipletests``), never with pie-audit's own helpers; the per-group accuracies are checked
against fairlearn's ``MetricFrame``. The invariances (example order, model order, relabelling,
swap) run over the registry in ``tests/test_statistics_common.py``.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from dataclasses import replace
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

import pie_audit
from pie_audit import Population
from pie_audit.audit import junit_xml, minimum_detectable_effect

N = 2000
N_CLASSES = 4
N_MODELS = 10
HARMED = "sex=F & age=old"
GROUP_RULES = ("max-group-drop", "max-group-accuracy-drop")
GROUP_COLUMNS = [
    "group", "attributes", "support", "tested", "n_pies", "pie_fraction", "pie_odds_ratio",
    "pie_p_value", "pie_q_value", "baseline_accuracy_mean", "pruned_accuracy_mean", "accuracy_change",
    "normalized_change", "ci_low", "ci_high", "t_statistic", "p_value", "q_value",
    "accuracy_t_statistic", "accuracy_p_value", "accuracy_q_value", "accuracy_significant", "mde",
    "significant", "direction", "robustness",
]  # fmt: skip
CELL_COLUMNS = [
    "group", "label", "name", "support", "tested", "baseline_recall_mean", "pruned_recall_mean",
    "recall_change", "normalized_change", "t_statistic", "p_value", "q_value", "recall_t_statistic",
    "recall_p_value", "recall_q_value", "recall_significant", "significant", "direction",
]  # fmt: skip
#: Floating-point summation order only.
RTOL = 1e-9


# --- the planted populations ---------------------------------------------------------------------


def _attributes(seed: int = 18) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "example_id": np.arange(N, dtype=np.int64),
            "sex": rng.choice(["F", "M"], N),
            "age": rng.choice(["old", "young"], N, p=[0.4, 0.6]),
        }
    )


def _predictions(
    n_models: int, labels: np.ndarray, accuracy: float, seed: int, forgotten: np.ndarray | None = None
) -> np.ndarray:
    """(n_models, N): right with probability ``accuracy``, else a uniform wrong class; the
    ``forgotten`` examples are given the next class by 90% of the models, as pruning forgets an
    example for every seed alike (and so makes it a PIE)."""
    rng = np.random.default_rng(seed)
    right = rng.random((n_models, labels.size)) < accuracy
    wrong = (labels + rng.integers(1, N_CLASSES, size=(n_models, labels.size))) % N_CLASSES
    predictions = np.where(right, labels, wrong)
    if forgotten is not None:
        lost = forgotten & (rng.random((n_models, labels.size)) < 0.9)
        predictions = np.where(lost, (labels + 1) % N_CLASSES, predictions)
    return predictions


@functools.cache
def planted() -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """Baseline (85% everywhere), pruned (83%, and on sex=F & age=old 12% of the examples
    forgotten: 10 points more lost there), labels, attributes."""
    labels = np.random.default_rng(1).permutation(np.arange(N) % N_CLASSES)
    attrs = _attributes()
    harmed = ((attrs["sex"] == "F") & (attrs["age"] == "old")).to_numpy()
    forgotten = harmed & (np.random.default_rng(5).random(N) < 0.12)
    base = _predictions(N_MODELS, labels, 0.85, seed=2)
    pruned = _predictions(N_MODELS, labels, 0.83, seed=3, forgotten=forgotten)
    return base, pruned, labels, attrs


def _paired() -> tuple[np.ndarray, np.ndarray]:
    """Pruned model m derived from baseline model m: it keeps most of its parent's votes."""
    base, _, labels, attrs = planted()
    rng = np.random.default_rng(4)
    harmed = ((attrs["sex"] == "F") & (attrs["age"] == "old")).to_numpy()
    right = base == labels
    lost = right & (rng.random(base.shape) < np.where(harmed, 0.12, 0.025))
    pruned = np.where(lost, (labels + 1) % N_CLASSES, base)
    return base, pruned


def populations(base: np.ndarray, pruned: np.ndarray, labels: np.ndarray, *, pairs: bool = False):
    b = Population.from_arrays(base, labels, name="dense")
    p = Population.from_arrays(pruned, labels, name="pruned")
    if pairs:
        # Each pruned model names its parent, as pie-audit train writes it.
        b = replace(b, runs=tuple({"seed": m} for m in range(b.n_models)))
        p = replace(p, runs=tuple({"seed": 100 + m, "parent": {"seed": m}} for m in range(p.n_models)))
    return b, p


@functools.cache
def audit(test: str = "welch", seed: int = 0, group_by: tuple[str, ...] | None = None):
    base, pruned, labels, attrs = planted()
    if test == "paired":
        base, pruned = _paired()
    elif test == "mcnemar":
        base, pruned = base[:1], pruned[:1]
    b, p = populations(base, pruned, labels, pairs=test == "paired")
    result = pie_audit.compare(
        b, p, groups=attrs, group_by=None if group_by is None else list(group_by), test=test, seed=seed,
        n_bootstrap=300,
    )  # fmt: skip
    return result, base, pruned


# --- an independent computation ----------------------------------------------------------------


def expected_members(attrs: pd.DataFrame, group_by: list[str]) -> dict[str, np.ndarray]:
    """Each value of each attribute, and with two or three attributes each observed intersection."""
    groups = {}
    for a in group_by:
        for v in sorted(attrs[a].unique()):
            groups[f"{a}={v}"] = (attrs[a] == v).to_numpy()
    if len(group_by) in (2, 3):
        for values in itertools.product(*(sorted(attrs[a].unique()) for a in group_by)):
            mask = np.logical_and.reduce([(attrs[a] == v).to_numpy() for a, v in zip(group_by, values)])
            if mask.any():
                groups[" & ".join(f"{a}={v}" for a, v in zip(group_by, values))] = mask
    return groups


def _bh(p: list[float]) -> np.ndarray:
    return multipletests(p, method="fdr_bh")[1] if p else np.array([])


def expected_groups(
    base, pruned, labels, pies, members, *, test: str, min_support: int = 30, alpha: float = 0.05
) -> pd.DataFrame:
    """Every column of ``result.groups`` but the intervals, from scipy and statsmodels."""
    a_b = (base == labels).mean(axis=1)
    a_p = (pruned == labels).mean(axis=1)
    rows = []
    for name, mask in members.items():
        acc_b = (base[:, mask] == labels[mask]).mean(axis=1)
        acc_p = (pruned[:, mask] == labels[mask]).mean(axis=1)
        support = int(mask.sum())
        n_pies = int(pies[mask].sum())
        row = {
            "group": name,
            "support": support,
            "tested": support >= min_support,
            "n_pies": n_pies,
            "pie_fraction": n_pies / support,
            "baseline_accuracy_mean": acc_b.mean(),
            "pruned_accuracy_mean": acc_p.mean(),
            "accuracy_change": acc_p.mean() - acc_b.mean(),
            # Each model centred on its own accuracy: the per-model excess gap.
            "normalized_change": (acc_p - a_p).mean() - (acc_b - a_b).mean(),
        }
        nan = {c: math.nan for c in ("pie_odds_ratio", "pie_p_value", "t_statistic", "p_value",
                                     "accuracy_t_statistic", "accuracy_p_value", "mde")}  # fmt: skip
        row |= nan
        if row["tested"]:
            inside, outside = n_pies, int(pies.sum()) - n_pies
            fisher = sps.fisher_exact([[inside, support - inside], [outside, (N - support) - outside]])
            row["pie_odds_ratio"], row["pie_p_value"] = fisher.statistic, fisher.pvalue
            rel_b, rel_p = acc_b - a_b, acc_p - a_p
            if test == "welch":
                relative = sps.ttest_ind(rel_p, rel_b, equal_var=False)
                absolute = sps.ttest_ind(acc_p, acc_b, equal_var=False)
                vb, vp = rel_b.var(ddof=1) / rel_b.size, rel_p.var(ddof=1) / rel_p.size
                se = np.sqrt(vb + vp)
                df = (vb + vp) ** 2 / (vb**2 / (rel_b.size - 1) + vp**2 / (rel_p.size - 1))
            elif test == "paired":
                relative = sps.ttest_rel(rel_p, rel_b)
                absolute = sps.ttest_rel(acc_p, acc_b)
                d = rel_p - rel_b
                se, df = d.std(ddof=1) / np.sqrt(d.size), d.size - 1.0
            if test in ("welch", "paired"):
                row["t_statistic"], row["p_value"] = relative.statistic, relative.pvalue
                row["accuracy_t_statistic"], row["accuracy_p_value"] = absolute.statistic, absolute.pvalue
                row["mde"] = minimum_detectable_effect(np.array([se]), np.array([df]), alpha=alpha)[0]
            else:  # McNemar: the exact test on the group's discordant examples
                right_b, right_p = base[0, mask] == labels[mask], pruned[0, mask] == labels[mask]
                b, c = int((right_b & ~right_p).sum()), int((~right_b & right_p).sum())
                row["accuracy_p_value"] = sps.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
        rows.append(row)
    table = pd.DataFrame(rows).set_index("group")
    tested = table["tested"]
    for p, q in (("pie_p_value", "pie_q_value"), ("p_value", "q_value"), ("accuracy_p_value", "accuracy_q_value")):
        table[q] = math.nan
        values = table.loc[tested, p]
        if values.notna().all() and len(values):
            table.loc[tested, q] = _bh(values.tolist())
    primary = "accuracy_q_value" if test == "mcnemar" else "q_value"
    table["significant"] = table[primary].fillna(np.inf) <= alpha
    table["accuracy_significant"] = table["accuracy_q_value"].fillna(np.inf) <= alpha
    fell = (table["accuracy_change"] < 0) & ((table["normalized_change"] < 0) | (test == "mcnemar"))
    rose = (table["accuracy_change"] > 0) & ((table["normalized_change"] > 0) | (test == "mcnemar"))
    table["direction"] = np.where(
        table["significant"] & fell, "harmed", np.where(table["significant"] & rose, "helped", "none")
    )
    return table


def expected_cells(
    base, pruned, labels, members, *, test: str = "welch", min_support: int = 30, alpha: float = 0.05
) -> pd.DataFrame:
    """The per-class tests of each group's examples, relative to the overall accuracy."""
    ab_mean = (base == labels).mean(axis=1).mean()
    ap_mean = (pruned == labels).mean(axis=1).mean()
    rows = []
    for name, mask in members.items():
        for c in range(N_CLASSES):
            cell = mask & (labels == c)
            support = int(cell.sum())
            row = {"group": name, "label": c, "support": support, "tested": support >= min_support}
            row |= {k: math.nan for k in ("t_statistic", "p_value", "recall_t_statistic", "recall_p_value")}
            if support:
                r_b = (base[:, cell] == c).mean(axis=1)
                r_p = (pruned[:, cell] == c).mean(axis=1)
                row |= {
                    "baseline_recall_mean": r_b.mean(),
                    "pruned_recall_mean": r_p.mean(),
                    "recall_change": r_p.mean() - r_b.mean(),
                    "normalized_change": (r_p.mean() - r_b.mean()) - (ap_mean - ab_mean),
                }
                if row["tested"] and test == "mcnemar":
                    right_b, right_p = base[0, cell] == c, pruned[0, cell] == c
                    b, d = int((right_b & ~right_p).sum()), int((~right_b & right_p).sum())
                    row["recall_p_value"] = sps.binomtest(b, b + d, 0.5).pvalue if b + d else 1.0
                elif row["tested"]:
                    if test == "welch":
                        relative = sps.ttest_ind(r_p - ap_mean, r_b - ab_mean, equal_var=False)
                        absolute = sps.ttest_ind(r_p, r_b, equal_var=False)
                    else:
                        relative = sps.ttest_rel(r_p - ap_mean, r_b - ab_mean)
                        absolute = sps.ttest_rel(r_p, r_b)
                    row |= {
                        "t_statistic": relative.statistic, "p_value": relative.pvalue,
                        "recall_t_statistic": absolute.statistic, "recall_p_value": absolute.pvalue,
                    }  # fmt: skip
            rows.append(row)
    table = pd.DataFrame(rows).set_index(["group", "label"])
    tested = table["tested"]
    for p, q in (("p_value", "q_value"), ("recall_p_value", "recall_q_value")):
        table[q] = math.nan
        values = table.loc[tested, p]
        if values.notna().all():
            table.loc[tested, q] = _bh(values.tolist())
    primary = "recall_q_value" if test == "mcnemar" else "q_value"
    table["significant"] = table[primary].fillna(np.inf) <= alpha
    table["recall_significant"] = table["recall_q_value"].fillna(np.inf) <= alpha
    fell = (table["recall_change"] < 0) & ((table["normalized_change"] < 0) | (test == "mcnemar"))
    rose = (table["recall_change"] > 0) & ((table["normalized_change"] > 0) | (test == "mcnemar"))
    table["direction"] = np.where(
        table["significant"] & fell, "harmed", np.where(table["significant"] & rose, "helped", "none")
    )
    return table


def assert_columns(actual: pd.DataFrame, expected: pd.DataFrame, columns) -> None:
    actual = actual.loc[expected.index]
    for column in columns:
        got, want = actual[column].to_numpy(), expected[column].to_numpy()
        if want.dtype.kind == "f" or got.dtype.kind == "f":
            np.testing.assert_allclose(
                got.astype(float), want.astype(float), rtol=RTOL, atol=1e-12, equal_nan=True, err_msg=column
            )
        else:
            np.testing.assert_array_equal(got, want, err_msg=column)


def pies_of(result) -> np.ndarray:
    examples = result.examples.sort_values("example_id")
    np.testing.assert_array_equal(examples["example_id"], np.arange(N))
    return examples["pie"].to_numpy()


# --- groups: which, and their columns ----------------------------------------------------------


def test_columns_and_groups():
    from pie_audit.audit._groups import GROUP_EXPLAIN_COLUMNS

    result, _, _ = audit()
    # The audit adds each group's PIE explanations (label issues, risk) to group_statistics' table.
    assert list(result.groups.columns) == GROUP_COLUMNS + list(GROUP_EXPLAIN_COLUMNS)
    assert list(result.group_cells.columns) == CELL_COLUMNS
    assert result.group_attributes == ("sex", "age")
    assert result.group_source is None  # given in memory
    members = expected_members(planted()[3], ["sex", "age"])
    assert sorted(result.groups["group"]) == sorted(members) and len(members) == 8
    for row in result.groups.itertuples():
        assert row.group == " & ".join(f"{a}={v}" for a, v in row.attributes.items())
        assert row.support == members[row.group].sum()
    fractions = result.groups[["pie_fraction", "baseline_accuracy_mean", "pruned_accuracy_mean"]]
    assert ((fractions >= 0) & (fractions <= 1)).all().all()


def test_examples_carry_the_attributes():
    result, _, _ = audit()
    attrs = planted()[3]
    examples = result.examples.sort_values("example_id")
    for a in ("sex", "age"):
        assert examples[a].tolist() == attrs[a].tolist()


def test_one_attribute_has_no_intersections_and_three_have_only_full_ones():
    base, pruned, labels, attrs = planted()
    b, p = populations(base, pruned, labels)
    one = pie_audit.compare(b, p, groups=attrs, group_by=["age"], n_bootstrap=50)
    assert sorted(one.groups["group"]) == ["age=old", "age=young"]
    assert one.group_attributes == ("age",)
    three = attrs.assign(site=np.where(np.arange(N) % 3 == 0, "north", "south"))
    # One combination never occurs: it is no group.
    three.loc[(three["sex"] == "M") & (three["age"] == "old"), "site"] = "south"
    result = pie_audit.compare(b, p, groups=three, group_by=["sex", "age", "site"], n_bootstrap=50)
    members = expected_members(three, ["sex", "age", "site"])
    assert sorted(result.groups["group"]) == sorted(members)
    assert "sex=M & age=old & site=north" not in members and len(members) == 6 + 7
    assert not any(g.count(" & ") == 1 for g in result.groups["group"])  # no pairwise intersections


def test_integer_and_boolean_attributes():
    base, pruned, labels, attrs = planted()
    b, p = populations(base, pruned, labels)
    typed = pd.DataFrame(
        {"example_id": attrs["example_id"], "Young": (attrs["age"] == "young").to_numpy(),
         "decade": np.where(attrs["sex"] == "F", 3, 7).astype(np.int64)}
    )  # fmt: skip
    result = pie_audit.compare(b, p, groups=typed, n_bootstrap=50)
    assert sorted(result.groups["group"]) == sorted(
        ["Young=False", "Young=True", "decade=3", "decade=7", "Young=False & decade=3",
         "Young=False & decade=7", "Young=True & decade=3", "Young=True & decade=7"]
    )  # fmt: skip
    row = result.groups.set_index("group").loc["Young=False & decade=3"]
    assert row["attributes"] == {"Young": False, "decade": 3}
    # The same examples as sex=F & age=old under other names: the same statistics.
    named = audit()[0].groups.set_index("group").loc[HARMED]
    assert row["support"] == named["support"]
    assert row["normalized_change"] == pytest.approx(named["normalized_change"], rel=RTOL)


# --- every statistic against scipy and statsmodels ------------------------------------------------


@pytest.mark.parametrize("test", ["welch", "paired", "mcnemar"])
def test_group_statistics_match_an_independent_computation(test):
    result, base, pruned = audit(test)
    assert result.test == test
    labels, attrs = planted()[2], planted()[3]
    members = expected_members(attrs, ["sex", "age"])
    expected = expected_groups(base, pruned, labels, pies_of(result), members, test=test)
    actual = result.groups.set_index("group")
    columns = [c for c in GROUP_COLUMNS if c not in ("group", "attributes", "ci_low", "ci_high", "robustness")]
    assert_columns(actual, expected, columns)
    if test == "mcnemar":
        # One model a side: the relative change is a point estimate, its test is not run.
        for column in ("t_statistic", "p_value", "q_value", "mde", "ci_low", "ci_high"):
            assert actual[column].isna().all(), column
        assert actual["accuracy_t_statistic"].isna().all()


def test_the_planted_harm_is_found_and_nothing_else():
    result, _, _ = audit()
    groups = result.groups.set_index("group")
    assert groups.loc[HARMED, "direction"] == "harmed"
    assert groups.loc[HARMED, "normalized_change"] < -0.05
    assert groups.loc[HARMED, "accuracy_significant"]
    assert groups.loc["sex=M & age=young", "direction"] == "none"
    assert not (groups["direction"] == "helped").any()
    # Every other intersection lost accuracy too, but less than the models did: the relative test
    # may be significant there (the normalized change rises), yet none of them is "helped".
    for name in ("sex=M & age=old", "sex=F & age=young", "sex=M & age=young"):
        assert groups.loc[name, "accuracy_change"] < 0 < groups.loc[name, "normalized_change"]
    assert groups.loc[["sex=M & age=old", "sex=F & age=young"], "significant"].any()


@pytest.mark.parametrize("test", ["welch", "paired"])
def test_intervals_bracket_the_estimate_and_are_seeded(test):
    result, _, _ = audit(test)
    groups = result.groups
    assert (groups["ci_low"] <= groups["normalized_change"]).all()
    assert (groups["normalized_change"] <= groups["ci_high"]).all()
    assert (groups["ci_low"] < groups["ci_high"]).all()
    audit.cache_clear()
    pd.testing.assert_frame_equal(audit(test)[0].groups, groups)
    other = audit(test, seed=1)[0].groups
    assert not np.array_equal(other["ci_low"], groups["ci_low"])
    pd.testing.assert_series_equal(other["p_value"], groups["p_value"])


def test_pie_concentration_is_fishers_exact_test():
    result, _, _ = audit()
    groups = result.groups.set_index("group")
    pies = pies_of(result)
    assert pies.sum() > 20, "the test data need PIEs"
    assert groups["n_pies"].loc[["sex=F", "sex=M"]].sum() == pies.sum()
    # The harmed intersection holds more than its share of PIEs.
    assert groups.loc[HARMED, "pie_odds_ratio"] > 1
    assert groups.loc[HARMED, "pie_q_value"] < 0.05


def test_group_accuracies_equal_fairlearn_metricframe():
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import accuracy_score

    base, pruned, labels, attrs = planted()

    def by_group(predictions, features):
        frames = [
            MetricFrame(metrics=accuracy_score, y_true=labels, y_pred=row, sensitive_features=features).by_group
            for row in predictions
        ]
        return sum(frames) / len(frames)

    # One model a side: the group means are that model's accuracies.
    single = audit("mcnemar")[0].groups.set_index("group")
    welch = audit("welch")[0].groups.set_index("group")
    for groups, m in ((single, 1), (welch, N_MODELS)):
        for role, predictions in (("baseline", base[:m]), ("pruned", pruned[:m])):
            column = groups[f"{role}_accuracy_mean"]
            both = by_group(predictions, attrs[["sex", "age"]])
            for (sex, age), value in both.items():
                assert column[f"sex={sex} & age={age}"] == pytest.approx(value, rel=RTOL)
            for attribute in ("sex", "age"):
                for v, value in by_group(predictions, attrs[attribute]).items():
                    assert column[f"{attribute}={v}"] == pytest.approx(value, rel=RTOL)


# --- cells: classes within groups -----------------------------------------------------------------


@pytest.mark.parametrize("test", ["welch", "paired", "mcnemar"])
def test_cells_match_the_per_class_tests_within_each_group(test):
    result, base, pruned = audit(test)
    labels, attrs = planted()[2], planted()[3]
    members = expected_members(attrs, ["sex", "age"])
    expected = expected_cells(base, pruned, labels, members, test=test)
    actual = result.group_cells.set_index(["group", "label"])
    assert sorted(actual.index) == sorted(expected.index)
    columns = [c for c in CELL_COLUMNS if c not in ("group", "label", "name")]
    assert_columns(actual, expected, columns)
    assert actual["name"].tolist() == [str(label) for _, label in actual.index]
    # The harm is to people, not to a class: every class of the harmed group is hit.
    harmed = actual.loc[HARMED]
    assert (harmed["normalized_change"] < 0).all()
    if test == "mcnemar":
        # One model a side, ~90 examples a cell: the exact test alone decides, and no relative test.
        assert actual[["t_statistic", "p_value", "q_value", "recall_t_statistic"]].isna().all().all()
    else:
        assert (harmed["direction"] == "harmed").sum() >= 2


# --- degenerate cases ----------------------------------------------------------------------------


def test_small_groups_are_listed_but_not_tested():
    base, pruned, labels, attrs = planted()
    b, p = populations(base, pruned, labels)
    rare = attrs.assign(site=np.where(np.arange(N) < 25, "rare", "common"))
    result = pie_audit.compare(b, p, groups=rare, group_by=["sex", "site"], n_bootstrap=50)
    groups = result.groups.set_index("group")
    small = groups["support"] < 30
    assert set(groups.index[small]) == {"site=rare", "sex=F & site=rare", "sex=M & site=rare"}
    assert (groups["tested"] == ~small).all()
    untested = groups[small]
    undefined = ["pie_odds_ratio", "pie_p_value", "pie_q_value", "ci_low", "ci_high", "t_statistic", "p_value",
                 "q_value", "accuracy_t_statistic", "accuracy_p_value", "accuracy_q_value", "mde"]  # fmt: skip
    for column in undefined:
        assert untested[column].isna().all(), column
    assert not untested["significant"].any() and not untested["accuracy_significant"].any()
    assert (untested["direction"] == "none").all()
    # Their means are still given...
    described = ["baseline_accuracy_mean", "pruned_accuracy_mean", "normalized_change", "n_pies", "pie_fraction"]
    assert untested[described].notna().all().all()
    # ...and they take no part in the correction.
    tested = groups[~small]
    np.testing.assert_allclose(tested["q_value"], multipletests(tested["p_value"], method="fdr_bh")[1], rtol=RTOL)
    np.testing.assert_allclose(
        tested["pie_q_value"], multipletests(tested["pie_p_value"], method="fdr_bh")[1], rtol=RTOL
    )
    assert any("site=rare" in note for note in result.notes), result.notes
    # The small cells are untested as well.
    cells = result.group_cells
    assert not cells.loc[cells["support"] < 30, "tested"].any()
    assert cells.loc[~cells["tested"], ["p_value", "q_value", "recall_q_value"]].isna().all().all()


def test_min_group_support_decides_what_is_tested():
    base, pruned, labels, attrs = planted()
    b, p = populations(base, pruned, labels)
    rare = attrs.assign(site=np.where(np.arange(N) < 25, "rare", "common"))
    result = pie_audit.compare(b, p, groups=rare, group_by=["site"], min_group_support=20, n_bootstrap=50)
    assert result.groups["tested"].all()
    assert result.to_summary()["groups"]["min_support"] == 20


def test_identical_populations_flag_no_group():
    base, _, labels, attrs = planted()
    b, p = populations(base, base[::-1], labels)
    result = pie_audit.compare(b, p, groups=attrs, n_bootstrap=50)
    groups = result.groups
    np.testing.assert_allclose(groups["normalized_change"], 0, atol=1e-12)
    np.testing.assert_allclose(groups["accuracy_change"], 0, atol=1e-12)
    np.testing.assert_allclose(groups["p_value"], 1.0)
    assert not groups["significant"].any() and (groups["direction"] == "none").all()
    # No PIE at all: nothing is concentrated anywhere.
    assert (groups["n_pies"] == 0).all()
    np.testing.assert_allclose(groups["pie_p_value"], 1.0)
    assert not any(f.rule in GROUP_RULES for f in result.gate.failures)


def test_one_model_a_side_under_welch_tests_nothing():
    base, pruned, labels, attrs = planted()
    b, p = populations(base[:1], pruned[:1], labels)
    result = pie_audit.compare(b, p, groups=attrs, test="welch", n_bootstrap=50)
    groups = result.groups
    for column in ("t_statistic", "p_value", "q_value", "accuracy_p_value", "ci_low", "ci_high", "mde"):
        assert groups[column].isna().all(), column
    assert not groups["significant"].any() and (groups["direction"] == "none").all()
    assert groups["normalized_change"].notna().all()


# --- the groups table as users give it ------------------------------------------------------------


def test_row_order_extra_rows_and_value_names_change_nothing_but_names():
    result, _, _ = audit()
    base, pruned, labels, attrs = planted()
    b, p = populations(base, pruned, labels)
    extra = pd.DataFrame({"example_id": N + np.arange(7), "sex": "F", "age": "old"})
    shuffled = pd.concat([attrs, extra]).sample(frac=1, random_state=3)
    renamed = shuffled.assign(sex=shuffled["sex"].map({"F": "female", "M": "male"}))
    other = pie_audit.compare(b, p, groups=renamed, n_bootstrap=300)
    assert other.to_summary()["groups"]["ignored_rows"] == 7
    assert result.to_summary()["groups"]["ignored_rows"] == 0
    rename = {"sex=F": "sex=female", "sex=M": "sex=male"}
    expected = result.groups.set_index("group").drop(columns="attributes")
    expected.index = [" & ".join(rename.get(part, part) for part in g.split(" & ")) for g in expected.index]
    got = other.groups.set_index("group").drop(columns="attributes").loc[expected.index]
    pd.testing.assert_frame_equal(got, expected, check_names=False, rtol=1e-12)


def test_swapping_the_populations_negates_the_changes():
    result, base, pruned = audit()
    labels, attrs = planted()[2], planted()[3]
    b, p = populations(pruned, base, labels)
    swapped = pie_audit.compare(b, p, groups=attrs, n_bootstrap=50).groups.set_index("group")
    groups = result.groups.set_index("group").loc[swapped.index]
    for column in ("accuracy_change", "normalized_change", "t_statistic", "accuracy_t_statistic"):
        np.testing.assert_allclose(swapped[column], -groups[column], rtol=1e-12, err_msg=column)
    for column in ("p_value", "q_value", "accuracy_q_value", "pie_p_value", "pie_odds_ratio", "mde"):
        np.testing.assert_allclose(swapped[column], groups[column], rtol=1e-12, err_msg=column)
    np.testing.assert_allclose(swapped["baseline_accuracy_mean"], groups["pruned_accuracy_mean"], rtol=1e-12)
    assert swapped.loc[HARMED, "direction"] == "helped"


def test_the_baseline_populations_own_groups_file_is_used(tmp_path):
    from pie_audit.interchange import GROUPS_FILE, write_groups

    base, pruned, labels, attrs = planted()
    b, p = populations(base, pruned, labels)
    pie_audit.write_population(tmp_path / "dense", b)
    pie_audit.write_population(tmp_path / "pruned", p)
    assert pie_audit.compare(tmp_path / "dense", tmp_path / "pruned", n_bootstrap=50).groups is None
    write_groups(attrs, tmp_path / "dense" / GROUPS_FILE)
    result = pie_audit.compare(tmp_path / "dense", tmp_path / "pruned", n_bootstrap=300)
    assert result.group_source == tmp_path / "dense" / GROUPS_FILE
    assert any(GROUPS_FILE in note for note in result.notes), result.notes
    expected = audit()[0].groups
    pd.testing.assert_frame_equal(result.groups, expected)


# --- summary and gate --------------------------------------------------------------------------------


def test_summary_holds_the_tables_as_strict_json():
    result, _, _ = audit()
    summary = result.to_summary()
    text = json.dumps(summary, allow_nan=False)
    groups = json.loads(text)["groups"]
    assert groups["attributes"] == ["sex", "age"] and groups["min_support"] == 30
    assert [r["group"] for r in groups["rows"]] == result.groups["group"].tolist()
    # Only tested cells are listed; the counts say how many there are in all.
    tested = result.group_cells[result.group_cells["tested"]]
    assert [(c["group"], c["label"]) for c in groups["cells"]] == list(zip(tested["group"], tested["label"]))
    assert groups["n_cells"] == len(result.group_cells)
    assert groups["n_untested_cells"] == len(result.group_cells) - len(tested)
    harmed = next(r for r in groups["rows"] if r["group"] == HARMED)
    assert harmed["attributes"] == {"sex": "F", "age": "old"} and harmed["direction"] == "harmed"
    single = audit("mcnemar")[0].to_summary()["groups"]["rows"]
    assert all(r["p_value"] is None for r in single)


def test_without_groups_there_are_no_group_results_and_the_group_rules_do_not_apply():
    base, pruned, labels, _ = planted()
    b, p = populations(base, pruned, labels)
    result = pie_audit.compare(b, p, n_bootstrap=50, rules={"max_group_drop": 0, "max_group_accuracy_drop": 0})
    assert result.groups is None and result.group_cells is None
    assert result.group_attributes == () and result.group_source is None
    assert result.to_summary()["groups"] is None
    assert set(result.gate.not_applicable) == set(GROUP_RULES)
    assert not any(f.rule in GROUP_RULES for f in result.gate.failures)
    cases = ET.fromstring(junit_xml(result.gate)).findall(".//testcase")
    group_cases = [c for c in cases if c.get("name").split()[0] in GROUP_RULES]
    assert len(group_cases) == 2
    assert all(c.find("skipped") is not None and c.find("failure") is None for c in group_cases)


def test_the_group_rules_fail_on_the_planted_harm():
    result, _, _ = audit()
    groups = result.groups
    assert result.gate.not_applicable == ()
    failures = {f.rule: f for f in result.gate.failures}
    beyond = groups[(groups["direction"] == "harmed") & (groups["normalized_change"] < -0.02)]
    fell = groups[groups["accuracy_significant"] & (groups["accuracy_change"] < -0.05)]
    assert HARMED in beyond["group"].tolist() and HARMED in fell["group"].tolist()
    assert sorted(failures["max-group-drop"].groups) == sorted(beyond["group"])
    assert sorted(failures["max-group-accuracy-drop"].groups) == sorted(fell["group"])
    assert failures["max-group-drop"].value == pytest.approx(-beyond["normalized_change"].min())
    assert HARMED in failures["max-group-drop"].message
    cases = ET.fromstring(junit_xml(result.gate)).findall(".//testcase")
    failed = {c.get("name").split()[0] for c in cases if c.find("failure") is not None}
    assert set(GROUP_RULES) <= failed


def test_min_power_counts_the_groups():
    result, _, _ = audit()
    power = result.gate.observed["min-power"]
    assert power == pytest.approx(min(result.power.power_at_detect, result.group_power.power_at_detect))
    summary = result.to_summary()["groups"]["power"]
    assert summary["power_at_detect"] == pytest.approx(result.group_power.power_at_detect)
    base, pruned, labels, attrs = planted()
    b, p = populations(base, pruned, labels)
    # Asking for more power than the groups have fails the rule, whatever the classes have.
    strict = pie_audit.compare(b, p, groups=attrs, rules={"min_power": 0.999999}, n_bootstrap=50)
    assert "min-power" in {f.rule for f in strict.gate.failures}


def test_group_by_without_a_groups_table_is_refused():
    base, pruned, labels, _ = planted()
    b, p = populations(base, pruned, labels)
    with pytest.raises(pie_audit.ConfigError, match="group-by needs a groups table"):
        pie_audit.compare(b, p, group_by=["sex"])


def test_the_group_rules_pass_within_their_limits():
    base, pruned, labels, attrs = planted()
    b, p = populations(base, pruned, labels)
    limit = 0.2  # the planted drop is 12 points of accuracy, 7.5 beyond the models' average
    rules = {"max_group_drop": limit, "max_group_accuracy_drop": limit}
    result = pie_audit.compare(b, p, groups=attrs, rules=rules, n_bootstrap=50)
    assert not any(f.rule in GROUP_RULES for f in result.gate.failures)
    assert result.gate.not_applicable == ()
    cases = ET.fromstring(junit_xml(result.gate)).findall(".//testcase")
    passed = [c for c in cases if c.get("name").split()[0] in GROUP_RULES]
    assert len(passed) == 2 and all(len(c) == 0 for c in passed)
    # The same limits through GateRules, and the defaults.
    assert pie_audit.GateRules().max_group_drop == 0.02
    assert pie_audit.GateRules().max_group_accuracy_drop == 0.05
