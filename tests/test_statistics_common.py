"""Invariances every statistic of the audit must have, run over one registry of them all.

As scikit-learn's ``sklearn/metrics/tests/test_common.py`` does for its metrics: :data:`STATISTICS`
lists every test design and every statistic computed from predictions, and each check below runs
over every entry it applies to. An entry says which checks do not hold for it, and why, in
``skip``; tolerances are never loosened instead. A new statistic joins by adding one entry.

The checks, on small seeded synthetic populations:

- ``example order``: permuting the examples (and their attributes) leaves per-class and
  per-group results unchanged and permutes per-example results alike;
- ``model order``: permuting the models of each population (pairs together) changes nothing;
- ``relabelling``: a permutation of the class ids, and one of each attribute's values, permutes
  per-class, per-group and per-cell rows, and maps per-example labels through it;
- ``swap``: swapping the populations negates the changes, exchanges baseline and pruned values,
  and keeps p- and q-values;
- ``duplication``: every example twice leaves per-class and per-group results (means over
  examples) unchanged, and repeats per-example results.

Groups (``docs/groups.md``) are formed from two attributes of each example: ``sex`` (2 values)
and ``age`` (3 values, ``old`` mostly for the harmed class 2), 2 + 3 + 6 groups.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from pie_audit.audit._pie import pie_stability, pie_table, vote_distance
from pie_audit.audit._power import minimum_detectable_effect, models_needed, t_test_power
from pie_audit.audit._groups import cell_statistics, group_statistics
from pie_audit.audit._stats import class_statistics, power_inputs
from synthetic import planted_predictions

N_EXAMPLES = 120
N_CLASSES = 4
#: Models a side of each design; Welch's populations differ in size, so that a swap that mixed
#: them up would show.
SIZES = {"welch": (6, 5), "paired": (6, 6), "mcnemar": (1, 1)}
CHECKS = ("example order", "model order", "relabelling", "swap", "duplication")
# Exact in exact arithmetic; what remains is floating-point summation order.
TOLERANCE = 1e-12
#: Each attribute's values, and the permutation of them that ``relabelling`` applies (a cycle on
#: age, so that a relabelling that is its own inverse could not hide a mistake).
ATTRIBUTE_VALUES = {"sex": ("F", "M"), "age": ("mid", "old", "young")}
VALUE_RELABEL = {"sex": {"F": "M", "M": "F"}, "age": {"mid": "old", "old": "young", "young": "mid"}}
#: Every group of the test data, in the order the group outputs are given (``_by_group``).
GROUP_NAMES = tuple(
    [f"{a}={v}" for a, values in ATTRIBUTE_VALUES.items() for v in values]
    + [f"sex={s} & age={a}" for s in ATTRIBUTE_VALUES["sex"] for a in ATTRIBUTE_VALUES["age"]]
)
#: Small enough that every group and every cell of the test data is tested, so that every
#: example twice (``duplication``) tests the same ones.
MIN_SUPPORT = 1


@dataclass(frozen=True)
class Populations:
    """Predictions of shape (M_b, N) and (M_p, N), labels (N,) and each example's attributes
    (a DataFrame of N rows: ``sex``, ``age``); for pairs, row m of each is a pair."""

    baseline: np.ndarray
    pruned: np.ndarray
    labels: np.ndarray
    attributes: pd.DataFrame


@dataclass(frozen=True)
class Statistic:
    """One statistic, and what it promises.

    Attributes
    ----------
    compute : callable
        ``compute(populations)``: the outputs by name, every one of shape (C,) (``axis="class"``)
        or (N,) (``axis="example"``), (G,) (``axis="group"``, in :data:`GROUP_NAMES` order) or
        (G * C,) (``axis="cell"``: each group's classes in label order).
    design : {"welch", "paired", "mcnemar"}
        Which populations it takes (:data:`SIZES`); pairs are permuted and swapped together.
    axis : {"class", "example", "group", "cell"}
    swap : mapping of str to str
        What each output becomes when the populations are swapped: ``"same"``, ``"negated"``,
        ``"mirrored"`` (harmed and helped exchange) or the name of another output.
    skip : mapping of str to str
        The checks that do not hold, each with the reason.
    labels : tuple of str
        Per-example outputs that hold class ids (relabelling maps them).
    """

    compute: Callable[[Populations], Mapping[str, np.ndarray]]
    design: str
    axis: str
    swap: Mapping[str, str]
    skip: Mapping[str, str] = field(default_factory=dict)
    labels: tuple[str, ...] = ()


def _classes(test: str, columns: tuple[str, ...]) -> Callable[[Populations], dict[str, np.ndarray]]:
    def compute(p: Populations) -> dict[str, np.ndarray]:
        table = class_statistics(p.baseline, p.pruned, p.labels, n_classes=N_CLASSES, test=test, n_bootstrap=200)
        return {c: table[c].to_numpy() for c in columns}

    return compute


def _power(test: str) -> Callable[[Populations], dict[str, np.ndarray]]:
    def compute(p: Populations) -> dict[str, np.ndarray]:
        inputs = power_inputs(p.baseline, p.pruned, p.labels, n_classes=N_CLASSES, test=test)
        se, df = inputs.se_df()
        return {
            "var_baseline": inputs.var_baseline,
            "var_pruned": inputs.var_pruned,
            "mde": minimum_detectable_effect(se, df, alpha=0.05),
            "power_at_5_points": t_test_power(0.05, se, df, alpha=0.05),
            "models_needed": models_needed(inputs, 0.05, alpha=0.05),
        }

    return compute


def _by_group(table, columns) -> dict[str, np.ndarray]:
    """Outputs in :data:`GROUP_NAMES` order (cells: in that order, then by label), whatever order
    the table lists them in, so that relabelling attribute values can be checked by name."""
    if "label" in table.columns:
        table = table.set_index(["group", "label"]).loc[[(g, c) for g in GROUP_NAMES for c in range(N_CLASSES)]]
    else:
        table = table.set_index("group").loc[list(GROUP_NAMES)]
    return {c: table[c].to_numpy() for c in columns}


def _groups(test: str, columns: tuple[str, ...]) -> Callable[[Populations], dict[str, np.ndarray]]:
    def compute(p: Populations) -> dict[str, np.ndarray]:
        table = group_statistics(
            p.baseline, p.pruned, p.labels, p.attributes, n_classes=N_CLASSES, test=test, n_bootstrap=200,
            min_support=MIN_SUPPORT,
        )  # fmt: skip
        return _by_group(table, columns)

    return compute


def _cells(test: str, columns: tuple[str, ...]) -> Callable[[Populations], dict[str, np.ndarray]]:
    def compute(p: Populations) -> dict[str, np.ndarray]:
        table = cell_statistics(
            p.baseline, p.pruned, p.labels, p.attributes, n_classes=N_CLASSES, test=test, min_support=MIN_SUPPORT
        )
        return _by_group(table, columns)

    return compute


def _pie_table(p: Populations) -> dict[str, np.ndarray]:
    table = pie_table(p.baseline, p.pruned, p.labels)
    return {c: table[c].to_numpy() for c in table.columns if c not in ("example_id", "label")}


RELATIVE = {"normalized_change": "negated", "t_statistic": "negated", "p_value": "same", "q_value": "same",
            "significant": "same", "direction": "mirrored", "mde": "same"}  # fmt: skip
ABSOLUTE = {"baseline_recall_mean": "pruned_recall_mean", "pruned_recall_mean": "baseline_recall_mean",
            "recall_change": "negated", "recall_t_statistic": "negated", "recall_p_value": "same",
            "recall_q_value": "same", "recall_significant": "same"}  # fmt: skip
INTERVALS = {"ci_low": "same", "ci_high": "same", "recall_ci_low": "same", "recall_ci_high": "same"}
# The bootstrap puts models in a canonical order, by their per-class values in class order, and
# draws the baseline's resamples first: relabelling reorders the models, and a swap hands the
# other population the first draws. The intervals are then other resamples, not wrong ones.
BOOTSTRAP_SKIP = {
    "relabelling": "the canonical model order sorts by the classes in label order",
    "swap": "the seeded resamples are drawn for the baseline first",
}
ONE_MODEL = {"model order": "one model a side: there is nothing to permute"}
# McNemar's test is exact on the examples themselves: twice the examples, the same discordant
# proportion, is stronger evidence and a smaller p-value.
MCNEMAR_SKIP = {**ONE_MODEL, "duplication": "an exact test on twice the examples has a smaller p-value"}

# Groups: accuracy on each group against the model's own accuracy (relative), and alone (absolute).
GROUP_RELATIVE = RELATIVE
GROUP_ABSOLUTE = {"baseline_accuracy_mean": "pruned_accuracy_mean", "pruned_accuracy_mean": "baseline_accuracy_mean",
                  "accuracy_change": "negated", "accuracy_t_statistic": "negated", "accuracy_p_value": "same",
                  "accuracy_q_value": "same", "accuracy_significant": "same"}  # fmt: skip
GROUP_INTERVALS = {"ci_low": "same", "ci_high": "same"}
# A PIE is an example whose two modal labels differ, whichever population is which.
GROUP_PIES = {"support": "same", "n_pies": "same", "pie_fraction": "same", "pie_odds_ratio": "same",
              "pie_p_value": "same", "pie_q_value": "same"}  # fmt: skip
PIES_SKIP = {
    "relabelling": "a tied vote goes to the lowest label, and relabelling changes which label is lowest",
    # Fisher's test is exact on the examples themselves, and the counts are counts.
    "duplication": "twice the examples are twice the PIEs, and an exact test on them has a smaller p-value",
}
# Cells are classes within groups: the classes' columns, without intervals or mde.
CELL_RELATIVE = {k: v for k, v in RELATIVE.items() if k != "mde"}

#: Every statistic of the audit, by name.
STATISTICS: dict[str, Statistic] = {
    "welch relative": Statistic(_classes("welch", tuple(RELATIVE)), "welch", "class", RELATIVE),
    "welch absolute": Statistic(_classes("welch", tuple(ABSOLUTE)), "welch", "class", ABSOLUTE),
    "welch intervals": Statistic(_classes("welch", tuple(INTERVALS)), "welch", "class", INTERVALS, BOOTSTRAP_SKIP),
    "paired relative": Statistic(_classes("paired", tuple(RELATIVE)), "paired", "class", RELATIVE),
    "paired absolute": Statistic(_classes("paired", tuple(ABSOLUTE)), "paired", "class", ABSOLUTE),
    "paired intervals": Statistic(_classes("paired", tuple(INTERVALS)), "paired", "class", INTERVALS, BOOTSTRAP_SKIP),
    # McNemar tests recall only: the relative change is a point estimate, its test is not run.
    "mcnemar relative": Statistic(
        _classes("mcnemar", ("normalized_change", "p_value")), "mcnemar", "class",
        {"normalized_change": "negated", "p_value": "same"}, ONE_MODEL,
    ),  # fmt: skip
    "mcnemar absolute": Statistic(
        _classes("mcnemar", (*ABSOLUTE, "significant", "direction")), "mcnemar", "class",
        {**ABSOLUTE, "significant": "same", "direction": "mirrored"}, MCNEMAR_SKIP,
    ),  # fmt: skip
    "welch power": Statistic(
        _power("welch"), "welch", "class",
        {"var_baseline": "var_pruned", "var_pruned": "var_baseline", "mde": "same", "power_at_5_points": "same",
         "models_needed": "same"},
    ),  # fmt: skip
    # The variance of the pairs' differences is that of their negations.
    "paired power": Statistic(
        _power("paired"), "paired", "class",
        {"var_baseline": "same", "var_pruned": "same", "mde": "same", "power_at_5_points": "same", "models_needed": "same"},
    ),  # fmt: skip
    "pie table": Statistic(
        _pie_table, "welch", "example",
        {"baseline_modal": "pruned_modal", "pruned_modal": "baseline_modal", "baseline_share": "pruned_share",
         "pruned_share": "baseline_share", "baseline_tied": "pruned_tied", "pruned_tied": "baseline_tied",
         "score": "same", "pie": "same"},
        {"relabelling": "a tied vote goes to the lowest label, and relabelling changes which label is lowest"},
        labels=("baseline_modal", "pruned_modal"),
    ),  # fmt: skip
    "welch groups relative": Statistic(_groups("welch", tuple(GROUP_RELATIVE)), "welch", "group", GROUP_RELATIVE),
    "welch groups absolute": Statistic(_groups("welch", tuple(GROUP_ABSOLUTE)), "welch", "group", GROUP_ABSOLUTE),
    "welch groups intervals": Statistic(
        _groups("welch", tuple(GROUP_INTERVALS)), "welch", "group", GROUP_INTERVALS, BOOTSTRAP_SKIP
    ),
    "paired groups relative": Statistic(_groups("paired", tuple(GROUP_RELATIVE)), "paired", "group", GROUP_RELATIVE),
    "paired groups absolute": Statistic(_groups("paired", tuple(GROUP_ABSOLUTE)), "paired", "group", GROUP_ABSOLUTE),
    "paired groups intervals": Statistic(
        _groups("paired", tuple(GROUP_INTERVALS)), "paired", "group", GROUP_INTERVALS, BOOTSTRAP_SKIP
    ),
    "mcnemar groups relative": Statistic(
        _groups("mcnemar", ("normalized_change", "p_value")), "mcnemar", "group",
        {"normalized_change": "negated", "p_value": "same"}, ONE_MODEL,
    ),  # fmt: skip
    "mcnemar groups absolute": Statistic(
        _groups("mcnemar", (*GROUP_ABSOLUTE, "significant", "direction")), "mcnemar", "group",
        {**GROUP_ABSOLUTE, "significant": "same", "direction": "mirrored"}, MCNEMAR_SKIP,
    ),  # fmt: skip
    "group pies": Statistic(_groups("welch", tuple(GROUP_PIES)), "welch", "group", GROUP_PIES, PIES_SKIP),
    "welch cells relative": Statistic(_cells("welch", tuple(CELL_RELATIVE)), "welch", "cell", CELL_RELATIVE),
    "welch cells absolute": Statistic(_cells("welch", tuple(ABSOLUTE)), "welch", "cell", ABSOLUTE),
    "paired cells relative": Statistic(_cells("paired", tuple(CELL_RELATIVE)), "paired", "cell", CELL_RELATIVE),
    "paired cells absolute": Statistic(_cells("paired", tuple(ABSOLUTE)), "paired", "cell", ABSOLUTE),
    "mcnemar cells absolute": Statistic(
        _cells("mcnemar", (*ABSOLUTE, "significant", "direction")), "mcnemar", "cell",
        {**ABSOLUTE, "significant": "same", "direction": "mirrored"}, MCNEMAR_SKIP,
    ),  # fmt: skip
    # The table's score on its own: it never looks at which label is lowest.
    "vote distance": Statistic(lambda p: {"score": vote_distance(p.baseline, p.pruned)}, "welch", "example", {"score": "same"}),
    # Stability sorts the models by their predictions' bytes before the seeded resamples, so that
    # model order does not matter; the bytes change with example order and labels, and the
    # baseline's resamples are drawn first. Every example twice keeps each model's rank.
    "pie stability": Statistic(
        lambda p: {"stability": pie_stability(p.baseline, p.pruned, n_resamples=50)}, "welch", "example",
        {"stability": "same"},
        {"example order": "models are ranked by their predictions' bytes, in example order",
         "relabelling": "models are ranked by their predictions' bytes, and ties go to the lowest label",
         "swap": "the seeded resamples are drawn for the baseline first"},
    ),  # fmt: skip
}


@functools.lru_cache(maxsize=None)
def populations(design: str) -> Populations:
    """Seeded populations for a design: the pruned models lose class 2, and pairs share most votes."""
    rng = np.random.default_rng(11)
    labels = rng.permutation(np.arange(N_EXAMPLES) % N_CLASSES)
    n_baseline, n_pruned = SIZES[design]
    baseline = planted_predictions(n_baseline, labels, accuracy=0.85, n_classes=N_CLASSES, seed=1)
    pruned = planted_predictions(n_pruned, labels, accuracy=0.82, n_classes=N_CLASSES, seed=2, class_accuracy={2: 0.5})
    if design == "paired":
        # A pruned model keeps most of its parent's votes, as pruning does, and loses class 2.
        pruned = np.where(rng.random(baseline.shape) < 0.8, baseline, pruned)
        lost = (labels == 2) & (rng.random(baseline.shape) < 0.3)
        pruned = np.where(lost, (labels + 1) % N_CLASSES, pruned)
    return Populations(baseline, pruned, labels, _attributes(labels))


def _attributes(labels: np.ndarray) -> pd.DataFrame:
    """``sex`` at random; ``age`` "old" for most examples of class 2, so that pruning harms that group."""
    rng = np.random.default_rng(13)
    ages = ATTRIBUTE_VALUES["age"]
    old_mostly = rng.choice(ages, labels.size, p=[0.05, 0.9, 0.05])
    age = np.where(labels == 2, old_mostly, rng.choice(ages, labels.size, p=[0.45, 0.1, 0.45]))
    return pd.DataFrame({"sex": rng.choice(ATTRIBUTE_VALUES["sex"], labels.size), "age": age})


def _transformed(invariance: str, p: Populations, design: str) -> tuple[Populations, np.ndarray]:
    """The populations after ``invariance``'s transformation, and the permutation it applied (of
    examples for ``example order``, of models for ``model order``, of classes for ``relabelling``)."""
    rng = np.random.default_rng(5)
    if invariance == "example order":
        order = rng.permutation(N_EXAMPLES)
        attributes = p.attributes.iloc[order].reset_index(drop=True)
        return Populations(p.baseline[:, order], p.pruned[:, order], p.labels[order], attributes), order
    if invariance == "model order":
        rows_b = rng.permutation(len(p.baseline))
        rows_p = rows_b if design == "paired" else rng.permutation(len(p.pruned))
        return Populations(p.baseline[rows_b], p.pruned[rows_p], p.labels, p.attributes), rows_b
    if invariance == "relabelling":
        relabel = rng.permutation(N_CLASSES)
        attributes = p.attributes.apply(lambda column: column.map(VALUE_RELABEL[column.name]))
        return Populations(relabel[p.baseline], relabel[p.pruned], relabel[p.labels], attributes), relabel
    if invariance == "swap":
        return Populations(p.pruned, p.baseline, p.labels, p.attributes), np.arange(0)
    if invariance == "duplication":
        attributes = pd.concat([p.attributes, p.attributes], ignore_index=True)
        return Populations(np.tile(p.baseline, 2), np.tile(p.pruned, 2), np.tile(p.labels, 2), attributes), np.arange(0)
    raise ValueError(invariance)


def _group_before(name: str) -> str:
    """The group that ``name`` was before relabelling: each value mapped back through :data:`VALUE_RELABEL`."""
    inverse = {a: {new: old for old, new in m.items()} for a, m in VALUE_RELABEL.items()}
    parts = (part.split("=") for part in name.split(" & "))
    return " & ".join(f"{a}={inverse[a][v]}" for a, v in parts)


_MIRRORED = {"harmed": "helped", "helped": "harmed", "none": "none"}


def expected_after(invariance: str, stat: Statistic, before: Mapping[str, np.ndarray], moved: np.ndarray) -> dict[str, np.ndarray]:
    """What each output must be after ``invariance``, from the outputs before it."""
    out = {}
    for name, value in before.items():
        if invariance == "example order" and stat.axis == "example":
            value = value[moved]
        elif invariance == "relabelling" and stat.axis == "class":
            value = value[np.argsort(moved)]  # class relabel[c] is class c before
        elif invariance == "relabelling" and stat.axis == "group":
            value = value[[GROUP_NAMES.index(_group_before(g)) for g in GROUP_NAMES]]
        elif invariance == "relabelling" and stat.axis == "cell":
            before_label = np.argsort(moved)
            rows = [GROUP_NAMES.index(_group_before(g)) * N_CLASSES + before_label[c]
                    for g in GROUP_NAMES for c in range(N_CLASSES)]  # fmt: skip
            value = value[rows]
        elif invariance == "relabelling" and name in stat.labels:
            value = moved[value]
        elif invariance == "duplication" and stat.axis == "example":
            value = np.tile(value, 2)
        elif invariance == "swap":
            rule = stat.swap[name]
            value = (
                value if rule == "same"
                else -value if rule == "negated"
                else np.array([_MIRRORED[v] for v in value], dtype=object) if rule == "mirrored"
                else before[rule]
            )  # fmt: skip
        out[name] = value
    return out


def assert_same(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        got = np.asarray(actual[name])
        value = np.asarray(value)
        assert got.shape == value.shape, name
        if value.dtype.kind == "f":
            np.testing.assert_allclose(got, value, rtol=TOLERANCE, atol=TOLERANCE, equal_nan=True, err_msg=name)
        else:
            np.testing.assert_array_equal(got, value, err_msg=name)


def check(stat: Statistic, invariance: str) -> None:
    """Compute ``stat`` before and after ``invariance``'s transformation; fail unless it kept its promise."""
    data = populations(stat.design)
    before = stat.compute(data)
    after, moved = _transformed(invariance, data, stat.design)
    assert_same(stat.compute(after), expected_after(invariance, stat, before, moved))


CASES = [(name, c) for name, stat in STATISTICS.items() for c in CHECKS if c not in stat.skip]


@pytest.mark.parametrize("name, invariance", CASES, ids=[f"{n}: {c}" for n, c in CASES])
def test_statistic_has_the_invariance(name, invariance):
    check(STATISTICS[name], invariance)


@pytest.mark.parametrize("name", list(STATISTICS))
def test_the_registry_entry_is_complete(name):
    """Every output has a swap rule, every skipped check exists and says why, and the data are not
    degenerate (a check over all-NaN or constant outputs could not fail)."""
    stat = STATISTICS[name]
    outputs = stat.compute(populations(stat.design))
    assert set(outputs) == set(stat.swap)
    assert all(rule in ("same", "negated", "mirrored") or rule in outputs for rule in stat.swap.values())
    assert set(stat.skip) <= set(CHECKS) and all(stat.skip.values())
    assert set(stat.labels) <= set(outputs)
    sizes = {"class": N_CLASSES, "example": N_EXAMPLES, "group": len(GROUP_NAMES), "cell": len(GROUP_NAMES) * N_CLASSES}
    size = sizes[stat.axis]
    assert all(np.shape(value) == (size,) for value in outputs.values())
    informative = [v for v in outputs.values() if len(set(np.asarray(v).tolist())) > 1]
    assert informative, f"{name}: every output is constant on the test data"


def test_every_design_tests_both_changes_and_is_powered():
    """The registry covers what the issue lists: each design with its relative and absolute test,
    the power and mde, the PIE table and its stability."""
    for design in SIZES:
        assert {f"{design} relative", f"{design} absolute"} <= set(STATISTICS)
    assert {"welch power", "paired power", "pie table", "pie stability"} <= set(STATISTICS)
    # Groups and cells too, each design's two tests, and the PIEs by group.
    for design in SIZES:
        assert {f"{design} groups relative", f"{design} groups absolute", f"{design} cells absolute"} <= set(STATISTICS)
    assert "group pies" in STATISTICS


def test_the_groups_of_the_test_data_are_all_tested():
    """Every group and every cell with an example is tested, so that every example twice tests the
    same ones; and the registry lists every group :func:`group_statistics` forms."""
    for design in SIZES:
        p = populations(design)
        table = group_statistics(p.baseline, p.pruned, p.labels, p.attributes, test=design, min_support=MIN_SUPPORT)
        assert sorted(table["group"]) == sorted(GROUP_NAMES) and table["tested"].all()
        cells = cell_statistics(p.baseline, p.pruned, p.labels, p.attributes, test=design, min_support=MIN_SUPPORT)
        assert (cells["tested"] == (cells["support"] > 0)).all()


def test_the_data_make_the_tests_decide():
    """Class 2 is harmed on the test data, so direction, significance and p-values are exercised."""
    for design in ("welch", "paired"):
        direction = STATISTICS[f"{design} relative"].compute(populations(design))["direction"]
        assert direction[2] == "harmed"
        # The group that is mostly class 2 is harmed as a group.
        groups = STATISTICS[f"{design} groups relative"].compute(populations(design))["direction"]
        assert groups[GROUP_NAMES.index("age=old")] == "harmed"
    assert STATISTICS["pie table"].compute(populations("welch"))["pie"].any()


SKIPPED = [(name, c) for name, stat in STATISTICS.items() for c in stat.skip if stat.skip[c] != ONE_MODEL.get(c)]


@pytest.mark.parametrize("name, invariance", SKIPPED, ids=[f"{n}: {c}" for n, c in SKIPPED])
def test_a_skipped_invariance_really_fails(name, invariance):
    """A skip is a finding, not a way out: the check it names fails on the test data (with one
    model a side, permuting models is no transformation at all, so those skips are left out)."""
    with pytest.raises(AssertionError):
        check(STATISTICS[name], invariance)


def test_a_wrong_promise_is_caught():
    """The checks can fail: an entry claiming the change survives a swap unchanged is refused."""
    right = STATISTICS["welch absolute"]
    wrong = Statistic(right.compute, "welch", "class", {**right.swap, "recall_change": "same"})
    with pytest.raises(AssertionError, match="recall_change"):
        check(wrong, "swap")
