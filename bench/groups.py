"""The subgroup audit on a planted harm: what it reports for every group, its power, and the gate.

Two populations of synthetic models on the same test set, with two attributes per example
(``region``: 4 values, ``device``: 2, so 4 + 2 + 8 groups). The pruned models are the baseline's
equals everywhere except one intersection, ``region=west & device=phone``, where their accuracy is
``--harm`` lower (10 points by default). A sound audit flags that intersection (and, diluted,
the two groups containing it), nothing else, and fails the gate on it. Then it times
``compare`` with and without the groups in this process.

Usage: ``python bench/groups.py [--examples N] [--classes C] [--models M] [--harm H] [--seed S]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

import pie_audit
from pie_audit import Population

PLANTED = "region=west & device=phone"


def planted_populations(
    *, n_examples: int, n_classes: int, n_models: int, harm: float, seed: int
) -> tuple[Population, Population, pd.DataFrame]:
    """Baseline and pruned populations, ~85% accurate with seed-to-seed spread, and their groups."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_examples)
    region = rng.choice(["north", "south", "east", "west"], n_examples, p=[0.4, 0.3, 0.2, 0.1])
    device = rng.choice(["phone", "desktop"], n_examples)
    target = (region == "west") & (device == "phone")
    difficulty = rng.beta(6.0, 1.2, n_examples)  # per-example chance a typical model is right

    def population(shift: float) -> np.ndarray:
        out = np.empty((n_models, n_examples), dtype=np.int64)
        for m in range(n_models):
            p = np.clip(difficulty + rng.normal(0, 0.01), 0, 1)
            p[target] -= shift
            right = rng.random(n_examples) < p
            out[m] = np.where(right, labels, (labels + rng.integers(1, n_classes, n_examples)) % n_classes)
        return out

    groups = pd.DataFrame({"example_id": np.arange(n_examples), "region": region, "device": device})
    return (
        Population.from_arrays(population(0.0), labels, name="dense"),
        Population.from_arrays(population(harm), labels, name="pruned"),
        groups,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--harm", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    base, pruned, groups = planted_populations(
        n_examples=args.examples, n_classes=args.classes, n_models=args.models, harm=args.harm, seed=args.seed
    )
    pie_audit.compare(base, pruned, groups=groups)  # warm-up: imports and caches out of the timings
    start = time.perf_counter()
    plain = pie_audit.compare(base, pruned)
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    result = pie_audit.compare(base, pruned, groups=groups)
    groups_s = time.perf_counter() - start

    print(
        f"{args.examples:,} examples, {args.classes} classes, {args.models} + {args.models} models; "
        f"planted: {100 * args.harm:.0f} points off {PLANTED} ({int(result.groups.set_index('group').loc[PLANTED, 'support'])} examples)"
    )
    columns = [
        "group", "support", "baseline_accuracy_mean", "accuracy_change", "normalized_change",
        "ci_low", "ci_high", "q_value", "accuracy_q_value", "mde", "pie_fraction", "pie_odds_ratio",
        "pie_q_value", "direction",
    ]  # fmt: skip
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        print(result.groups[columns].to_string(index=False))
    print(f"power: {result.power_sentence()}")
    print(f"{result.verdict}")
    for failure in result.gate.failures:
        print(f"  - {failure.message}")
    flagged = set(result.harmed_groups["group"])
    print(f"harmed groups: {sorted(flagged)}; planted one flagged: {PLANTED in flagged}")
    print(f"compare without groups {plain_s:.3f} s, with groups {groups_s:.3f} s (ratio {groups_s / plain_s:.2f})")
    print(f"classes harmed without groups: {plain.n_harmed}; gate without groups: {plain.verdict}")


if __name__ == "__main__":
    main()
