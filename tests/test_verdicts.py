"""Verdicts that cannot pass a collapse: inconclusive drops, honest power lines, robustness.

The cases are those of the hardening round (issue 20): a 2-model study whose pruned accuracy
collapsed, a class that 2 of 5 pruned models lost, a true pass, and harmed classes whose verdict
rests on few models.
"""

import json
import re
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd
import pytest

import pie_audit
from pie_audit import Population
from pie_audit.audit import GateRules, class_statistics
from pie_audit.audit._gate import evaluate_gate, junit_xml
from pie_audit.audit._pie import model_resamples
from pie_audit.audit._power import minimum_detectable_effect, t_test_power
from pie_audit.audit._stats import per_model_recall, power_inputs

from synthetic import planted_predictions, write_population

from cli_run import run

LABELS = np.repeat(np.arange(10), 100)


def _population(predictions, name):
    return Population.from_arrays(predictions, LABELS, name=name)


def _collapse():
    """2 + 2 models: 69% -> 14% on average, the two pruned models far apart (25% and 3%)."""
    base = planted_predictions(2, LABELS, accuracy=0.687, n_classes=10, seed=1)
    pruned = np.vstack(
        [
            planted_predictions(1, LABELS, accuracy=0.25, n_classes=10, seed=2),
            planted_predictions(1, LABELS, accuracy=0.028, n_classes=10, seed=3),
        ]
    )
    return base, pruned


def _hidden_class():
    """5 + 5 models, 90% accurate; class 9 at 98%, lost entirely by 2 of the 5 pruned models."""
    base = planted_predictions(5, LABELS, accuracy=0.9, n_classes=10, seed=3, class_accuracy={9: 0.98})
    pruned = planted_predictions(5, LABELS, accuracy=0.9, n_classes=10, seed=4, class_accuracy={9: 0.98})
    pruned[:2, LABELS == 9] = 0
    return base, pruned


def _points_in(text):
    return [float(x) for x in re.findall(r"(\d+(?:\.\d+)?) points", text)]


def test_a_collapse_is_never_a_pass():
    base, pruned = _collapse()
    result = pie_audit.compare(_population(base, "baseline"), _population(pruned, "pruned"))
    assert result.pruned.accuracy_mean < 0.2 and result.pies.fraction > 0.5
    assert result.harmed.empty  # nothing significant with two models a side...
    assert result.outcome == "inconclusive" and not result.gate.passed  # ...yet no pass
    assert result.verdict.startswith("gate INCONCLUSIVE: class ")
    rules = {i.rule for i in result.gate.inconclusive}
    assert "max-class-recall-drop" in rules
    # No line states a drop beyond 100 points: a recall cannot fall further.
    for text in (result.verdict, result.power_sentence(), *(i.message for i in result.gate.inconclusive)):
        assert all(v <= 100 for v in _points_in(text)), text


def test_a_collapse_says_it_cannot_detect_rather_than_quoting_an_impossible_drop():
    base, pruned = _collapse()
    result = pie_audit.compare(_population(base, "baseline"), _population(pruned, "pruned"))
    mde = result.classes["mde"].to_numpy()
    reach = result.classes["baseline_recall_mean"].to_numpy()
    assert np.nanmedian(mde) > 1  # what the old power line quoted: "254.1 points"
    assert result.power.undetectable_classes == int(np.sum(mde > reach))
    assert not result.power.median_detectable
    assert "these models cannot detect any drop of the median class" in result.power_sentence()
    assert "cannot detect any drop of this class" in result.verdict


def test_a_class_lost_by_two_of_five_models_makes_the_gate_inconclusive():
    base, pruned = _hidden_class()
    result = pie_audit.compare(_population(base, "baseline"), _population(pruned, "pruned"))
    row = result.classes.loc[9]
    assert not row["recall_significant"] and row["direction"] == "none"
    recall_b = per_model_recall(base, LABELS, n_classes=10)[:, 9]
    recall_p = per_model_recall(pruned, LABELS, n_classes=10)[:, 9]
    drop = recall_b.mean() - recall_p.mean()
    assert drop == pytest.approx(-row["recall_change"], abs=1e-12) and drop > 0.35
    [entry] = [i for i in result.gate.inconclusive if i.rule == "max-class-recall-drop"]
    assert entry.classes == ("9",) and entry.value == pytest.approx(drop, abs=1e-12)
    # The detectable drop, recomputed from the per-model recalls, at the level Benjamini-Hochberg
    # asks of one more discovery: alpha * (R + 1) / K with R of K classes already significant.
    inputs = power_inputs(base, pruned, LABELS, n_classes=10, test="welch")
    se, df = inputs.se_df()
    assert row["mde"] == pytest.approx(minimum_detectable_effect(se, df, alpha=0.05)[9], rel=1e-12)
    level = 0.05 * (int(result.classes["recall_significant"].sum()) + 1) / 10
    mde = minimum_detectable_effect(se, df, alpha=level)[9]
    # Models that would settle it: the smallest n at which the t-test reaches power 0.8 there.
    [n] = entry.models_needed
    one = inputs.subset([9])
    power_at = lambda k: float(t_test_power(drop, *one.se_df(k, k), alpha=level)[0])  # noqa: E731
    assert power_at(n) >= 0.8 > power_at(n - 1)
    # Beyond the class's own range (its baseline recall) no drop is detectable: said, not quoted.
    reach = recall_b.mean()
    detectable = f"its detectable drop is {100 * mde:.0f} points" if mde <= reach else "these models cannot detect any drop of this class"
    assert mde > reach
    assert entry.message == (
        f"class 9 lost {100 * drop:.1f} points, not significant with 5 models; "
        f"{detectable}; about {n} models would settle it"
    )
    assert result.verdict == f"gate INCONCLUSIVE: {entry.message}"
    # The power line names the class it cannot see, not only the median class.
    assert "least powered: class 9" in result.power_sentence()
    worst = result.to_summary()["power"]["worst"]
    assert worst[0]["name"] == "9" and worst[0]["mde"] == pytest.approx(row["mde"], rel=1e-12)


def test_a_true_pass_stays_a_pass():
    labels = np.repeat(np.arange(10), 1000)
    base = planted_predictions(10, labels, accuracy=0.9, n_classes=10, seed=5)
    pruned = planted_predictions(10, labels, accuracy=0.9, n_classes=10, seed=6)
    result = pie_audit.compare(
        Population.from_arrays(base, labels), Population.from_arrays(pruned, labels, name="pruned")
    )
    assert result.classes["recall_change"].min() > -0.02  # every observed drop within the limits
    assert result.gate.inconclusive == () and result.gate.passed
    assert result.outcome in ("passed", "underpowered")
    assert result.to_summary()["gate"]["status"] == "passed"


def test_allow_inconclusive_passes_and_says_what_it_let_through():
    base, pruned = _hidden_class()
    result = pie_audit.compare(
        _population(base, "baseline"), _population(pruned, "pruned"), rules={"allow_inconclusive": True}
    )
    assert result.gate.passed and result.gate.inconclusive
    assert result.outcome in ("passed", "underpowered")
    assert result.verdict.startswith("gate PASSED (inconclusive allowed: class 9 lost ")


def test_a_failure_outranks_an_inconclusive_drop():
    base, pruned = _hidden_class()
    pruned[:, LABELS == 3] = 0  # class 3 lost by every pruned model: significant
    result = pie_audit.compare(_population(base, "baseline"), _population(pruned, "pruned"))
    assert result.outcome == "failed" and result.gate.failures and result.gate.inconclusive
    assert result.gate.to_dict()["status"] == "failed"


def test_inconclusive_groups():
    labels = np.repeat(np.arange(4), 100)
    group = np.where(np.arange(400) % 100 < 40, "a", "b")
    base = planted_predictions(4, labels, accuracy=0.9, n_classes=4, seed=1)
    pruned = planted_predictions(4, labels, accuracy=0.9, n_classes=4, seed=2)
    pruned[0, group == "a"] = (labels[group == "a"] + 1) % 4  # one model of four loses group a
    result = pie_audit.compare(
        Population.from_arrays(base, labels),
        Population.from_arrays(pruned, labels, name="pruned"),
        groups=pd.DataFrame({"example_id": np.arange(400), "site": group}),
        rules={"max_class_drop": None, "max_class_recall_drop": None},
    )
    a = result.groups.set_index("group").loc["site=a"]
    assert a["accuracy_change"] < -0.05 and not a["accuracy_significant"]
    entries = {i.rule: i for i in result.gate.inconclusive}
    assert entries["max-group-accuracy-drop"].groups[0] == "site=a"
    assert entries["max-group-accuracy-drop"].message.startswith(
        f"group site=a lost {-100 * a['accuracy_change']:.1f} points, not significant with 4 models"
    )
    assert result.outcome == "inconclusive"


# --- the gate on its own, JUnit, summary.json and the CLI ---------------------------------------


def _table(**columns):
    n = len(columns["recall_change"])
    frame = {
        "label": np.arange(n),
        "normalized_change": columns["recall_change"],
        "direction": ["none"] * n,
        "recall_significant": [False] * n,
        "mde": [0.5] * n,
        "baseline_recall_mean": [0.9] * n,
    }
    frame.update(columns)
    return pd.DataFrame(frame)


def test_junit_marks_inconclusive_rules_with_their_own_type():
    classes = _table(recall_change=[-0.30, 0.0])
    result = evaluate_gate(classes, pie_fraction=0, accuracy_drop=0)
    assert result.status == "inconclusive" and not result.passed and result.failures == ()
    suite = ET.fromstring(junit_xml(result)).find("testsuite")
    assert suite.get("failures") == "2"
    types = {case.get("name"): case.find("failure").get("type") for case in suite.iter("testcase") if case.find("failure") is not None}
    assert types == {"max-class-drop <= 0.02": "inconclusive", "max-class-recall-drop <= 0.05": "inconclusive"}
    message = suite.find("testcase/failure").get("message")
    assert message.startswith("inconclusive: class 0 lost 30.0 points")
    allowed = evaluate_gate(classes, pie_fraction=0, accuracy_drop=0, rules=GateRules(allow_inconclusive=True))
    suite = ET.fromstring(junit_xml(allowed)).find("testsuite")
    assert allowed.passed and suite.get("failures") == "0"
    assert suite.find("testcase/system-out").text.startswith("inconclusive, allowed: class 0 lost 30.0 points")


def test_a_drop_within_the_limit_is_not_inconclusive():
    classes = _table(recall_change=[-0.019, -0.049], normalized_change=[-0.019, -0.019])
    assert evaluate_gate(classes, pie_fraction=0, accuracy_drop=0).status == "passed"


def test_undetectable_and_untestable_wording():
    classes = _table(recall_change=[-0.30, -0.40], mde=[0.95, np.nan])
    [entry, _] = evaluate_gate(classes, pie_fraction=0, accuracy_drop=0).inconclusive
    assert "class 1 lost 40.0 points beyond the models' average, not significant; no t-test was possible" in entry.message
    assert "class 0 lost 30.0 points beyond the models' average, not significant; these models cannot detect any drop of this class" in entry.message


def test_cli_inconclusive_exit_code_console_summary_and_junit(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base, pruned = _hidden_class()
    b = write_population(tmp_path / "b", base, LABELS)
    p = write_population(tmp_path / "p", pruned, LABELS)
    assert run("compare", b, p, "--out", tmp_path / "r", "--junit", tmp_path / "gate.xml", "--no-images") == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("gate INCONCLUSIVE: class 9 lost ")
    assert "  - max-class-recall-drop inconclusive: class 9 lost " in out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["gate"]["status"] == "inconclusive" and summary["gate"]["outcome"] == "inconclusive"
    assert summary["gate"]["passed"] is False and summary["gate"]["failures"] == []
    assert {i["rule"] for i in summary["gate"]["inconclusive"]} == {"max-class-drop", "max-class-recall-drop"}
    assert all(isinstance(n, int) for i in summary["gate"]["inconclusive"] for n in i["models_needed"])
    failure = ET.parse(tmp_path / "gate.xml").getroot().find("testsuite/testcase/failure")
    assert failure.get("type") == "inconclusive"
    # Passing it deliberately: exit 0, and the verdict still says what it let through.
    assert run("compare", b, p, "--out", tmp_path / "r", "--allow-inconclusive", "--no-images") == 0
    assert capsys.readouterr().out.startswith("gate PASSED (inconclusive allowed: class 9 lost ")
    # The same from [tool.pie-audit].
    (tmp_path / "pyproject.toml").write_text("[tool.pie-audit]\nallow-inconclusive = true\n")
    assert run("compare", b, p, "--out", tmp_path / "r", "--no-images") == 0


# --- robustness --------------------------------------------------------------------------------


def _harmed_pair(seed=0):
    labels = np.repeat(np.arange(6), 60)
    base = planted_predictions(6, labels, accuracy=0.9, n_classes=6, seed=seed)
    pruned = planted_predictions(6, labels, accuracy=0.9, n_classes=6, seed=seed + 1, class_accuracy={2: 0.4, 4: 0.8})
    return base, pruned, labels


@pytest.mark.parametrize("test", ["welch", "paired"])
def test_robustness_is_the_share_of_model_resamples_that_stay_harmed(test):
    base, pruned, labels = _harmed_pair()
    classes = class_statistics(base, pruned, labels, n_classes=6, n_bootstrap=10, seed=3, test=test)
    harmed = classes["direction"].to_numpy() == "harmed"
    assert harmed[2]
    # Independently: rerun the whole per-class audit on each resample of the models (pairs
    # drawn together for the paired test).
    resamples = model_resamples(base, pruned, n_resamples=100, seed=3)
    hits = np.zeros(6)
    for b in range(100):
        rows_p = resamples.rows(b) if test == "paired" else resamples.rows(b, pruned=True)
        again = class_statistics(base[resamples.rows(b)], pruned[rows_p], labels, n_classes=6, n_bootstrap=1, test=test)
        hits += again["direction"].to_numpy() == "harmed"
    np.testing.assert_array_equal(classes["robustness"].to_numpy()[harmed], hits[harmed] / 100)
    assert np.isnan(classes["robustness"].to_numpy()[~harmed]).all()
    assert classes.loc[2, "robustness"] == 1.0  # recall 40% against 90%: every resample agrees


def test_robustness_does_not_depend_on_model_order():
    base, pruned, labels = _harmed_pair(seed=10)
    a = class_statistics(base, pruned, labels, n_classes=6, n_bootstrap=10)["robustness"]
    b = class_statistics(base[::-1], pruned[[3, 1, 5, 0, 2, 4]], labels, n_classes=6, n_bootstrap=10)["robustness"]
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


def test_a_verdict_resting_on_one_model_is_fragile():
    labels = np.repeat(np.arange(5), 100)
    base = planted_predictions(5, labels, accuracy=0.9, n_classes=5, seed=1)
    pruned = planted_predictions(5, labels, accuracy=0.9, n_classes=5, seed=2, class_accuracy={1: 0.8})
    result = pie_audit.compare(Population.from_arrays(base, labels), Population.from_arrays(pruned, labels, name="p"), n_bootstrap=10)
    row = result.classes.loc[1]
    assert row["direction"] == "harmed" and 0.01 < row["q_value"] < 0.05
    assert 0.5 < row["robustness"] < 1  # near the threshold: some resamples lose it
    # Shown beside the class, in the failure message and the report table.
    failure = next(f for f in result.gate.failures if f.rule == "max-class-drop")
    assert f"robustness {row['robustness']:.2f}" in failure.message


def test_robustness_is_undefined_for_mcnemar():
    base, pruned, labels = _harmed_pair()
    classes = class_statistics(base[:1], pruned[:1], labels, n_classes=6, test="mcnemar")
    assert np.isnan(classes["robustness"]).all()


def test_group_robustness_is_the_share_of_model_resamples_that_stay_harmed():
    from pie_audit.audit import group_statistics

    labels = np.repeat(np.arange(4), 150)
    site = pd.DataFrame({"site": np.where(np.arange(600) % 150 < 50, "a", np.where(np.arange(600) % 150 < 100, "b", "c"))})
    base = planted_predictions(6, labels, accuracy=0.9, n_classes=4, seed=1)
    pruned = planted_predictions(6, labels, accuracy=0.9, n_classes=4, seed=2)
    hurt = site["site"].to_numpy() == "a"
    flip = np.random.default_rng(0).random(pruned.shape) < 0.12
    pruned[flip & hurt] = (labels[None, :].repeat(6, 0)[flip & hurt] + 1) % 4
    groups = group_statistics(base, pruned, labels, site, n_bootstrap=10, seed=4)
    harmed = groups["direction"].to_numpy() == "harmed"
    assert harmed.any()
    resamples = model_resamples(base, pruned, n_resamples=100, seed=4)
    hits = np.zeros(len(groups))
    for b in range(100):
        again = group_statistics(base[resamples.rows(b)], pruned[resamples.rows(b, pruned=True)], labels, site, n_bootstrap=1)
        hits += again["direction"].to_numpy() == "harmed"
    np.testing.assert_array_equal(groups["robustness"].to_numpy()[harmed], hits[harmed] / 100)
    assert np.isnan(groups["robustness"].to_numpy()[~harmed]).all()
