"""The audit of two populations: PIEs, per-class statistics, power and the gate.

:func:`audit_populations` reads both populations (:mod:`pie_audit.interchange`) unless they are
already in memory, picks the per-class test (McNemar, paired or Welch), finds the PIEs and their
stability (:mod:`._pie`), tests every class (:mod:`._stats`), summarises the power
(:mod:`._power`), applies the CI gate (:mod:`._gate`) and returns an :class:`~._result.AuditResult`,
which derives every further value from them once. :func:`power` asks a finished audit how many
models another would need. Nothing here writes or renders, and nothing here imports torch:
:func:`pie_audit.compare` wraps the result so that it can save and display itself.
``docs/audit.md`` documents the statistics and the ``summary.json`` schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, FormatError
from ..interchange import (
    GROUPS_FILE,
    GroupTable,
    Population,
    check_populations,
    load_population,
    mean_probabilities,
    read_groups,
)
from ._gate import evaluate_gate
from ._groups import audit_groups
from ._intensification import intensification
from ._labels import NO_PROBABILITIES, LabelIssues, label_issue_enrichment, label_issues
from ._risk import risk_auc, risk_scores, top_share
from ._pie import STABLE, accuracy_on, pie_stability, pie_table
from ._power import DEFAULT_POWER, PowerSummary, minimum_detectable_effect, summarise_power
from ._result import AuditResult, PieSummary
from ._settings import Settings
from ._stats import class_statistics, per_model_accuracy, power_inputs

__all__ = ["audit_populations", "power"]

NO_PAIRS = (
    "a paired test needs every pruned model's run.json to name its parent, "
    '"parent": {{"seed": <baseline seed>}}, matching a distinct baseline model\'s "seed", '
    "one to one; {problem}"
)


def audit_populations(
    baseline: str | Path | Population,
    pruned: str | Path | Population,
    *,
    settings: Settings,
    groups: str | Path | pd.DataFrame | None = None,
    group_by: Sequence[str] | None = None,
) -> AuditResult:
    """The audit of ``pruned`` against ``baseline``, settings resolved (:func:`pie_audit.audit.resolve_settings`).

    Parameters
    ----------
    baseline, pruned : str, Path or Population
        Population directories (read with :func:`pie_audit.load_population`), or populations
        in memory (:meth:`pie_audit.Population.from_arrays`).
    settings : Settings
    groups : str, Path or DataFrame, optional
        A groups table (``example_id`` and attribute columns, ``docs/groups.md``) for the
        subgroup audit. Default: the baseline population's own ``groups.parquet``, else the
        pruned one's, else no subgroup audit.
    group_by : sequence of str, optional
        The attributes to form groups from; default every attribute column of the table.

    Returns
    -------
    AuditResult

    Raises
    ------
    FormatError
        A population is missing or malformed, or the two differ in examples, labels or classes.
        A groups table is missing, malformed or lacks an example (its file and column named).
    ConfigError
        ``settings.test`` is ``"paired"`` and the pruned models do not name distinct parents;
        ``group_by`` names an unknown column, or is given without any groups table.
    """
    baseline = baseline if isinstance(baseline, Population) else load_population(Path(baseline))
    pruned = pruned if isinstance(pruned, Population) else load_population(Path(pruned))
    names = check_populations(baseline, pruned)
    labels = baseline.labels
    test, parents = _design(baseline, pruned, settings.test)
    # Read before any statistic, so that a bad groups table fails fast.
    table, picked = _groups_table(baseline, pruned, groups, group_by)
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
    probabilities = _baseline_probabilities(baseline)
    labelled = _label_issues(probabilities, labels, examples)
    # The dense-only risk ranking (docs/risk.md): the same score `pie-audit risk` gives before
    # any pruning, here checked against the PIEs pruning produced.
    risk = risk_scores(baseline.predictions, labels, probabilities=probabilities, tie_break=settings.tie_break)
    examples["risk"] = risk["risk"].to_numpy()
    found = None
    if table is not None:
        _check_attribute_names(table, examples)
        for column in table.names:
            examples[column] = table.attributes[column].to_numpy()
        found = audit_groups(
            tested_baseline,
            pruned.predictions,
            labels,
            table.attributes,
            pies=is_pie,
            n_classes=len(names),
            class_names=names,
            test=test,
            alpha=settings.alpha,
            correction=settings.correction,
            n_bootstrap=settings.n_bootstrap,
            confidence=settings.confidence,
            seed=settings.seed,
            min_support=settings.min_group_support,
            label_issue=None if labelled is None else labelled.issue,
            risk=risk["risk"].to_numpy(),
        )
    stats.insert(1, "name", list(names))
    stats.insert(3, "n_pies", np.bincount(labels[is_pie], minlength=len(names)).astype(np.int64))

    base_acc = pd.Series(per_model_accuracy(baseline.predictions, labels), index=list(baseline.models))
    pruned_acc = pd.Series(per_model_accuracy(pruned.predictions, labels), index=list(pruned.models))
    count = int(is_pie.sum())
    n_stable = int((is_pie & (examples["stability"].to_numpy() >= STABLE)).sum())
    inputs = power_inputs(tested_baseline, pruned.predictions, labels, n_classes=len(names), test=test)
    power = summarise_power(
        inputs,
        stats["mde"].to_numpy(),
        detect=settings.detect_drop,
        alpha=settings.alpha,
        reach=stats["baseline_recall_mean"].to_numpy(),
        names=names,
    )
    group_power = None
    if found is not None:
        tested = found.groups["tested"].to_numpy()
        group_power = summarise_power(
            found.power_inputs.subset(tested),
            found.groups["mde"].to_numpy()[tested],
            detect=settings.detect_drop,
            alpha=settings.alpha,
            reach=found.groups["baseline_accuracy_mean"].to_numpy()[tested],
            names=found.groups["group"].to_numpy()[tested],
        )
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
        **_enrichment(is_pie, labelled),
        risk_auc=risk_auc(risk["risk"].to_numpy(), is_pie),
        risk_top_1_percent=top_share(risk["risk"].to_numpy(), is_pie, 0.01) if count else None,
        risk_top_5_percent=top_share(risk["risk"].to_numpy(), is_pie, 0.05) if count else None,
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
        groups=None if found is None else found.groups,
        group_power_at_detect=None if group_power is None else group_power.power_at_detect,
        power_inputs=inputs,
        group_power_inputs=None if found is None else found.power_inputs,
        alpha=settings.alpha,
        correction=settings.correction,
    )
    hard = intensification(stats, baseline_accuracy=float(base_acc.mean()))
    hard_groups = None
    if found is not None:
        hard_groups = intensification(
            found.groups, baseline_accuracy=float(base_acc.mean()), rate="accuracy", tested=found.groups["tested"].to_numpy()
        )
    return AuditResult(
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
        notes=_notes(baseline, pruned, stats, test)
        + _group_notes(table, picked, found, settings.min_group_support)
        + _label_notes(labelled),
        groups=None if found is None else found.groups,
        group_cells=None if found is None else found.cells,
        group_attributes=() if table is None else table.names,
        group_source=None if table is None else table.source,
        group_ignored_rows=0 if table is None else table.ignored_rows,
        group_power=group_power,
        group_power_inputs=None if found is None else found.power_inputs,
        intensification=hard,
        group_intensification=hard_groups,
    )


def _baseline_probabilities(baseline: Population) -> np.ndarray | None:
    """The baseline's mean softmax probabilities (N, C), or ``None`` without ``prob_*`` columns."""
    on_disk = baseline.path is not None and all(isinstance(f, Path) and f.is_file() for f in baseline.sources)
    # A population built in memory has its probabilities with it; one read from files, in them.
    return mean_probabilities(baseline) if baseline.probabilities is not None or on_disk else None


def _label_issues(probabilities: np.ndarray | None, labels: np.ndarray, examples: pd.DataFrame) -> LabelIssues | None:
    """cleanlab's label quality and issue flag per example, added to ``examples`` (null without probabilities)."""
    if probabilities is None:
        examples["label_quality"] = np.full(len(examples), np.nan)
        examples["label_issue"] = pd.array([pd.NA] * len(examples), dtype="boolean")
        return None
    found = label_issues(labels, probabilities)
    examples["label_quality"] = found.quality
    examples["label_issue"] = pd.array(found.issue, dtype="boolean")
    return found


def _enrichment(is_pie: np.ndarray, labelled: LabelIssues | None) -> dict[str, float | None]:
    if labelled is None:
        return {}
    found = label_issue_enrichment(is_pie, labelled.issue)
    return {
        "label_issue_fraction": found.fraction,
        "non_pie_label_issue_fraction": found.non_pie_fraction,
        "label_issue_odds_ratio": found.odds_ratio,
        "label_issue_p_value": found.p_value,
    }


def _label_notes(labelled: LabelIssues | None) -> tuple[str, ...]:
    if labelled is None:
        return (NO_PROBABILITIES,)
    return tuple(f"label issues: cleanlab warned: {w}" for w in labelled.warnings)


def _groups_table(
    baseline: Population,
    pruned: Population,
    groups: str | Path | pd.DataFrame | None,
    group_by: Sequence[str] | None,
) -> tuple[GroupTable | None, bool]:
    """The checked groups table of an audit, and whether it is a population's own ``groups.parquet``."""
    picked = False
    if groups is None:
        for population in (baseline, pruned):
            own = population.path / GROUPS_FILE if population.path is not None else None
            if own is not None and own.is_file():
                groups, picked = own, True
                break
    if groups is None:
        if group_by is not None:
            raise ConfigError(NO_GROUPS)
        return None, False
    return read_groups(groups, baseline.example_ids, group_by=group_by), picked


def _check_attribute_names(table: GroupTable, examples: pd.DataFrame) -> None:
    name = table.source if table.source is not None else "groups table"
    for column in table.names:
        if column in examples.columns:
            raise FormatError(ATTRIBUTE_CLASH.format(name=name, column=column))


def _group_notes(table: GroupTable | None, picked: bool, found: Any, min_support: int) -> tuple[str, ...]:
    if table is None:
        return ()
    notes = []
    if picked:
        notes.append(f"groups: the population's own {table.source} (pass --groups to use another table)")
    if table.ignored_rows:
        notes.append(f"groups: {table.ignored_rows} row(s) of the groups table are for examples not in the test split and were ignored")
    small = found.groups.loc[~found.groups["tested"], "group"].tolist()
    if small:
        shown = ", ".join(small[:10]) + (", ..." if len(small) > 10 else "")
        notes.append(
            f"{len(small)} group(s) have fewer than {min_support} examples and were listed but not tested: {shown}"
        )
    return tuple(notes)


NO_GROUPS = (
    "group-by needs a groups table: pass --groups FILE (groups= in Python), or audit a population "
    "that holds its own groups.parquet"
)
ATTRIBUTE_CLASH = (
    "{name}: attribute column {column!r} has the name of a column of examples.parquet; rename it"
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


def power(result: AuditResult, *, detect: float | None = None, target: float = DEFAULT_POWER) -> PowerSummary:
    """How many models an audit needs, from a pilot audit: its power against a drop of ``detect``.

    Parameters
    ----------
    result : AuditResult
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
    classes = result.classes
    return summarise_power(
        inputs, mde, detect=detect, alpha=alpha, target=target,
        reach=classes["baseline_recall_mean"].to_numpy(), names=classes["name"].tolist(),
    )
