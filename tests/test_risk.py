"""The dense-only risk ranking: scores, class table, AUC and top shares, mean probabilities, the
``risk`` directory and page, and ``pie-audit risk`` (docs/risk.md)."""

import doctest
import inspect
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

import pie_audit
from html_page import parse
from pie_audit import Population
from pie_audit.audit import baseline_risk, class_risk, modal_labels, risk_auc, risk_scores, top_share
from pie_audit.audit import _risk as risk_module
from pie_audit.errors import ConfigError, FormatError
from pie_audit.interchange import load_population, mean_probabilities
from pie_audit.interchange import _probabilities as probabilities_module
from pie_audit.report import RISK_FILES, write_risk
from synthetic import planted_predictions, write_population

from cli_run import run


def is_pie(baseline, pruned):
    """PIE flags computed directly: modal labels by counting each example's votes (lowest wins ties)."""
    n_classes = int(max(baseline.max(), pruned.max())) + 1

    def modal(p):
        return np.array([np.bincount(p[:, i], minlength=n_classes).argmax() for i in range(p.shape[1])])

    return modal(baseline) != modal(pruned)


def softmax_for(predictions, n_classes, seed):
    """Probabilities of shape (M, N, C) whose arg-max is ``predictions``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(*predictions.shape, n_classes))
    np.put_along_axis(logits, predictions[..., None], logits.max(axis=2, keepdims=True) + rng.uniform(0.1, 2, predictions.shape)[..., None], axis=2)
    p = np.exp(logits)
    return (p / p.sum(axis=2, keepdims=True)).astype(np.float32)


# ---- planted populations ---------------------------------------------------------------------


def split_populations(n=400, n_split=60, m=8, n_classes=5, seed=0):
    """A baseline unanimous (or 7 to 1) on most examples and split 5 to 3 on ``n_split`` of them,
    and a pruned population that flips exactly those: the split examples are the PIEs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    other = (labels + 1) % n_classes
    split = np.zeros(n, dtype=bool)
    split[rng.choice(n, n_split, replace=False)] = True
    base = np.tile(labels, (m, 1))
    base[:3, split] = other[split]  # 5 to 3 for the label
    loner = ~split & (rng.random(n) < 0.3)
    base[rng.integers(0, m), loner] = other[loner]  # 7 to 1
    pruned = np.tile(labels, (m, 1))
    pruned[:6, split] = other[split]  # 6 to 2 for the other class
    return labels, base, pruned, split


def independent_populations(n=2000, m=8, n_classes=5, seed=1):
    """A noisy baseline, and a pruned population flipping a random tenth of the examples chosen
    with no regard to how contested they are: the risk cannot foretell them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    base = planted_predictions(m, labels, accuracy=0.7, n_classes=n_classes, seed=seed)
    modal = modal_labels(base).labels
    flipped = rng.random(n) < 0.1
    pruned = base.copy()
    pruned[:, flipped] = (modal[flipped] + 1) % n_classes
    return labels, base, pruned, flipped


def test_risk_ranks_the_pies_of_a_split_baseline_first():
    labels, base, pruned, split = split_populations()
    flags = is_pie(base, pruned)
    assert np.array_equal(flags, split)  # the planting did what it says
    risk = risk_scores(base, labels)["risk"].to_numpy()
    assert risk_auc(risk, flags) == pytest.approx(1.0)
    assert top_share(risk, flags, 0.01) == 1.0
    assert top_share(risk, flags, 0.05) == 1.0
    # 5 to 3 is a vote margin of 2/8, 7 to 1 of 6/8, unanimous 1.
    assert set(np.round(risk[split], 6)) == {0.75}
    assert set(np.round(risk[~split], 6)) <= {0.0, 0.25}


def test_risk_cannot_rank_pies_chosen_at_random():
    labels, base, pruned, flipped = independent_populations()
    flags = is_pie(base, pruned)
    assert np.array_equal(flags, flipped)
    risk = risk_scores(base, labels)["risk"].to_numpy()
    auc = risk_auc(risk, flags)
    assert abs(auc - 0.5) < 0.06
    assert abs(top_share(risk, flags, 0.05) - flags.mean()) < 0.08


def test_with_probabilities_the_split_pies_still_rank_first():
    labels, base, pruned, split = split_populations()
    probabilities = softmax_for(base, 5, seed=3)
    mean = probabilities.astype(np.float64).mean(axis=0)
    scores = risk_scores(base, labels, probabilities=mean)
    assert scores["prob_margin"].notna().all() and scores["label_prob"].notna().all()
    assert risk_auc(scores["risk"], split) > 0.95


def test_the_score_takes_no_pruned_population(tmp_path):
    """Nothing of a pruned population enters: the same baseline ranks alike beside any pruned one."""
    assert not any("pruned" in name for name in inspect.signature(risk_scores).parameters)
    assert not any("pruned" in name for name in inspect.signature(baseline_risk).parameters)
    labels, base, pruned, split = split_populations()
    modal = modal_labels(base).labels
    other = np.tile(modal, (8, 1))  # flips a random tenth, blind to the baseline's margins
    flipped = np.random.default_rng(4).random(labels.size) < 0.1
    other[:, flipped] = (modal[flipped] + 1) % 5
    base_dir = write_population(tmp_path / "base", base, labels)
    before = baseline_risk(base_dir).table
    write_population(tmp_path / "pruned-a", pruned, labels)
    write_population(tmp_path / "pruned-b", other, labels)
    after = baseline_risk(base_dir).table
    pd.testing.assert_frame_equal(before, after)
    # The same score, two different audits: what changes is how well it foretold each.
    risk = after["risk"].to_numpy()
    assert risk_auc(risk, is_pie(base, pruned)) > 0.99
    assert np.array_equal(is_pie(base, other), flipped)
    assert abs(risk_auc(risk, flipped) - 0.5) < 0.15


# ---- the score and its parts, against direct computation -------------------------------------


def direct_parts(predictions, labels, probabilities=None):
    """vote_margin, label_vote, prob_margin, label_prob by counting and sorting each example."""
    m, n = predictions.shape
    vote_margin, label_vote, prob_margin, label_prob = [], [], [], []
    for i in range(n):
        counts = sorted(np.unique(predictions[:, i], return_counts=True)[1].tolist(), reverse=True) + [0]
        vote_margin.append((counts[0] - counts[1]) / m)
        label_vote.append(np.mean(predictions[:, i] == labels[i]))
        if probabilities is not None:
            top = np.sort(probabilities[i])[::-1]
            prob_margin.append(top[0] - (top[1] if top.size > 1 else 0))
            label_prob.append(probabilities[i, labels[i]])
    return np.array(vote_margin), np.array(label_vote), np.array(prob_margin), np.array(label_prob)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 7), n=st.integers(1, 12), c=st.integers(2, 6), seed=st.integers(0, 2**16), with_probabilities=st.booleans())
@example(m=1, n=3, c=2, seed=0, with_probabilities=False)
@example(m=4, n=5, c=2, seed=1, with_probabilities=True)
def test_parts_match_direct_computation(m, n, c, seed, with_probabilities):
    rng = np.random.default_rng(seed)
    predictions = rng.integers(0, c, (m, n))
    labels = rng.integers(0, c, n)
    probabilities = rng.dirichlet(np.ones(c), n) if with_probabilities else None
    scores = risk_scores(predictions, labels, probabilities=probabilities, n_classes=c)
    assert list(scores.columns) == list(risk_module.RISK_COLUMNS)
    vote_margin, label_vote, prob_margin, label_prob = direct_parts(predictions, labels, probabilities)
    np.testing.assert_allclose(scores["vote_margin"], vote_margin)
    np.testing.assert_allclose(scores["label_vote"], label_vote)
    assert np.array_equal(scores["baseline_modal"], modal_labels(predictions).labels)
    if with_probabilities:
        np.testing.assert_allclose(scores["prob_margin"], prob_margin, atol=1e-12)
        np.testing.assert_allclose(scores["label_prob"], label_prob)
        np.testing.assert_allclose(scores["risk"], 1 - (vote_margin + prob_margin) / 2, atol=1e-12)
    else:
        assert scores["prob_margin"].isna().all() and scores["label_prob"].isna().all()
        np.testing.assert_allclose(scores["risk"], 1 - vote_margin)
    assert ((scores["risk"] >= 0) & (scores["risk"] <= 1)).all()


def test_probability_margin_is_computed_in_row_blocks(monkeypatch):
    """Rows are partitioned a block at a time (no copy of all (N, C)); the blocks change nothing."""
    rng = np.random.default_rng(5)
    probabilities = rng.dirichlet(np.ones(7), 50)
    predictions = rng.integers(0, 7, (3, 50))
    whole = risk_scores(predictions, np.zeros(50, dtype=int), probabilities=probabilities)
    monkeypatch.setattr(risk_module, "_PARTITION_VALUES", 7 * 4)  # four rows at a time
    blocked = risk_scores(predictions, np.zeros(50, dtype=int), probabilities=probabilities)
    pd.testing.assert_frame_equal(whole, blocked)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: risk_scores([[0, 1]], [0]), risk_module.BAD_LABELS.format(n=2, shape=(1,))),
        (lambda: risk_scores([[0, -1]], [0, 1]), risk_module.BAD_PREDICTION_VALUES),
        (lambda: risk_scores([[0, 2]], [0, 1], n_classes=2), risk_module.BAD_N_CLASSES.format(n_classes=2, what="predictions", value=2)),
        (lambda: risk_scores([[0, 1]], [0, 1], probabilities=np.full((2, 1), 1.0)), risk_module.BAD_PROBABILITIES.format(n=2, label=1, shape=(2, 1))),
        (lambda: risk_auc([0.1, np.nan], [True, False]), risk_module.BAD_RISK.format(shape=(2,))),
        (lambda: risk_auc([0.1, 0.2], [True]), risk_module.LENGTH_MISMATCH.format(what="is_pie", got=1, n=2)),
        (lambda: top_share([0.1, 0.2], [True, False], 0), risk_module.BAD_FRACTION.format(what="fraction", value=0)),
        (lambda: top_share([0.1, 0.2], [True, False], 1.5), risk_module.BAD_FRACTION.format(what="fraction", value=1.5)),
    ],
)
def test_bad_arguments_are_refused_with_their_message(call, message):
    with pytest.raises(ConfigError) as e:
        call()
    assert str(e.value) == message


# ---- AUC and top shares ----------------------------------------------------------------------


def test_risk_auc_equals_sklearn_and_the_mann_whitney_u():
    rng = np.random.default_rng(11)
    risk = np.round(rng.random(300), 1)  # many ties: they count half in both
    flags = rng.random(300) < 0.2 + 0.5 * risk
    auc = risk_auc(risk, flags)
    assert auc == pytest.approx(roc_auc_score(flags, risk), abs=1e-12)
    u = mannwhitneyu(risk[flags], risk[~flags]).statistic
    assert auc == pytest.approx(u / (flags.sum() * (~flags).sum()), abs=1e-12)


def test_risk_auc_is_none_with_one_class_present():
    assert risk_auc([0.1, 0.5, 0.9], [False, False, False]) is None
    assert risk_auc([0.1, 0.5, 0.9], [True, True, True]) is None


def test_top_share_against_a_direct_sort():
    rng = np.random.default_rng(12)
    risk = np.round(rng.random(1000), 2)
    flags = rng.random(1000) < risk
    for fraction in (0.01, 0.05, 0.07, 0.5, 1.0):
        k = int(np.ceil(round(fraction * 1000, 9)))
        # By risk, highest first; among equals, the earlier example first.
        order = np.lexsort((np.arange(1000), -risk))
        assert top_share(risk, flags, fraction) == pytest.approx(flags[order[:k]].mean())
    assert top_share(risk, flags, 0.07) == pytest.approx(flags[np.lexsort((np.arange(1000), -risk))[:70]].mean())


def test_ties_at_the_cut_go_to_the_earlier_example():
    """Hand-worked: four equal risks, a top of two takes the first two, whatever the flags say."""
    assert top_share([0.5, 0.5, 0.5, 0.5], [False, False, True, True], 0.5) == 0.0
    assert top_share([0.5, 0.5, 0.5, 0.5], [True, True, False, False], 0.5) == 1.0
    assert risk_module.top_mask([0.1, 0.9, 0.9, 0.9], 0.5).tolist() == [False, True, True, False]
    # At least one example, however small the fraction.
    assert risk_module.top_mask([0.1, 0.9], 0.01).tolist() == [False, True]


# ---- per class -------------------------------------------------------------------------------


def test_class_risk_against_per_model_recalls():
    rng = np.random.default_rng(13)
    n_classes = 6
    labels = rng.integers(0, n_classes - 1, 500)  # class 5 has no example
    base = planted_predictions(7, labels, accuracy=0.8, n_classes=n_classes, seed=2, class_accuracy={1: 0.5})
    scores = risk_scores(base, labels)
    table = class_risk(scores, labels, n_classes=n_classes, top=0.1)
    assert list(table.columns) == list(risk_module.CLASS_RISK_COLUMNS)
    assert table["label"].tolist() == list(range(n_classes))
    accuracy = np.mean([(base[m] == labels).mean() for m in range(7)])
    recalls = [np.mean([(base[m, labels == c] == c).mean() for m in range(7)]) for c in range(n_classes - 1)]
    np.testing.assert_allclose(table["baseline_recall_mean"][:-1], recalls)
    np.testing.assert_allclose(table["dense_deficit"][:-1], np.array(recalls) - accuracy)
    assert table["dense_deficit"].iloc[1] == table["dense_deficit"].min()  # the planted hard class
    risk = scores["risk"].to_numpy()
    top = np.lexsort((np.arange(500), -risk))[:50]
    expected = np.bincount(labels[top], minlength=n_classes)
    assert table["high_risk"].tolist() == expected.tolist()
    np.testing.assert_allclose(table["high_risk_share"][:-1], expected[:-1] / np.bincount(labels, minlength=n_classes)[:-1])
    np.testing.assert_allclose(table["risk_mean"][:-1], [risk[labels == c].mean() for c in range(n_classes - 1)])
    empty = table.iloc[-1]
    assert empty["n_examples"] == 0 and empty["high_risk"] == 0
    assert np.isnan(empty["baseline_recall_mean"]) and np.isnan(empty["high_risk_share"])
    # A given accuracy is the one subtracted.
    given_accuracy = class_risk(scores, labels, n_classes=n_classes, accuracy=0.5, top=0.1)
    np.testing.assert_allclose(given_accuracy["dense_deficit"][:-1], np.array(recalls) - 0.5)


def test_class_risk_deficit_is_the_intensification_deficit(tmp_path):
    """The dense deficit equals what the audit's intensification test uses: baseline_recall_mean
    of class_statistics minus the baseline's mean accuracy."""
    from pie_audit.audit import class_statistics

    labels, base, pruned, _ = split_populations()
    stats = class_statistics(base, pruned, labels, n_classes=5, n_bootstrap=10, n_resamples=2)
    table = class_risk(risk_scores(base, labels), labels, n_classes=5)
    accuracy = float(np.mean([(row == labels).mean() for row in base]))
    np.testing.assert_allclose(table["dense_deficit"], stats["baseline_recall_mean"] - accuracy, atol=1e-12)


def test_class_risk_refuses_labels_that_are_not_the_scores():
    scores = risk_scores([[0, 1, 1]], [0, 1, 1])
    with pytest.raises(ConfigError) as e:
        class_risk(scores, [0, 1, 0], n_classes=2)
    assert str(e.value) == risk_module.LABELS_DISAGREE


# ---- mean probabilities ----------------------------------------------------------------------


def probability_population(m=4, n=60, c=5, seed=0, name="population"):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    predictions = planted_predictions(m, labels, accuracy=0.6, n_classes=c, seed=seed)
    probabilities = softmax_for(predictions, c, seed)
    ids = rng.permutation(1000)[:n]  # ids not 0..N-1, and not in order
    pop = Population.from_arrays(predictions, labels, example_ids=ids, probabilities=probabilities, name=name)
    return pop, probabilities, ids


def test_mean_probabilities_of_a_written_population_equal_the_numpy_mean(tmp_path):
    pop, probabilities, ids = probability_population()
    pie_audit.write_population(tmp_path / "p", pop)
    mean = mean_probabilities(tmp_path / "p")
    order = np.argsort(ids)  # load_population puts examples in id order
    expected = probabilities.astype(np.float64).mean(axis=0)[order]
    assert mean.shape == (60, 5) and mean.dtype == np.float64
    np.testing.assert_allclose(mean, expected, rtol=0, atol=1e-12)
    assert np.array_equal(load_population(tmp_path / "p").example_ids, np.sort(ids))
    # The same from the population read, and from the one in memory.
    np.testing.assert_allclose(mean_probabilities(load_population(tmp_path / "p")), expected, atol=1e-12)
    np.testing.assert_allclose(mean_probabilities(pop), expected, atol=1e-12)


def write_probability_files(path, predictions, labels, probabilities, *, ids=None, shuffle_seed=None, flat=False, drop=None):
    """Model files with ``prob_*`` columns, each in its own row order; ``drop``: models without them."""
    rng = np.random.default_rng(shuffle_seed)
    n = labels.size
    ids = np.arange(n) if ids is None else ids
    path.mkdir(parents=True)
    for m in range(predictions.shape[0]):
        order = rng.permutation(n) if shuffle_seed is not None else np.arange(n)
        columns = {"example_id": ids[order], "label": labels[order], "prediction": predictions[m, order]}
        if not (drop and m in drop):
            columns |= {f"prob_{k}": probabilities[m, order, k] for k in range(probabilities.shape[2])}
        file = path / f"model-{m}.parquet" if flat else path / f"model-{m}" / "predictions.parquet"
        file.parent.mkdir(exist_ok=True)
        pq.write_table(pa.table(columns), file)
    return path


@pytest.mark.parametrize("flat", [False, True])
def test_mean_probabilities_follow_example_ids_whatever_each_file_order(tmp_path, flat, monkeypatch):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, 80)
    predictions = planted_predictions(3, labels, accuracy=0.5, n_classes=7, seed=3)
    probabilities = softmax_for(predictions, 7, 3)
    ids = rng.permutation(80) * 3
    write_probability_files(tmp_path / "p", predictions, labels, probabilities, ids=ids, shuffle_seed=9, flat=flat)
    monkeypatch.setattr(probabilities_module, "BLOCK_COLUMNS", 3)  # 7 columns read in 3 blocks
    mean = mean_probabilities(tmp_path / "p")
    by_id = np.argsort(ids)
    np.testing.assert_allclose(mean, probabilities.astype(np.float64).mean(axis=0)[by_id], atol=1e-12)


def test_no_probability_columns_give_none(tmp_path):
    labels = np.arange(20) % 3
    write_population(tmp_path / "p", planted_predictions(3, labels, accuracy=0.8, n_classes=3, seed=0), labels)
    assert mean_probabilities(tmp_path / "p") is None
    assert mean_probabilities(Population.from_arrays([[0, 1]], [0, 1])) is None


def bad_files(tmp_path, change):
    """Two models with probabilities, the second changed by ``change(columns)``; returns its file."""
    labels = np.array([0, 1, 2, 1])
    predictions = np.array([[0, 1, 2, 1], [0, 1, 2, 2]])
    probabilities = softmax_for(predictions, 3, 0)
    path = write_probability_files(tmp_path / "p", predictions, labels, probabilities)
    file = path / "model-1" / "predictions.parquet"
    columns = pq.read_table(file).to_pydict()
    change(columns)
    pq.write_table(pa.table(columns), file)
    return path, file


def _set(column, row, value):
    def change(columns):
        columns[column][row] = value

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: [c.pop(f"prob_{k}") for k in range(3)], lambda p, f: probabilities_module.SOME_WITHOUT.format(path=f, reference=p / "model-0" / "predictions.parquet", count=3)),
        (lambda c: c.update(prob_3=[0.0] * 4), lambda p, f: probabilities_module.COUNT_MISMATCH.format(path=f, count=4, reference=p / "model-0" / "predictions.parquet", expected=3)),
        (lambda c: c.update(prob_4=c.pop("prob_2")), lambda p, f: probabilities_module.GAP_IN_COLUMNS.format(path=f, last=4, column="prob_2", problem="missing")),
        (_set("prob_1", 2, float("nan")), lambda p, f: probabilities_module.BAD_PROBABILITY.format(path=f, column="prob_1", value="nan", example_id=2)),
        (_set("prob_0", 3, -0.5), lambda p, f: probabilities_module.BAD_PROBABILITY.format(path=f, column="prob_0", value=-0.5, example_id=3)),
        (_set("prob_0", 1, 5.0), lambda p, f: None),
        (lambda c: c.update(prob_1=[str(v) for v in c["prob_1"]]), lambda p, f: probabilities_module.NOT_FLOAT.format(path=f, column="prob_1", type="string")),
        (_set("prob_2", 0, None), lambda p, f: probabilities_module.MISSING_PROBABILITIES.format(path=f, column="prob_2", count=1)),
    ],
    ids=["some-without", "wrong-count", "gap", "nan", "negative", "bad-sum", "not-float", "missing"],
)
def test_malformed_probabilities_are_refused_naming_the_file(tmp_path, change, message):
    path, file = bad_files(tmp_path, change)
    with pytest.raises(FormatError) as e:
        mean_probabilities(path)
    expected = message(path, file)
    if expected is None:  # the sum's value depends on the planted softmax: checked by its start
        assert str(e.value).startswith(f"{file}: the probabilities of example_id 1 sum to ")
        assert str(e.value).endswith(f"not 1 (within {probabilities_module.SUM_TOLERANCE}); expected softmax outputs, not logits or scores")
    else:
        assert str(e.value) == expected


def test_probability_columns_must_cover_the_classes(tmp_path):
    labels = np.array([0, 1, 2, 1])
    predictions = np.array([[0, 1, 2, 1]])
    two = np.full((1, 4, 2), 0.5, dtype=np.float32)
    write_probability_files(tmp_path / "p", predictions, labels, two)
    file = tmp_path / "p" / "model-0" / "predictions.parquet"
    with pytest.raises(FormatError) as e:
        mean_probabilities(tmp_path / "p")
    assert str(e.value) == probabilities_module.TOO_FEW_COLUMNS.format(path=file, count=2, column="label", value=2)
    # A population naming more classes than there are columns.
    three = np.full((1, 4, 3), 1 / 3, dtype=np.float32)
    write_probability_files(tmp_path / "q", predictions, labels, three)
    (tmp_path / "q" / "population.json").write_text(json.dumps({"format": "pie-audit-population/1", "classes": list("abcd")}))
    pop = load_population(tmp_path / "q")
    with pytest.raises(FormatError) as e:
        mean_probabilities(pop)
    assert str(e.value) == probabilities_module.CLASS_COUNT.format(
        path=tmp_path / "q" / "model-0" / "predictions.parquet", count=3, source=pop.classes_source, classes=4
    )


def test_a_repeated_probability_column_is_named():
    with pytest.raises(FormatError) as e:
        probabilities_module.probability_columns(["prob_0", "prob_1", "prob_1"], "f.parquet")
    assert str(e.value) == probabilities_module.GAP_IN_COLUMNS.format(path="f.parquet", last=1, column="prob_1", problem="repeated")


# ---- the baseline's ranking, written ---------------------------------------------------------


def test_baseline_risk_uses_the_probabilities_when_the_files_carry_them(tmp_path):
    pop, _, _ = probability_population()
    pie_audit.write_population(tmp_path / "p", pop)
    result = baseline_risk(tmp_path / "p", top=0.1)
    assert result.has_probabilities and result.notes == ()
    loaded = load_population(tmp_path / "p")
    expected = risk_scores(loaded.predictions, loaded.labels, probabilities=mean_probabilities(loaded))
    pd.testing.assert_frame_equal(result.table.drop(columns="example_id"), expected)
    assert result.table["example_id"].tolist() == loaded.example_ids.tolist()
    assert result.classes.columns.tolist()[:2] == ["label", "name"]
    assert result.classes["name"].tolist() == ["0", "1", "2", "3", "4"]
    assert int(result.classes["high_risk"].sum()) == 6  # ceil(0.1 * 60)


def test_baseline_risk_notes_what_limits_it(tmp_path):
    labels = np.arange(30) % 3
    write_population(tmp_path / "votes", planted_predictions(4, labels, accuracy=0.7, n_classes=3, seed=0), labels)
    assert baseline_risk(tmp_path / "votes").notes == (risk_module.NO_PROBABILITIES,)
    one = Population.from_arrays([labels], labels)
    result = baseline_risk(one)
    assert result.notes == (risk_module.ONE_MODEL,) and (result.table["risk"] == 0).all()
    probabilities = softmax_for(labels[None, :], 3, 0)
    with_probs = baseline_risk(Population.from_arrays([labels], labels, probabilities=probabilities))
    assert with_probs.notes == (risk_module.ONE_MODEL_PROBABILITIES,)
    assert (with_probs.table["risk"] <= 0.5).all()


@pytest.fixture
def escaped_population(tmp_path):
    """A baseline with probabilities whose class names are markup."""
    rng = np.random.default_rng(21)
    labels = rng.integers(0, 3, 90)
    predictions = planted_predictions(5, labels, accuracy=0.6, n_classes=3, seed=21)
    classes = ["<script>alert(1)</script>", "a & b", "plain"]
    pop = Population.from_arrays(predictions, labels, probabilities=softmax_for(predictions, 3, 21), classes=classes)
    return pie_audit.write_population(tmp_path / "base", pop)


def test_cli_writes_the_risk_directory(escaped_population, tmp_path, capsys):
    out = tmp_path / "risk"
    assert run("risk", escaped_population, "--out", out, "--top", "0.1") == 0
    printed = capsys.readouterr().out
    assert "risk of 90 examples from 5 baseline models (vote and probability margins)" in printed
    assert "the riskiest 10% (9 examples)" in printed
    assert f"risk: {out / 'index.html'}" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(RISK_FILES)
    table = pd.read_parquet(out / "risk.parquet")
    assert table.columns.tolist() == ["example_id", *risk_module.RISK_COLUMNS]
    expected = baseline_risk(escaped_population, top=0.1)
    pd.testing.assert_frame_equal(table, expected.table)
    classes = pd.read_csv(out / "risk.csv", keep_default_na=False, na_values=[""])
    assert classes["name"].tolist() == ["<script>alert(1)</script>", "a & b", "plain"]
    np.testing.assert_allclose(classes["dense_deficit"], expected.classes["dense_deficit"])
    assert classes["high_risk"].sum() == 9
    from pie_audit.cli import _risk as cli_risk

    assert inspect.signature(cli_risk.risk).parameters["top"].default == risk_module.RISK_TOP
    # Run again: the directory is replaced whole, quietly.
    assert run("risk", escaped_population, "--out", out, "--quiet") == 0
    assert capsys.readouterr().out == ""
    assert pd.read_csv(out / "risk.csv")["high_risk"].sum() == 5  # the default top, 5% of 90


def test_the_page_escapes_class_names_and_lists_classes_and_examples(escaped_population, tmp_path):
    out = tmp_path / "risk"
    assert run("risk", escaped_population, "--out", out, "--quiet") == 0
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html
    assert html.count("<script>") == 1  # the page's own sorter
    page = parse(html)
    classes = page.table("class-risk")
    assert [c.text for c in classes.column("class")] == ["<script>alert(1)</script>", "a & b", "plain"]
    assert classes.headers == [
        "class", "label", "examples", "dense recall", "dense deficit (points)", "mean risk", "high-risk", "high-risk share",
    ]  # fmt: skip
    result = baseline_risk(escaped_population)
    for cell, deficit in zip(classes.column("dense deficit (points)"), result.classes["dense_deficit"], strict=True):
        assert float(cell.key) == pytest.approx(deficit)
    riskiest = page.table("riskiest")
    assert len(riskiest.rows) == 50
    top = result.riskiest(50)
    assert [int(c.text) for c in riskiest.column("example id")] == top["example_id"].tolist()
    names = ["<script>alert(1)</script>", "a & b", "plain"]
    assert [c.text for c in riskiest.column("label")] == [names[k] for k in top["label"]]
    assert [float(c.key) for c in riskiest.column("risk")] == pytest.approx(top["risk"].tolist())
    assert "mean probability margin" in page.text


def test_cli_bad_input_exits_2_and_writes_nothing(escaped_population, tmp_path, capsys):
    capsys.readouterr()
    assert run("risk", tmp_path / "missing", "--out", tmp_path / "r1") == 2
    err = capsys.readouterr().err
    assert err == f"pie-audit: error: {tmp_path / 'missing'}: no such directory\n"
    assert not (tmp_path / "r1").exists()
    # Inside the population it reads.
    inside = escaped_population / "risk"
    assert run("risk", escaped_population, "--out", inside) == 2
    assert "lie inside the population" in capsys.readouterr().err
    assert not inside.exists()
    # A directory holding the user's own file is left alone.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert run("risk", escaped_population, "--out", mine) == 2
    assert "holds 'notes.txt', which is not part of a pie-audit risk directory" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    # A fraction out of range.
    assert run("risk", escaped_population, "--out", tmp_path / "r2", "--top", "0") == 2
    assert capsys.readouterr().err == "pie-audit: error: top must be a fraction in (0, 1], got 0.0\n"
    assert not (tmp_path / "r2").exists()
    # Probabilities on some models only.
    labels = np.array([0, 1, 2, 1])
    predictions = np.array([[0, 1, 2, 1], [0, 1, 2, 2]])
    write_probability_files(tmp_path / "partial", predictions, labels, softmax_for(predictions, 3, 0), drop={1})
    assert run("risk", tmp_path / "partial", "--out", tmp_path / "r3") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model-1/predictions.parquet: no probability columns" in err
    assert not (tmp_path / "r3").exists()
    # No --out: a usage error.
    assert run("risk", escaped_population) == 2


def test_write_risk_refuses_an_out_around_the_population(escaped_population, tmp_path):
    result = baseline_risk(escaped_population)
    with pytest.raises(pie_audit.OutputError):
        write_risk(tmp_path, result.table, result.classes, baseline_name="b", n_models=5, populations=[escaped_population])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]


@pytest.mark.parametrize("module", [risk_module, probabilities_module], ids=lambda m: m.__name__)
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


# --- compare: how well the dense-only score predicted the PIEs pruning produced -----------------


def test_compare_reports_the_risk_auc_and_top_shares_of_the_pies():
    from synthetic import planted_predictions

    labels = np.repeat(np.arange(5), 200)
    rng = np.random.default_rng(0)
    base = planted_predictions(9, labels, accuracy=0.9, n_classes=5, seed=1)
    split = rng.choice(1000, 80, replace=False)
    base[:4, split] = (labels[split] + 1) % 5  # the dense models are split 5 to 4 on these
    pruned = base.copy()
    pruned[:, split[:60]] = (labels[split[:60]] + 1) % 5  # pruning tips most of them over
    result = pie_audit.compare(Population.from_arrays(base, labels), Population.from_arrays(pruned, labels, name="p"), n_bootstrap=10)
    examples = result.examples
    is_pie = examples["pie"].to_numpy()
    expected_risk = risk_scores(base, labels)["risk"].to_numpy()
    np.testing.assert_array_equal(examples["risk"].to_numpy(), expected_risk)
    summary = json.loads(json.dumps(result.to_summary(), allow_nan=False))["pies"]
    assert summary["risk_auc"] == pytest.approx(roc_auc_score(is_pie, expected_risk)) and summary["risk_auc"] > 0.95
    k = int(np.ceil(0.05 * 1000))
    top = np.lexsort((examples["example_id"].to_numpy(), -expected_risk))[:k]
    assert summary["risk_top_5_percent"] == pytest.approx(is_pie[top].mean())
    # Another pruned population: the score, which reads only the baseline, does not move.
    other = pie_audit.compare(Population.from_arrays(base, labels), Population.from_arrays(base[::-1], labels, name="q"), n_bootstrap=10)
    np.testing.assert_array_equal(other.examples["risk"].to_numpy(), expected_risk)
    assert other.to_summary()["pies"]["risk_auc"] is None  # no PIE: nothing to predict
