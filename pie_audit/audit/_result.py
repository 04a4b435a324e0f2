"""What an audit found: the result types, and every value derived from them, computed once.

:func:`pie_audit.audit.audit_populations` computes an :class:`AuditResult`, and
:func:`pie_audit.compare` returns it as its subclass :class:`pie_audit.CompareResult`; the report
and the output directories (:mod:`pie_audit.report`) and the command line read it. This module
sits below all of them, so that computing, rendering and writing never import each other in a
circle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._version import __version__
from ._gate import GateResult
from ._intensification import Intensification
from ._power import PowerInputs, PowerSummary
from ._groups import accuracy_fell, harmed_groups
from ._stats import harmed_classes, helped_classes, recall_fell, recall_rose

__all__ = ["SCHEMA_VERSION", "OUTCOMES", "PieSummary", "PopulationSummary", "AuditResult"]

SCHEMA_VERSION = 2
#: The gate's outcome (:attr:`AuditResult.outcome`): a pass that could not have seen the drop of
#: interest is "underpowered", not "passed".
OUTCOMES = ("passed", "underpowered", "inconclusive", "failed")


@dataclass(frozen=True)
class PieSummary:
    """Counts of PIEs and ties, and each population's accuracy on and off the PIEs.

    ``n_stable`` counts PIEs that stay PIEs in at least 90% of model resamples
    (``examples["stability"]``). ``*_accuracy_non_pies`` is also each population's accuracy once
    the PIEs are removed. Accuracies on an empty subset (no PIE, or nothing but PIEs) are ``None``.

    ``label_issue_*`` (:mod:`pie_audit.audit._labels`): the fraction of PIEs and of the other
    examples that cleanlab flags as likely label errors, the odds ratio and Fisher's two-sided
    p-value; ``None`` when the baseline has no probabilities. ``risk_*`` (the dense-only risk
    ranking, ``docs/risk.md``): the ROC AUC of the risk score for the PIE flag, and the share of
    PIEs among the top 1% and 5% riskiest examples.
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
    label_issue_fraction: float | None = None
    non_pie_label_issue_fraction: float | None = None
    label_issue_odds_ratio: float | None = None
    label_issue_p_value: float | None = None
    risk_auc: float | None = None
    risk_top_1_percent: float | None = None
    risk_top_5_percent: float | None = None


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
class AuditResult:
    """Everything an audit found, and every value derived from it, computed once.

    :class:`pie_audit.CompareResult`, what :func:`pie_audit.compare` returns, adds
    saving and notebook display; reports and outputs need only this.

    Attributes
    ----------
    examples : DataFrame
        One row per example, sorted by ``example_id``: the columns of
        :func:`pie_audit.audit.pie_table`, ``stability`` (:func:`pie_audit.audit.pie_stability`)
        and ``label_name``, ``baseline_modal_name``, ``pruned_modal_name``.
    classes : DataFrame
        One row per class: ``label``, ``name``, ``support``, ``n_pies`` and the columns of
        :func:`pie_audit.audit.class_statistics`.
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
        What the audit could detect (``docs/audit.md``, "Power").
    power_inputs : PowerInputs
        What the power depends on, for :func:`pie_audit.power` to ask other questions.
    config_source : Path or None
        The ``pyproject.toml`` the settings came from, or ``None`` (defaults and arguments).
    notes : tuple of str
        Degenerate situations worth telling the user about (one model, empty classes, ...).
    groups : DataFrame or None
        The subgroup audit, one row per group (:func:`pie_audit.audit.group_statistics`);
        ``None`` when the audit had no groups table.
    group_cells : DataFrame or None
        The recall of each class within each group (:func:`pie_audit.audit.cell_statistics`).
    group_attributes : tuple of str
        The attributes the groups were formed from (also columns of ``examples``); empty
        without groups.
    group_source : Path or None
        The groups table's file; ``None`` for one given in memory, or without groups.
    group_ignored_rows : int
        Rows of the groups table for examples the populations do not have.
    group_power : PowerSummary or None
        What the audit could detect over its tested groups.
    group_power_inputs : PowerInputs or None
        What the groups' power depends on, one entry per group.
    intensification : Intensification or None
        Spearman's correlation over the tested classes between the dense deficit and the
        normalized change (:func:`pie_audit.audit.intensification`).
    group_intensification : Intensification or None
        The same over the tested groups.
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
    groups: pd.DataFrame | None = None
    group_cells: pd.DataFrame | None = None
    group_attributes: tuple[str, ...] = ()
    group_source: Path | None = None
    group_ignored_rows: int = 0
    group_power: PowerSummary | None = None
    group_power_inputs: PowerInputs | None = None
    intensification: Intensification | None = None
    group_intensification: Intensification | None = None

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
        return len(self.harmed)

    @cached_property
    def n_helped(self) -> int:
        """How many classes are significantly helped."""
        return len(self.helped)

    @cached_property
    def outcome(self) -> str:
        """The gate's outcome, one of :data:`OUTCOMES`: ``"underpowered"`` is a pass that could not
        have seen the drop of interest (:attr:`PowerSummary.underpowered`)."""
        if self.gate.failures:
            return "failed"
        if not self.gate.passed:
            return "inconclusive"
        underpowered = self.power.underpowered or (self.group_power is not None and self.group_power.underpowered)
        return "underpowered" if underpowered else "passed"

    def verdict_line(self, *, rules: bool = True, power: bool = True, passed: str = "PASSED") -> str:
        """The gate's verdict, as every place that shows it words it.

        Parameters
        ----------
        rules : bool, default=True
            Say how many rules failed: ``FAILED (2 rule(s))``.
        power : bool, default=True
            Say what an underpowered pass could detect: ``PASSED (underpowered: this audit can
            detect ...)``; else only ``PASSED (underpowered)``.
        passed : str, default="PASSED"
            The word for a pass (a failure is always shouted).

        Returns
        -------
        str
        """
        outcome = self.outcome
        if outcome == "failed":
            return f"FAILED ({len(self.gate.failures)} rule(s))" if rules else "FAILED"
        unsettled = self.gate.inconclusive
        if outcome == "inconclusive":
            return f"INCONCLUSIVE: {_largest(unsettled).message}" if rules else "INCONCLUSIVE"
        caveats = []
        if unsettled:  # allowed: the pass says what it let through
            caveats.append(f"inconclusive allowed: {_largest(unsettled).message}" if rules else "inconclusive allowed")
        if outcome == "underpowered":
            caveats.append(f"underpowered: {self.power_sentence()}" if power else "underpowered")
        return f"{passed} ({'; '.join(caveats)})" if caveats else passed

    @property
    def verdict(self) -> str:
        """The gate's verdict in one line; a pass that could not have seen the drop of interest says so."""
        return f"gate {self.verdict_line()}"

    def power_sentence(self) -> str:
        """What the audit could detect, in words: the median class's detectable drop (and group's)."""
        text = self._class_power_sentence()
        if self.group_power is not None:
            text += "; " + self.group_power_sentence()
        return text

    def group_power_sentence(self) -> str:
        """What the groups' relative tests could detect, in words: :attr:`group_power`,
        and the smallest tested group's ``mde`` when it needs more than the median group."""
        power, groups = self.group_power, self.groups
        if groups is None:
            return "no groups were audited"
        if power is None or power.median_mde is None:
            tested = int(groups["tested"].sum())
            why = (
                "no group has enough examples to be tested"
                if not tested
                else "one model on a side"
                if self.test == "mcnemar" or min(self.baseline.n_models, self.pruned.n_models) < 2
                else "no group's accuracy varies between models"
            )
            return f"no t-test power could be computed for the groups ({why})"
        if power.median_detectable:
            text = (
                f"this audit can detect a group's drop beyond the models' average of {100 * power.median_mde:.1f} "
                f"points or more (median tested group, power {power.target:.1f} at alpha {power.alpha:g})"
            )
        else:
            text = (
                "these models cannot detect any drop of the median tested group "
                f"(power {power.target:.1f} at alpha {power.alpha:g})"
            )
        tested = groups[groups["tested"].astype(bool) & np.isfinite(groups["mde"].to_numpy(dtype=float))]
        smallest = tested.sort_values(["support", "group"]).iloc[0]
        if float(smallest["mde"]) > power.median_mde:
            text += (
                f"; the smallest tested group, {smallest['group']} ({int(smallest['support'])} examples), "
                f"needs {100 * float(smallest['mde']):.1f} points"
            )
        if power.median_mde > power.detect:
            needed = f"about {power.models_needed} models per population" if power.models_needed else "more models"
            text += f"; a group drop of {100 * power.detect:.1f} points needs {needed}"
        return text

    def _class_power_sentence(self) -> str:
        power = self.power
        if power.median_mde is None:
            why = "one model on a side" if self.test == "mcnemar" or min(self.baseline.n_models, self.pruned.n_models) < 2 else "no class's recall varies between models"
            return f"no t-test power could be computed ({why})"
        if power.median_detectable:
            text = (
                f"this audit can detect class drops of {100 * power.median_mde:.1f} points or more "
                f"(median class, power {power.target:.1f} at alpha {power.alpha:g})"
            )
        else:
            # A detectable drop beyond what the class can lose is no drop at all: say so.
            text = f"these models cannot detect any drop of the median class (power {power.target:.1f} at alpha {power.alpha:g})"
        # Named when far weaker than the median: the median alone hid a class that could not see
        # a 39-point drop.
        weakest = [w for w in power.worst if not w[2] or w[1] > max(2 * power.median_mde, power.detect)]
        if weakest:
            text += "; least powered: " + ", ".join(
                f"class {name} ({f'{100 * mde:.1f} points' if detectable else 'cannot detect any drop'})"
                for name, mde, detectable in weakest
            )
        if power.median_mde > power.detect:
            needed = f"about {power.models_needed} models per population" if power.models_needed else "more models"
            text += f"; a drop of {100 * power.detect:.1f} points needs {needed}"
        return text

    @property
    def harmed(self) -> pd.DataFrame:
        """Classes significantly harmed, worst first (by ``normalized_change``, then ``label``)."""
        return harmed_classes(self.classes)

    @property
    def helped(self) -> pd.DataFrame:
        """Classes significantly helped, most helped first."""
        return helped_classes(self.classes)

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

    def __repr__(self) -> str:
        # A notebook cell evaluating a result should show the verdict, not a DataFrame dump.
        n = len(self.examples)
        verdict = self.verdict_line(power=False, passed="passed")
        return (
            f"<{type(self).__name__}: {n} examples, {len(self.classes)} classes; accuracy "
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
                **{
                    key: _json_value(getattr(self.pies, key))
                    for key in (
                        "label_issue_fraction",
                        "non_pie_label_issue_fraction",
                        "label_issue_odds_ratio",
                        "label_issue_p_value",
                        "risk_auc",
                        "risk_top_1_percent",
                        "risk_top_5_percent",
                    )
                },
            },
            "impacted": {
                "harmed": self.n_harmed,
                "helped": self.n_helped,
                "recall_fell": len(recall_fell(self.classes)),
                "recall_rose": len(recall_rose(self.classes)),
            },
            "power": {key: _json_value(value) for key, value in self.power.to_dict().items()},
            "classes": [
                {key: _json_value(value) for key, value in row.items()}
                for row in self.classes.to_dict(orient="records")
            ],
            "intensification": self._intensification_summary(),
            "gate": {**_json_value(self.gate.to_dict()), "outcome": self.outcome},
            "groups": self._groups_summary(),
            "notes": list(self.notes),
        }

    def _intensification_summary(self) -> dict[str, Any] | None:
        if self.intensification is None:
            return None
        groups = self.group_intensification
        return {
            **_json_value(self.intensification.to_dict()),
            "groups": None if groups is None else _json_value(groups.to_dict()),
        }

    @cached_property
    def harmed_groups(self) -> pd.DataFrame:
        """Groups significantly harmed beyond the models' average, worst first (empty without groups)."""
        return harmed_groups(self.groups)

    @cached_property
    def groups_accuracy_fell(self) -> pd.DataFrame:
        """Groups whose accuracy fell significantly (the absolute test), largest fall first (empty without groups)."""
        return accuracy_fell(self.groups)

    def _groups_summary(self) -> dict[str, Any] | None:
        if self.groups is None:
            return None

        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return [{key: _json_value(value) for key, value in row.items()} for row in frame.to_dict(orient="records")]

        return {
            "attributes": list(self.group_attributes),
            "min_support": self.settings.get("min_group_support"),
            "ignored_rows": self.group_ignored_rows,
            "source": str(self.group_source) if self.group_source is not None else None,
            "harmed": len(self.harmed_groups),
            "accuracy_fell": len(self.groups_accuracy_fell),
            "power": None
            if self.group_power is None
            else {key: _json_value(value) for key, value in self.group_power.to_dict().items()},
            "rows": records(self.groups),
            # Only the tested cells: at a thousand classes an untested cell (a handful of
            # examples) is most of groups x classes and would make summary.json ten times larger.
            # result.group_cells has every cell.
            "n_cells": len(self.group_cells),
            "n_untested_cells": int((~self.group_cells["tested"]).sum()),
            "cells": records(self.group_cells[self.group_cells["tested"]]),
        }


def _largest(unsettled):  # noqa: ANN001, ANN202 - GateInconclusive entries
    """The inconclusive rule with the largest unsettled drop, first of equals in rule order."""
    return max(unsettled, key=lambda i: i.value)


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
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
