"""The audit as users call it: :func:`compare`, :func:`sweep` and a result that keeps itself.

The audit wing (:mod:`pie_audit.audit`) computes and never writes; the report wing
(:mod:`pie_audit.report`) renders and writes what was computed, and imports the audit wing, never
the other way round. This module is where the two meet, above both: :class:`CompareResult` is an
:class:`~pie_audit.audit.AuditResult` with :meth:`~CompareResult.save` and a notebook display,
which the audit wing could not give it without importing the report. :func:`compare` resolves
its keyword arguments into :class:`~pie_audit.audit.Settings`; :func:`compare_populations` and
:func:`sweep` take settings already resolved, as the command line does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd

from .audit import (
    AuditResult,
    GateRules,
    Settings,
    audit_populations,
    resolve_settings,
    sweep_names,
)
from .interchange import Population, load_population
from .report import pie_gallery, render_summary_html, write_outputs

__all__ = ["CompareResult", "compare", "compare_populations", "sweep"]


# repr=False: keep AuditResult's one-line verdict rather than a generated dump of every field.
@dataclass(frozen=True, eq=False, repr=False)
class CompareResult(AuditResult):
    """Everything :func:`compare` found (:class:`pie_audit.audit.AuditResult`), and how to keep it.

    Adds :meth:`save`, which writes what ``pie-audit compare`` writes, and a notebook display.
    """

    @classmethod
    def of(cls, result: AuditResult) -> CompareResult:
        """The same audit, able to save and display itself."""
        return cls(**{f.name: getattr(result, f.name) for f in fields(AuditResult)})

    def save(
        self,
        out: str | Path,
        *,
        images: Any = None,
        data_root: str | Path | None = "data",
        junit: str | Path | None = None,
    ) -> Path:
        """Write what ``pie-audit compare --out`` writes, atomically (:func:`pie_audit.write_outputs`),
        less the command line in the report's provenance.

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
        gallery = pie_gallery(self, data_root=None if images is False else data_root, images=images or None)
        return write_outputs(self, out, gallery=gallery, junit=junit)

    def _repr_html_(self) -> str:
        # A notebook shows the verdict, the worst classes and the top PIEs, not a DataFrame dump.
        return render_summary_html(self)


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
    min_group_support: int | None = None,
    groups: str | Path | pd.DataFrame | None = None,
    group_by: Sequence[str] | None = None,
    config: str | Path | None = None,
) -> CompareResult:
    """Audit what pruning did: PIEs, per-class disparate impact and the CI gate.

    Every setting left out is taken from ``config`` when given, else from the defaults of
    :class:`pie_audit.Settings` (shown below); ``pie-audit compare`` resolves its flags the same
    way (:func:`pie_audit.audit.resolve_settings`), so the same options and ``pyproject.toml``
    give the same result. Unlike the command line, no ``pyproject.toml`` is looked for unless
    ``config`` names one.

    Parameters
    ----------
    baseline, pruned : str, Path or Population
        Population directories in the interchange format (``docs/interchange-format.md``), or
        populations already read with :func:`pie_audit.load_population` or built with
        :meth:`pie_audit.Population.from_arrays`.
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
    min_group_support : int, default=30
        Groups with fewer examples are described but not tested.
    groups : str, Path or DataFrame, optional
        A groups table for the subgroup audit (``docs/groups.md``): ``example_id`` and one
        column per attribute, as a DataFrame or a ``.parquet``/``.csv`` file. Default: the
        baseline population's own ``groups.parquet`` when it has one.
    group_by : sequence of str, optional
        The attributes to form groups from (with two or three, their intersections too);
        default every attribute column.
    config : str or Path, optional
        A ``pyproject.toml`` whose ``[tool.pie-audit]`` table supplies the settings not given
        here (:func:`pie_audit.audit.read_settings`).

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
        "min_group_support": min_group_support,
    }
    if rules is not None and not isinstance(rules, GateRules):
        options |= dict(rules)
    # Checked before any file is read, so that a typo fails fast.
    settings = resolve_settings(options, config=config)
    if isinstance(rules, GateRules):
        settings = replace(settings, rules=rules)
    return compare_populations(baseline, pruned, settings=settings, groups=groups, group_by=group_by)


def compare_populations(
    baseline: str | Path | Population,
    pruned: str | Path | Population,
    *,
    settings: Settings,
    groups: str | Path | pd.DataFrame | None = None,
    group_by: Sequence[str] | None = None,
) -> CompareResult:
    """:func:`compare` with settings already resolved: :func:`pie_audit.audit.audit_populations`,
    whose parameters it takes, returning a :class:`CompareResult`."""
    return CompareResult.of(audit_populations(baseline, pruned, settings=settings, groups=groups, group_by=group_by))


def sweep(
    baseline_dir: str | Path,
    pruned_dirs: Sequence[str | Path],
    *,
    settings: Settings | None = None,
    groups: str | Path | pd.DataFrame | None = None,
    group_by: Sequence[str] | None = None,
) -> list[tuple[str, CompareResult]]:
    """Audit every pruned population against one baseline.

    Parameters
    ----------
    baseline_dir : str or Path
    pruned_dirs : sequence of str or Path
        Pruned population directories, with distinct names (see :func:`pie_audit.audit.sweep_names`).
    settings : Settings, optional
        Statistics options and gate rules for every audit
        (:func:`pie_audit.audit.resolve_settings`); default :class:`Settings` ``()``.
    groups, group_by : optional
        The subgroup audit of every pair, as in :func:`compare`.

    Returns
    -------
    list of (str, CompareResult)
        Name and result per pruned population, in the order given.
    """
    settings = settings if settings is not None else resolve_settings()
    names = sweep_names(pruned_dirs)
    baseline = load_population(Path(baseline_dir))
    return [
        (name, compare_populations(baseline, Path(path), settings=settings, groups=groups, group_by=group_by))
        for name, path in zip(names, pruned_dirs, strict=True)
    ]
