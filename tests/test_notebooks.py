"""The notebooks in ``notebooks/`` run top to bottom, headless, and show the audit's real values.

Each notebook is executed with nbclient in a kernel running this test's interpreter, with its
``parameters`` cell replaced (as papermill does) so that it trains tiny populations into the
test's temporary directory. The values it prints are then checked against a ``compare`` run here.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

import pie_audit

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL_NAME = "pie-audit-test"
CELL_TIMEOUT_S = 600

pytestmark = pytest.mark.slow


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    """A kernelspec that starts this very interpreter, first on the Jupyter search path.

    The stock ``python3`` spec is found through the user's and the system's data directories
    too, so on a developer's machine it may start another Python; this one cannot.
    """
    spec = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "pie-audit tests", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL_NAME


def _inject_parameters(nb: nbformat.NotebookNode, source: str) -> None:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    cells[0].source = source


def _stream(cell: nbformat.NotebookNode, name: str = "stdout") -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == name)


def test_explore_an_audit(tmp_path, kernel_name):
    nb = nbformat.read(NOTEBOOKS / "explore-an-audit.ipynb", as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code"), "commit notebooks with outputs cleared"
    runs = tmp_path / "runs"
    _inject_parameters(
        nb,
        f"POPULATION = 3\nSPARSITY = 0.9\nRUN_DIR = {str(runs)!r}\nREPORT_DIR = None\n"
        "EPOCHS = 1\nDEVICE = 'cpu'\nN_GALLERY = 8\n",
    )
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))

    NotebookClient(
        nb, kernel_name=kernel_name, timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()  # fmt: skip

    assert _stream(nb.cells[-1]).strip() == sys.executable
    stderr = "".join(_stream(c, "stderr") for c in nb.cells if c.cell_type == "code")
    assert stderr == "", f"the notebook wrote to stderr (a warning?):\n{stderr}"

    expected = pie_audit.compare(runs / "baseline", runs / "pruned-90")
    printed = "".join(_stream(c) for c in nb.cells if c.cell_type == "code")
    assert printed.count(": 0 models reused, 3 trained") == 2  # into RUN_DIR, no fallback
    pies = re.search(r"^PIEs: (\d+) of (\d+) test examples", printed, re.MULTILINE)
    assert pies is not None, printed
    assert (int(pies[1]), int(pies[2])) == (expected.pies.count, len(expected.examples))
    assert len(expected.examples) == 450
    verdict = "PASSED" if expected.gate.passed else "FAILED"
    assert f"Gate: {verdict}" in printed
    harmed, helped = len(expected.harmed), len(expected.helped)
    assert f"Classes significantly harmed: {harmed}, helped: {helped}" in printed

    gallery = next(c for c in nb.cells if "top_pies(N_GALLERY)" in c.source)
    if expected.pies.count:
        assert any("image/png" in o.get("data", {}) for o in gallery.outputs)
    else:
        assert _stream(gallery).startswith("No PIE")

    report = runs / "report"
    assert f"Report: {(report / 'report.html').resolve()}" in printed
    summary = json.loads((report / "summary.json").read_text())
    assert summary["pies"]["count"] == expected.pies.count
    assert summary["gate"]["passed"] == expected.gate.passed
    assert "<html" in (report / "report.html").read_text(encoding="utf-8").lower()


def test_audit_your_own_model(tmp_path, kernel_name):
    nb = nbformat.read(NOTEBOOKS / "audit-your-own-model.ipynb", as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code"), "commit notebooks with outputs cleared"
    report = tmp_path / "report"
    _inject_parameters(nb, f"N_SEEDS = 3\nSPARSITY = 0.9\nHIDDEN = 32\nMAX_ITER = 60\nREPORT_DIR = {str(report)!r}\n")
    NotebookClient(
        nb, kernel_name=kernel_name, timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()  # fmt: skip

    stderr = "".join(_stream(c, "stderr") for c in nb.cells if c.cell_type == "code")
    assert stderr == "", f"the notebook wrote to stderr (a warning?):\n{stderr}"
    printed = "".join(_stream(c) for c in nb.cells if c.cell_type == "code")
    summary = json.loads((report / "summary.json").read_text())
    pies = re.search(r"^PIEs: (\d+) of (\d+) test examples", printed, re.MULTILINE)
    assert pies is not None, printed
    assert (int(pies[1]), int(pies[2])) == (summary["pies"]["count"], summary["n_examples"]) == (int(pies[1]), 450)
    assert f"Classes significantly harmed: {summary['impacted']['harmed']}, helped: {summary['impacted']['helped']}" in printed
    assert summary["baseline"]["n_models"] == 3 and summary["baseline"]["path"] is None
    # The result displays itself as HTML, and the report's gallery has the digits' images.
    shown = [o for c in nb.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert any("Classes that lost most recall" in o["data"]["text/html"] for o in shown)
    html = (report / "report.html").read_text(encoding="utf-8")
    assert html.count('<img src="data:image/png;base64,') == min(summary["pies"]["count"], 64)
    assert "Test: mcnemar" in printed
    assert re.search(r"^Models needed per population for a 2-point drop: (\d+|None)$", printed, re.MULTILINE)


def test_groups(tmp_path, kernel_name):
    nb = nbformat.read(NOTEBOOKS / "groups.ipynb", as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code"), "commit notebooks with outputs cleared"
    report = tmp_path / "reports"
    _inject_parameters(nb, f"N_SEEDS = 8\nN_EXAMPLES = 6000\nN_QUESTIONS = 3000\nREPORT_DIR = {str(report)!r}\n")
    NotebookClient(
        nb, kernel_name=kernel_name, timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()  # fmt: skip

    stderr = "".join(_stream(c, "stderr") for c in nb.cells if c.cell_type == "code")
    assert stderr == "", f"the notebook wrote to stderr (a warning?):\n{stderr}"
    printed = "".join(_stream(c) for c in nb.cells if c.cell_type == "code")

    # Part 1: CelebA-style attributes; what it prints is what the report's summary.json says.
    faces = json.loads((report / "celeba-style" / "summary.json").read_text())
    groups = faces["groups"]
    assert groups["attributes"] == ["Male", "Young"] and len(groups["rows"]) == 8
    assert f"Groups harmed beyond the models' average: {groups['harmed']}" in printed
    assert f"Gate: {'PASSED' if faces['gate']['passed'] else 'FAILED'}" in printed
    harmed_cells = [f"{c['group']} / {c['name']}" for c in groups["cells"] if c["direction"] == "harmed"]
    assert f"Cells significantly harmed: {', '.join(harmed_cells) or 'none'}" in printed
    # The planted harm (blond men forgotten) is found in its cell, as a rise of the false-negative rate.
    assert "Male=True / blond" in harmed_cells
    assert f"PIEs: {faces['pies']['count']} of 6000 test examples" in printed
    assert "detect a group's drop beyond the models' average of" in printed
    assert not any(c["tested"] for c in groups["cells"] if c["support"] < 30)
    html = (report / "celeba-style" / "report.html").read_text(encoding="utf-8")
    assert "Male=True" in html
    examples = pd.read_parquet(report / "celeba-style" / "examples.parquet")
    assert {"Male", "Young"} <= set(examples.columns)

    # Part 2: a benchmark's subjects, one model a side.
    llm = json.loads((report / "llm-subjects" / "summary.json").read_text())
    assert llm["test"] == "mcnemar" and "Test: mcnemar" in printed
    harmed = [r["group"] for r in llm["groups"]["rows"] if r["direction"] == "harmed"]
    assert f"Subjects significantly harmed: {', '.join(harmed) or 'none'}" in printed
    assert "subject=international_law" in harmed
    assert all(r["p_value"] is None for r in llm["groups"]["rows"])  # no relative test with McNemar
    drop = [f for f in llm["gate"]["failures"] if f["rule"] == "max-group-drop"]
    assert drop and drop[0]["groups"] == ["subject=international_law"]
