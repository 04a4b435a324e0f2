import dataclasses
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from pie_audit.errors import ConfigError
from pie_audit.audit._gate import GateRules, evaluate_gate, junit_xml


def _classes(changes, directions, recall_changes=None, recall_significant=None):
    n = len(changes)
    return pd.DataFrame(
        {
            "label": np.arange(n),
            "normalized_change": changes,
            "direction": directions,
            "recall_change": recall_changes if recall_changes is not None else changes,
            "recall_significant": recall_significant if recall_significant is not None else [False] * n,
        }
    )


CLASSES = _classes(
    [-0.10, -0.015, 0.05, -0.30, -0.02],
    ["harmed", "harmed", "helped", "none", "harmed"],
)


def test_default_rule_fails_on_significant_drop_beyond_limit():
    result = evaluate_gate(CLASSES, pie_fraction=0.5, accuracy_drop=0.5)
    assert not result.passed
    [failure] = result.failures
    assert failure.rule == "max-class-drop"
    # Class 3 dropped most but is not significant; class 4 dropped exactly the limit.
    assert failure.classes == ("0",)
    assert failure.value == pytest.approx(0.10)
    assert failure.message == (
        "1 class(es) significantly harmed, losing more than 2.0 points of recall beyond the "
        "models' average: 0 (-10.0 points)"
    )


def test_exact_limit_passes_despite_rounding():
    drop = 0.98 - 1.0  # -0.020000000000000018
    result = evaluate_gate(_classes([drop], ["harmed"]), pie_fraction=0, accuracy_drop=0)
    assert result.passed


def test_failing_classes_are_named_worst_first():
    names = ("cat", "dog", "3", "eel", "4")
    rules = GateRules(max_class_drop=0.01)
    result = evaluate_gate(CLASSES, pie_fraction=0, accuracy_drop=0, rules=rules, class_names=names)
    # The names, as documented: the label is in the per-class table, not in the name.
    assert result.failures[0].classes == ("cat", "4", "dog")


def test_nothing_harmed_passes():
    result = evaluate_gate(_classes([0.0, 0.1], ["none", "helped"]), pie_fraction=0.0, accuracy_drop=0.0)
    assert result.passed and result.failures == ()


@pytest.mark.parametrize(
    ("rules", "rule", "passes"),
    [
        (GateRules(max_class_drop=None, max_pie_fraction=0.2), "max-pie-fraction", True),
        (GateRules(max_class_drop=None, max_pie_fraction=0.1), "max-pie-fraction", False),
        (GateRules(max_class_drop=None, max_accuracy_drop=0.05), "max-accuracy-drop", True),
        (GateRules(max_class_drop=None, max_accuracy_drop=0.01), "max-accuracy-drop", False),
        (GateRules(max_class_drop=None, max_harmed_classes=3), "max-harmed-classes", True),
        (GateRules(max_class_drop=None, max_harmed_classes=2), "max-harmed-classes", False),
        (GateRules(max_class_drop=None, max_pie_fraction=0.1, stable_pies_only=True), "max-pie-fraction", True),
        (GateRules(max_class_drop=None, min_power=0.8), "min-power", True),
        (GateRules(max_class_drop=None, min_power=0.95), "min-power", False),
    ],
)
def test_optional_rules(rules, rule, passes):
    # Only the rule under test: the fixture's large drops that are not significant would make the
    # class rules inconclusive (tests/test_verdicts.py).
    rules = dataclasses.replace(rules, max_class_recall_drop=None)
    result = evaluate_gate(
        CLASSES, pie_fraction=0.15, stable_pie_fraction=0.05, accuracy_drop=0.03, power_at_detect=0.9,
        detect=0.02, rules=rules,
    )  # fmt: skip
    assert result.passed == passes
    if not passes:
        assert [f.rule for f in result.failures] == [rule]


def test_harmed_classes_message_names_them():
    rules = GateRules(max_class_drop=None, max_harmed_classes=0)
    [failure] = evaluate_gate(CLASSES, pie_fraction=0, accuracy_drop=0, rules=rules).failures
    assert failure.classes == ("0", "1", "4")
    assert failure.message == "3 class(es) significantly harmed, more than the limit 0: 0, 1, 4"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_class_drop": -0.1},
        {"max_pie_fraction": 2.0},
        {"max_accuracy_drop": True},
        {"max_harmed_classes": -1},
        {"max_harmed_classes": 1.5},
    ],
)
def test_rules_are_validated(kwargs):
    with pytest.raises(ConfigError):
        GateRules(**kwargs)


def test_to_dict():
    result = evaluate_gate(CLASSES, pie_fraction=0, accuracy_drop=0)
    d = result.to_dict()
    assert d["passed"] is False
    assert d["rules"] == {
        "max-class-drop": 0.02,
        "max-class-recall-drop": 0.05,
        "max-group-drop": 0.02,
        "max-group-accuracy-drop": 0.05,
        "max-pie-fraction": None,
        "max-accuracy-drop": None,
        "max-harmed-classes": None,
        "min-power": None,
        "stable-pies-only": False,
        "allow-inconclusive": False,
    }
    assert d["failures"][0]["rule"] == "max-class-drop"
    assert d["failures"][0]["classes"] == ["0"] and d["failures"][0]["groups"] == []
    # Without groups the group rules are neither passed nor failed.
    assert d["not_applicable"] == ["max-group-drop", "max-group-accuracy-drop"]


# --- JUnit ----------------------------------------------------------------------------------


def test_junit_xml():
    rules = GateRules(max_class_drop=0.02, max_class_recall_drop=None, max_pie_fraction=0.5)
    result = evaluate_gate(CLASSES, pie_fraction=0.1, accuracy_drop=0, rules=rules)
    root = ET.fromstring(junit_xml(result))
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "2")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "max-class-drop <= 0.02", "max-group-drop <= 0.02", "max-group-accuracy-drop <= 0.05", "max-pie-fraction <= 0.5",
    ]  # fmt: skip
    assert cases[0].find("failure").get("message") == result.failures[0].message
    # The group rules of an audit without groups are skipped, not passed.
    assert [c.find("skipped") is not None for c in cases] == [False, True, True, False]
    assert cases[3].find("failure") is None


def test_junit_xml_escapes_class_names():
    result = evaluate_gate(
        _classes([-0.5], ["harmed"]), pie_fraction=0, accuracy_drop=0, class_names=['<a&"b">']
    )
    root = ET.fromstring(junit_xml(result))
    assert '<a&"b"> (-50.0 points)' in root.find("testsuite/testcase/failure").get("message")


def test_class_recall_drop_rule_uses_the_absolute_test():
    classes = _classes(
        [-0.10, 0.05, -0.01],
        ["harmed", "none", "none"],
        recall_changes=[-0.12, -0.06, -0.2],
        recall_significant=[True, True, False],
    )
    rules = GateRules(max_class_drop=None, max_class_recall_drop=0.05)
    [failure] = evaluate_gate(classes, pie_fraction=0, accuracy_drop=0, rules=rules, class_names=["a", "b", "c"]).failures
    # c fell most but not significantly; b fell significantly although it is not "harmed".
    assert failure.rule == "max-class-recall-drop"
    assert failure.classes == ("a", "b") and failure.value == pytest.approx(0.12)
    assert failure.message == "2 class(es) significantly lost more than 5.0 points of recall: a (-12.0 points), b (-6.0 points)"


def test_min_power_fails_when_power_is_undefined():
    rules = GateRules(max_class_drop=None, min_power=0.5)
    [failure] = evaluate_gate(CLASSES, pie_fraction=0, accuracy_drop=0, power_at_detect=None, detect=0.02, rules=rules).failures
    assert failure.rule == "min-power" and "undefined" in failure.message


def test_junit_properties_record_where_the_rules_came_from():
    result = evaluate_gate(CLASSES, pie_fraction=0, accuracy_drop=0)
    root = ET.fromstring(junit_xml(result, properties={"rules": "/x/pyproject.toml", "test": "welch", "none": None}))
    props = {p.get("name"): p.get("value") for p in root.findall("testsuite/properties/property")}
    assert props == {"rules": "/x/pyproject.toml", "test": "welch", "none": ""}


def test_the_result_carries_what_every_rule_observed_on_or_off():
    classes = _classes(
        [-0.10, -0.015, 0.05, -0.30, -0.02],
        ["harmed", "harmed", "helped", "none", "harmed"],
        recall_changes=[-0.12, -0.01, 0.04, -0.30, -0.07],
        recall_significant=[True, False, True, False, True],
    )
    result = evaluate_gate(classes, pie_fraction=0.25, stable_pie_fraction=0.1, accuracy_drop=0.03, power_at_detect=0.4)
    observed = dict(result.observed)
    assert observed == pytest.approx(
        {"max-class-drop": 0.10, "max-class-recall-drop": 0.12, "max-pie-fraction": 0.25, "max-accuracy-drop": 0.03,
         "max-harmed-classes": 3, "min-power": 0.4, "max-group-drop": None, "max-group-accuracy-drop": None}  # fmt: skip
    )
    # A failure's value is what its rule observed.
    assert {f.rule: f.value for f in result.failures} == pytest.approx(
        {"max-class-drop": 0.10, "max-class-recall-drop": 0.12}
    )
    stable = evaluate_gate(classes, pie_fraction=0.25, stable_pie_fraction=0.1, accuracy_drop=0.0,
                           rules=GateRules(stable_pies_only=True))  # fmt: skip
    assert stable.observed["max-pie-fraction"] == 0.1


def test_nothing_harmed_or_fallen_is_observed_as_none():
    result = evaluate_gate(_classes([0.0, 0.1], ["none", "helped"]), pie_fraction=0.0, accuracy_drop=0.0)
    assert result.observed["max-class-drop"] is None and result.observed["max-class-recall-drop"] is None
    assert result.observed["max-harmed-classes"] == 0 and result.observed["min-power"] is None
