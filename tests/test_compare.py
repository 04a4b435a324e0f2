import json
import shutil
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

import pie_audit
from pie_audit import CompareResult
from pie_audit.errors import ConfigError, FormatError
from pie_audit.audit import Settings, audit_populations
from pie_audit.audit._gate import GateRules
from pie_audit.audit._stats import CLASS_COLUMNS
from pie_audit.interchange import load_population
from synthetic import planted_predictions, write_population

SUMMARY_KEYS = {
    "schema_version",
    "tool",
    "settings",
    "groups",
    "n_examples",
    "n_classes",
    "baseline",
    "pruned",
    "pies",
    "impacted",
    "test",
    "power",
    "config",
    "classes",
    "gate",
    "intensification",
    "notes",
}
CLASS_KEYS = {"name", "n_pies", *CLASS_COLUMNS}


def test_planted_harm_is_flagged_and_fails_the_gate(harmed_populations):
    result = pie_audit.compare(*harmed_populations)
    assert isinstance(result, CompareResult)
    assert result.harmed["label"].tolist() == [2]
    assert not result.gate.passed
    assert result.gate.failures[0].classes == ("2",)
    assert result.pies.count > 0


def test_identical_populations_flag_nothing_and_pass(identical_populations):
    result = pie_audit.compare(*identical_populations)
    assert result.gate.passed
    assert result.pies.count == 0 and result.pies.fraction == 0.0
    assert (result.examples["score"] == 0).all()
    assert not result.classes["significant"].any()
    assert result.pies.baseline_accuracy_pies is None
    assert result.pies.baseline_accuracy_non_pies == pytest.approx(result.baseline_accuracy.mean())


def test_pie_accuracies_and_counts(harmed_populations):
    result = pie_audit.compare(*harmed_populations)
    base = load_population(harmed_populations[0])
    pie = result.examples["pie"].to_numpy()
    correct = base.predictions == base.labels
    assert result.pies.count == pie.sum()
    assert result.pies.baseline_accuracy_pies == pytest.approx(correct[:, pie].mean())
    assert result.pies.baseline_accuracy_non_pies == pytest.approx(correct[:, ~pie].mean())
    tied = result.examples["baseline_tied"] | result.examples["pruned_tied"]
    assert result.pies.n_tied == tied.sum()
    per_class = np.bincount(base.labels[pie], minlength=5)
    assert result.classes["n_pies"].tolist() == per_class.tolist()
    # The paper's central finding holds in the planted case: PIEs are harder for both.
    assert result.pies.pruned_accuracy_pies < result.pies.pruned_accuracy_non_pies


def test_frames_are_sorted_and_typed(harmed_populations):
    result = pie_audit.compare(*harmed_populations)
    assert result.examples["example_id"].is_monotonic_increasing
    assert result.classes["name"].tolist() == ["0", "1", "2", "3", "4"]
    assert list(result.baseline_accuracy.index) == [f"model-{m:03d}" for m in range(8)]
    assert result.baseline_runs == {f"model-{m:03d}": None for m in range(8)}


def test_invariant_to_order_of_models_and_examples(tmp_path, harmed_populations, audit_labels):
    result = pie_audit.compare(*harmed_populations)
    # Same models under other names (so listed in another order), rows shuffled in every file.
    base = load_population(harmed_populations[0]).predictions
    pruned = load_population(harmed_populations[1]).predictions
    rng = np.random.default_rng(9)
    b = write_population(tmp_path / "b2", base[rng.permutation(8)], audit_labels, shuffle_seed=1)
    p = write_population(tmp_path / "p2", pruned[rng.permutation(8)], audit_labels, shuffle_seed=2)
    again = pie_audit.compare(b, p)
    pd.testing.assert_frame_equal(again.examples, result.examples)
    pd.testing.assert_frame_equal(again.classes, result.classes, rtol=1e-12)
    assert again.to_summary()["pies"] == result.to_summary()["pies"]


def test_summary_schema_is_strict_json(harmed_populations):
    result = pie_audit.compare(*harmed_populations)
    summary = json.loads(json.dumps(result.to_summary(), allow_nan=False))
    assert set(summary) == SUMMARY_KEYS
    assert summary["n_examples"] == 400
    for role in ("baseline", "pruned"):
        assert summary[role]["n_models"] == 8
        assert 0 <= summary[role]["accuracy_mean"] <= 1
        assert summary[role]["accuracy_std"] > 0
    assert set(summary["pies"]) >= {"count", "fraction", "n_tied"}
    assert len(summary["classes"]) == 5
    for row in summary["classes"]:
        assert set(row) == CLASS_KEYS
        assert isinstance(row["label"], int) and isinstance(row["significant"], bool)
        assert 0 <= row["baseline_recall_mean"] <= 1
    assert summary["classes"][2]["direction"] == "harmed"
    assert summary["gate"]["passed"] is False
    assert summary["gate"]["failures"][0]["classes"] == ["2"]
    assert summary["impacted"]["harmed"] == 1


def test_degenerate_cases_give_documented_values(tmp_path, audit_labels):
    # One model per population, class names with an extra class that has no example.
    base = planted_predictions(1, audit_labels, accuracy=0.9, n_classes=5, seed=1)
    pruned = planted_predictions(1, audit_labels, accuracy=0.8, n_classes=5, seed=2)
    names = ["a", "b", "c", "d", "e", "f"]
    b = write_population(tmp_path / "b", base, audit_labels, classes=names)
    p = write_population(tmp_path / "p", pruned, audit_labels, classes=names)
    result = pie_audit.compare(b, p, test="welch")
    summary = json.loads(json.dumps(result.to_summary(), allow_nan=False))
    assert summary["test"] == "welch"
    assert summary["baseline"]["accuracy_std"] is None
    assert all(row["p_value"] is None and not row["significant"] for row in summary["classes"])
    assert summary["power"]["median_mde"] is None and summary["power"]["models_needed"] is None
    assert summary["classes"][5]["support"] == 0
    assert summary["classes"][5]["baseline_recall_mean"] is None
    assert summary["classes"][5]["direction"] == "none"
    # Recall fell by about 10 points where one model a side can test nothing: not a pass.
    assert summary["gate"]["passed"] is False and summary["gate"]["status"] == "inconclusive"
    assert summary["gate"]["outcome"] == "inconclusive" and summary["gate"]["failures"] == []
    assert len(summary["notes"]) == 4  # one model a side, no example of class f, the test, no probabilities
    assert summary["baseline"]["n_models"] == 1
    assert result.baseline_runs["model-000"]["classes"] == names


def test_infinite_t_is_null_in_json(tmp_path):
    labels = np.array([0, 0, 1, 2])
    b = write_population(tmp_path / "b", np.array([[0, 0, 1, 2], [0, 0, 1, 0]]), labels)
    p = write_population(tmp_path / "p", np.array([[0, 0, 0, 0], [0, 0, 0, 1]]), labels)
    result = pie_audit.compare(b, p)
    assert result.classes.loc[1, "t_statistic"] == -np.inf
    row = result.to_summary()["classes"][1]
    assert row["t_statistic"] is None and row["p_value"] == 0.0


def test_tie_break_option(tmp_path):
    labels = np.array([0, 1])
    b = write_population(tmp_path / "b", np.array([[0, 1], [0, 1]]), labels)
    p = write_population(tmp_path / "p", np.array([[0, 1], [1, 1]]), labels)
    lowest = pie_audit.compare(b, p)
    highest = pie_audit.compare(b, p, tie_break="highest")
    assert lowest.pies.count == 0 and highest.pies.count == 1
    assert lowest.pies.n_tied == highest.pies.n_tied == 1


def test_gate_rules_are_applied(harmed_populations):
    result = pie_audit.compare(
        *harmed_populations, rules=GateRules(max_class_drop=None, max_class_recall_drop=None, max_accuracy_drop=0.5)
    )
    assert result.gate.passed
    result = pie_audit.compare(
        *harmed_populations, rules=GateRules(max_class_drop=None, max_class_recall_drop=None, max_pie_fraction=0.0)
    )
    assert [f.rule for f in result.gate.failures] == ["max-pie-fraction"]


def test_bad_settings_fail_before_reading(tmp_path):
    with pytest.raises(ConfigError):
        pie_audit.compare(tmp_path / "missing", tmp_path / "missing", correction="bonferroni")
    with pytest.raises(ConfigError):
        pie_audit.compare(tmp_path / "missing", tmp_path / "missing", tie_break="random")


def test_incompatible_populations(tmp_path, audit_labels):
    base = planted_predictions(2, audit_labels, accuracy=0.9, n_classes=5, seed=1)
    b = write_population(tmp_path / "b", base, audit_labels)
    p = write_population(tmp_path / "p", base[:, :300], audit_labels[:300])
    with pytest.raises(FormatError, match="evaluated on different examples"):
        pie_audit.compare(b, p)


def test_compare_populations_in_memory(harmed_populations):
    base, pruned = (load_population(p) for p in harmed_populations)
    result = pie_audit.compare(base, pruned)
    pd.testing.assert_frame_equal(result.classes, pie_audit.compare(*harmed_populations).classes)


def test_nothing_written_on_bad_input(tmp_path, identical_populations):
    shutil.rmtree(identical_populations[1] / "model-003")
    (identical_populations[1] / "model-003").mkdir()
    with pytest.raises(FormatError):
        pie_audit.compare(*identical_populations)


def test_repr_is_a_one_line_verdict(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 30)
    preds = np.where(rng.random((2, 30)) < 0.9, labels, (labels + 1) % 3)
    write_population(tmp_path / "b", preds, labels)
    write_population(tmp_path / "p", preds, labels)
    text = repr(pie_audit.compare(tmp_path / "b", tmp_path / "p"))
    assert text.startswith("<CompareResult: 30 examples, 3 classes; accuracy ")
    # Two models a side cannot show a 2-point class drop: the pass says so.
    assert "0 PIEs (0.00%)" in text and text.endswith("gate passed (underpowered)>")
    # The audit wing's own result names its own class.
    audit = audit_populations(tmp_path / "b", tmp_path / "p", settings=Settings())
    assert repr(audit) == text.replace("<CompareResult:", "<AuditResult:", 1)


def test_one_outcome_words_every_verdict(harmed_populations, identical_populations):
    failed = pie_audit.compare(*harmed_populations, n_bootstrap=200)
    assert failed.outcome == "failed"
    assert failed.verdict == f"gate FAILED ({len(failed.gate.failures)} rule(s))"
    assert failed.verdict_line(rules=False) == "FAILED"
    passed = pie_audit.compare(*identical_populations, n_bootstrap=200, detect=1.0)
    assert passed.outcome == "passed" and passed.verdict == "gate PASSED"
    underpowered = pie_audit.compare(*identical_populations, n_bootstrap=200)
    assert underpowered.outcome == "underpowered"
    assert underpowered.verdict == f"gate PASSED (underpowered: {underpowered.power_sentence()})"
    assert underpowered.verdict_line(power=False, passed="passed") == "passed (underpowered)"


def test_swapping_baseline_and_pruned_negates_the_effects(harmed_populations):
    forward = pie_audit.compare(*harmed_populations, n_bootstrap=200)
    backward = pie_audit.compare(*reversed(harmed_populations), n_bootstrap=200)
    f, b = forward.classes, backward.classes
    for column in ("recall_change", "normalized_change", "t_statistic"):
        np.testing.assert_allclose(b[column], -f[column], atol=1e-12)
    np.testing.assert_allclose(b["p_value"], f["p_value"])
    np.testing.assert_allclose(b["q_value"], f["q_value"])
    np.testing.assert_array_equal(b["baseline_recall_mean"], f["pruned_recall_mean"])
    swapped = {"harmed": "helped", "helped": "harmed", "none": "none"}
    assert b["direction"].tolist() == [swapped[d] for d in f["direction"]]
    assert (backward.n_harmed, backward.n_helped) == (forward.n_helped, forward.n_harmed)
    assert backward.accuracy_drop == pytest.approx(-forward.accuracy_drop)
    # A PIE is symmetric: the two modal labels differ whichever side is called pruned.
    np.testing.assert_array_equal(backward.examples["pie"], forward.examples["pie"])
    assert backward.pies.count == forward.pies.count


def test_derived_values_agree_with_the_frames(harmed_populations):
    result = pie_audit.compare(*harmed_populations)
    assert result.n_harmed == len(result.harmed) == 1
    assert result.n_helped == len(result.helped)
    assert result.baseline.n_models == 8 and result.pruned.n_models == 8
    assert result.baseline.accuracy_mean == pytest.approx(result.baseline_accuracy.mean())
    assert result.pruned.accuracy_std == pytest.approx(result.pruned_accuracy.std(ddof=1))
    assert result.pruned.accuracy_min == result.pruned_accuracy.min()
    assert result.accuracy_drop == pytest.approx(
        result.baseline_accuracy.mean() - result.pruned_accuracy.mean()
    )
    summary = result.to_summary()
    assert summary["impacted"] == {
        "harmed": result.n_harmed,
        "helped": result.n_helped,
        "recall_fell": int((result.classes["recall_significant"] & (result.classes["recall_change"] < 0)).sum()),
        "recall_rose": int((result.classes["recall_significant"] & (result.classes["recall_change"] > 0)).sum()),
    }
    assert summary["pruned"]["accuracy_std"] == result.pruned.accuracy_std


def test_settings_come_from_a_config_file_then_the_arguments(tmp_path, harmed_populations):
    config = tmp_path / "pyproject.toml"
    config.write_text(
        "[tool.pie-audit]\nalpha = 0.01\nmax-class-drop = 0.5\nmax-pie-fraction = 0.0\nseed = 3\n"
    )
    result = pie_audit.compare(*harmed_populations, config=config, seed=4, rules={"max_class_drop": 0.01})
    assert result.settings["alpha"] == 0.01 and result.settings["seed"] == 4
    assert result.gate.rules == pie_audit.GateRules(max_class_drop=0.01, max_pie_fraction=0.0)
    # A GateRules replaces every rule, whatever the file says.
    result = pie_audit.compare(*harmed_populations, config=config, rules=pie_audit.GateRules())
    assert result.gate.rules == pie_audit.GateRules()
    assert result.settings["alpha"] == 0.01


def test_settings_are_recorded_in_full(harmed_populations):
    result = pie_audit.compare(*harmed_populations)
    expected = {f.name for f in fields(pie_audit.Settings)} - {"rules", "source"}
    assert set(result.settings) == expected


# --- designs, power, stability, configuration -----------------------------------------------------


def test_one_model_each_gets_mcnemar(tmp_path, audit_labels):
    base = planted_predictions(1, audit_labels, accuracy=0.9, n_classes=5, seed=1)
    pruned = planted_predictions(1, audit_labels, accuracy=0.9, n_classes=5, seed=2, class_accuracy={2: 0.4})
    b = write_population(tmp_path / "b", base, audit_labels)
    p = write_population(tmp_path / "p", pruned, audit_labels)
    result = pie_audit.compare(b, p)
    assert result.test == "mcnemar" and result.to_summary()["test"] == "mcnemar"
    assert result.harmed["label"].tolist() == [2]
    assert any("these two models on this test set" in note for note in result.notes)
    with pytest.raises(ConfigError):
        pie_audit.compare(b, p, test="paired")


def _paired(tmp_path, audit_labels, *, parents):
    base = planted_predictions(4, audit_labels, accuracy=0.9, n_classes=5, seed=1)
    pruned = base.copy()
    rng = np.random.default_rng(0)
    for m in range(4):
        # Each pruned model loses 12 or 13 of its parent's class-2 examples.
        right = np.flatnonzero((audit_labels == 2) & (base[m] == 2))
        hurt = rng.choice(right, size=12 + m % 2, replace=False)
        pruned[m, hurt] = (audit_labels[hurt] + 1) % 5
    b = write_population(tmp_path / "b", base, audit_labels, run={})
    p = write_population(tmp_path / "p", pruned[::-1], audit_labels, run={})
    # write_population gives model m seed m; the pruned models were written in reverse order.
    for m, model in enumerate(sorted(p.iterdir())):
        run = json.loads((model / "run.json").read_text())
        run["parent"] = {"seed": parents[m]}
        (model / "run.json").write_text(json.dumps(run))
    return b, p, base, pruned


def test_pruned_models_naming_their_parents_are_tested_in_pairs(tmp_path, audit_labels):
    from scipy import stats as sps

    b, p, base, pruned = _paired(tmp_path, audit_labels, parents=[3, 2, 1, 0])
    result = pie_audit.compare(b, p, n_bootstrap=100)
    assert result.test == "paired"
    in_c = audit_labels == 2
    rb = (base[:, in_c] == 2).mean(axis=1)
    rp = (pruned[:, in_c] == 2).mean(axis=1)
    expected = sps.ttest_rel(rp, rb)
    assert result.classes.loc[2, "recall_p_value"] == pytest.approx(expected.pvalue)
    assert result.classes.loc[2, "direction"] == "harmed"
    # Asked for Welch, the same populations are tested as independent.
    assert pie_audit.compare(b, p, test="welch", n_bootstrap=100).test == "welch"


def test_parents_that_do_not_match_fall_back_to_welch_or_are_refused(tmp_path, audit_labels):
    b, p, *_ = _paired(tmp_path, audit_labels, parents=[0, 0, 1, 2])
    assert pie_audit.compare(b, p, n_bootstrap=50).test == "welch"
    with pytest.raises(ConfigError, match="two pruned models name the same parent"):
        pie_audit.compare(b, p, test="paired")


def test_power_summary_and_api(harmed_populations):
    result = pie_audit.compare(*harmed_populations, n_bootstrap=100)
    power = result.power
    assert power.detect == 0.02 and power.target == 0.8
    mde = result.classes["mde"].to_numpy()
    assert power.median_mde == pytest.approx(np.sort(mde)[len(mde) // 2])
    assert power.underpowered_classes == int((mde > 0.02).sum())
    # Asking about a larger drop needs fewer models.
    bigger = pie_audit.power(result, detect=0.1)
    assert bigger.detect == 0.1 and bigger.models_needed <= power.models_needed
    assert bigger.underpowered_classes <= power.underpowered_classes
    assert "this audit can detect class drops of" in result.power_sentence()


def test_stability_of_a_unanimous_and_a_swing_pie(tmp_path):
    labels = np.array([0, 1, 2, 0, 1, 2])
    base = np.tile(labels, (5, 1))
    pruned = base.copy()
    pruned[:, 0] = 1  # every pruned model moves example 0: a unanimous PIE
    pruned[:3, 1] = 2  # three of five move example 1: a PIE by one swing model
    b = write_population(tmp_path / "b", base, labels)
    p = write_population(tmp_path / "p", pruned, labels)
    result = pie_audit.compare(b, p, n_bootstrap=50)
    examples = result.examples.set_index("example_id")
    assert examples.loc[0, "pie"] and examples.loc[0, "stability"] == 1.0
    assert examples.loc[1, "pie"] and 0.2 < examples.loc[1, "stability"] < 0.9
    assert (examples.loc[2:, "stability"] == 0).all()
    assert result.pies.n_stable == 1
    assert "stability" in result.top_pies(10)


def test_config_source_is_recorded(tmp_path, harmed_populations):
    config = tmp_path / "pyproject.toml"
    config.write_text("[tool.pie-audit]\nmax-class-drop = 0.5\n")
    summary = pie_audit.compare(*harmed_populations, config=config, n_bootstrap=50).to_summary()
    assert summary["config"]["source"] == str(config)
    assert summary["config"]["rules"]["max-class-drop"] == 0.5
    assert summary["schema_version"] == 2
    assert set(summary["settings"]) == {"alpha", "correction", "tie-break", "test", "detect", "n-bootstrap", "confidence", "seed", "min-group-support"}
    assert pie_audit.compare(*harmed_populations, n_bootstrap=50).to_summary()["config"]["source"] is None


# --- auditing one's own models: arrays, names, flows, notebook display ---------------------------


def test_arrays_and_directories_give_identical_results(tmp_path, audit_labels):
    base = planted_predictions(4, audit_labels, accuracy=0.9, n_classes=5, seed=1)
    pruned = planted_predictions(4, audit_labels, accuracy=0.85, n_classes=5, seed=2, class_accuracy={1: 0.5})
    names = ["ant", "bee", "cat", "dog", "eel"]
    b = write_population(tmp_path / "base", base, audit_labels, classes=names)
    p = write_population(tmp_path / "pruned", pruned, audit_labels, classes=names)
    from_files = pie_audit.compare(b, p, n_bootstrap=200)
    from_arrays = pie_audit.compare(
        pie_audit.Population.from_arrays(base, audit_labels, classes=names, name="base"),
        pie_audit.Population.from_arrays(list(pruned), audit_labels, name="pruned"),
        n_bootstrap=200,
    )
    pd.testing.assert_frame_equal(from_arrays.classes, from_files.classes)
    pd.testing.assert_frame_equal(from_arrays.examples, from_files.examples)
    assert from_arrays.gate.to_dict() == from_files.gate.to_dict()
    assert from_arrays.baseline_dir is None and from_arrays.baseline_name == "base"
    assert from_arrays.to_summary()["baseline"]["path"] is None


def test_examples_and_top_pies_carry_class_names(tmp_path, audit_labels):
    base = planted_predictions(4, audit_labels, accuracy=0.9, n_classes=5, seed=1)
    pruned = planted_predictions(4, audit_labels, accuracy=0.8, n_classes=5, seed=2, class_accuracy={1: 0.3})
    names = ["ant", "bee", "cat", "dog", "eel"]
    result = pie_audit.compare(
        pie_audit.Population.from_arrays(base, audit_labels, classes=names),
        pie_audit.Population.from_arrays(pruned, audit_labels, classes=names),
        n_bootstrap=50,
    )
    examples = result.examples
    for column in ("label", "baseline_modal", "pruned_modal"):
        assert examples[f"{column}_name"].astype(str).tolist() == [names[k] for k in examples[column]]
    assert len(result.top_pies()) == min(10, result.pies.count)
    assert len(result.top_pies(None)) == result.pies.count


def test_pie_flows_count_where_pies_went():
    labels = np.array([0, 0, 0, 1, 1, 2])
    base = np.tile(labels, (3, 1))
    pruned = base.copy()
    pruned[:, 0] = 1  # three examples of class 0 now go to class 1 ...
    pruned[:, 1] = 1
    pruned[:, 2] = 2  # ... or 2
    pruned[:, 3] = 0  # one of class 1 goes to 0
    result = pie_audit.compare(
        pie_audit.Population.from_arrays(base, labels, classes=["zero", "one", "two"]),
        pie_audit.Population.from_arrays(pruned, labels),
        n_bootstrap=20,
    )
    flows = result.pie_flows
    assert flows[["baseline_modal_name", "pruned_modal_name", "count"]].values.tolist() == [
        ["zero", "one", 2], ["zero", "two", 1], ["one", "zero", 1],
    ]  # fmt: skip
    assert flows["count"].sum() == result.pies.count
    assert (flows["true_label_share"] == 1.0).all()  # the baseline was right on each


def test_notebook_display_is_a_compact_escaped_summary(tmp_path, audit_labels):
    base = planted_predictions(4, audit_labels, accuracy=0.9, n_classes=5, seed=1)
    pruned = planted_predictions(4, audit_labels, accuracy=0.8, n_classes=5, seed=2, class_accuracy={1: 0.3})
    names = ["<b>ant</b>", "bee", "cat", "dog", "eel"]
    result = pie_audit.compare(
        pie_audit.Population.from_arrays(base, audit_labels, classes=names),
        pie_audit.Population.from_arrays(pruned, audit_labels, classes=names),
        n_bootstrap=50,
    )
    html = result._repr_html_()
    assert result.verdict in html and "Classes that lost most recall" in html and "Top PIEs" in html
    assert "<b>ant</b>" not in html and "&lt;b&gt;ant&lt;/b&gt;" in html
    assert "<script" not in html and len(html) < 20_000
    # bee lost most recall: it heads the table.
    assert html.index("<td>bee</td>") < html.index("<td>cat</td>")
