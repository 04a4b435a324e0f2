"""The CI gate: rules over an audit's results, and the verdict as JUnit XML.

The gate passes unless a rule fails. Rules (all fractions in [0, 1]):

``max_class_drop`` (default 0.02)
    Fail when a class is significantly harmed and its ``normalized_change`` is below
    ``-max_class_drop``.
``max_pie_fraction`` (off by default)
    Fail when the fraction of examples that are PIEs exceeds it.
``max_accuracy_drop`` (off by default)
    Fail when mean baseline accuracy minus mean pruned accuracy exceeds it.
``max_harmed_classes`` (off by default)
    Fail when more classes than this are significantly harmed (any amount).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any
from xml.etree import ElementTree as ET

import pandas as pd

from .errors import ConfigError

__all__ = [
    "GateRules",
    "GateFailure",
    "GateResult",
    "evaluate_gate",
    "junit_xml",
]

# Floating-point slack so that a drop of exactly the limit (0.98 - 1.0 = -0.02000000000000002)
# does not count as "more than" the limit.
_SLACK = 1e-9

BAD_RULE = "{rule} must be {expected}, not {value!r}"


@dataclass(frozen=True)
class GateRules:
    """Limits the gate enforces; ``None`` turns a rule off."""

    max_class_drop: float | None = 0.02
    max_pie_fraction: float | None = None
    max_accuracy_drop: float | None = None
    max_harmed_classes: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_class_drop", "max_pie_fraction", "max_accuracy_drop"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value <= 1
                or math.isnan(value)
            ):
                raise ConfigError(BAD_RULE.format(rule=name, expected="a fraction in [0, 1]", value=value))
        value = self.max_harmed_classes
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(
                BAD_RULE.format(rule="max_harmed_classes", expected="a non-negative integer", value=value)
            )


@dataclass(frozen=True)
class GateFailure:
    """One rule that failed: its name, limit, the offending value and the classes involved."""

    rule: str
    limit: float
    value: float
    message: str
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateResult:
    """Outcome of :func:`evaluate_gate`."""

    rules: GateRules
    failures: tuple[GateFailure, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """The ``gate`` object of ``summary.json``."""
        return {
            "passed": self.passed,
            "rules": asdict(self.rules),
            "failures": [
                {
                    "rule": f.rule,
                    "limit": f.limit,
                    "value": f.value,
                    "message": f.message,
                    "classes": list(f.classes),
                }
                for f in self.failures
            ],
        }


def evaluate_gate(
    classes: pd.DataFrame,
    *,
    pie_fraction: float,
    accuracy_drop: float,
    rules: GateRules = GateRules(),
    class_names: list[str] | tuple[str, ...] | None = None,
) -> GateResult:
    """Check an audit's results against the gate's rules.

    Parameters
    ----------
    classes : DataFrame
        The per-class table of :func:`pie_audit.stats.class_statistics` (columns
        ``label``, ``normalized_change``, ``direction`` are used).
    pie_fraction : float
        Fraction of examples that are PIEs.
    accuracy_drop : float
        Mean baseline accuracy minus mean pruned accuracy.
    rules : GateRules
        The limits.
    class_names : sequence of str, optional
        Names used in failure messages, indexed by label; default ``str(label)``.

    Returns
    -------
    GateResult
    """
    harmed = classes[classes["direction"] == "harmed"]

    def named(frame: pd.DataFrame) -> tuple[str, ...]:
        return tuple(
            _class_name(int(label), class_names) for label in frame["label"]
        )

    failures: list[GateFailure] = []
    if rules.max_class_drop is not None:
        dropped = harmed[harmed["normalized_change"] < -(rules.max_class_drop + _SLACK)]
        dropped = dropped.sort_values(["normalized_change", "label"])
        if len(dropped):
            worst = float(dropped["normalized_change"].iloc[0])
            names = named(dropped)
            failures.append(
                GateFailure(
                    rule="max_class_drop",
                    limit=rules.max_class_drop,
                    value=-worst,
                    message=(
                        f"{len(dropped)} class(es) significantly harmed by more than "
                        f"{_points(rules.max_class_drop)} in normalized recall: "
                        + ", ".join(
                            f"{n} ({_points(v, signed=True)})"
                            for n, v in zip(names, dropped["normalized_change"], strict=True)
                        )
                    ),
                    classes=names,
                )
            )
    for rule, value, describe in (
        (
            "max_pie_fraction",
            pie_fraction,
            lambda v, lim: f"PIE fraction {v:.2%} exceeds the limit {lim:.2%}",
        ),
        (
            "max_accuracy_drop",
            accuracy_drop,
            lambda v, lim: f"mean accuracy dropped by {_points(v)}, more than the limit {_points(lim)}",
        ),
    ):
        limit = getattr(rules, rule)
        if limit is not None and value > limit + _SLACK:
            failures.append(GateFailure(rule=rule, limit=limit, value=value, message=describe(value, limit)))
    if rules.max_harmed_classes is not None and len(harmed) > rules.max_harmed_classes:
        names = named(harmed.sort_values("label"))
        failures.append(
            GateFailure(
                rule="max_harmed_classes",
                limit=rules.max_harmed_classes,
                value=len(harmed),
                message=(
                    f"{len(harmed)} class(es) significantly harmed, more than the limit "
                    f"{rules.max_harmed_classes}: " + ", ".join(names)
                ),
                classes=names,
            )
        )
    return GateResult(rules=rules, failures=tuple(failures))


def _class_name(label: int, class_names: list[str] | tuple[str, ...] | None) -> str:
    if class_names is None or str(class_names[label]) == str(label):
        return str(label)
    return f"{class_names[label]} [{label}]"


def _points(fraction: float, *, signed: bool = False) -> str:
    """A fraction as percentage points: 0.02 -> '2.0 points'."""
    return f"{100 * fraction:{'+' if signed else ''}.1f} points"


def junit_xml(result: GateResult, *, name: str = "pie-audit gate") -> str:
    """The gate as JUnit XML: one test case per enabled rule, failed ones with their message.

    Parameters
    ----------
    result : GateResult
    name : str
        The test suite's name.

    Returns
    -------
    str
        An XML document.
    """
    failed = {f.rule: f for f in result.failures}
    enabled = [f.name for f in fields(GateRules) if getattr(result.rules, f.name) is not None]
    suite = ET.Element(
        "testsuite",
        name=name,
        tests=str(len(enabled)),
        failures=str(len(failed)),
        errors="0",
        skipped="0",
    )
    for rule in enabled:
        case = ET.SubElement(
            suite, "testcase", classname="pie-audit.gate", name=f"{rule} <= {getattr(result.rules, rule)}"
        )
        if rule in failed:
            failure = ET.SubElement(case, "failure", message=failed[rule].message, type=rule)
            failure.text = failed[rule].message
    suites = ET.Element("testsuites", name=name, tests=suite.get("tests"), failures=suite.get("failures"))
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
