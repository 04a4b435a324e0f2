"""HTML rendering of an audit's results; it renders, never computes.

Only a minimal, dependency-free page for now; the report issue designs the real one.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .compare import CompareResult

__all__ = ["render_minimal_report"]

_TOP_PIES = 20


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def render_minimal_report(result: CompareResult) -> str:
    """A small self-contained HTML page: verdict, PIEs, impacted classes, top PIEs.

    Every value taken from the inputs (paths, class names, messages) is HTML-escaped.

    Parameters
    ----------
    result : CompareResult

    Returns
    -------
    str
        An HTML document.
    """
    gate = result.gate
    pies = result.pies
    verdict = "PASSED" if gate.passed else "FAILED"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>pie-audit: {_e(result.pruned_dir.name)} vs {_e(result.baseline_dir.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}"
        ".failed{color:#b00}.passed{color:#070}</style></head><body>",
        "<h1>pie-audit compare</h1>",
        f"<p>Baseline: <code>{_e(result.baseline_dir)}</code> "
        f"({len(result.baseline_accuracy)} models, mean accuracy "
        f"{_pct(float(result.baseline_accuracy.mean()))})<br>"
        f"Pruned: <code>{_e(result.pruned_dir)}</code> "
        f"({len(result.pruned_accuracy)} models, mean accuracy "
        f"{_pct(float(result.pruned_accuracy.mean()))})</p>",
        f'<h2 class="{verdict.lower()}">Gate {verdict}</h2>',
    ]
    if gate.failures:
        parts.append("<ul>" + "".join(f"<li>{_e(f.message)}</li>" for f in gate.failures) + "</ul>")
    parts.append(
        f"<h2>PIEs</h2><p>{pies.count} of {len(result.examples)} examples "
        f"({_pct(pies.fraction)}); {pies.n_tied} with a tied modal label.</p>"
        "<table><tr><th></th><th>accuracy on PIEs</th><th>on non-PIEs</th></tr>"
        f"<tr><td>baseline</td><td>{_pct(pies.baseline_accuracy_pies)}</td>"
        f"<td>{_pct(pies.baseline_accuracy_non_pies)}</td></tr>"
        f"<tr><td>pruned</td><td>{_pct(pies.pruned_accuracy_pies)}</td>"
        f"<td>{_pct(pies.pruned_accuracy_non_pies)}</td></tr></table>"
    )
    impacted = result.classes[result.classes["direction"] != "none"].sort_values(
        ["normalized_change", "label"]
    )
    parts.append(f"<h2>Impacted classes ({len(impacted)})</h2>")
    if len(impacted):
        rows = "".join(
            f"<tr><td>{_e(r.name)} [{r.label}]</td><td>{_e(r.direction)}</td>"
            f"<td>{100 * r.normalized_change:+.2f}</td><td>{r.q_value:.3g}</td></tr>"
            for r in impacted.itertuples()
        )
        parts.append(
            "<table><tr><th>class</th><th>direction</th><th>normalized change (points)</th>"
            f"<th>q-value</th></tr>{rows}</table>"
        )
    top = result.examples[result.examples["pie"]].nlargest(_TOP_PIES, "score")
    if len(top):
        names = result.classes["name"].tolist()
        rows = "".join(
            f"<tr><td>{r.example_id}</td><td>{_e(names[r.label])}</td>"
            f"<td>{_e(names[r.baseline_modal])}</td><td>{_e(names[r.pruned_modal])}</td>"
            f"<td>{r.score:.2f}</td></tr>"
            for r in top.itertuples()
        )
        parts.append(
            f"<h2>Top {len(top)} PIEs by vote shift</h2><table><tr><th>example</th>"
            "<th>label</th><th>baseline modal</th><th>pruned modal</th><th>score</th></tr>"
            f"{rows}</table>"
        )
    if result.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in result.notes) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
