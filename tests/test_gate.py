from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from pie_audit.errors import ConfigError
from pie_audit.gate import GateRules, evaluate_gate, junit_xml


def _classes(changes, directions):
    return pd.DataFrame(
        {
            "label": np.arange(len(changes)),
            "normalized_change": changes,
            "direction": directions,
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
    assert failure.rule == "max_class_drop"
    # Class 3 dropped most but is not significant; class 4 dropped exactly the limit.
    assert failure.classes == ("0",)
    assert failure.value == pytest.approx(0.10)
    assert failure.message == (
        "1 class(es) significantly harmed by more than 2.0 points in normalized recall: "
        "0 (-10.0 points)"
    )


def test_exact_limit_passes_despite_rounding():
    drop = 0.98 - 1.0  # -0.020000000000000018
    result = evaluate_gate(_classes([drop], ["harmed"]), pie_fraction=0, accuracy_drop=0)
    assert result.passed


def test_failing_classes_are_named_worst_first():
    names = ("cat", "dog", "3", "eel", "4")
    rules = GateRules(max_class_drop=0.01)
    result = evaluate_gate(CLASSES, pie_fraction=0, accuracy_drop=0, rules=rules, class_names=names)
    assert result.failures[0].classes == ("cat [0]", "4", "dog [1]")


def test_nothing_harmed_passes():
    result = evaluate_gate(_classes([0.0, 0.1], ["none", "helped"]), pie_fraction=0.0, accuracy_drop=0.0)
    assert result.passed and result.failures == ()


@pytest.mark.parametrize(
    ("rules", "rule", "passes"),
    [
        (GateRules(max_class_drop=None, max_pie_fraction=0.2), "max_pie_fraction", True),
        (GateRules(max_class_drop=None, max_pie_fraction=0.1), "max_pie_fraction", False),
        (GateRules(max_class_drop=None, max_accuracy_drop=0.05), "max_accuracy_drop", True),
        (GateRules(max_class_drop=None, max_accuracy_drop=0.01), "max_accuracy_drop", False),
        (GateRules(max_class_drop=None, max_harmed_classes=3), "max_harmed_classes", True),
        (GateRules(max_class_drop=None, max_harmed_classes=2), "max_harmed_classes", False),
    ],
)
def test_optional_rules(rules, rule, passes):
    result = evaluate_gate(CLASSES, pie_fraction=0.15, accuracy_drop=0.03, rules=rules)
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
        "max_class_drop": 0.02,
        "max_pie_fraction": None,
        "max_accuracy_drop": None,
        "max_harmed_classes": None,
    }
    assert d["failures"][0]["rule"] == "max_class_drop"
    assert d["failures"][0]["classes"] == ["0"]


# --- JUnit ----------------------------------------------------------------------------------


def test_junit_xml():
    rules = GateRules(max_class_drop=0.02, max_pie_fraction=0.5)
    result = evaluate_gate(CLASSES, pie_fraction=0.1, accuracy_drop=0, rules=rules)
    root = ET.fromstring(junit_xml(result))
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["max_class_drop <= 0.02", "max_pie_fraction <= 0.5"]
    assert cases[0].find("failure").get("message") == result.failures[0].message
    assert cases[1].find("failure") is None


def test_junit_xml_escapes_class_names():
    result = evaluate_gate(
        _classes([-0.5], ["harmed"]), pie_fraction=0, accuracy_drop=0, class_names=['<a&"b">']
    )
    root = ET.fromstring(junit_xml(result))
    assert '<a&"b"> [0]' in root.find("testsuite/testcase/failure").get("message")
