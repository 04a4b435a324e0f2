"""Every Python snippet in the README and docs/ runs, in the order written, as a user would run it.

Each document's snippets share one namespace and run in a scratch directory holding what they
refer to: real (tiny) populations trained by ``pie-audit train`` under ``runs/``, a
``pyproject.toml`` with a ``[tool.pie-audit]`` table, and, for the README's own-models snippet,
``dense``, ``pruned`` and ``labels`` as a user would have them.
"""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pie_audit.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPET = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def snippets(path: Path) -> list[str]:
    return SNIPPET.findall(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny digits populations, dense and 90% sparse, trained once for every document."""
    root = tmp_path_factory.mktemp("runs")
    for name, sparsity in (("baseline", "0"), ("pruned-90", "0.9")):
        with pytest.raises(SystemExit) as e:
            main([
                "train", "--dataset", "digits", "--population", "2", "--epochs", "2", "--sparsity", sparsity,
                "--out", str(root / name), "--quiet",
            ])  # fmt: skip
        assert e.value.code == 0
    return root


@pytest.mark.slow
@pytest.mark.parametrize("document", [d for d in DOCUMENTS if snippets(d)], ids=lambda d: d.name)
def test_snippets_run(document, trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained, tmp_path / "runs")
    (tmp_path / "pyproject.toml").write_text("[tool.pie-audit]\nmax-class-drop = 0.05\n")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    namespace = {
        "__name__": "__doc_snippet__",
        "labels": labels,
        "dense": [np.where(rng.random(200) < 0.9, labels, (labels + 1) % 3) for _ in range(5)],
        "pruned": [np.where(rng.random(200) < 0.85, labels, (labels + 2) % 3) for _ in range(5)],
    }
    for k, code in enumerate(snippets(document)):
        try:
            exec(compile(code, f"{document.name} snippet {k + 1}", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - report which snippet failed, with its code
            pytest.fail(f"{document.name} snippet {k + 1} failed: {type(e).__name__}: {e}\n{code}")


def test_the_groups_page_defines_every_column():
    """docs/groups.md names every column of result.groups and result.group_cells, and every rule."""
    from pie_audit.audit import CELL_COLUMNS, GROUP_COLUMNS

    text = (ROOT / "docs" / "groups.md").read_text(encoding="utf-8")
    missing = [c for c in dict.fromkeys((*GROUP_COLUMNS, *CELL_COLUMNS)) if f"`{c}`" not in text]
    assert missing == [], f"docs/groups.md does not define: {missing}"
    for rule in ("max-group-drop", "max-group-accuracy-drop", "min-group-support"):
        assert f"`{rule}`" in text, rule
