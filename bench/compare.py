"""Benchmark of ``pie-audit compare`` on an ImageNet-scale synthetic case.

Builds 50,000 examples x 1,000 classes, 30 baseline and 30 pruned models in the interchange
format (only the three required columns) in a temporary directory, then times:

(a) reading the prediction files alone (``load_population`` on both populations);
(b) ``compare`` end to end, reading included, report excluded;
(c) a straightforward pandas reference for the modal labels (group by example, ``mode()``)
    and the PIE flags;
(d) pie-audit's own modal-label and PIE step on the same matrices;
(d') pie-audit's full per-example table (ties, vote shares, L1 scores) for information;
(e) ``compare`` end to end with a subgroup audit: two attributes (4 and 2 values, so 4 + 2 + 8
    groups, and groups x classes cells), against (b) in the same process.

(a), (b), (d) and (d') are the best of ``--repeat`` runs; (c) runs once. Peak memory of (b)
is the peak resident set size (``VmHWM``, Linux) of a fresh Python process that imports pie-audit
and runs ``compare`` once; the same figure for a process that only imports is given too.

Usage: ``python bench/compare.py [--examples N] [--classes C] [--models M] [--json]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pie_audit import compare
from pie_audit.audit import modal_labels, pie_table
from pie_audit import load_population

# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (large) parent across fork and
# exec, whereas VmHWM belongs to the new process's own address space.
_MEMORY_PROBE = """
import sys
from pie_audit import compare
if sys.argv[1] == "compare":
    compare(sys.argv[2], sys.argv[3], groups=sys.argv[4] if len(sys.argv) > 4 else None)
with open("/proc/self/status") as fh:
    print(next(line.split()[1] for line in fh if line.startswith("VmHWM:")))
"""


def synthesize(
    root: Path, *, n_examples: int, n_classes: int, n_models: int, seed: int = 0
) -> tuple[Path, Path]:
    """Write a baseline (~76% accurate) and a pruned (~74%) population under ``root``.

    Errors are realistic enough for modal labels to matter: each example has a difficulty
    and a small set of classes it is confused with, shared by all models.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_examples)
    ids = rng.permutation(n_examples)  # example ids need not be 0..N-1 in file order
    p_right = rng.beta(3.0, 1.0, n_examples)
    confusions = (labels[:, None] + rng.integers(1, n_classes, (n_examples, 3))) % n_classes
    dirs = []
    for role, shift in (("baseline", 0.0), ("pruned", 0.025)):
        population = root / role
        for m in range(n_models):
            right = rng.random(n_examples) < p_right - shift
            wrong = confusions[np.arange(n_examples), rng.integers(0, 3, n_examples)]
            prediction = np.where(right, labels, wrong)
            model = population / f"seed-{m:04d}"
            model.mkdir(parents=True)
            pq.write_table(
                pa.table(
                    {
                        "example_id": pa.array(ids, pa.int64()),
                        "label": pa.array(labels, pa.int64()),
                        "prediction": pa.array(prediction, pa.int64()),
                    }
                ),
                model / "predictions.parquet",
            )
        dirs.append(population)
    return dirs[0], dirs[1]


def write_groups_table(path: Path, n_examples: int, *, seed: int = 1) -> Path:
    """Two attributes of every example: ``region`` (4 values) and ``device`` (2), as Parquet."""
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "example_id": pa.array(np.arange(n_examples), pa.int64()),
            "region": pa.array(rng.choice(["north", "south", "east", "west"], n_examples, p=[0.4, 0.3, 0.2, 0.1])),
            "device": pa.array(rng.choice(["phone", "desktop"], n_examples)),
        }
    )
    pq.write_table(table, path)
    return path


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def pandas_reference(base: np.ndarray, pruned: np.ndarray) -> np.ndarray:
    """PIE flags the straightforward way: long table, group by example, ``mode()``."""

    def modes(predictions: np.ndarray) -> pd.Series:
        m, n = predictions.shape
        long = pd.DataFrame({"example_id": np.tile(np.arange(n), m), "prediction": predictions.ravel()})
        # mode() is sorted, so [0] is the lowest tied label: pie-audit's default policy.
        return long.groupby("example_id")["prediction"].agg(lambda s: s.mode().iloc[0])

    return (modes(base) != modes(pruned)).to_numpy()


def peak_rss_mib(*args: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, *args], check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip()) / 1024  # kB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-reference", action="store_true", help="Skip the slow pandas reference (c).")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pie-audit-bench-") as tmp:
        start = time.perf_counter()
        base_dir, pruned_dir = synthesize(
            Path(tmp), n_examples=args.examples, n_classes=args.classes, n_models=args.models
        )
        generate_s = time.perf_counter() - start

        read_s, (base, pruned) = best_of(
            args.repeat, lambda: (load_population(base_dir), load_population(pruned_dir))
        )
        compare_s, result = best_of(args.repeat, lambda: compare(base_dir, pruned_dir))
        groups_file = write_groups_table(Path(tmp) / "groups.parquet", args.examples)
        groups_s, grouped = best_of(args.repeat, lambda: compare(base_dir, pruned_dir, groups=groups_file))
        own_s, own = best_of(
            args.repeat,
            lambda: modal_labels(base.predictions).labels != modal_labels(pruned.predictions).labels,
        )
        table_s, _ = best_of(
            args.repeat, lambda: pie_table(base.predictions, pruned.predictions, base.labels)
        )
        figures = {
            "n_examples": args.examples,
            "n_classes": args.classes,
            "n_models_per_population": args.models,
            "generate_s": generate_s,
            "a_read_s": read_s,
            "b_compare_s": compare_s,
            "d_pie_step_s": own_s,
            "d_full_table_s": table_s,
            "b_over_a": compare_s / read_s,
            "e_compare_groups_s": groups_s,
            "e_over_b": groups_s / compare_s,
            "n_groups": len(grouped.groups),
            "n_cells": len(grouped.group_cells),
            "n_pies": int(result.pies.count),
        }
        if not args.skip_reference:
            start = time.perf_counter()
            reference = pandas_reference(base.predictions, pruned.predictions)
            figures["c_pandas_reference_s"] = time.perf_counter() - start
            figures["c_over_d"] = figures["c_pandas_reference_s"] / own_s
            figures["reference_agrees"] = bool(np.array_equal(reference, own))
        figures["b_peak_rss_mib"] = peak_rss_mib("compare", str(base_dir), str(pruned_dir))
        figures["e_peak_rss_mib"] = peak_rss_mib("compare", str(base_dir), str(pruned_dir), str(groups_file))
        figures["import_only_peak_rss_mib"] = peak_rss_mib("import")

    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    print(
        f"{args.examples:,} examples, {args.classes:,} classes, "
        f"{args.models} + {args.models} models (generated in {generate_s:.1f} s)"
    )
    print(f"(a) read prediction files      {read_s:8.3f} s")
    print(
        f"(b) compare, end to end        {compare_s:8.3f} s   "
        f"(b)/(a) = {figures['b_over_a']:.2f}  [targets: <= 3 s, (b)/(a) <= 3]"
    )
    if "c_pandas_reference_s" in figures:
        print(f"(c) pandas groupby mode()      {figures['c_pandas_reference_s']:8.3f} s")
    print(f"(d) pie-audit modal labels+PIE {own_s:8.3f} s", end="")
    if "c_over_d" in figures:
        print(f"   (c)/(d) = {figures['c_over_d']:.0f}x  [target >= 50x]; agree: {figures['reference_agrees']}")
    else:
        print()
    print(f"(d') full per-example table    {table_s:8.3f} s  (ties, shares, L1 scores)")
    print(
        f"peak RSS of (b) in a fresh process: {figures['b_peak_rss_mib']:.0f} MiB "
        f"(imports alone: {figures['import_only_peak_rss_mib']:.0f} MiB)  [target <= 1.5 GB]"
    )
    print(
        f"(e) compare with groups        {groups_s:8.3f} s   (e)/(b) = {figures['e_over_b']:.2f}; "
        f"{figures['n_groups']} groups, {figures['n_cells']:,} cells; peak RSS {figures['e_peak_rss_mib']:.0f} MiB"
    )
    print(f"PIEs: {figures['n_pies']:,}")


if __name__ == "__main__":
    main()
