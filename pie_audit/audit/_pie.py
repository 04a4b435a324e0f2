"""Pruning Identified Exemplars: modal labels, ties, PIE flags and vote-distribution scores.

An example is a PIE when the pruned population's modal (most frequent) top-1 prediction
differs from the baseline population's; the true label plays no part (Hooker et al.,
arXiv 1911.05248). Every example is also scored by the L1 distance between the two
populations' label-vote distributions (arXiv 2010.03058), so PIEs can be ranked.

Everything here works on prediction matrices of shape (M, N): M models, N examples. No
function builds a dense (N, C) vote array, so memory does not grow with the class count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ConfigError

__all__ = [
    "TIE_BREAKS",
    "ModalVote",
    "modal_labels",
    "vote_distance",
    "pie_table",
    "pie_stability",
    "ModelResamples",
    "model_resamples",
    "STABLE",
    "accuracy_on",
]

TIE_BREAKS = ("lowest", "highest")
#: A PIE is *stable* when it stays a PIE in at least this fraction of model resamples.
STABLE = 0.9
BAD_TIE_BREAK = "tie_break must be one of {choices}, not {value!r}"
BAD_PREDICTIONS = "predictions must be a non-empty 2-D array of class indices, got shape {shape}"
SHAPE_MISMATCH = "baseline and pruned predictions cover {n_baseline} and {n_pruned} examples"


@dataclass(frozen=True, eq=False)
class ModalVote:
    """The modal label of each example in one population.

    Attributes
    ----------
    labels : ndarray of shape (N,)
        The most frequent prediction; ties broken by the ``tie_break`` policy.
    counts : ndarray of shape (N,)
        How many models voted for it.
    tied : ndarray of shape (N,), bool
        Whether another label had as many votes.
    """

    labels: np.ndarray
    counts: np.ndarray
    tied: np.ndarray


def _check_predictions(predictions: np.ndarray) -> np.ndarray:
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or predictions.size == 0:
        raise ConfigError(BAD_PREDICTIONS.format(shape=predictions.shape))
    return predictions


def _check_tie_break(tie_break: str) -> None:
    if tie_break not in TIE_BREAKS:
        raise ConfigError(BAD_TIE_BREAK.format(choices=", ".join(TIE_BREAKS), value=tie_break))


def _compact(predictions: np.ndarray) -> np.ndarray:
    """The narrowest integer type holding the class indices: sorting is memory-bound."""
    high = int(predictions.max(initial=0))
    dtype = np.int16 if high < 2**15 else np.int32 if high < 2**31 else np.int64
    return predictions.astype(dtype, copy=False)


def modal_labels(predictions: np.ndarray, *, tie_break: str = "lowest") -> ModalVote:
    """Most frequent prediction per example, with a deterministic tie policy.

    Parameters
    ----------
    predictions : array-like of shape (M, N)
        Top-1 class of each of M models for each of N examples.
    tie_break : {"lowest", "highest"}, default="lowest"
        Which of the tied labels wins when several share the largest vote count.
        ``"highest"`` reproduces the paper's code, which broke ties silently towards the
        highest class index.

    Returns
    -------
    ModalVote
        Modal labels, their vote counts and tie flags, each of shape (N,).

    Examples
    --------
    >>> vote = modal_labels([[0, 1, 2], [0, 2, 1], [1, 2, 0]])
    >>> vote.labels.tolist(), vote.counts.tolist(), vote.tied.tolist()
    ([0, 2, 0], [2, 2, 1], [False, False, True])
    """
    _check_tie_break(tie_break)
    predictions = _check_predictions(predictions)
    m = predictions.shape[0]
    # Sort each example's votes: equal labels form runs, and a run's length is its count.
    votes = np.sort(_compact(predictions).T, axis=1)  # (N, M)
    position = np.arange(m)
    starts = np.ones(votes.shape, dtype=bool)
    np.not_equal(votes[:, 1:], votes[:, :-1], out=starts[:, 1:])
    run_start = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    running = position - run_start + 1  # votes so far in the current run
    counts = running.max(axis=1)
    # `running` reaches `counts` exactly once per winning run, at that run's last vote.
    winners = running == counts[:, None]
    tied = winners.sum(axis=1) > 1
    if tie_break == "lowest":
        at = winners.argmax(axis=1)
    else:
        at = m - 1 - winners[:, ::-1].argmax(axis=1)
    labels = votes[np.arange(votes.shape[0]), at].astype(np.int64)
    return ModalVote(labels=labels, counts=counts.astype(np.int64), tied=tied)


def vote_distance(baseline_predictions: np.ndarray, pruned_predictions: np.ndarray) -> np.ndarray:
    """L1 distance between the two populations' label-vote distributions, per example.

    With :math:`p_b(c)` the fraction of baseline models predicting class c for an example and
    :math:`p_p(c)` the same for pruned models, the score is :math:`\\sum_c |p_b(c) - p_p(c)|`.
    It lies in [0, 2]: 0 when both populations vote alike, 2 when no label gets votes from both.

    Parameters
    ----------
    baseline_predictions : array-like of shape (M_b, N)
    pruned_predictions : array-like of shape (M_p, N)

    Returns
    -------
    ndarray of shape (N,), float64

    Examples
    --------
    >>> vote_distance([[0, 1], [0, 1]], [[0, 2], [1, 2]]).tolist()
    [1.0, 2.0]
    """
    base = _check_predictions(baseline_predictions)
    pruned = _check_predictions(pruned_predictions)
    if base.shape[1] != pruned.shape[1]:
        raise ConfigError(SHAPE_MISMATCH.format(n_baseline=base.shape[1], n_pruned=pruned.shape[1]))
    mb, mp = base.shape[0], pruned.shape[0]
    # Tag every vote with its population in the low bit and sort; each label's votes form a
    # run. Weighting a baseline vote by M_p and a pruned vote by -M_b keeps the arithmetic
    # in integers: a run's weight sum is M_b * M_p * (p_b(c) - p_p(c)), exactly.
    high = max(int(base.max()), int(pruned.max()))
    dtype = np.int32 if 2 * high + 1 < 2**31 else np.int64
    keys = np.empty((base.shape[1], mb + mp), dtype=dtype)
    keys[:, :mb] = base.T
    keys[:, mb:] = pruned.T
    keys <<= 1
    keys[:, mb:] |= 1
    keys.sort(axis=1)
    weights = np.where(keys & 1, -mb, mp).ravel()
    # A row's last vote always ends a run, so runs never span two examples once flattened.
    ends = np.ones(keys.shape, dtype=bool)
    np.not_equal(keys[:, 1:] >> 1, keys[:, :-1] >> 1, out=ends[:, :-1])
    end_at = np.flatnonzero(ends.ravel())
    run_sums = np.diff(np.cumsum(weights)[end_at], prepend=0)
    per_example = np.bincount(end_at // keys.shape[1], weights=np.abs(run_sums), minlength=keys.shape[0])
    return per_example / (mb * mp)


@dataclass(frozen=True, eq=False)
class ModelResamples:
    """B resamples of each population's models, with replacement: the stability resamples.

    Attributes
    ----------
    baseline_order, pruned_order : ndarray of shape (M_b,) and (M_p,)
        The models (rows) in canonical order: by their predictions, so that which model a
        resample's counts land on, and so every result, does not depend on how model
        directories are named or listed.
    baseline_counts, pruned_counts : ndarray of shape (B, M_b) and (B, M_p), int
        How many times each model, in canonical order, is drawn in each resample.
    """

    baseline_order: np.ndarray
    pruned_order: np.ndarray
    baseline_counts: np.ndarray
    pruned_counts: np.ndarray

    def rows(self, b: int, *, pruned: bool = False) -> np.ndarray:
        """Resample ``b`` as rows of the original arrays (each drawn row repeated), shape (M,)."""
        order, counts = (self.pruned_order, self.pruned_counts) if pruned else (self.baseline_order, self.baseline_counts)
        return np.repeat(order, counts[b])


def model_resamples(
    baseline_predictions: np.ndarray, pruned_predictions: np.ndarray, *, n_resamples: int = 100, seed: int = 0
) -> ModelResamples:
    """The seeded model resamples that :func:`pie_stability` and the harm robustness share.

    Parameters
    ----------
    baseline_predictions, pruned_predictions : ndarray of shape (M_b, N) and (M_p, N)
    n_resamples : int, default=100
    seed : int, default=0

    Returns
    -------
    ModelResamples
    """
    orders = [
        np.asarray(sorted(range(p.shape[0]), key=lambda m, p=p: p[m].tobytes()), dtype=np.intp)
        for p in (baseline_predictions, pruned_predictions)
    ]
    rng = np.random.default_rng(seed)
    counts = [rng.multinomial(len(o), np.full(len(o), 1 / len(o)), size=n_resamples) for o in orders]
    return ModelResamples(orders[0], orders[1], counts[0], counts[1])


def pie_stability(
    baseline_predictions: np.ndarray,
    pruned_predictions: np.ndarray,
    *,
    n_resamples: int = 100,
    seed: int = 0,
    tie_break: str = "lowest",
) -> np.ndarray:
    """How often each example is a PIE when the models are resampled.

    Each resample draws the models of each population with replacement (seeded), recomputes
    both modal labels and records whether they differ. A PIE carried by one swing model
    disappears in many resamples; a PIE on which both populations are unanimous never does.

    Parameters
    ----------
    baseline_predictions : array-like of shape (M_b, N)
    pruned_predictions : array-like of shape (M_p, N)
    n_resamples : int, default=100
        B, resamples of each population. 100 puts a stability of 0.9 within about 0.03: enough
        to tell a PIE that rests on one swing model from a settled one, at half the cost of 200.
    seed : int, default=0
    tie_break : {"lowest", "highest"}, default="lowest"
        As in :func:`modal_labels`, applied within each resample.

    Returns
    -------
    ndarray of shape (N,), float64
        The fraction of resamples in which the example is a PIE: for a PIE, how stable it is;
        for any other example, how easily it would become one. Exactly 0 or 1 where both
        populations are unanimous.

    Examples
    --------
    >>> base = [[0, 0], [0, 0], [0, 0]]      # 3 models, 2 examples
    >>> pruned = [[1, 1], [1, 0], [1, 0]]    # unanimous on example 0, 2 to 1 on example 1
    >>> pie_stability(base, pruned, n_resamples=1000).round(1).tolist()
    [1.0, 0.3]
    """
    _check_tie_break(tie_break)
    base = _check_predictions(baseline_predictions)
    pruned = _check_predictions(pruned_predictions)
    if base.shape[1] != pruned.shape[1]:
        raise ConfigError(SHAPE_MISMATCH.format(n_baseline=base.shape[1], n_pruned=pruned.shape[1]))
    unanimous_b = (base == base[0]).all(axis=0)
    unanimous_p = (pruned == pruned[0]).all(axis=0)
    stability = ((base[0] != pruned[0]) & unanimous_b & unanimous_p).astype(np.float64)
    # Resampling cannot change a unanimous vote: only the other examples need the work.
    todo = np.flatnonzero(~(unanimous_b & unanimous_p))
    if not todo.size:
        return stability
    resamples = model_resamples(base, pruned, n_resamples=n_resamples, seed=seed)
    base, pruned = base[resamples.baseline_order], pruned[resamples.pruned_order]
    # A resample as counts per model: its votes are a weighted count, no gathering needed.
    weights = [resamples.baseline_counts.astype(np.float32), resamples.pruned_counts.astype(np.float32)]
    # About 10,000 examples a chunk at 200 resamples: the (B, chunk) tallies stay in cache.
    chunk = max(1, 2_000_000 // n_resamples)
    for start in range(0, todo.size, chunk):
        cols = todo[start : start + chunk]
        modal_b = _resampled_modal(base[:, cols], weights[0], tie_break)
        modal_p = _resampled_modal(pruned[:, cols], weights[1], tie_break)
        stability[cols] = (modal_b != modal_p).mean(axis=1)
    return stability


def _resampled_modal(predictions: np.ndarray, weights: np.ndarray, tie_break: str) -> np.ndarray:
    """Modal label of each example (M, K) under each resample's model counts (B, M): (K, B)."""
    m, k = predictions.shape
    # Number each example's distinct labels 0, 1, ... in increasing label order, so that taking
    # the first strict maximum keeps the lowest label, as modal_labels does.
    votes = np.ascontiguousarray(predictions.T)  # (K, M)
    # One sort serves both: the sorted votes and where each vote came from.
    where = np.argsort(votes, axis=1, kind="stable")
    order = np.take_along_axis(votes, where, axis=1)
    new = np.ones(order.shape, dtype=bool)
    np.not_equal(order[:, 1:], order[:, :-1], out=new[:, 1:])
    rank = np.cumsum(new, axis=1) - 1  # local index of each sorted vote
    width = rank[:, -1] + 1  # distinct labels per example
    # Examples with the most distinct labels first: those taking part in local label l are then
    # a prefix, so every update below works on views, not on gathered copies.
    by_width = np.argsort(-width, kind="stable")
    where, order, rank, width = where[by_width], order[by_width], rank[by_width], width[by_width]
    local = np.empty((k, m), dtype=np.int16 if int(width[0]) < 2**15 else np.int64)
    local[np.arange(k)[:, None], where] = rank
    # Examples in rows, resamples in columns: the examples taking part in label l are a prefix of
    # rows, so each update below runs over one contiguous block of memory.
    wt = np.ascontiguousarray(weights.T)  # (M, B)
    best = np.full((k, weights.shape[0]), -1.0, dtype=np.float32)
    winner = np.zeros((k, weights.shape[0]), dtype=local.dtype)
    for label in range(int(width[0])):
        n = int(np.count_nonzero(width > label))
        counts = (local[:n] == label).astype(np.float32) @ wt  # (n, B)
        current = best[:n]
        better = counts > current if tie_break == "lowest" else counts >= current
        np.copyto(current, counts, where=better)
        np.copyto(winner[:n], label, where=better)
    labels = np.zeros((k, int(width[0])), dtype=predictions.dtype)
    labels[np.arange(k)[:, None], rank] = order
    modal = np.empty((k, weights.shape[0]), dtype=predictions.dtype)
    modal[by_width] = np.take_along_axis(labels, winner.astype(np.intp), axis=1)
    return modal


def accuracy_on(predictions: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean over models of top-1 accuracy on the examples selected by ``mask``.

    Parameters
    ----------
    predictions : ndarray of shape (M, N)
    labels : ndarray of shape (N,)
    mask : ndarray of shape (N,), bool

    Returns
    -------
    float or None
        ``None`` when ``mask`` selects no example: the accuracy is undefined.
    """
    n = int(np.count_nonzero(mask))
    if n == 0:
        return None
    correct = predictions[:, mask] == labels[mask]
    return float(correct.sum() / (predictions.shape[0] * n))


def pie_table(
    baseline_predictions: np.ndarray,
    pruned_predictions: np.ndarray,
    labels: np.ndarray,
    *,
    example_ids: np.ndarray | None = None,
    tie_break: str = "lowest",
) -> pd.DataFrame:
    """One row per example: both modal labels, vote shares, ties, score and PIE flag.

    Parameters
    ----------
    baseline_predictions : array-like of shape (M_b, N)
    pruned_predictions : array-like of shape (M_p, N)
    labels : array-like of shape (N,)
        True classes; they are reported, never used to decide what is a PIE.
    example_ids : array-like of shape (N,), optional
        Defaults to ``0 .. N-1``.
    tie_break : {"lowest", "highest"}, default="lowest"
        See :func:`modal_labels`.

    Returns
    -------
    DataFrame with N rows and columns
        ``example_id``, ``label``, ``baseline_modal``, ``pruned_modal`` (int64);
        ``baseline_share``, ``pruned_share`` (float64, fraction of the population's models
        voting for its modal label); ``baseline_tied``, ``pruned_tied`` (bool);
        ``score`` (float64, :func:`vote_distance`); ``pie`` (bool).
    """
    base = modal_labels(baseline_predictions, tie_break=tie_break)
    pruned = modal_labels(pruned_predictions, tie_break=tie_break)
    n = base.labels.size
    if pruned.labels.size != n:
        raise ConfigError(SHAPE_MISMATCH.format(n_baseline=n, n_pruned=pruned.labels.size))
    ids = np.arange(n) if example_ids is None else np.asarray(example_ids)
    return pd.DataFrame(
        {
            "example_id": ids.astype(np.int64),
            "label": np.asarray(labels, dtype=np.int64),
            "baseline_modal": base.labels,
            "pruned_modal": pruned.labels,
            "baseline_share": base.counts / np.shape(baseline_predictions)[0],
            "pruned_share": pruned.counts / np.shape(pruned_predictions)[0],
            "baseline_tied": base.tied,
            "pruned_tied": pruned.tied,
            "score": vote_distance(baseline_predictions, pruned_predictions),
            "pie": base.labels != pruned.labels,
        }
    )
