import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats as sps

from pie_audit.errors import ConfigError
from pie_audit.audit._pie import (
    BAD_TIE_BREAK,
    accuracy_on,
    modal_labels,
    pie_stability,
    pie_table,
    vote_distance,
)

# Five examples voted on by four models, worked out by hand.
VOTES = np.array(
    [
        [0, 1, 2, 3, 4],
        [0, 1, 3, 3, 2],
        [0, 2, 2, 4, 2],
        [1, 2, 3, 4, 4],
    ]
)
# example 0: 0 x3 -> 0; example 1: 1 x2, 2 x2 -> tie; example 2: 2 x2, 3 x2 -> tie;
# example 3: 3 x2, 4 x2 -> tie; example 4: 4 x2, 2 x2 -> tie.


def test_modal_labels_hand_worked_lowest():
    vote = modal_labels(VOTES)
    assert vote.labels.tolist() == [0, 1, 2, 3, 2]
    assert vote.counts.tolist() == [3, 2, 2, 2, 2]
    assert vote.tied.tolist() == [False, True, True, True, True]


def test_modal_labels_hand_worked_highest():
    vote = modal_labels(VOTES, tie_break="highest")
    assert vote.labels.tolist() == [0, 2, 3, 4, 4]
    assert vote.tied.tolist() == [False, True, True, True, True]


def test_modal_labels_single_model_is_its_prediction():
    vote = modal_labels([[3, 1, 4]])
    assert vote.labels.tolist() == [3, 1, 4]
    assert vote.counts.tolist() == [1, 1, 1]
    assert not vote.tied.any()


def test_modal_labels_match_pandas_mode():
    rng = np.random.default_rng(0)
    predictions = rng.integers(0, 6, size=(7, 300))
    long = pd.DataFrame(
        {"example": np.tile(np.arange(300), 7), "prediction": predictions.ravel()}
    )
    modes = long.groupby("example")["prediction"].agg(lambda s: s.mode().tolist())
    assert modal_labels(predictions).labels.tolist() == [m[0] for m in modes]
    assert modal_labels(predictions, tie_break="highest").labels.tolist() == [m[-1] for m in modes]
    assert modal_labels(predictions).tied.tolist() == [len(m) > 1 for m in modes]


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.int64, st.tuples(st.integers(1, 9), st.integers(1, 20)), elements=st.integers(0, 40)),
    st.sampled_from(["lowest", "highest"]),
)
@example(np.array([[5]]), "lowest")
@example(np.array([[1, 0], [0, 1]]), "highest")
def test_modal_labels_properties(predictions, tie_break):
    vote = modal_labels(predictions, tie_break=tie_break)
    for j in range(predictions.shape[1]):
        counts = np.bincount(predictions[:, j])
        winners = np.flatnonzero(counts == counts.max())
        assert vote.counts[j] == counts.max()
        assert vote.tied[j] == (winners.size > 1)
        assert vote.labels[j] == (winners[0] if tie_break == "lowest" else winners[-1])
    # Invariant to the order of models.
    order = np.random.default_rng(predictions.size).permutation(predictions.shape[0])
    shuffled = modal_labels(predictions[order], tie_break=tie_break)
    np.testing.assert_array_equal(shuffled.labels, vote.labels)
    np.testing.assert_array_equal(shuffled.tied, vote.tied)


def test_modal_labels_rejects_unknown_tie_break():
    with pytest.raises(ConfigError) as e:
        modal_labels(VOTES, tie_break="random")
    assert str(e.value) == BAD_TIE_BREAK.format(choices="lowest, highest", value="random")


def test_modal_labels_rejects_empty():
    with pytest.raises(ConfigError):
        modal_labels(np.zeros((0, 3), dtype=int))


def _dense_l1(base, pruned, n_classes):
    def shares(p):
        out = np.zeros((p.shape[1], n_classes))
        for row in p:
            out[np.arange(p.shape[1]), row] += 1
        return out / p.shape[0]

    return np.abs(shares(base) - shares(pruned)).sum(axis=1)


def test_vote_distance_hand_worked():
    # Example 0: baseline {0: 1}, pruned {0: 2/3, 1: 1/3} -> 1/3 + 1/3.
    # Example 1: baseline {1: 1}, pruned {2: 1} -> 2 (disjoint votes).
    # Example 2: baseline {3: 1/2, 4: 1/2}, pruned {3: 2/3, 4: 1/3} -> 1/6 + 1/6.
    base = np.array([[0, 1, 3], [0, 1, 4]])
    pruned = np.array([[0, 2, 3], [1, 2, 3], [0, 2, 4]])
    np.testing.assert_allclose(vote_distance(base, pruned), [2 / 3, 2.0, 1 / 3])


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(1, 15),
    st.integers(1, 30),
    st.integers(0, 2**32 - 1),
)
def test_vote_distance_matches_dense_computation(mb, mp, n, n_classes, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, n_classes, size=(mb, n))
    pruned = rng.integers(0, n_classes, size=(mp, n))
    distance = vote_distance(base, pruned)
    np.testing.assert_allclose(distance, _dense_l1(base, pruned, n_classes), atol=1e-12)
    assert ((distance >= 0) & (distance <= 2)).all()
    np.testing.assert_allclose(vote_distance(pruned, base), distance, atol=1e-12)
    np.testing.assert_allclose(vote_distance(base[::-1], pruned[::-1]), distance, atol=1e-12)


def test_vote_distance_is_exactly_zero_for_identical_votes():
    votes = np.random.default_rng(1).integers(0, 1000, size=(30, 500))
    assert (vote_distance(votes, votes[::-1]) == 0).all()


def test_vote_distance_rejects_different_example_counts():
    with pytest.raises(ConfigError):
        vote_distance(np.zeros((2, 3), dtype=int), np.zeros((2, 4), dtype=int))


def test_pie_table_columns_and_flags():
    base = np.array([[0, 1, 2], [0, 1, 2], [0, 2, 2]])
    pruned = np.array([[0, 2, 1], [1, 2, 1], [0, 1, 2]])
    table = pie_table(base, pruned, [0, 1, 0], example_ids=[10, 11, 12])
    assert list(table.columns) == [
        "example_id",
        "label",
        "baseline_modal",
        "pruned_modal",
        "baseline_share",
        "pruned_share",
        "baseline_tied",
        "pruned_tied",
        "score",
        "pie",
    ]
    assert table["example_id"].tolist() == [10, 11, 12]
    assert table["baseline_modal"].tolist() == [0, 1, 2]
    assert table["pruned_modal"].tolist() == [0, 2, 1]
    assert table["pie"].tolist() == [False, True, True]
    np.testing.assert_allclose(table["baseline_share"], [1, 2 / 3, 1])
    np.testing.assert_allclose(table["pruned_share"], [2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(table["score"], [2 / 3, 2 / 3, 4 / 3])


def test_pie_flag_ignores_true_labels():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 4, size=(5, 50))
    pruned = rng.integers(0, 4, size=(5, 50))
    a = pie_table(base, pruned, rng.integers(0, 4, size=50))
    b = pie_table(base, pruned, rng.integers(0, 4, size=50))
    pd.testing.assert_series_equal(a["pie"], b["pie"])


def test_accuracy_on_subset():
    predictions = np.array([[0, 1, 2, 3], [0, 0, 2, 0]])
    labels = np.array([0, 1, 2, 3])
    assert accuracy_on(predictions, labels, np.array([True, True, False, False])) == 0.75
    assert accuracy_on(predictions, labels, np.array([False, False, False, True])) == 0.5
    assert accuracy_on(predictions, labels, np.zeros(4, dtype=bool)) is None


# --- stability ------------------------------------------------------------------------------------


def test_stability_of_unanimous_examples_is_exact():
    base = np.array([[0, 1, 2], [0, 1, 2]])
    pruned = np.array([[0, 2, 2], [0, 2, 2]])
    np.testing.assert_array_equal(pie_stability(base, pruned), [0.0, 1.0, 0.0])


@pytest.mark.parametrize(
    ("pruned_votes", "tie_break", "expected"),
    [
        # 3 of 5 pruned models move the example: a resample of 5 keeps it a PIE when >= 3 of them
        # are movers, Binomial(5, 0.6) >= 3.
        ([1, 1, 1, 0, 0], "lowest", sps.binom.sf(2, 5, 0.6)),
        # 2 of 4: a 2-2 tie goes to label 0 (lowest, no PIE) or to 1 (highest, a PIE).
        ([1, 1, 0, 0], "lowest", sps.binom.sf(2, 4, 0.5)),
        ([1, 1, 0, 0], "highest", sps.binom.sf(1, 4, 0.5)),
    ],
)
def test_stability_matches_the_binomial_probability(pruned_votes, tie_break, expected):
    base = np.zeros((len(pruned_votes), 1), dtype=np.int64)  # unanimous on label 0
    pruned = np.array(pruned_votes)[:, None]
    stability = pie_stability(base, pruned, n_resamples=20_000, seed=1, tie_break=tie_break)
    assert stability[0] == pytest.approx(expected, abs=0.015)


def test_stability_does_not_depend_on_model_order():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 4, (7, 50))
    pruned = rng.integers(0, 4, (6, 50))
    a = pie_stability(base, pruned, seed=3)
    b = pie_stability(base[::-1], pruned[rng.permutation(6)], seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, pie_stability(base, pruned, seed=4))
