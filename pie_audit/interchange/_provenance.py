"""What a population's ``run.json`` files say about how its models were made.

A population's models usually share everything but their seed; :func:`population_provenance`
reduces the per-model records to the seeds plus, for each recorded field, the distinct values
found (one value when the models agree), and what the models cost to the medians of their
``cost`` records (:func:`cost_summary`). Pure functions over the dicts that
:func:`pie_audit.interchange.load_population` read; nothing here touches the filesystem.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PROVENANCE_FIELDS",
    "COST_FIELDS",
    "CostSummary",
    "Provenance",
    "cost_summary",
    "population_provenance",
    "NOT_SHOWN",
]

#: Shown for a recorded value too deeply nested (or circular) to write out.
NOT_SHOWN = "(not shown: nested too deeply)"

# (label, dotted path into run.json), in the order the report lists them.
PROVENANCE_FIELDS = (
    ("architecture", "arch"),
    ("dataset", "dataset.name"),
    ("dataset hash", "dataset.hash"),
    ("test examples", "dataset.n_examples"),
    ("split", "dataset.split_description"),
    ("method", "method"),
    ("target sparsity", "sparsity.target"),
    ("channel sparsity", "sparsity.channels.achieved"),
    ("pruning", "pruning.config"),
    ("quantization", "quantization"),
    ("training config", "config"),
    ("command", "command"),
    ("git commit", "git_commit"),
    ("device", "device"),
    ("versions", "versions"),
)

# (attribute of CostSummary, dotted path into run.json's cost), docs/cost.md.
COST_FIELDS = (
    ("parameters_stored", "parameters.stored"),
    ("parameters_nonzero", "parameters.nonzero"),
    ("flops", "flops"),
    ("file_bytes", "file_bytes"),
    ("latency_batch_1_ms", "latency_ms.batch_1"),
    ("latency_batch_64_ms", "latency_ms.batch_64"),
)


@dataclass(frozen=True)
class CostSummary:
    """What a population's models cost: medians over its ``run.json`` ``cost`` records.

    Each value is the median over the records that give it (a finite number), ``None`` when
    none does: predictions without ``run.json``, records from before costs were measured, an
    int8 model's FLOPs (``docs/cost.md``).

    Attributes
    ----------
    n_records : int
        Records with a ``cost``.
    parameters_stored, parameters_nonzero : float or None
        Elements the model stores, and those of them that are not zero.
    flops : float or None
        FLOPs of one example's forward pass.
    file_bytes : float or None
        The saved model's size.
    latency_batch_1_ms, latency_batch_64_ms : float or None
        Median CPU wall time of a batch of 1 and of 64 examples, in milliseconds.
    threads : tuple of int
        The distinct thread counts latency was timed with, in first-seen order.
    """

    n_records: int = 0
    parameters_stored: float | None = None
    parameters_nonzero: float | None = None
    flops: float | None = None
    file_bytes: float | None = None
    latency_batch_1_ms: float | None = None
    latency_batch_64_ms: float | None = None
    threads: tuple[int, ...] = ()

    @property
    def recorded(self) -> bool:
        """Whether any of the values is known."""
        return any(getattr(self, name) is not None for name, _ in COST_FIELDS)


@dataclass(frozen=True)
class Provenance:
    """A population's provenance, summarised over its models.

    Attributes
    ----------
    n_models : int
    n_records : int
        Models with a ``run.json``.
    seeds : tuple of int
        Recorded seeds, sorted.
    sparsity_target : float or None
        The target sparsity when every record agrees on one, else ``None``.
    sparsity_achieved : float or None
        Mean achieved sparsity over the records that give one.
    method : str or None
        The compression method of ``run.json`` (``"gmp"`` for a record without one, written
        before methods existed); distinct methods joined by ", "; ``None`` without records.
    finished : tuple of str
        Earliest and latest ``finished_at`` (empty when none is recorded).
    fields : tuple of (str, tuple of str)
        For each of :data:`PROVENANCE_FIELDS` that any record has: its label and the distinct
        values, as compact JSON (strings as themselves), in first-seen order.
    cost : CostSummary
        Medians of what the models cost (:func:`cost_summary`).
    """

    n_models: int
    n_records: int
    seeds: tuple[int, ...]
    sparsity_target: float | None
    sparsity_achieved: float | None
    method: str | None
    finished: tuple[str, ...]
    fields: tuple[tuple[str, tuple[str, ...]], ...]
    cost: CostSummary = CostSummary()


def _get(record: Mapping[str, Any], path: str) -> Any:
    value: Any = record
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(value)  # a command line
    try:
        return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)
    except (RecursionError, ValueError):
        # Records read from files are bounded (MAX_JSON_DEPTH); one built in memory may not be.
        return NOT_SHOWN


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def cost_summary(records: Iterable[Mapping[str, Any]]) -> CostSummary:
    """:class:`CostSummary` of ``run.json`` records: the median of each :data:`COST_FIELDS` value.

    Examples
    --------
    >>> runs = [{"cost": {"flops": 10, "latency_ms": {"batch_1": 0.2}}}, {"cost": {"flops": 10}}, {}]
    >>> c = cost_summary(runs)
    >>> c.n_records, c.flops, c.latency_batch_1_ms, c.file_bytes
    (2, 10.0, 0.2, None)
    """
    costs = [c for r in records if isinstance(c := r.get("cost"), Mapping)]
    medians = {
        name: _median([v for c in costs if (v := _number(_get(c, path))) is not None]) for name, path in COST_FIELDS
    }
    threads = dict.fromkeys(
        t for c in costs if isinstance(t := _get(c, "timing.threads"), int) and not isinstance(t, bool)
    )
    return CostSummary(n_records=len(costs), **medians, threads=tuple(threads))


def population_provenance(runs: Iterable[Mapping[str, Any] | None]) -> Provenance:
    """Summarise the ``run.json`` records of one population.

    Parameters
    ----------
    runs : iterable of (dict or None)
        One entry per model; ``None`` where a model has no ``run.json``.

    Returns
    -------
    Provenance

    Examples
    --------
    >>> p = population_provenance([{"seed": 1, "arch": "mlp"}, {"seed": 0, "arch": "mlp"}, None])
    >>> p.n_models, p.n_records, p.seeds, p.fields
    (3, 2, (0, 1), (('architecture', ('mlp',)),))
    """
    runs = list(runs)
    records = [r for r in runs if isinstance(r, Mapping)]
    seeds = sorted(s for r in records if isinstance(s := r.get("seed"), int) and not isinstance(s, bool))
    targets = {_number(_get(r, "sparsity.target")) for r in records}
    achieved = [a for r in records if (a := _number(_get(r, "sparsity.achieved"))) is not None]
    finished = sorted(f for r in records if isinstance(f := r.get("finished_at"), str))
    methods = list(dict.fromkeys(m if isinstance(m := r.get("method", "gmp"), str) else _text(m) for r in records))
    fields = []
    for label, path in PROVENANCE_FIELDS:
        values = [_text(v) for r in records if (v := _get(r, path)) is not None]
        if values:
            fields.append((label, tuple(dict.fromkeys(values))))
    return Provenance(
        n_models=len(runs),
        n_records=len(records),
        seeds=tuple(seeds),
        sparsity_target=targets.pop() if len(targets) == 1 else None,
        sparsity_achieved=sum(achieved) / len(achieved) if achieved else None,
        method=", ".join(methods) if methods else None,
        finished=(finished[0], finished[-1]) if finished else (),
        fields=tuple(fields),
        cost=cost_summary(records),
    )
