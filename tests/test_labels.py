"""Label issues among PIEs: cleanlab's flags on the baseline's mean probabilities, Fisher's test."""

import json

import numpy as np
import pandas as pd
import pytest
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from scipy import stats

import pie_audit
from pie_audit import Population
from pie_audit.audit._labels import NO_PROBABILITIES, label_issue_enrichment, label_issues

N_CLASSES = 4


def _probabilities(predictions, labels, *, seed, confidence=0.8):
    """Softmax-like rows whose arg-max is each model's prediction."""
    rng = np.random.default_rng(seed)
    m, n = predictions.shape
    noise = rng.dirichlet(np.ones(N_CLASSES), size=(m, n)) * (1 - confidence)
    noise[np.arange(m)[:, None], np.arange(n)[None, :], predictions] += confidence
    return noise.astype(np.float32)


def _mislabelled(seed=0):
    """600 examples; 40 of them labelled wrongly: every dense model confidently predicts another class.

    The pruned models flip most of the mislabelled ones (they are the PIEs), and a few others.
    """
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(N_CLASSES), 150)
    labels = truth.copy()
    wrong = rng.choice(600, 40, replace=False)
    labels[wrong] = (truth[wrong] + 1) % N_CLASSES
    base = np.where(rng.random((6, 600)) < 0.95, truth, (truth + 2) % N_CLASSES)
    pruned = base.copy()
    pruned[:, wrong[:30]] = labels[wrong[:30]]  # pruning "fixes" them: the modal label moves
    others = rng.choice(np.setdiff1d(np.arange(600), wrong), 30, replace=False)
    pruned[:, others] = (truth[others] + 3) % N_CLASSES
    return labels, base, pruned, wrong


def test_flags_and_scores_are_cleanlabs_on_the_mean_probabilities():
    labels, base, pruned, wrong = _mislabelled()
    probs = _probabilities(base, labels, seed=1)
    result = pie_audit.compare(
        Population.from_arrays(base, labels, probabilities=probs),
        Population.from_arrays(pruned, labels, name="pruned"), n_bootstrap=10,
    )  # fmt: skip
    mean = probs.astype(np.float64).mean(axis=0)
    mean /= mean.sum(axis=1, keepdims=True)
    expected_issue = find_label_issues(labels, mean, filter_by="prune_by_noise_rate", n_jobs=1)
    expected_quality = get_label_quality_scores(labels, mean, method="self_confidence")
    examples = result.examples.sort_values("example_id")
    np.testing.assert_array_equal(examples["label_issue"].to_numpy(dtype=bool), expected_issue)
    np.testing.assert_allclose(examples["label_quality"].to_numpy(), expected_quality, rtol=1e-6)
    assert len(set(np.flatnonzero(expected_issue)) & set(wrong)) >= 0.9 * len(wrong)  # the planted errors are found
    # Enrichment among PIEs, against scipy's Fisher test on the same table.
    pie = examples["pie"].to_numpy()
    table = [[int((pie & expected_issue).sum()), int((pie & ~expected_issue).sum())],
             [int((~pie & expected_issue).sum()), int((~pie & ~expected_issue).sum())]]  # fmt: skip
    odds, p = stats.fisher_exact(table)
    summary = json.loads(json.dumps(result.to_summary(), allow_nan=False))["pies"]
    assert summary["label_issue_fraction"] == pytest.approx(table[0][0] / sum(table[0]))
    assert summary["non_pie_label_issue_fraction"] == pytest.approx(table[1][0] / sum(table[1]))
    assert summary["label_issue_odds_ratio"] == pytest.approx(odds)
    assert summary["label_issue_p_value"] == pytest.approx(p)
    assert summary["label_issue_fraction"] > 0.4 > summary["non_pie_label_issue_fraction"] and p < 1e-6
    assert NO_PROBABILITIES not in result.notes


def test_probabilities_read_from_files(tmp_path):
    labels, base, pruned, _ = _mislabelled(seed=2)
    probs = _probabilities(base, labels, seed=3)
    pie_audit.write_population(tmp_path / "base", Population.from_arrays(base, labels, probabilities=probs))
    pie_audit.write_population(tmp_path / "pruned", Population.from_arrays(pruned, labels))
    on_disk = pie_audit.compare(tmp_path / "base", tmp_path / "pruned", n_bootstrap=10)
    in_memory = pie_audit.compare(
        Population.from_arrays(base, labels, probabilities=probs), Population.from_arrays(pruned, labels), n_bootstrap=10
    )
    np.testing.assert_array_equal(on_disk.examples["label_issue"].to_numpy(dtype=bool), in_memory.examples["label_issue"].to_numpy(dtype=bool))
    on_disk.save(tmp_path / "report")
    written = pd.read_parquet(tmp_path / "report" / "examples.parquet")
    assert written["label_issue"].dtype == "boolean" and written["label_issue"].any()
    assert "likely label issue" in (tmp_path / "report" / "report.html").read_text()


def test_without_probabilities_everything_is_null_and_a_note_says_why(harmed_populations):
    result = pie_audit.compare(*harmed_populations, n_bootstrap=10)
    assert result.examples["label_issue"].isna().all() and result.examples["label_quality"].isna().all()
    summary = json.loads(json.dumps(result.to_summary(), allow_nan=False))["pies"]
    assert all(summary[k] is None for k in ("label_issue_fraction", "non_pie_label_issue_fraction", "label_issue_odds_ratio", "label_issue_p_value"))
    assert NO_PROBABILITIES in result.notes


def test_enrichment_against_scipy_and_empty_sides():
    rng = np.random.default_rng(4)
    pie = rng.random(300) < 0.2
    issue = rng.random(300) < np.where(pie, 0.3, 0.05)
    found = label_issue_enrichment(pie, issue)
    odds, p = stats.fisher_exact([[(pie & issue).sum(), (pie & ~issue).sum()], [(~pie & issue).sum(), (~pie & ~issue).sum()]])
    assert found.odds_ratio == pytest.approx(odds) and found.p_value == pytest.approx(p)
    none = label_issue_enrichment(np.zeros(10, bool), issue[:10])
    assert none.fraction is None and none.p_value is None and none.non_pie_fraction == issue[:10].mean()


def test_a_class_without_examples_is_a_note_not_a_warning():
    labels = np.repeat([0, 1, 2], 50)
    probs = np.full((150, 4), 0.05)
    probs[np.arange(150), labels] = 0.85
    found = label_issues(labels, probs)
    assert found.issue.shape == (150,) and not found.issue.any()
    assert all(isinstance(w, str) for w in found.warnings)


def test_label_issues_and_risk_per_group():
    from sklearn.metrics import roc_auc_score

    labels, base, pruned, _ = _mislabelled(seed=5)
    probs = _probabilities(base, labels, seed=6)
    site = np.where(np.arange(600) % 3 == 0, "north", "south")
    result = pie_audit.compare(
        Population.from_arrays(base, labels, probabilities=probs), Population.from_arrays(pruned, labels, name="p"),
        groups=pd.DataFrame({"example_id": np.arange(600), "site": site}), n_bootstrap=10,
    )  # fmt: skip
    examples = result.examples.set_index("example_id").loc[np.arange(600)]
    pie, issue, risk = examples["pie"].to_numpy(), examples["label_issue"].to_numpy(dtype=bool), examples["risk"].to_numpy()
    for row in result.groups.itertuples():
        mask = site == row.group.split("=")[1]
        a, b = (pie & issue & mask).sum(), (pie & ~issue & mask).sum()
        c, d = (~pie & issue & mask).sum(), (~pie & ~issue & mask).sum()
        assert row.label_issue_fraction == pytest.approx(a / (a + b))
        assert row.non_pie_label_issue_fraction == pytest.approx(c / (c + d))
        assert row.label_issue_p_value == pytest.approx(stats.fisher_exact([[a, b], [c, d]])[1])
        assert row.risk_auc == pytest.approx(roc_auc_score(pie[mask], risk[mask]))
