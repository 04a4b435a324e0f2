"""The audit: compare a baseline population with a pruned one.

:func:`compare` reads both population directories, finds the PIEs (:mod:`pie_audit.pie`),
tests every class (:mod:`pie_audit.stats`), applies the CI gate (:mod:`pie_audit.gate`) and
returns a :class:`CompareResult`. :func:`write_outputs` writes that result as a report
directory, atomically. ``docs/audit.md`` documents the statistics and the ``summary.json`` schema.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import __version__
from .errors import ConfigError
from .gate import GateResult, GateRules, evaluate_gate
from .pie import TIE_BREAKS, accuracy_on, pie_table
from .stats import BAD_ALPHA, BAD_CORRECTION, CORRECTIONS, class_statistics, per_model_accuracy
from .store import Population, check_populations, load_population, replace_directory

if TYPE_CHECKING:  # pragma: no cover
    from .thumbnails import Thumbnails

__all__ = [
    "SCHEMA_VERSION",
    "OUTPUT_FILES",
    "PieSummary",
    "CompareResult",
    "compare",
    "write_outputs",
]

SCHEMA_VERSION = 1
SUMMARY_FILE = "summary.json"
EXAMPLES_FILE = "examples.parquet"
CLASSES_FILE = "classes.csv"
REPORT_FILE = "report.html"
OUTPUT_FILES = (SUMMARY_FILE, EXAMPLES_FILE, CLASSES_FILE, REPORT_FILE)
BAD_TIE_BREAK = "tie_break must be one of {choices}, not {value!r}"


@dataclass(frozen=True)
class PieSummary:
    """Counts of PIEs and ties, and each population's accuracy on and off the PIEs.

    ``*_accuracy_non_pies`` is also each population's accuracy once the PIEs are removed.
    Accuracies on an empty subset (no PIE, or nothing but PIEs) are ``None``.
    """

    count: int
    fraction: float
    n_tied: int
    n_tied_baseline: int
    n_tied_pruned: int
    baseline_accuracy_pies: float | None
    baseline_accuracy_non_pies: float | None
    pruned_accuracy_pies: float | None
    pruned_accuracy_non_pies: float | None


@dataclass(frozen=True, eq=False)
class CompareResult:
    """Everything :func:`compare` found.

    Attributes
    ----------
    examples : DataFrame
        One row per example, sorted by ``example_id``; the columns of
        :func:`pie_audit.pie.pie_table`.
    classes : DataFrame
        One row per class: ``label``, ``name``, ``support``, ``n_pies`` and the columns of
        :func:`pie_audit.stats.class_statistics`.
    baseline_accuracy, pruned_accuracy : Series
        Top-1 accuracy of each model, indexed by model directory name.
    baseline_runs, pruned_runs : mapping of str to (dict or None)
        Each model's ``run.json`` (``None`` where absent), for provenance.
    pies : PieSummary
    gate : GateResult
    baseline_dir, pruned_dir : Path
    settings : mapping
        ``alpha``, ``correction``, ``tie_break``, ``n_bootstrap``, ``confidence``, ``seed``.
    notes : tuple of str
        Degenerate situations worth telling the user about (one model, empty classes, ...).
    """

    examples: pd.DataFrame
    classes: pd.DataFrame
    baseline_accuracy: pd.Series
    pruned_accuracy: pd.Series
    baseline_runs: Mapping[str, dict[str, Any] | None]
    pruned_runs: Mapping[str, dict[str, Any] | None]
    pies: PieSummary
    gate: GateResult
    baseline_dir: Path
    pruned_dir: Path
    settings: Mapping[str, Any]
    notes: tuple[str, ...] = ()

    @property
    def harmed(self) -> pd.DataFrame:
        """Classes significantly harmed, worst first."""
        rows = self.classes[self.classes["direction"] == "harmed"]
        return rows.sort_values(["normalized_change", "label"])

    @property
    def helped(self) -> pd.DataFrame:
        """Classes significantly helped, most helped first."""
        rows = self.classes[self.classes["direction"] == "helped"]
        return rows.sort_values(["normalized_change", "label"], ascending=[False, True])

    def top_pies(self, limit: int) -> pd.DataFrame:
        """The ``limit`` PIEs whose populations' votes differ most (``score``), ties by example id."""
        pies = self.examples[self.examples["pie"]]
        return pies.sort_values(["score", "example_id"], ascending=[False, True]).head(limit)

    def __repr__(self) -> str:
        # A notebook cell evaluating a result should show the verdict, not a DataFrame dump.
        n = len(self.examples)
        verdict = "passed" if self.gate.passed else f"FAILED ({len(self.gate.failures)} rule(s))"
        return (
            f"<CompareResult: {n} examples, {len(self.classes)} classes; accuracy "
            f"{self.baseline_accuracy.mean():.2%} ({len(self.baseline_accuracy)} baseline models) -> "
            f"{self.pruned_accuracy.mean():.2%} ({len(self.pruned_accuracy)} pruned); "
            f"{self.pies.count} PIEs ({self.pies.fraction:.2%}); {len(self.harmed)} classes harmed, "
            f"{len(self.helped)} helped; gate {verdict}>"
        )

    def to_summary(self) -> dict[str, Any]:
        """The content of ``summary.json``: strict JSON types, ``None`` for undefined values."""
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "pie-audit", "version": __version__},
            "settings": dict(self.settings),
            "n_examples": len(self.examples),
            "n_classes": len(self.classes),
            "baseline": _population_summary(self.baseline_dir, self.baseline_accuracy),
            "pruned": _population_summary(self.pruned_dir, self.pruned_accuracy),
            "pies": {
                "count": self.pies.count,
                "fraction": self.pies.fraction,
                "n_tied": self.pies.n_tied,
                "n_tied_baseline": self.pies.n_tied_baseline,
                "n_tied_pruned": self.pies.n_tied_pruned,
                "baseline_accuracy_pies": self.pies.baseline_accuracy_pies,
                "baseline_accuracy_non_pies": self.pies.baseline_accuracy_non_pies,
                "pruned_accuracy_pies": self.pies.pruned_accuracy_pies,
                "pruned_accuracy_non_pies": self.pies.pruned_accuracy_non_pies,
            },
            "impacted": {
                "harmed": int((self.classes["direction"] == "harmed").sum()),
                "helped": int((self.classes["direction"] == "helped").sum()),
            },
            "classes": [
                {key: _json_value(value) for key, value in row.items()}
                for row in self.classes.to_dict(orient="records")
            ],
            "gate": self.gate.to_dict(),
            "notes": list(self.notes),
        }


def _population_summary(path: Path, accuracy: pd.Series) -> dict[str, Any]:
    return {
        "path": str(path),
        "n_models": len(accuracy),
        "accuracy_mean": float(accuracy.mean()),
        # The sample standard deviation is undefined for one model.
        "accuracy_std": float(accuracy.std(ddof=1)) if len(accuracy) > 1 else None,
        "models": [{"name": name, "accuracy": float(a)} for name, a in accuracy.items()],
    }


def _json_value(value: Any) -> Any:
    """NaN and ±inf have no strict-JSON form: they become ``None`` (documented in docs/audit.md)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _check_settings(alpha: float, correction: str, tie_break: str) -> None:
    # Checked before any file is read, so that a typo fails fast.
    if correction not in CORRECTIONS:
        raise ConfigError(BAD_CORRECTION.format(choices=", ".join(CORRECTIONS), value=correction))
    if tie_break not in TIE_BREAKS:
        raise ConfigError(BAD_TIE_BREAK.format(choices=", ".join(TIE_BREAKS), value=tie_break))
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfigError(BAD_ALPHA.format(value=alpha))


def compare(
    baseline: str | Path | Population,
    pruned: str | Path | Population,
    *,
    alpha: float = 0.05,
    correction: str = "fdr_bh",
    tie_break: str = "lowest",
    rules: GateRules = GateRules(),
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CompareResult:
    """Audit what pruning did: PIEs, per-class disparate impact and the CI gate.

    Parameters
    ----------
    baseline, pruned : str, Path or Population
        Population directories in the interchange format (see :mod:`pie_audit.store`), or
        populations already read with :func:`pie_audit.store.load_population`.
    alpha : float, default=0.05
        A class is significant when its q-value is at most ``alpha``.
    correction : {"fdr_bh", "none"}, default="fdr_bh"
        Multiple-testing correction across classes; ``"none"`` is the paper's raw p rule.
    tie_break : {"lowest", "highest"}, default="lowest"
        Which label wins a tied modal vote; ``"highest"`` is the paper's code.
    rules : GateRules
        The CI gate's limits.
    n_bootstrap : int, default=1000
        Bootstrap resamples for the ``normalized_change`` interval.
    confidence : float, default=0.95
        Level of that interval.
    seed : int, default=0
        Seed of the bootstrap.

    Returns
    -------
    CompareResult

    Raises
    ------
    FormatError
        Either population is missing, malformed, or incompatible with the other.
    ConfigError
        An invalid setting.
    """
    _check_settings(alpha, correction, tie_break)
    baseline = baseline if isinstance(baseline, Population) else load_population(Path(baseline))
    pruned = pruned if isinstance(pruned, Population) else load_population(Path(pruned))
    names = check_populations(baseline, pruned)
    labels = baseline.labels
    examples = pie_table(
        baseline.predictions,
        pruned.predictions,
        labels,
        example_ids=baseline.example_ids,
        tie_break=tie_break,
    )
    stats = class_statistics(
        baseline.predictions,
        pruned.predictions,
        labels,
        n_classes=len(names),
        alpha=alpha,
        correction=correction,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        seed=seed,
    )
    is_pie = examples["pie"].to_numpy()
    stats.insert(1, "name", list(names))
    stats.insert(3, "n_pies", np.bincount(labels[is_pie], minlength=len(names)).astype(np.int64))

    base_acc = pd.Series(per_model_accuracy(baseline.predictions, labels), index=list(baseline.models))
    pruned_acc = pd.Series(per_model_accuracy(pruned.predictions, labels), index=list(pruned.models))
    count = int(is_pie.sum())
    pies = PieSummary(
        count=count,
        fraction=count / len(examples),
        n_tied=int((examples["baseline_tied"] | examples["pruned_tied"]).sum()),
        n_tied_baseline=int(examples["baseline_tied"].sum()),
        n_tied_pruned=int(examples["pruned_tied"].sum()),
        baseline_accuracy_pies=accuracy_on(baseline.predictions, labels, is_pie),
        baseline_accuracy_non_pies=accuracy_on(baseline.predictions, labels, ~is_pie),
        pruned_accuracy_pies=accuracy_on(pruned.predictions, labels, is_pie),
        pruned_accuracy_non_pies=accuracy_on(pruned.predictions, labels, ~is_pie),
    )
    gate = evaluate_gate(
        stats,
        pie_fraction=pies.fraction,
        accuracy_drop=float(base_acc.mean() - pruned_acc.mean()),
        rules=rules,
        class_names=names,
    )
    return CompareResult(
        examples=examples,
        classes=stats,
        baseline_accuracy=base_acc,
        pruned_accuracy=pruned_acc,
        baseline_runs=MappingProxyType(dict(zip(baseline.models, baseline.runs, strict=True))),
        pruned_runs=MappingProxyType(dict(zip(pruned.models, pruned.runs, strict=True))),
        pies=pies,
        gate=gate,
        baseline_dir=baseline.path,
        pruned_dir=pruned.path,
        settings=MappingProxyType(
            {
                "alpha": alpha,
                "correction": correction,
                "tie_break": tie_break,
                "n_bootstrap": n_bootstrap,
                "confidence": confidence,
                "seed": seed,
            }
        ),
        notes=_notes(baseline, pruned, stats),
    )


def _notes(baseline: Population, pruned: Population, classes: pd.DataFrame) -> tuple[str, ...]:
    notes = []
    for role, population in (("baseline", baseline), ("pruned", pruned)):
        if population.n_models < 2:
            notes.append(
                f"the {role} population has {population.n_models} model: significance tests "
                "need at least 2 models per population, so no class was tested"
            )
    empty = classes.loc[classes["support"] == 0, "label"].tolist()
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        notes.append(f"{len(empty)} class(es) have no test example and were not tested: {shown}")
    return tuple(notes)


def write_outputs(
    result: CompareResult,
    out: str | Path,
    *,
    thumbnails: Thumbnails | None = None,
    command: Sequence[str] | None = None,
    sweep_link: str | None = None,
) -> Path:
    """Write ``summary.json``, ``examples.parquet``, ``classes.csv`` and ``report.html``.

    The files are written into a temporary directory that then replaces ``out`` atomically:
    ``out`` may be missing or hold a previous report; anything else is refused.

    Parameters
    ----------
    result : CompareResult
    out : str or Path
        The report directory.
    thumbnails : Thumbnails, optional
        Images for the report's PIE gallery (:func:`pie_audit.thumbnails.pie_thumbnails`).
    command : sequence of str, optional
        The command line, recorded in the report's provenance.
    sweep_link : str, optional
        Relative link from ``report.html`` back to a sweep page.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    OutputError
        ``out`` holds files that are not a report, or cannot be written.
    """
    from .report import render_report

    out = Path(out)
    # Rendered first: the slowest step, and nothing is replaced if it fails.
    html = render_report(result, thumbnails=thumbnails, command=command, sweep_link=sweep_link)
    with replace_directory(out) as tmp:
        with open(tmp / SUMMARY_FILE, "w", encoding="utf-8") as fh:
            json.dump(result.to_summary(), fh, indent=2, allow_nan=False)
            fh.write("\n")
        result.examples.to_parquet(tmp / EXAMPLES_FILE, index=False)
        result.classes.to_csv(tmp / CLASSES_FILE, index=False)
        (tmp / REPORT_FILE).write_text(html, encoding="utf-8")
    return out
