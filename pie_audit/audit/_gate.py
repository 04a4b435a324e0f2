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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any
from xml.etree import ElementTree as ET

import pandas as pd

from ..errors import ConfigError
from ._groups import accuracy_fell, harmed_groups
from ._stats import harmed_classes, recall_fell

__all__ = [
    "GROUP_RULES",
    "GateRules",
    "GateFailure",
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
        if not isinstance(self.stable_pies_only, bool):
            raise ConfigError(
                BAD_RULE.format(rule="stable-pies-only", expected="true or false", value=self.stable_pies_only)
            )

    def limits(self) -> dict[str, Any]:
        """Every rule by its user-facing name, ``None`` where off."""
        return {rule_name(f.name): getattr(self, f.name) for f in fields(self)}

    def enabled(self) -> list[str]:
        """The user-facing names of the rules that are on (``stable-pies-only`` is an option)."""
        return [
            rule_name(f.name)
            for f in fields(self)
            if f.name != "stable_pies_only" and getattr(self, f.name) is not None
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
    """

    rules: GateRules
    failures: tuple[GateFailure, ...]
    observed: Mapping[str, float | int | None] = field(default_factory=lambda: MappingProxyType({}))
    not_applicable: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """The ``gate`` object of ``summary.json``."""
        return {
            "passed": self.passed,
            "rules": self.rules.limits(),
            "not_applicable": list(self.not_applicable),
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
        listed = ", ".join(f"{n} ({_points(v, signed=True)})" for n, v in zip(named(beyond), beyond[column], strict=True))
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
        listed = ", ".join(f"{n} ({_points(v, signed=True)})" for n, v in zip(names, beyond[column], strict=True))
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
    enabled = rules.enabled()
    return GateResult(
        rules=rules,
        failures=tuple(f for f in failures if f is not None),
        observed=MappingProxyType(observed),
        not_applicable=tuple(r for r in GROUP_RULES if r in enabled) if groups is None else (),
    )


def _points(fraction: float, *, signed: bool = False) -> str:
    """A fraction as percentage points: 0.02 -> '2.0 points'."""
    return f"{100 * fraction:{'+' if signed else ''}.1f} points"


def junit_xml(
    result: GateResult, *, name: str = "pie-audit gate", properties: Mapping[str, Any] | None = None
) -> str:
    """The gate as JUnit XML: one test case per enabled rule, failed ones with their message and
    rules that do not apply (the group rules without groups) skipped.

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
    enabled = result.rules.enabled()
    limits = result.rules.limits()
    suite = ET.Element(
        "testsuite",
        name=name,
        tests=str(len(enabled)),
        failures=str(len(failed)),
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
        elif rule in result.not_applicable:
            ET.SubElement(case, "skipped", message="not applicable: the audit has no groups")
    suites = ET.Element("testsuites", name=name, tests=suite.get("tests"), failures=suite.get("failures"))
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
