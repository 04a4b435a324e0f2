"""The audit: PIEs, per-class and per-group statistics, power and the CI gate, as pure functions over arrays.

Imports no torch (a test holds it to that) and writes nothing: :func:`audit_populations` returns
an :class:`AuditResult`; :func:`pie_audit.compare` is the same audit with a result that can save
and display itself. ``docs/audit.md`` documents every statistic.
"""

from __future__ import annotations

from ._compare import audit_populations, power
from ._gate import GateResult, GateRules, evaluate_gate, junit_xml
from ._intensification import Intensification, intensification, spearman
from ._groups import CELL_COLUMNS, GROUP_COLUMNS, GroupSet, cell_statistics, group_members, group_statistics, pie_concentration
from ._pie import STABLE, modal_labels, pie_stability, pie_table
from ._power import PowerSummary, minimum_detectable_effect
from ._result import AuditResult, PieSummary, PopulationSummary
from ._review import TALLY_COLUMNS, review_tally
from ._risk import CLASS_RISK_COLUMNS, RISK_COLUMNS, RISK_TOP, BaselineRisk, baseline_risk, class_risk, risk_auc, risk_scores, top_share
from ._settings import SETTINGS, Settings, find_config, read_settings, resolve_settings
from ._stats import class_statistics
from ._sweep import SWEEP_PAGE, sweep_names, sweep_table

__all__ = [
    "TALLY_COLUMNS",
    "review_tally",
    "CELL_COLUMNS",
    "GROUP_COLUMNS",
    "GroupSet",
    "Intensification",
    "intensification",
    "spearman",
    "CLASS_RISK_COLUMNS",
    "RISK_COLUMNS",
    "RISK_TOP",
    "BaselineRisk",
    "baseline_risk",
    "class_risk",
    "risk_auc",
    "risk_scores",
    "top_share",
    "cell_statistics",
    "group_members",
    "group_statistics",
    "pie_concentration",
    "SETTINGS",
    "STABLE",
    "SWEEP_PAGE",
    "AuditResult",
    "GateResult",
    "GateRules",
    "PieSummary",
    "PopulationSummary",
    "PowerSummary",
    "Settings",
    "audit_populations",
    "class_statistics",
    "evaluate_gate",
    "find_config",
    "junit_xml",
    "minimum_detectable_effect",
    "modal_labels",
    "pie_stability",
    "pie_table",
    "power",
    "read_settings",
    "resolve_settings",
    "sweep_names",
    "sweep_table",
]
