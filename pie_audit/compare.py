"""The audit: compare a baseline population with a pruned one.

:func:`compare` reads both populations, finds the PIEs (:mod:`pie_audit.pie`), tests every class
(:mod:`pie_audit.stats`), applies the CI gate (:mod:`pie_audit.gate`) and returns a
:class:`CompareResult`, which computes every value derived from them once. Nothing here writes:
:mod:`pie_audit.outputs` writes a result as a report directory. ``docs/audit.md`` documents the
statistics and the ``summary.json`` schema.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from ._version import __version__
from .errors import ConfigError
from .gate import GateResult, GateRules, evaluate_gate
from .pie import accuracy_on, pie_stability, pie_table
from .power import DEFAULT_POWER, PowerInputs, PowerSummary, minimum_detectable_effect, summarise_power
from .settings import Settings, resolve_settings
from .stats import class_statistics, per_model_accuracy, power_inputs
from .store import Population, check_populations, load_population

__all__ = [
    "SCHEMA_VERSION",
    "PieSummary",
    "PopulationSummary",
    "CompareResult",
    "compare",
    "compare_populations",
    "power",
]

SCHEMA_VERSION = 2
#: A PIE is *stable* when it stays a PIE in at least this fraction of model resamples.
STABLE = 0.9
NO_PAIRS = (
    "a paired test needs every pruned model's run.json to name its parent, "
    '"parent": {{"seed": <baseline seed>}}, matching a distinct baseline model\'s "seed", '
    "one to one; {problem}"
)


@dataclass(frozen=True)
class PieSummary:
    """Counts of PIEs and ties, and each population's accuracy on and off the PIEs.

    ``n_stable`` counts PIEs that stay PIEs in at least 90% of model resamples
    (``examples["stability"]``). ``*_accuracy_non_pies`` is also each population's accuracy once
    the PIEs are removed. Accuracies on an empty subset (no PIE, or nothing but PIEs) are ``None``.
    """

    count: int
    fraction: float
    n_stable: int
    n_tied: int
    n_tied_baseline: int
    n_tied_pruned: int
    baseline_accuracy_pies: float | None
    baseline_accuracy_non_pies: float | None
    pruned_accuracy_pies: float | None
    pruned_accuracy_non_pies: float | None


@dataclass(frozen=True)
class PopulationSummary:
    """One population's models and the spread of their top-1 accuracies.

    ``accuracy_std`` is the sample standard deviation, undefined (``None``) for one model.
    """

    path: Path | None
    n_models: int
    accuracy_mean: float
    accuracy_std: float | None
    accuracy_min: float
    accuracy_max: float

    @classmethod
    def of(cls, path: Path | None, accuracy: pd.Series) -> PopulationSummary:
        values = accuracy.to_numpy(dtype=float)
        return cls(
            path=path,
            n_models=len(values),
            accuracy_mean=float(values.mean()),
            accuracy_std=float(values.std(ddof=1)) if len(values) > 1 else None,
            accuracy_min=float(values.min()),
            accuracy_max=float(values.max()),
        )


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
    baseline_dir, pruned_dir : Path or None
        The population directories; ``None`` for populations built in memory.
    baseline_name, pruned_name : str
        How the populations are called in reports (their directory names by default).
    settings : mapping
        ``alpha``, ``correction``, ``tie_break``, ``test`` (as asked), ``detect``,
        ``n_bootstrap``, ``confidence``, ``seed``.
    test : {"welch", "paired", "mcnemar"}
        The per-class test used.
    power : PowerSummary
        What the audit could detect (:mod:`pie_audit.power`).
    power_inputs : PowerInputs
        What the power depends on, for :func:`pie_audit.power` to ask other questions.
    config_source : Path or None
        The ``pyproject.toml`` the settings came from, or ``None`` (defaults and arguments).
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
    baseline_dir: Path | None
    pruned_dir: Path | None
    baseline_name: str
    pruned_name: str
    settings: Mapping[str, Any]
    test: str
    power: PowerSummary
    power_inputs: PowerInputs
    config_source: Path | None = None
    notes: tuple[str, ...] = ()

    @cached_property
    def baseline(self) -> PopulationSummary:
        """The baseline population's size and accuracy spread."""
        return PopulationSummary.of(self.baseline_dir, self.baseline_accuracy)

    @cached_property
    def pruned(self) -> PopulationSummary:
        """The pruned population's size and accuracy spread."""
        return PopulationSummary.of(self.pruned_dir, self.pruned_accuracy)

    @property
    def accuracy_drop(self) -> float:
        """Mean baseline accuracy minus mean pruned accuracy (positive when pruning lost accuracy)."""
        return self.baseline.accuracy_mean - self.pruned.accuracy_mean

    @cached_property
    def n_harmed(self) -> int:
        """How many classes are significantly harmed."""
        return int((self.classes["direction"] == "harmed").sum())

    @cached_property
    def n_helped(self) -> int:
        """How many classes are significantly helped."""
        return int((self.classes["direction"] == "helped").sum())

    @property
    def verdict(self) -> str:
        """The gate's verdict in one line; a pass that could not have seen the drop of interest says so."""
        if not self.gate.passed:
            return f"gate FAILED ({len(self.gate.failures)} rule(s))"
        if self.power.underpowered:
            return f"gate PASSED (underpowered: {self.power_sentence()})"
        return "gate PASSED"

    def power_sentence(self) -> str:
        """What the audit could detect, in words: the median class's detectable drop."""
        power = self.power
        if power.median_mde is None:
            why = "one model on a side" if self.test == "mcnemar" or min(self.baseline.n_models, self.pruned.n_models) < 2 else "no class's recall varies between models"
            return f"no t-test power could be computed ({why})"
        text = (
            f"this audit can detect class drops of {100 * power.median_mde:.1f} points or more "
            f"(median class, power {power.target:.1f} at alpha {power.alpha:g})"
        )
        if power.median_mde > power.detect:
            needed = f"about {power.models_needed} models per population" if power.models_needed else "more models"
            text += f"; a drop of {100 * power.detect:.1f} points needs {needed}"
        return text

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

    def top_pies(self, limit: int | None = 10) -> pd.DataFrame:
        """The ``limit`` PIEs whose populations' votes differ most (``score``), ties by example id.

        Rows of :attr:`examples`, with the class names; ``limit=None`` gives every PIE.
        """
        pies = self.examples[self.examples["pie"]]
        ranked = pies.sort_values(["score", "example_id"], ascending=[False, True])
        return ranked if limit is None else ranked.head(limit)

    @cached_property
    def pie_flows(self) -> pd.DataFrame:
        """Where the PIEs went: PIEs counted by (baseline modal class, pruned modal class).

        Returns
        -------
        DataFrame
            Columns ``baseline_modal``, ``pruned_modal`` (labels), ``baseline_modal_name``,
            ``pruned_modal_name``, ``count`` (PIEs), ``true_label_share`` (the fraction of them
            whose true label is the baseline's modal class); most frequent first. For example a
            row ``four -> one, 12`` says 12 examples the baseline calls "four" the pruned models
            call "one".
        """
        pies = self.examples[self.examples["pie"]]
        names = self.classes["name"].to_numpy()
        grouped = pies.assign(right=pies["label"] == pies["baseline_modal"]).groupby(
            ["baseline_modal", "pruned_modal"], sort=True
        )
        flows = grouped.agg(count=("example_id", "size"), true_label_share=("right", "mean")).reset_index()
        flows.insert(2, "baseline_modal_name", names[flows["baseline_modal"].to_numpy()].astype(object))
        flows.insert(3, "pruned_modal_name", names[flows["pruned_modal"].to_numpy()].astype(object))
        flows = flows.sort_values(["count", "baseline_modal", "pruned_modal"], ascending=[False, True, True])
        return flows.reset_index(drop=True)

    def save(
        self,
        out: str | Path,
        *,
        images: Any = None,
        data_root: str | Path | None = "data",
        junit: str | Path | None = None,
    ) -> Path:
        """Write what ``pie-audit compare --out`` writes, atomically (:func:`pie_audit.write_outputs`).

        Parameters
        ----------
        out : str or Path
            The report directory: missing, or holding a previous report.
        images : str, Path, or False, optional
            The gallery's images: an images file (``docs/interchange-format.md``: an ``.npz``
            with ``example_id`` and ``images``), ``False`` for none, or by default the dataset
            the models' ``run.json`` names, looked up under ``data_root``.
        data_root : str or Path, optional
            Where that dataset is looked for, as ``--data-root``.
        junit : str or Path, optional
            Also write the gate as JUnit XML there.

        Returns
        -------
        Path
            ``out``.
        """
        # Writing is outputs.py's job; a result only knows where to send itself.
        from .outputs import pie_gallery, write_outputs

        gallery = pie_gallery(self, data_root=None if images is False else data_root, images=images or None)
        return write_outputs(self, out, gallery=gallery, junit=junit)

    def _repr_html_(self) -> str:
        # A notebook shows the verdict, the worst classes and the top PIEs, not a DataFrame dump.
        from .report import render_summary_html

        return render_summary_html(self)

    def __repr__(self) -> str:
        # A notebook cell evaluating a result should show the verdict, not a DataFrame dump.
        n = len(self.examples)
        verdict = "passed" if self.gate.passed else f"FAILED ({len(self.gate.failures)} rule(s))"
        if self.gate.passed and self.power.underpowered:
            verdict += " (underpowered)"
        return (
            f"<CompareResult: {n} examples, {len(self.classes)} classes; accuracy "
            f"{self.baseline.accuracy_mean:.2%} ({self.baseline.n_models} baseline models) -> "
            f"{self.pruned.accuracy_mean:.2%} ({self.pruned.n_models} pruned); "
            f"{self.pies.count} PIEs ({self.pies.fraction:.2%}); {self.n_harmed} classes harmed, "
            f"{self.n_helped} helped; gate {verdict}>"
        )

    def to_summary(self) -> dict[str, Any]:
        """The content of ``summary.json``: strict JSON types, ``None`` for undefined values."""
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "pie-audit", "version": __version__},
            "settings": {_dashed(k): v for k, v in self.settings.items()},
            "test": self.test,
            "config": {
                "source": str(self.config_source) if self.config_source is not None else None,
                "rules": self.gate.rules.limits(),
            },
            "n_examples": len(self.examples),
            "n_classes": len(self.classes),
            "baseline": _population_summary(self.baseline, self.baseline_accuracy),
            "pruned": _population_summary(self.pruned, self.pruned_accuracy),
            "pies": {
                "count": self.pies.count,
                "fraction": self.pies.fraction,
                "n_stable": self.pies.n_stable,
                "n_tied": self.pies.n_tied,
                "n_tied_baseline": self.pies.n_tied_baseline,
                "n_tied_pruned": self.pies.n_tied_pruned,
                "baseline_accuracy_pies": self.pies.baseline_accuracy_pies,
                "baseline_accuracy_non_pies": self.pies.baseline_accuracy_non_pies,
                "pruned_accuracy_pies": self.pies.pruned_accuracy_pies,
                "pruned_accuracy_non_pies": self.pies.pruned_accuracy_non_pies,
            },
            "impacted": {
                "harmed": self.n_harmed,
                "helped": self.n_helped,
                "recall_fell": int((self.classes["recall_significant"] & (self.classes["recall_change"] < 0)).sum()),
                "recall_rose": int((self.classes["recall_significant"] & (self.classes["recall_change"] > 0)).sum()),
            },
            "power": {key: _json_value(value) for key, value in self.power.to_dict().items()},
            "classes": [
                {key: _json_value(value) for key, value in row.items()}
                for row in self.classes.to_dict(orient="records")
            ],
            "gate": self.gate.to_dict(),
            "notes": list(self.notes),
        }


def _population_summary(summary: PopulationSummary, accuracy: pd.Series) -> dict[str, Any]:
    return {
        "path": str(summary.path) if summary.path is not None else None,
        "n_models": summary.n_models,
        "accuracy_mean": summary.accuracy_mean,
        "accuracy_std": summary.accuracy_std,
        "models": [{"name": name, "accuracy": float(a)} for name, a in accuracy.items()],
    }


def _dashed(name: str) -> str:
    return name.replace("_", "-")


def _json_value(value: Any) -> Any:
    """NaN and ±inf have no strict-JSON form: they become ``None`` (documented in docs/audit.md)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def compare(
    baseline: str | Path | Population,
    pruned: str | Path | Population,
    *,
    alpha: float | None = None,
    correction: str | None = None,
    tie_break: str | None = None,
    test: str | None = None,
    detect: float | None = None,
    rules: GateRules | Mapping[str, float | int | None] | None = None,
    n_bootstrap: int | None = None,
    confidence: float | None = None,
    seed: int | None = None,
    config: str | Path | None = None,
) -> CompareResult:
    """Audit what pruning did: PIEs, per-class disparate impact and the CI gate.

    Every setting left out is taken from ``config`` when given, else from the defaults of
    :class:`pie_audit.settings.Settings` (shown below); ``pie-audit compare`` resolves its flags
    the same way, so the same options and ``pyproject.toml`` give the same result.

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
    test : {"auto", "welch", "paired", "mcnemar"}, default="auto"
        The per-class test (``docs/audit.md``): ``"auto"`` takes McNemar's for one model
        against one, paired t-tests when every pruned model's ``run.json`` names a distinct
        baseline parent, else Welch's.
    detect : float, optional
        The class drop the power analysis asks about; default the ``max-class-drop`` limit.
    rules : GateRules or mapping, optional
        The CI gate's limits: a :class:`GateRules` replaces them all; a mapping
        (``{"max_pie_fraction": 0.05}``) replaces only the rules it names. Default
        ``GateRules()``.
    n_bootstrap : int, default=1000
        Bootstrap resamples for the ``normalized_change`` interval.
    confidence : float, default=0.95
        Level of that interval.
    seed : int, default=0
        Seed of the bootstrap.
    config : str or Path, optional
        A ``pyproject.toml`` whose ``[tool.pie-audit]`` table supplies the settings not given
        here (:func:`pie_audit.settings.read_settings`).

    Returns
    -------
    CompareResult

    Raises
    ------
    FormatError
        Either population is missing, malformed, or incompatible with the other.
    ConfigError
        An invalid setting, or an unreadable ``config``.
    """
    options: dict[str, Any] = {
        "alpha": alpha,
        "correction": correction,
        "tie_break": tie_break,
        "test": test,
        "detect": detect,
        "n_bootstrap": n_bootstrap,
        "confidence": confidence,
        "seed": seed,
    }
    if rules is not None and not isinstance(rules, GateRules):
        options |= dict(rules)
    # Checked before any file is read, so that a typo fails fast.
    settings = resolve_settings(options, config=config)
    if isinstance(rules, GateRules):
        settings = replace(settings, rules=rules)
    return compare_populations(baseline, pruned, settings=settings)


def compare_populations(
    baseline: str | Path | Population, pruned: str | Path | Population, *, settings: Settings
) -> CompareResult:
    """:func:`compare` with settings already resolved (:func:`pie_audit.settings.resolve_settings`).

    Parameters
    ----------
    baseline, pruned : str, Path or Population
    settings : Settings

    Returns
    -------
    CompareResult
    """
    baseline = baseline if isinstance(baseline, Population) else load_population(Path(baseline))
    pruned = pruned if isinstance(pruned, Population) else load_population(Path(pruned))
    names = check_populations(baseline, pruned)
    labels = baseline.labels
    test, parents = _design(baseline, pruned, settings.test)
    examples = pie_table(
        baseline.predictions,
        pruned.predictions,
        labels,
        example_ids=baseline.example_ids,
        tie_break=settings.tie_break,
    )
    examples["stability"] = pie_stability(
        baseline.predictions, pruned.predictions, seed=settings.seed, tie_break=settings.tie_break
    )
    # A paired test compares each pruned model with its own parent: baseline rows in that order.
    tested_baseline = baseline.predictions if parents is None else baseline.predictions[parents]
    stats = class_statistics(
        tested_baseline,
        pruned.predictions,
        labels,
        n_classes=len(names),
        test=test,
        alpha=settings.alpha,
        correction=settings.correction,
        n_bootstrap=settings.n_bootstrap,
        confidence=settings.confidence,
        seed=settings.seed,
    )
    is_pie = examples["pie"].to_numpy()
    _name_columns(examples, names)
    stats.insert(1, "name", list(names))
    stats.insert(3, "n_pies", np.bincount(labels[is_pie], minlength=len(names)).astype(np.int64))

    base_acc = pd.Series(per_model_accuracy(baseline.predictions, labels), index=list(baseline.models))
    pruned_acc = pd.Series(per_model_accuracy(pruned.predictions, labels), index=list(pruned.models))
    count = int(is_pie.sum())
    n_stable = int((is_pie & (examples["stability"].to_numpy() >= STABLE)).sum())
    inputs = power_inputs(tested_baseline, pruned.predictions, labels, n_classes=len(names), test=test)
    power = summarise_power(inputs, stats["mde"].to_numpy(), detect=settings.detect_drop, alpha=settings.alpha)
    pies = PieSummary(
        count=count,
        fraction=count / len(examples),
        n_stable=n_stable,
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
        stable_pie_fraction=n_stable / len(examples),
        accuracy_drop=float(base_acc.mean() - pruned_acc.mean()),
        power_at_detect=power.power_at_detect,
        detect=power.detect,
        rules=settings.rules,
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
        baseline_name=baseline.name,
        pruned_name=pruned.name,
        settings=MappingProxyType(settings.statistics()),
        test=test,
        power=power,
        power_inputs=inputs,
        config_source=settings.source,
        notes=_notes(baseline, pruned, stats, test),
    )


def _name_columns(examples: pd.DataFrame, names: tuple[str, ...]) -> None:
    """Add ``label_name``, ``baseline_modal_name`` and ``pruned_modal_name`` to ``examples``."""
    categories = pd.CategoricalDtype(list(dict.fromkeys(names)))
    lookup = np.asarray(names, dtype=object)
    for column in ("label", "baseline_modal", "pruned_modal"):
        # Categorical: one copy of each name, whatever the number of examples.
        examples[f"{column}_name"] = pd.Categorical(lookup[examples[column].to_numpy()], dtype=categories)


def _design(baseline: Population, pruned: Population, test: str) -> tuple[str, np.ndarray | None]:
    """The per-class test to run and, for pairs, the baseline row of each pruned model's parent."""
    single = baseline.n_models == 1 and pruned.n_models == 1
    parents, problem = _parents(baseline, pruned)
    if test == "auto":
        if single:
            return "mcnemar", None
        return ("paired", parents) if parents is not None and pruned.n_models >= 2 else ("welch", None)
    if test == "paired":
        if parents is None:
            raise ConfigError(NO_PAIRS.format(problem=problem))
        return "paired", parents
    return test, None


def _parents(baseline: Population, pruned: Population) -> tuple[np.ndarray | None, str]:
    """Baseline row of each pruned model's parent (run.json ``parent.seed``), or why there is none."""
    if baseline.n_models != pruned.n_models:
        return None, f"there are {baseline.n_models} baseline and {pruned.n_models} pruned models"
    rows: dict[int, int] = {}
    for row, (model, run) in enumerate(zip(baseline.models, baseline.runs, strict=True)):
        seed = run.get("seed") if isinstance(run, dict) else None
        if not isinstance(seed, int) or isinstance(seed, bool) or seed in rows:
            return None, f"baseline model {model} has no distinct integer seed in its run.json"
        rows[seed] = row
    order = []
    for model, run in zip(pruned.models, pruned.runs, strict=True):
        parent = run.get("parent") if isinstance(run, dict) else None
        seed = parent.get("seed") if isinstance(parent, dict) else None
        if seed not in rows or isinstance(seed, bool):
            return None, f"pruned model {model} names no parent among the baseline seeds"
        order.append(rows[seed])
    if len(set(order)) != len(order):
        return None, "two pruned models name the same parent"
    return np.asarray(order), ""


def _notes(baseline: Population, pruned: Population, classes: pd.DataFrame, test: str) -> tuple[str, ...]:
    notes = []
    if test == "mcnemar":
        notes.append(
            "one model on each side: each class got an exact McNemar test on its test examples, "
            "which tests these two models on this test set, not populations of seeds; train "
            "several seeds of each to learn what pruning does in general"
        )
    else:
        for role, population in (("baseline", baseline), ("pruned", pruned)):
            if population.n_models < 2:
                notes.append(
                    f"the {role} population has {population.n_models} model: significance tests "
                    "need at least 2 models per population, so no class was tested"
                )
    if test == "paired":
        notes.append(
            "every pruned model names its baseline parent: classes were tested with paired t-tests, "
            "which remove the seed-to-seed spread"
        )
    empty = classes.loc[classes["support"] == 0, "label"].tolist()
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        notes.append(f"{len(empty)} class(es) have no test example and were not tested: {shown}")
    return tuple(notes)


def power(result: CompareResult, *, detect: float | None = None, target: float = DEFAULT_POWER) -> PowerSummary:
    """How many models an audit needs, from a pilot audit: its power against a drop of ``detect``.

    Parameters
    ----------
    result : CompareResult
        A (pilot) audit; its populations' per-model spread stands in for the true one.
    detect : float, optional
        The class drop of interest, a fraction (0.02 = 2 points); default the audit's own.
    target : float, default=0.8
        The power asked for.

    Returns
    -------
    PowerSummary
        ``models_needed``: models per population the median class needs to detect ``detect``
        with power ``target``; ``median_mde``: what the pilot itself can detect.

    Examples
    --------
    >>> pilot = pie_audit.compare("runs/dense", "runs/pruned-90")   # doctest: +SKIP
    >>> pie_audit.power(pilot, detect=0.02).models_needed            # doctest: +SKIP
    24
    """
    detect = result.power.detect if detect is None else detect
    if not 0 < detect <= 1 or not 0 < target < 1:
        raise ConfigError(f"detect must be in (0, 1] and target in (0, 1), not {detect!r} and {target!r}")
    inputs = result.power_inputs
    se, df = inputs.se_df()
    alpha = result.power.alpha
    mde = minimum_detectable_effect(se, df, alpha=alpha, power=target)
    return summarise_power(inputs, mde, detect=detect, alpha=alpha, target=target)
