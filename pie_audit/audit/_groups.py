"""Who pays beyond classes: the audit of subgroups defined by per-example attributes.

A *group* is the set of examples with one value of one attribute (``sex=F``) or, with two or
three attributes, one observed combination of values (``sex=F & age=old``), as fairlearn's
``MetricFrame`` forms them from several sensitive features. For model m, ``acc_mg`` is its
accuracy on group g and ``a_m`` its accuracy on every example. Each group gets the per-class
design of :mod:`._stats` (the same Welch, paired or McNemar test, bootstrap, correction and
power):

- the *absolute* test of ``acc_mg`` ("did the group lose accuracy?");
- the *relative* test of ``acc_mg - a_m`` ("did it lose more than everyone?"): the paper's
  normalisation taken per model, which is Balancing Act's excess accuracy gap. Each model is
  centred on its own accuracy, not on its population's mean as the paper's code does for
  classes: a group holds a large share of the examples, so its accuracy moves with the model's,
  and the per-model difference removes that shared seed-to-seed noise from the test;
- Benjamini-Hochberg across the tested groups, each test separately;
- *PIE concentration*: the group's share of PIEs against its share of examples, Fisher's exact
  test (two-sided) with its odds ratio, BH across the tested groups;
- *cells*: the recall of each class within each group, with the classes' two tests (relative
  to the change of overall accuracy, centred as for classes) and BH across the tested cells.

A group or cell with fewer than ``min_support`` examples is described (its means) but not
tested and takes no part in any correction. Pure functions over arrays; the groups table is
read and checked by :mod:`pie_audit.interchange`. ``docs/groups.md`` has the formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ._pie import model_resamples, pie_table
from ._power import PowerInputs
from ._stats import (
    _adjust,
    _check_inputs,
    check_test_options,
    harm_robustness,
    mcnemar_p_values,
    per_model_accuracy,
    per_model_recall,
    rate_tests,
)

__all__ = [
    "GROUP_COLUMNS",
    "GROUP_EXPLAIN_COLUMNS",
    "explain_groups",
    "CELL_COLUMNS",
    "DEFAULT_MIN_SUPPORT",
    "MAX_INTERSECTED",
    "GroupSet",
    "GroupAudit",
    "group_members",
    "group_statistics",
    "pie_concentration",
    "cell_statistics",
    "audit_groups",
    "harmed_groups",
    "accuracy_fell",
]

#: Groups smaller than this are listed with their means but not tested.
DEFAULT_MIN_SUPPORT = 30
#: With up to this many attributes, their intersections are groups too.
MAX_INTERSECTED = 3
BAD_MIN_SUPPORT = "min-group-support must be a positive integer, not {value!r}"
BAD_GROUP_ROWS = "groups table has {rows} rows, but the predictions have {n} examples"

GROUP_COLUMNS = (
    "group",
    "attributes",
    "support",
    "tested",
    "n_pies",
    "pie_fraction",
    "pie_odds_ratio",
    "pie_p_value",
    "pie_q_value",
    "baseline_accuracy_mean",
    "pruned_accuracy_mean",
    "accuracy_change",
    "normalized_change",
    "ci_low",
    "ci_high",
    "t_statistic",
    "p_value",
    "q_value",
    "accuracy_t_statistic",
    "accuracy_p_value",
    "accuracy_q_value",
    "accuracy_significant",
    "mde",
    "significant",
    "direction",
    "robustness",
)
CELL_COLUMNS = (
    "group",
    "label",
    "name",
    "support",
    "tested",
    "baseline_recall_mean",
    "pruned_recall_mean",
    "recall_change",
    "normalized_change",
    "t_statistic",
    "p_value",
    "q_value",
    "recall_t_statistic",
    "recall_p_value",
    "recall_q_value",
    "recall_significant",
    "significant",
    "direction",
)


@dataclass(frozen=True, eq=False)
class GroupSet:
    """The groups an attributes table defines.

    Attributes
    ----------
    names : tuple of str
        ``"sex=F"``, ``"sex=F & age=old"``, ...: each attribute's values in sorted order, then
        the intersections in sorted order.
    attributes : tuple of dict
        The attribute values that define each group.
    members : ndarray of shape (G, N), bool
        Which examples belong to each group.
    """

    names: tuple[str, ...]
    attributes: tuple[dict[str, Any], ...]
    members: np.ndarray

    @property
    def support(self) -> np.ndarray:
        """Examples per group, shape (G,), int64."""
        return self.members.sum(axis=1).astype(np.int64)


def group_members(attributes: pd.DataFrame) -> GroupSet:
    """The groups of an attributes table: every value of every attribute, and their intersections.

    Parameters
    ----------
    attributes : DataFrame of shape (N, A)
        One row per example, one column per attribute (strings, integers or booleans, no missing
        value), as :func:`pie_audit.interchange.read_groups` returns them.

    Returns
    -------
    GroupSet
        With 2 or 3 attributes, every combination of their values that some example has is a
        group too; with more, only the single values are.
    """
    columns = [str(c) for c in attributes.columns]
    codes, uniques = [], []
    for column in columns:
        code, values = pd.factorize(attributes[column], sort=True)
        codes.append(code)
        uniques.append([_plain(v) for v in values])
    names: list[str] = []
    described: list[dict[str, Any]] = []
    masks: list[np.ndarray] = []
    for column, code, values in zip(columns, codes, uniques, strict=True):
        for k, value in enumerate(values):
            names.append(f"{column}={value}")
            described.append({column: value})
            masks.append(code == k)
    if 2 <= len(columns) <= MAX_INTERSECTED:
        stacked = np.stack(codes, axis=1)
        for combination in np.unique(stacked, axis=0):
            values = [uniques[a][int(k)] for a, k in enumerate(combination)]
            names.append(" & ".join(f"{c}={v}" for c, v in zip(columns, values, strict=True)))
            described.append(dict(zip(columns, values, strict=True)))
            masks.append((stacked == combination).all(axis=1))
    members = np.vstack(masks) if masks else np.zeros((0, len(attributes)), dtype=bool)
    return GroupSet(names=tuple(names), attributes=tuple(described), members=members)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _group_rates(predictions: np.ndarray, labels: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Accuracy of each model on each group, shape (M, G); NaN for an empty group."""
    correct = (predictions == labels).astype(np.float64)
    support = members.sum(axis=1)
    # Counts of right answers are integers far below 2**53: the float product is exact.
    hits = correct @ members.T.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / np.where(support > 0, support, np.nan)


def _discordant(base: np.ndarray, pruned: np.ndarray, labels: np.ndarray, members: np.ndarray):
    base_right, pruned_right = base == labels, pruned == labels
    b = members.astype(np.int64) @ (base_right & ~pruned_right).astype(np.int64)
    c = members.astype(np.int64) @ (~base_right & pruned_right).astype(np.int64)
    return b, c


def _check_min_support(min_support: int) -> int:
    if isinstance(min_support, bool) or not isinstance(min_support, (int, np.integer)) or min_support < 1:
        raise ConfigError(BAD_MIN_SUPPORT.format(value=min_support))
    return int(min_support)


def group_statistics(
    baseline_predictions: np.ndarray,
    pruned_predictions: np.ndarray,
    labels: np.ndarray,
    groups: pd.DataFrame | GroupSet,
    *,
    pies: np.ndarray | None = None,
    n_classes: int | None = None,
    test: str = "welch",
    alpha: float = 0.05,
    correction: str = "fdr_bh",
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    min_support: int = DEFAULT_MIN_SUPPORT,
) -> pd.DataFrame:
    """Per-group disparate impact of pruning: accuracy, its change beyond the models' average, PIEs.

    Parameters
    ----------
    baseline_predictions : array-like of shape (M_b, N)
    pruned_predictions : array-like of shape (M_p, N)
    labels : array-like of shape (N,)
        As in :func:`pie_audit.audit.class_statistics`.
    groups : DataFrame of shape (N, A) or GroupSet
        The attributes of each example (rows in the order of the predictions' columns), or the
        groups already formed by :func:`group_members`.
    pies : array-like of shape (N,), bool, optional
        Which examples are PIEs; default the modal-label rule of
        :func:`pie_audit.audit.pie_table` with its default tie break.
    n_classes, test, alpha, correction, n_bootstrap, confidence, seed
        As in :func:`pie_audit.audit.class_statistics`.
    min_support : int, default=30
        Groups with fewer examples are not tested.

    Returns
    -------
    DataFrame with G rows and the columns :data:`GROUP_COLUMNS`
        ``group`` (name), ``attributes`` (dict), ``support``, ``tested`` (support >=
        ``min_support``); ``n_pies``, ``pie_fraction`` (of the group's examples),
        ``pie_odds_ratio``, ``pie_p_value``, ``pie_q_value`` (:func:`pie_concentration`);
        ``baseline_accuracy_mean``, ``pruned_accuracy_mean``, ``accuracy_change``;
        ``normalized_change`` (``accuracy_change`` minus the change of mean accuracy);
        ``ci_low``, ``ci_high``, ``t_statistic``, ``p_value``, ``q_value``: the interval and
        relative test of ``normalized_change`` on the per-model values ``acc_mg - a_m``;
        ``accuracy_t_statistic``, ``accuracy_p_value``, ``accuracy_q_value``,
        ``accuracy_significant``: the absolute test of ``acc_mg``; ``mde`` (the smallest
        normalized drop the relative test detects with power 0.8); ``significant`` (the design's
        primary test: relative for t-tests, absolute for McNemar) and ``direction`` as for
        classes: ``"harmed"`` only when significant and the accuracy fell; ``robustness``: for a
        harmed group, the fraction of model resamples in which it stays harmed, as for classes.

    Notes
    -----
    The degenerate cases are those of the classes (one model, zero variance: see
    :func:`pie_audit.audit.class_statistics`); an untested group has NaN tests, intervals, ``mde``
    and PIE statistics, ``significant`` False and ``direction`` ``"none"``.
    """
    base, pruned, labels, n_classes = _check_inputs(baseline_predictions, pruned_predictions, labels, n_classes)
    check_test_options(
        test=test, alpha=alpha, correction=correction, n_bootstrap=n_bootstrap, confidence=confidence,
        n_baseline=base.shape[0], n_pruned=pruned.shape[0],
    )
    min_support = _check_min_support(min_support)
    group_set = _group_set(groups, labels.size)
    if pies is None:
        pies = pie_table(base, pruned, labels)["pie"].to_numpy()
    return _group_frame(base, pruned, labels, group_set, np.asarray(pies, dtype=bool), test=test, alpha=alpha,
                        correction=correction, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed,
                        min_support=min_support)[0]


def _group_set(groups: pd.DataFrame | GroupSet, n: int) -> GroupSet:
    group_set = groups if isinstance(groups, GroupSet) else group_members(groups)
    if group_set.members.shape[1] != n:
        raise ConfigError(BAD_GROUP_ROWS.format(rows=group_set.members.shape[1], n=n))
    return group_set


def _group_frame(
    base: np.ndarray,
    pruned: np.ndarray,
    labels: np.ndarray,
    group_set: GroupSet,
    pies: np.ndarray,
    *,
    test: str,
    alpha: float,
    correction: str,
    n_bootstrap: int,
    confidence: float,
    seed: int,
    min_support: int,
) -> tuple[pd.DataFrame, PowerInputs]:
    members = group_set.members
    support = group_set.support
    tested = support >= min_support
    mcnemar = mcnemar_p_values(*_discordant(base[0], pruned[0], labels, members)) if test == "mcnemar" else None
    rates = (_group_rates(base, labels, members), _group_rates(pruned, labels, members))
    accuracy = (per_model_accuracy(base, labels), per_model_accuracy(pruned, labels))
    out = rate_tests(
        *rates,
        *accuracy,
        tested,
        centre="model",
        test=test,
        alpha=alpha,
        correction=correction,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        seed=seed,
        mcnemar_p=mcnemar,
    )
    harmed = out.direction == "harmed"
    robustness = np.full(harmed.shape, np.nan)
    if harmed.any() and test != "mcnemar":
        robustness = harm_robustness(
            *rates, *accuracy, tested, harmed,
            resamples=model_resamples(base, pruned, seed=seed),
            centre="model", test=test, alpha=alpha, correction=correction,
        )  # fmt: skip
    concentration = pie_concentration(pies, members, tested=tested, correction=correction)
    frame = pd.DataFrame(
        {
            "group": list(group_set.names),
            "attributes": list(group_set.attributes),
            "support": support,
            "tested": tested,
            **{column: concentration[column].to_numpy() for column in concentration.columns},
            "baseline_accuracy_mean": out.baseline_mean,
            "pruned_accuracy_mean": out.pruned_mean,
            "accuracy_change": out.change,
            "normalized_change": out.normalized,
            "ci_low": out.ci[0],
            "ci_high": out.ci[1],
            "t_statistic": out.t[0],
            "p_value": out.p[0],
            "q_value": out.q[0],
            "accuracy_t_statistic": out.t[1],
            "accuracy_p_value": out.p[1],
            "accuracy_q_value": out.q[1],
            "accuracy_significant": out.absolute_significant,
            "mde": out.mde,
            "significant": out.significant,
            "direction": out.direction.astype(object),
            "robustness": robustness,
        },
        columns=list(GROUP_COLUMNS),
    )
    return frame, out.power_inputs


def pie_concentration(
    pies: np.ndarray,
    members: np.ndarray,
    *,
    tested: np.ndarray | None = None,
    correction: str = "fdr_bh",
) -> pd.DataFrame:
    """Are PIEs concentrated in a group? Fisher's exact test of each group's share of PIEs.

    Parameters
    ----------
    pies : ndarray of shape (N,), bool
        Which examples are PIEs.
    members : ndarray of shape (G, N), bool
        Which examples belong to each group (:attr:`GroupSet.members`).
    tested : ndarray of shape (G,), bool, optional
        The groups to test (default all); the others get NaN statistics and take no part in
        the correction.
    correction : {"fdr_bh", "none"}, default="fdr_bh"
        Benjamini-Hochberg across the tested groups, or none.

    Returns
    -------
    DataFrame with G rows
        ``n_pies`` (PIEs in the group), ``pie_fraction`` (of the group's examples; NaN for an
        empty group), and for tested groups ``pie_odds_ratio`` and ``pie_p_value`` of the
        two-sided Fisher test of the table [[PIEs in g, others in g], [PIEs outside g, others
        outside g]] (the odds ratio is ``inf`` or 0 when a cell is empty, NaN when both are),
        ``pie_q_value``.
    """
    from scipy import stats

    pies = np.asarray(pies, dtype=bool)
    members = np.asarray(members, dtype=bool)
    tested = np.ones(members.shape[0], dtype=bool) if tested is None else np.asarray(tested, dtype=bool)
    support = members.sum(axis=1)
    n_pies = members.astype(np.int64) @ pies.astype(np.int64)
    total = int(pies.sum())
    n = pies.size
    odds = np.full(members.shape[0], np.nan)
    p = np.full(members.shape[0], np.nan)
    for g in np.flatnonzero(tested):
        table = [[n_pies[g], support[g] - n_pies[g]], [total - n_pies[g], n - support[g] - (total - n_pies[g])]]
        if support[g] == n:
            continue  # everyone is in the group: there is no outside to compare with
        with np.errstate(divide="ignore", invalid="ignore"):
            result = stats.fisher_exact(table, alternative="two-sided")
        odds[g], p[g] = result.statistic, result.pvalue
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = n_pies / np.where(support > 0, support, np.nan)
    return pd.DataFrame(
        {
            "n_pies": n_pies.astype(np.int64),
            "pie_fraction": fraction,
            "pie_odds_ratio": odds,
            "pie_p_value": p,
            "pie_q_value": _adjust(p, correction),
        }
    )


def cell_statistics(
    baseline_predictions: np.ndarray,
    pruned_predictions: np.ndarray,
    labels: np.ndarray,
    groups: pd.DataFrame | GroupSet,
    *,
    n_classes: int | None = None,
    class_names: tuple[str, ...] | None = None,
    test: str = "welch",
    alpha: float = 0.05,
    correction: str = "fdr_bh",
    min_support: int = DEFAULT_MIN_SUPPORT,
) -> pd.DataFrame:
    """The recall of each class within each group, tested as classes are.

    Parameters
    ----------
    baseline_predictions, pruned_predictions, labels, groups
        As in :func:`group_statistics`.
    n_classes : int, optional
        C; default one more than the largest label or prediction.
    class_names : tuple of str, optional
        Names of the classes, for the ``name`` column; default the labels as strings.
    test, alpha, correction
        As in :func:`pie_audit.audit.class_statistics`.
    min_support : int, default=30
        Cells (examples of one class in one group) with fewer examples are not tested.

    Returns
    -------
    DataFrame with G x C rows (groups in order, classes in label order), columns :data:`CELL_COLUMNS`
        For a two-class task the cells of label 1 are each group's true-positive rate and those
        of label 0 its true-negative rate. ``normalized_change`` is ``recall_change`` minus the
        change of mean overall accuracy; the relative test centres each population on its mean
        accuracy and the absolute test reads the recalls, as for classes. No interval is computed.
    """
    base, pruned, labels, n_classes = _check_inputs(baseline_predictions, pruned_predictions, labels, n_classes)
    check_test_options(
        test=test, alpha=alpha, correction=correction, n_bootstrap=1, confidence=0.5,
        n_baseline=base.shape[0], n_pruned=pruned.shape[0],
    )
    min_support = _check_min_support(min_support)
    group_set = _group_set(groups, labels.size)
    names = class_names if class_names is not None else tuple(str(k) for k in range(n_classes))
    return _cell_frame(base, pruned, labels, group_set, n_classes=n_classes, names=names, test=test,
                       alpha=alpha, correction=correction, min_support=min_support)


def _cell_frame(
    base: np.ndarray,
    pruned: np.ndarray,
    labels: np.ndarray,
    group_set: GroupSet,
    *,
    n_classes: int,
    names: tuple[str, ...],
    test: str,
    alpha: float,
    correction: str,
    min_support: int,
) -> pd.DataFrame:
    g_count = len(group_set.names)
    base_r = np.empty((base.shape[0], g_count * n_classes))
    pruned_r = np.empty((pruned.shape[0], g_count * n_classes))
    support = np.empty(g_count * n_classes, dtype=np.int64)
    b = np.zeros(g_count * n_classes, dtype=np.int64)
    c = np.zeros(g_count * n_classes, dtype=np.int64)
    for g in range(g_count):
        where = np.flatnonzero(group_set.members[g])
        cols = slice(g * n_classes, (g + 1) * n_classes)
        y = labels[where]
        base_r[:, cols] = per_model_recall(base[:, where], y, n_classes=n_classes)
        pruned_r[:, cols] = per_model_recall(pruned[:, where], y, n_classes=n_classes)
        support[cols] = np.bincount(y, minlength=n_classes)
        if test == "mcnemar":
            base_right, pruned_right = base[0, where] == y, pruned[0, where] == y
            b[cols] = np.bincount(y[base_right & ~pruned_right], minlength=n_classes)
            c[cols] = np.bincount(y[~base_right & pruned_right], minlength=n_classes)
    tested = support >= min_support
    out = rate_tests(
        base_r,
        pruned_r,
        per_model_accuracy(base, labels),
        per_model_accuracy(pruned, labels),
        tested,
        centre="population",
        test=test,
        alpha=alpha,
        correction=correction,
        n_bootstrap=None,
        confidence=0.95,
        seed=0,
        mcnemar_p=mcnemar_p_values(b, c) if test == "mcnemar" else None,
    )
    label = np.tile(np.arange(n_classes, dtype=np.int64), g_count)
    return pd.DataFrame(
        {
            "group": np.repeat(np.asarray(group_set.names, dtype=object), n_classes),
            "label": label,
            "name": np.asarray(names, dtype=object)[label],
            "support": support,
            "tested": tested,
            "baseline_recall_mean": out.baseline_mean,
            "pruned_recall_mean": out.pruned_mean,
            "recall_change": out.change,
            "normalized_change": out.normalized,
            "t_statistic": out.t[0],
            "p_value": out.p[0],
            "q_value": out.q[0],
            "recall_t_statistic": out.t[1],
            "recall_p_value": out.p[1],
            "recall_q_value": out.q[1],
            "recall_significant": out.absolute_significant,
            "significant": out.significant,
            "direction": out.direction.astype(object),
        },
        columns=list(CELL_COLUMNS),
    )


@dataclass(frozen=True, eq=False)
class GroupAudit:
    """The subgroup audit of two populations (:func:`audit_groups`).

    Attributes
    ----------
    groups : DataFrame
        :func:`group_statistics`' table.
    cells : DataFrame
        :func:`cell_statistics`' table.
    power_inputs : PowerInputs
        What the power of each group's relative test depends on.
    """

    groups: pd.DataFrame
    cells: pd.DataFrame
    power_inputs: PowerInputs


def audit_groups(
    baseline_predictions: np.ndarray,
    pruned_predictions: np.ndarray,
    labels: np.ndarray,
    attributes: pd.DataFrame,
    *,
    pies: np.ndarray,
    n_classes: int,
    class_names: tuple[str, ...],
    test: str,
    alpha: float,
    correction: str,
    n_bootstrap: int,
    confidence: float,
    seed: int,
    min_support: int,
    label_issue: np.ndarray | None = None,
    risk: np.ndarray | None = None,
) -> GroupAudit:
    """Groups and cells of one audit at once, forming the groups once (inputs already checked).

    With ``label_issue`` (cleanlab's flags) and ``risk`` (the dense-only risk score), the groups
    table gains :data:`GROUP_EXPLAIN_COLUMNS` (:func:`explain_groups`).
    """
    group_set = group_members(attributes)
    base = np.asarray(baseline_predictions, dtype=np.int64)
    pruned = np.asarray(pruned_predictions, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    min_support = _check_min_support(min_support)
    groups, inputs = _group_frame(
        base, pruned, labels, group_set, np.asarray(pies, dtype=bool), test=test, alpha=alpha,
        correction=correction, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, min_support=min_support,
    )
    cells = _cell_frame(base, pruned, labels, group_set, n_classes=n_classes, names=class_names, test=test,
                        alpha=alpha, correction=correction, min_support=min_support)
    groups = explain_groups(groups, group_set.members, np.asarray(pies, dtype=bool), label_issue=label_issue, risk=risk)
    return GroupAudit(groups=groups, cells=cells, power_inputs=inputs)


#: What :func:`explain_groups` adds to the groups table: the PIE explanations within each group.
GROUP_EXPLAIN_COLUMNS = ("label_issue_fraction", "non_pie_label_issue_fraction", "label_issue_p_value", "risk_auc")


def explain_groups(
    groups: pd.DataFrame,
    members: np.ndarray,
    pies: np.ndarray,
    *,
    label_issue: np.ndarray | None = None,
    risk: np.ndarray | None = None,
) -> pd.DataFrame:
    """Each group's label issues among its PIEs and how well the dense-only risk ranked them.

    Parameters
    ----------
    groups : DataFrame
        One row per group, in the order of ``members``.
    members : ndarray of shape (G, N), bool
    pies : ndarray of shape (N,), bool
    label_issue : ndarray of shape (N,), bool, optional
        cleanlab's flags (:mod:`._labels`); without them the label columns are NaN.
    risk : ndarray of shape (N,), optional
        The dense-only risk score (:mod:`._risk`); without it ``risk_auc`` is NaN.

    Returns
    -------
    DataFrame
        ``groups`` with :data:`GROUP_EXPLAIN_COLUMNS`: within the group, the fraction of its PIEs
        and of its other examples that are likely label errors and Fisher's two-sided p-value
        (:func:`._labels.label_issue_enrichment`), and the ROC AUC of ``risk`` for the PIE flag
        (:func:`._risk.risk_auc`). NaN where undefined (no PIE, or nothing but PIEs, in the group).
    """
    from ._labels import label_issue_enrichment
    from ._risk import risk_auc

    out = groups.copy()
    values = {column: np.full(len(groups), np.nan) for column in GROUP_EXPLAIN_COLUMNS}
    for g, mask in enumerate(members):
        if label_issue is not None:
            found = label_issue_enrichment(pies[mask], label_issue[mask])
            for column, value in zip(GROUP_EXPLAIN_COLUMNS[:3], (found.fraction, found.non_pie_fraction, found.p_value), strict=True):
                values[column][g] = np.nan if value is None else value
        if risk is not None:
            auc = risk_auc(risk[mask], pies[mask])
            values["risk_auc"][g] = np.nan if auc is None else auc
    for column in GROUP_EXPLAIN_COLUMNS:
        out[column] = values[column]
    return out


def harmed_groups(groups: pd.DataFrame | None) -> pd.DataFrame:
    """The groups significantly harmed beyond the models' average, worst first.

    Parameters
    ----------
    groups : DataFrame or None
        A table of :func:`group_statistics`; ``None`` (no groups) has none.

    Returns
    -------
    DataFrame
        Its rows with ``direction == "harmed"``, sorted by ``normalized_change``, then ``group``.
    """
    if groups is None:
        return pd.DataFrame(columns=list(GROUP_COLUMNS))
    return groups[groups["direction"] == "harmed"].sort_values(["normalized_change", "group"])


def accuracy_fell(groups: pd.DataFrame | None) -> pd.DataFrame:
    """The groups whose accuracy fell significantly (the absolute test), largest fall first."""
    if groups is None:
        return pd.DataFrame(columns=list(GROUP_COLUMNS))
    fell = groups[groups["accuracy_significant"] & (groups["accuracy_change"] < 0)]
    return fell.sort_values(["accuracy_change", "group"])
