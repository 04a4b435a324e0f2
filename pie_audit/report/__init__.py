"""The report: an audit rendered as a self-contained HTML page, and the directories it is written in.

Renders only what the audit computed (:mod:`pie_audit.audit`) and owns the output file names;
the gallery's images come from the dataset the models name (:mod:`pie_audit.data`, imported only
when images are drawn) or from an images file.
"""

from __future__ import annotations

from ._outputs import SWEEP_PAGE, check_outputs, pie_gallery, write_outputs, write_sweep
from ._render import render_report, render_summary_html, render_sweep
from ._risk import RISK_CLASSES, RISK_FILES, RISK_PAGE, RISK_TABLE, check_risk_output, render_risk, write_risk
from ._review import ReviewExport, export_review, tally_review
from ._thumbnails import check_images_file, read_images

__all__ = [
    "ReviewExport",
    "export_review",
    "tally_review",
    "SWEEP_PAGE",
    "check_images_file",
    "check_outputs",
    "pie_gallery",
    "read_images",
    "render_report",
    "render_summary_html",
    "render_sweep",
    "RISK_CLASSES",
    "RISK_FILES",
    "RISK_PAGE",
    "RISK_TABLE",
    "check_risk_output",
    "render_risk",
    "write_risk",
    "write_outputs",
    "write_sweep",
]
