"""A sweep: one baseline audited against several pruned populations (e.g. one per sparsity).

:func:`pie_audit.sweep` runs the audit once per pruned population, reading the baseline once;
:func:`sweep_table` tabulates the results with each population's sparsity from its ``run.json``.
:func:`pie_audit.report.write_sweep` writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from ..interchange import population_provenance
from ._result import AuditResult

__all__ = ["SWEEP_PAGE", "SWEEP_COLUMNS", "COST_COLUMNS", "sweep_names", "sweep_table"]

#: The sweep page's file name in a sweep directory, which no pruned population may take.
SWEEP_PAGE = "index.html"
#: The columns :func:`sweep_table` takes from the populations' ``run.json`` ``cost`` (medians).
COST_COLUMNS = (
    "parameters_stored",
    "parameters_nonzero",
    "flops",
    "file_bytes",
    "latency_batch_1_ms",
    "latency_batch_64_ms",
)
SWEEP_COLUMNS = (
    "name",
    "position",
    "method",
    "sparsity_target",
    "sparsity_achieved",
    "n_models",
    "accuracy_mean",
    "accuracy_std",
    "baseline_accuracy_mean",
    "pie_count",
    "pie_fraction",
    "harmed",
    "helped",
    "harmed_groups",
    "gate_passed",
    "gate_outcome",
    "max_class_drop",
    *COST_COLUMNS,
    "baseline_file_bytes",
    "baseline_latency_batch_1_ms",
)
NO_PRUNED = "a sweep needs at least one pruned population"
DUPLICATE_NAME = (
    "pruned populations {first} and {second} share the name {name!r}; the sweep writes one "
    "report directory per name, so give them distinct directory names"
)
RESERVED_NAME = "pruned population {path} cannot be named {name!r}: the sweep page uses that name"


def sweep_names(pruned_dirs: Sequence[str | Path]) -> list[str]:
    """The report directory name of each pruned population: its directory's name.

    Raises
    ------
    ConfigError
        No population, two populations with one name, or a name the sweep page needs.
    """
    if not pruned_dirs:
        raise ConfigError(NO_PRUNED)
    seen: dict[str, Path] = {}
    for path in map(Path, pruned_dirs):
        name = path.resolve().name
        if name == SWEEP_PAGE:
            raise ConfigError(RESERVED_NAME.format(path=path, name=name))
        if name in seen:
            raise ConfigError(DUPLICATE_NAME.format(first=seen[name], second=path, name=name))
        seen[name] = path
    return list(seen)


def sweep_table(results: Sequence[tuple[str, AuditResult]]) -> pd.DataFrame:
    """One row per pruned population: sparsity, accuracy, PIEs, impacted classes, gate and cost.

    Parameters
    ----------
    results : sequence of (str, AuditResult)
        As returned by :func:`pie_audit.sweep`.

    Returns
    -------
    DataFrame
        Columns :data:`SWEEP_COLUMNS`: ``name``; ``position`` (1, 2, ... in the order given);
        ``method`` (run.json's ``method``; ``"gmp"`` for records older than methods, ``None``
        without a run.json, and the distinct methods joined by ", " should models disagree); ``sparsity_target`` and
        ``sparsity_achieved`` (from ``run.json``, NaN when not recorded); ``n_models``;
        ``accuracy_mean``, ``accuracy_std`` (NaN for one model) and ``baseline_accuracy_mean``;
        ``pie_count``, ``pie_fraction``; ``harmed``, ``helped`` (significant classes);
        ``harmed_groups`` (groups harmed beyond the models' average; NaN for an audit without
        groups); ``gate_passed``; ``gate_outcome`` (:data:`~pie_audit.audit.OUTCOMES`);
        ``max_class_drop``, the largest significant class drop, as the gate's ``max-class-drop``
        observes it: minus the most negative normalized recall change among the significantly
        harmed classes (positive; 0 when no class is harmed). Then what the models cost,
        :data:`COST_COLUMNS`: the medians over the population's models of ``run.json`` ``cost``
        (``docs/cost.md``; :class:`~pie_audit.interchange.CostSummary`), NaN where no model
        records one; and the baseline's median ``file_bytes`` and ``latency_batch_1_ms``
        (``baseline_file_bytes``, ``baseline_latency_batch_1_ms``), the same in every row.
    """
    rows = []
    for position, (name, result) in enumerate(results, start=1):
        provenance = population_provenance(result.pruned_runs.values())
        cost = provenance.cost
        baseline_cost = population_provenance(result.baseline_runs.values()).cost
        harmed = result.harmed  # worst first
        rows.append(
            {
                "name": name,
                "position": position,
                "method": provenance.method,
                "sparsity_target": provenance.sparsity_target,
                "sparsity_achieved": provenance.sparsity_achieved,
                "n_models": result.pruned.n_models,
                "accuracy_mean": result.pruned.accuracy_mean,
                "accuracy_std": result.pruned.accuracy_std,
                "baseline_accuracy_mean": result.baseline.accuracy_mean,
                "pie_count": result.pies.count,
                "pie_fraction": result.pies.fraction,
                "harmed": result.n_harmed,
                "helped": result.n_helped,
                "harmed_groups": len(result.harmed_groups) if result.groups is not None else None,
                "gate_passed": result.gate.passed,
                "gate_outcome": result.outcome,
                "max_class_drop": -float(harmed["normalized_change"].iloc[0]) if len(harmed) else 0.0,
                **{column: getattr(cost, column) for column in COST_COLUMNS},
                "baseline_file_bytes": baseline_cost.file_bytes,
                "baseline_latency_batch_1_ms": baseline_cost.latency_batch_1_ms,
            }
        )
    table = pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))
    floats = ("sparsity_target", "sparsity_achieved", "accuracy_std", "harmed_groups", *COST_COLUMNS,
              "baseline_file_bytes", "baseline_latency_batch_1_ms")  # fmt: skip
    for column in floats:
        table[column] = table[column].astype("float64")
    return table
