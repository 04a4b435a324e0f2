"""The CI gate: rules over an audit's results, and the verdict as JUnit XML.

The gate passes unless a rule fails. Every rule has one name, spelt with dashes everywhere a user
meets it (``[tool.pie-audit]``, command-line flags, messages, JUnit, ``summary.json``); in Python
it is the :class:`GateRules` field with underscores. Limits are fractions in [0, 1]:

``max-class-drop`` (default 0.02)
    Fail when a class is significantly harmed and lost more than this many points of recall
    beyond the models' average (``normalized_change < -limit``).
``max-class-recall-drop`` (default 0.05)
    Fail when a class's recall fell significantly (the absolute test) by more than this: on by
    default so that a pass never hides a large drop that every class shared, which the relative
    test cannot see.
``max-group-drop`` (default 0.02)
    Fail when a group (``docs/groups.md``) is significantly harmed and lost more than this many
    points of accuracy beyond the models' average (``normalized_change < -limit``).
``max-group-accuracy-drop`` (default 0.05)
    Fail when a group's accuracy fell significantly (the absolute test) by more than this.
    Without groups both group rules are *not applicable*: neither passed nor failed.
``max-pie-fraction`` (off by default)
    Fail when the fraction of examples that are PIEs exceeds it; with ``stable-pies-only``,
    count only PIEs that survive 90% of model resamples.
``max-accuracy-drop`` (off by default)
    Fail when mean baseline accuracy minus mean pruned accuracy exceeds it.
``max-harmed-classes`` (off by default)
    Fail when more classes than this are significantly harmed (any amount).
``min-power`` (off by default)
    Fail when the audit's power to detect a class drop of the size of interest is below it, or,
    with groups, its power to detect a group drop of that size.

A rule that looks at classes or groups is **inconclusive** when a class (group) lost more than its
limit but the test did not find the drop significant: the audit saw a drop it cannot tell from
noise, so it can neither pass nor fail it. An inconclusive gate does not pass (exit 1, ``gate
INCONCLUSIVE``) unless ``allow-inconclusive`` is set: then it passes, and says what it let through.
Untested groups (below ``min-group-support``) are described, never inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ._groups import accuracy_fell, harmed_groups
from ._power import MAX_MODELS, PowerInputs, minimum_detectable_effect, models_needed
from ._stats import harmed_classes, recall_fell

__all__ = [
    "GROUP_RULES",
    "GateRules",
    "GateFailure",
    "GateInconclusive",
    "GateResult",
    "rule_name",
    "evaluate_gate",
    "junit_xml",
]

# Floating-point slack so that a drop of exactly the limit (0.98 - 1.0 = -0.02000000000000002)
# does not count as "more than" the limit.
_SLACK = 1e-9

BAD_RULE = "{rule} must be {expected}, not {value!r}"
_FRACTIONS = (
    "max_class_drop",
    "max_class_recall_drop",
    "max_group_drop",
    "max_group_accuracy_drop",
    "max_pie_fraction",
    "max_accuracy_drop",
    "min_power",
)
#: Options of the gate, not rules: never a JUnit test case of their own.
_SWITCHES = ("stable_pies_only", "allow_inconclusive")
#: Rules about groups: not applicable to an audit without groups.
GROUP_RULES = ("max-group-drop", "max-group-accuracy-drop")


def rule_name(field: str) -> str:
    """The name users see for a :class:`GateRules` field: ``max_class_drop`` -> ``max-class-drop``."""
    return field.replace("_", "-")


@dataclass(frozen=True)
class GateRules:
    """Limits the gate enforces; ``None`` turns a rule off."""

    max_class_drop: float | None = 0.02
    max_class_recall_drop: float | None = 0.05
    max_group_drop: float | None = 0.02
    max_group_accuracy_drop: float | None = 0.05
    max_pie_fraction: float | None = None
    max_accuracy_drop: float | None = None
    max_harmed_classes: int | None = None
    min_power: float | None = None
    #: Count only stable PIEs (stability >= 0.9) for ``max-pie-fraction``.
    stable_pies_only: bool = False
    #: Pass a gate whose only findings are inconclusive drops (they are still reported).
    allow_inconclusive: bool = False

    def __post_init__(self) -> None:
        for name in _FRACTIONS:
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value <= 1
                or math.isnan(value)
            ):
                raise ConfigError(BAD_RULE.format(rule=rule_name(name), expected="a fraction in [0, 1]", value=value))
        value = self.max_harmed_classes
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(
                BAD_RULE.format(rule="max-harmed-classes", expected="a non-negative integer", value=value)
            )
        for name in _SWITCHES:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(BAD_RULE.format(rule=rule_name(name), expected="true or false", value=getattr(self, name)))

    def limits(self) -> dict[str, Any]:
        """Every rule by its user-facing name, ``None`` where off."""
        return {rule_name(f.name): getattr(self, f.name) for f in fields(self)}

    def enabled(self) -> list[str]:
        """The user-facing names of the rules that are on (``stable-pies-only`` is an option)."""
        return [
            rule_name(f.name)
            for f in fields(self)
            if f.name not in _SWITCHES and getattr(self, f.name) is not None
        ]


@dataclass(frozen=True)
class GateFailure:
    """One rule that failed: its name, limit, the offending value and the classes or groups involved."""

    rule: str
    limit: float
    value: float
    message: str
    classes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateInconclusive:
    """One rule that saw a drop beyond its limit it could not call significant.

    Attributes
    ----------
    rule : str
    limit : float
    value : float
        The largest such drop (a positive fraction).
    message : str
        One line: each class (group), what it lost, with how many models, what it could have
        detected, and about how many models would settle it.
    classes, groups : tuple of str
        The classes (groups) beyond the limit, worst first.
    models_needed : tuple of (int or None)
        For each, models per population to detect its observed drop with power 0.8; ``None``
        where more than 100,000 or undefined.
    """

    rule: str
    limit: float
    value: float
    message: str
    classes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    models_needed: tuple[int | None, ...] = ()


@dataclass(frozen=True)
class GateResult:
    """Outcome of :func:`evaluate_gate`.

    Attributes
    ----------
    rules : GateRules
    failures : tuple of GateFailure
        The rules that failed, in the order of :meth:`GateRules.limits`.
    observed : mapping of str to (float, int or None)
        What each rule measured, by its user-facing name, on or off: ``max-class-drop`` and
        ``max-class-recall-drop`` the largest such drop as a positive fraction (``None`` when
        no class is harmed, or lost recall significantly); ``max-pie-fraction`` the (stable)
        PIE fraction; ``max-accuracy-drop``; ``max-harmed-classes`` a count; ``min-power``
        the power at the drop of interest (``None`` when undefined; with groups, the lower of the
        classes' and the groups'); ``max-group-drop`` and ``max-group-accuracy-drop`` as the class
        rules, for groups (``None`` without groups too).
    not_applicable : tuple of str
        Enabled rules that could not be checked: the group rules of an audit without groups.
        They neither pass nor fail.
    inconclusive : tuple of GateInconclusive
        Rules that saw a drop beyond their limit that was not significant. They keep the gate
        from passing unless ``rules.allow_inconclusive``.
    """

    rules: GateRules
    failures: tuple[GateFailure, ...]
    observed: Mapping[str, float | int | None] = field(default_factory=lambda: MappingProxyType({}))
    not_applicable: tuple[str, ...] = ()
    inconclusive: tuple[GateInconclusive, ...] = ()

    @property
    def passed(self) -> bool:
        """No rule failed, and nothing was inconclusive unless that was allowed."""
        return not self.failures and (not self.inconclusive or self.rules.allow_inconclusive)

    @property
    def status(self) -> str:
        """``"failed"``, ``"inconclusive"`` (not allowed) or ``"passed"``."""
        if self.failures:
            return "failed"
        return "inconclusive" if not self.passed else "passed"

    def to_dict(self) -> dict[str, Any]:
        """The ``gate`` object of ``summary.json``."""
        return {
            "passed": self.passed,
            "status": self.status,
            "rules": self.rules.limits(),
            "not_applicable": list(self.not_applicable),
            "inconclusive": [
                {
                    "rule": i.rule,
                    "limit": i.limit,
                    "value": i.value,
                    "message": i.message,
                    "classes": list(i.classes),
                    "groups": list(i.groups),
                    "models_needed": list(i.models_needed),
                }
                for i in self.inconclusive
            ],
            "failures": [
                {
                    "rule": f.rule,
                    "limit": f.limit,
                    "value": f.value,
                    "message": f.message,
                    "classes": list(f.classes),
                    "groups": list(f.groups),
                }
                for f in self.failures
            ],
        }


def evaluate_gate(
    classes: pd.DataFrame,
    *,
    pie_fraction: float,
    accuracy_drop: float,
    stable_pie_fraction: float | None = None,
    power_at_detect: float | None = None,
    detect: float | None = None,
    rules: GateRules = GateRules(),
    class_names: Sequence[str] | None = None,
    groups: pd.DataFrame | None = None,
    group_power_at_detect: float | None = None,
    power_inputs: PowerInputs | None = None,
    group_power_inputs: PowerInputs | None = None,
    alpha: float = 0.05,
    correction: str = "fdr_bh",
) -> GateResult:
    """Check an audit's results against the gate's rules.

    Parameters
    ----------
    classes : DataFrame
        The per-class table of :func:`pie_audit.audit.class_statistics` (columns ``label``,
        ``normalized_change``, ``direction``; ``recall_change`` and ``recall_significant``
        for ``max-class-recall-drop``).
    pie_fraction : float
        Fraction of examples that are PIEs.
    accuracy_drop : float
        Mean baseline accuracy minus mean pruned accuracy.
    stable_pie_fraction : float, optional
        Fraction of examples that are stable PIEs; needed with ``stable_pies_only``.
    power_at_detect : float, optional
        The audit's power (median class) to detect a drop of ``detect``; ``None`` when
        undefined, which fails ``min-power``.
    detect : float, optional
        The drop of interest, for the ``min-power`` message.
    rules : GateRules
        The limits.
    class_names : sequence of str, optional
        Names in failures, indexed by label; default ``str(label)``.
    groups : DataFrame, optional
        The subgroup audit's table (:func:`pie_audit.audit.group_statistics`); without it the
        group rules are not applicable.
    group_power_at_detect : float, optional
        The median tested group's power against a drop of ``detect``; with ``groups``,
        ``min-power`` needs it too.
    power_inputs, group_power_inputs : PowerInputs, optional
        What each class's (group's, one per row of ``groups``) test power depends on: with them an
        inconclusive drop says how many models per population would settle it.
    alpha : float, default=0.05
        The tests' level, for that estimate.
    correction : {"fdr_bh", "none"}, default="fdr_bh"
        The tests' correction: with Benjamini-Hochberg a further discovery must reach
        ``alpha * (R + 1) / K`` (R discoveries among K tests), the level at which an inconclusive
        drop's detectable drop and models needed are stated.

    Returns
    -------
    GateResult
        With every rule's observed value, whether the rule is on or not.
    """
    harmed = harmed_classes(classes)
    fell = recall_fell(classes)
    harmed_g = harmed_groups(groups)
    fell_g = accuracy_fell(groups)
    stable = rules.stable_pies_only
    # With groups, min-power asks of whichever the audit sees worse: classes or groups.
    power_kind = "class"
    if groups is not None and (
        group_power_at_detect is None or (power_at_detect is not None and group_power_at_detect < power_at_detect)
    ):
        power_at_detect, power_kind = group_power_at_detect, "group"
    observed = {
        # Positive drops: the largest among the harmed classes, and among those that lost recall.
        "max-class-drop": -float(harmed["normalized_change"].iloc[0]) if len(harmed) else None,
        "max-class-recall-drop": -float(fell["recall_change"].iloc[0]) if len(fell) else None,
        "max-group-drop": -float(harmed_g["normalized_change"].iloc[0]) if len(harmed_g) else None,
        "max-group-accuracy-drop": -float(fell_g["accuracy_change"].iloc[0]) if len(fell_g) else None,
        "max-pie-fraction": stable_pie_fraction if stable else pie_fraction,
        "max-accuracy-drop": accuracy_drop,
        "max-harmed-classes": len(harmed),
        "min-power": power_at_detect,
    }

    def named(frame: pd.DataFrame) -> tuple[str, ...]:
        return tuple(str(class_names[int(k)]) if class_names is not None else str(int(k)) for k in frame["label"])

    def class_failure(rule: str, frame: pd.DataFrame, column: str, what: str) -> GateFailure | None:
        """The failure of a per-class rule by the rows beyond its limit (worst first), if any."""
        limit = getattr(rules, rule.replace("-", "_"))
        beyond = frame[frame[column] < -(limit + _SLACK)]
        if not len(beyond):
            return None
        listed = ", ".join(
            f"{n} ({_points(v, signed=True)}{_robust(r)})"
            for n, v, r in zip(named(beyond), beyond[column], _robustness(beyond), strict=True)
        )
        return GateFailure(
            rule=rule,
            limit=limit,
            value=observed[rule],
            message=f"{len(beyond)} class(es) {what.format(limit=_points(limit))}: {listed}",
            classes=named(beyond),
        )

    def group_failure(rule: str, frame: pd.DataFrame, column: str, what: str) -> GateFailure | None:
        """The failure of a per-group rule by the rows beyond its limit (worst first), if any."""
        limit = getattr(rules, rule.replace("-", "_"))
        beyond = frame[frame[column] < -(limit + _SLACK)]
        if not len(beyond):
            return None
        names = tuple(str(g) for g in beyond["group"])
        listed = ", ".join(
            f"{n} ({_points(v, signed=True)}{_robust(r)})"
            for n, v, r in zip(names, beyond[column], _robustness(beyond), strict=True)
        )
        return GateFailure(
            rule=rule,
            limit=limit,
            value=observed[rule],
            message=f"{len(beyond)} group(s) {what.format(limit=_points(limit))}: {listed}",
            groups=names,
        )

    failures: list[GateFailure | None] = []
    if rules.max_class_drop is not None:
        what = "significantly harmed, losing more than {limit} of recall beyond the models' average"
        failures.append(class_failure("max-class-drop", harmed, "normalized_change", what))
    if rules.max_class_recall_drop is not None:
        failures.append(class_failure("max-class-recall-drop", fell, "recall_change", "significantly lost more than {limit} of recall"))
    if groups is not None and rules.max_group_drop is not None:
        what = "significantly harmed, losing more than {limit} of accuracy beyond the models' average"
        failures.append(group_failure("max-group-drop", harmed_g, "normalized_change", what))
    if groups is not None and rules.max_group_accuracy_drop is not None:
        what = "significantly lost more than {limit} of accuracy"
        failures.append(group_failure("max-group-accuracy-drop", fell_g, "accuracy_change", what))
    if rules.max_pie_fraction is not None:
        value = observed["max-pie-fraction"]
        if value is None:
            raise ConfigError("stable-pies-only needs the fraction of stable PIEs")
        if value > rules.max_pie_fraction + _SLACK:
            what = "stable PIE fraction" if stable else "PIE fraction"
            failures.append(
                GateFailure(
                    rule="max-pie-fraction",
                    limit=rules.max_pie_fraction,
                    value=value,
                    message=f"{what} {value:.2%} exceeds the limit {rules.max_pie_fraction:.2%}",
                )
            )
    limit = rules.max_accuracy_drop
    if limit is not None and accuracy_drop > limit + _SLACK:
        failures.append(
            GateFailure(
                rule="max-accuracy-drop",
                limit=limit,
                value=accuracy_drop,
                message=f"mean accuracy dropped by {_points(accuracy_drop)}, more than the limit {_points(limit)}",
            )
        )
    if rules.max_harmed_classes is not None and len(harmed) > rules.max_harmed_classes:
        names = named(harmed.sort_values("label"))
        failures.append(
            GateFailure(
                rule="max-harmed-classes",
                limit=rules.max_harmed_classes,
                value=len(harmed),
                message=(
                    f"{len(harmed)} class(es) significantly harmed, more than the limit "
                    f"{rules.max_harmed_classes}: " + ", ".join(names)
                ),
                classes=names,
            )
        )
    if rules.min_power is not None and (power_at_detect is None or power_at_detect < rules.min_power - _SLACK):
        size = f" a {power_kind} drop of {_points(detect)}" if detect is not None else f" a {power_kind} drop"
        shown = "undefined (too few models, or no variation between them)" if power_at_detect is None else f"{power_at_detect:.2f}"
        failures.append(
            GateFailure(
                rule="min-power",
                limit=rules.min_power,
                value=float("nan") if power_at_detect is None else power_at_detect,
                message=f"the audit's power to detect{size} is {shown}, below the limit {rules.min_power:.2f}",
            )
        )
    unsettled: list[GateInconclusive | None] = []
    # Drops beyond a limit that the tests did not call: neither a pass nor a failure.
    if rules.max_class_drop is not None and "recall_change" in classes:
        rows = classes[(classes["recall_change"] < 0) & (classes["direction"] != "harmed")]
        level = _next_discovery_level(classes, "p_value", "significant", alpha, correction)
        unsettled.append(_inconclusive("max-class-drop", rules.max_class_drop, rows, "normalized_change",
                                       named, power_inputs, classes.index, level, kind="class"))
    if rules.max_class_recall_drop is not None and "recall_significant" in classes:
        rows = classes[~classes["recall_significant"].astype(bool)]
        level = _next_discovery_level(classes, "recall_p_value", "recall_significant", alpha, correction)
        unsettled.append(_inconclusive("max-class-recall-drop", rules.max_class_recall_drop, rows, "recall_change",
                                       named, power_inputs, classes.index, level, kind="class"))
    if groups is not None:
        tested = groups[groups["tested"].astype(bool)]
        if rules.max_group_drop is not None:
            rows = tested[(tested["accuracy_change"] < 0) & (tested["direction"] != "harmed")]
            level = _next_discovery_level(tested, "p_value", "significant", alpha, correction)
            unsettled.append(_inconclusive("max-group-drop", rules.max_group_drop, rows, "normalized_change",
                                           _group_names, group_power_inputs, groups.index, level, kind="group"))
        if rules.max_group_accuracy_drop is not None:
            rows = tested[~tested["accuracy_significant"].astype(bool)]
            # The groups' power inputs are those of the relative test: no models-needed estimate here.
            unsettled.append(_inconclusive("max-group-accuracy-drop", rules.max_group_accuracy_drop, rows,
                                           "accuracy_change", _group_names, group_power_inputs, groups.index, alpha,
                                           kind="group", estimate=False))
    enabled = rules.enabled()
    return GateResult(
        rules=rules,
        failures=tuple(f for f in failures if f is not None),
        observed=MappingProxyType(observed),
        not_applicable=tuple(r for r in GROUP_RULES if r in enabled) if groups is None else (),
        inconclusive=tuple(i for i in unsettled if i is not None),
    )


#: Inconclusive classes (groups) listed by name in a rule's message; the rest are counted.
INCONCLUSIVE_SHOWN = 5


def _next_discovery_level(frame: pd.DataFrame, p_column: str, significant: str, alpha: float, correction: str) -> float:
    """The level one more discovery must reach: ``alpha * (R + 1) / K`` under Benjamini-Hochberg.

    With R of the K tested rows significant, a further row is significant when its p-value is at
    most that (the step-up rule at rank R + 1); without a correction, ``alpha``. Tables without
    p-values (hand-made ones) get ``alpha``.
    """
    if correction == "none" or p_column not in frame or significant not in frame:
        return alpha
    tested = frame[p_column].notna().to_numpy()
    k = int(tested.sum())
    if not k:
        return alpha
    found = int(frame[significant].to_numpy(dtype=bool)[tested].sum())
    return alpha * min(found + 1, k) / k


def _group_names(frame: pd.DataFrame) -> tuple[str, ...]:
    return tuple(str(g) for g in frame["group"])


def _inconclusive(
    rule: str,
    limit: float,
    rows: pd.DataFrame,
    column: str,
    names,  # noqa: ANN001 - rows -> their names
    inputs: PowerInputs | None,
    index: pd.Index,
    alpha: float,
    *,
    kind: str,
    estimate: bool = True,
) -> GateInconclusive | None:
    """The rows of ``rows`` beyond ``limit`` on ``column`` (all of them not significant), as one entry.

    ``estimate``: whether ``inputs`` are those of this rule's test, so that the detectable drop and
    the models needed can be stated (not for the groups' absolute test, whose spread differs).
    """
    beyond = rows[rows[column] < -(limit + _SLACK)].sort_values(column, kind="stable")
    if not len(beyond):
        return None
    drops = -beyond[column].to_numpy(dtype=float)
    needed = np.full(len(beyond), np.nan)
    mdes = beyond["mde"].to_numpy(dtype=float) if "mde" in beyond else np.full(len(beyond), np.nan)
    if inputs is not None and estimate:
        # At the level this row would have had to reach (``alpha`` is the next discovery's level).
        subset = inputs.subset(index.get_indexer(beyond.index))
        needed = models_needed(subset, drops, alpha=alpha)
        # Only the rows the message names state their detectable drop: solved directly, since at
        # a level this small (alpha / K for K classes) the interpolated curve costs seconds to
        # build (4.5 s at 21,843 classes), and a solve of five tests a few milliseconds.
        shown = subset.subset(np.arange(min(len(beyond), INCONCLUSIVE_SHOWN)))
        mdes = np.full(len(beyond), np.nan)
        mdes[:INCONCLUSIVE_SHOWN] = minimum_detectable_effect(*shown.se_df(), alpha=alpha, exact=True)
    counts = _model_counts(inputs)
    beyond_average = " beyond the models' average" if column == "normalized_change" else ""
    rate = "recall" if kind == "class" else "accuracy"
    baseline = beyond[f"baseline_{rate}_mean"].to_numpy(dtype=float) if f"baseline_{rate}_mean" in beyond else None
    items = []
    for i, (name, drop, mde) in enumerate(zip(names(beyond), drops, mdes, strict=True)):
        text = f"{kind} {name} lost {100 * drop:.1f} points{beyond_average}, not significant{counts}"
        if estimate and (column == "normalized_change" or kind == "class"):
            # A class's mde serves both of its tests (centring on a constant keeps the spread).
            reach = baseline[i] if baseline is not None else 1.0
            if np.isnan(mde):
                text += "; no t-test was possible"
            elif mde > min(reach, 1.0):
                text += f"; these models cannot detect any drop of this {kind}"
            else:
                text += f"; its detectable drop is {100 * mde:.0f} points"
        n = needed[i]
        if np.isinf(n):
            text += f"; more than {MAX_MODELS:,} models would be needed to settle it"
        elif np.isfinite(n):
            text += f"; about {int(n)} models would settle it"
        items.append(text)
    more = f"; and {len(items) - INCONCLUSIVE_SHOWN} more" if len(items) > INCONCLUSIVE_SHOWN else ""
    listed = names(beyond)
    return GateInconclusive(
        rule=rule,
        limit=limit,
        value=float(drops[0]),
        message="; ".join(items[:INCONCLUSIVE_SHOWN]) + more,
        classes=listed if kind == "class" else (),
        groups=listed if kind == "group" else (),
        models_needed=tuple(int(n) if np.isfinite(n) else None for n in needed),
    )


def _model_counts(inputs: PowerInputs | None) -> str:
    """`` with 5 models`` (each population), `` with 3 baseline and 5 pruned models``, `` with 5 pairs``."""
    if inputs is None:
        return ""
    if inputs.design == "paired":
        return f" with {inputs.n_baseline} pairs"
    if inputs.n_baseline == 1 and inputs.n_pruned == 1:
        return " (one model against one)"
    if inputs.n_baseline == inputs.n_pruned:
        return f" with {inputs.n_baseline} models"
    return f" with {inputs.n_baseline} baseline and {inputs.n_pruned} pruned models"


def _robustness(frame: pd.DataFrame) -> np.ndarray:
    """Each row's ``robustness`` (NaN where the table has none)."""
    return frame["robustness"].to_numpy(dtype=float) if "robustness" in frame else np.full(len(frame), np.nan)


def _robust(value: float) -> str:
    """``, robustness 0.97`` for a harmed class or group, nothing where undefined."""
    return "" if np.isnan(value) else f", robustness {value:.2f}"


def _points(fraction: float, *, signed: bool = False) -> str:
    """A fraction as percentage points: 0.02 -> '2.0 points'."""
    return f"{100 * fraction:{'+' if signed else ''}.1f} points"


def junit_xml(
    result: GateResult, *, name: str = "pie-audit gate", properties: Mapping[str, Any] | None = None
) -> str:
    """The gate as JUnit XML: one test case per enabled rule, failed ones with their message,
    inconclusive ones as failures of type ``inconclusive`` (or, when allowed, passed with the
    finding in ``<system-out>``), and rules that do not apply (the group rules without groups) skipped.

    Parameters
    ----------
    result : GateResult
    name : str
        The test suite's name.
    properties : mapping, optional
        Recorded as the suite's ``<properties>`` (where the rules came from, the test used, ...);
        ``None`` values are written as empty strings.

    Returns
    -------
    str
        An XML document.
    """
    failed = {f.rule: f for f in result.failures}
    unsettled = {i.rule: i for i in result.inconclusive if i.rule not in failed}
    allowed = result.rules.allow_inconclusive
    enabled = result.rules.enabled()
    limits = result.rules.limits()
    suite = ET.Element(
        "testsuite",
        name=name,
        tests=str(len(enabled)),
        failures=str(len(failed) + (0 if allowed else len(unsettled))),
        errors="0",
        skipped=str(len(result.not_applicable)),
    )
    if properties:
        props = ET.SubElement(suite, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", name=str(key), value="" if value is None else str(value))
    for rule in enabled:
        relation = ">=" if rule == "min-power" else "<="
        case = ET.SubElement(suite, "testcase", classname="pie-audit.gate", name=f"{rule} {relation} {limits[rule]}")
        if rule in failed:
            failure = ET.SubElement(case, "failure", message=failed[rule].message, type=rule)
            failure.text = failed[rule].message
        elif rule in unsettled and not allowed:
            # Its own type, so that a CI reader tells "too few models to tell" from "harmed".
            message = f"inconclusive: {unsettled[rule].message}"
            failure = ET.SubElement(case, "failure", message=message, type="inconclusive")
            failure.text = message
        elif rule in unsettled:
            ET.SubElement(case, "system-out").text = f"inconclusive, allowed: {unsettled[rule].message}"
        elif rule in result.not_applicable:
            ET.SubElement(case, "skipped", message="not applicable: the audit has no groups")
    suites = ET.Element("testsuites", name=name, tests=suite.get("tests"), failures=suite.get("failures"))
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
