"""The package's wings and the direction of their imports (``docs/architecture.md``).

Every import inside ``pie_audit``, at the top of a module or inside a function, is read from the
source: a wing may import only the wings below it, and another wing only through its face (its
``__init__.py``), never a private module of it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import pie_audit

PACKAGE = Path(pie_audit.__file__).parent
BASE = {"errors", "_version", "_atomic"}

#: What each part may import besides itself; the base (errors, _version, _atomic) is open to all.
ALLOWED = {
    "base": set(),
    "interchange": set(),
    "audit": {"interchange"},
    "data": set(),
    "report": {"interchange", "audit", "data"},
    "training": {"interchange", "data"},
    "prediction": {"interchange", "data", "training"},
    "_compare": {"interchange", "audit", "report"},
    "study": {"interchange", "audit", "report", "data", "training", "prediction", "_compare"},
    "cli": {"interchange", "audit", "report", "data", "training", "prediction", "study", "_compare"},
    "face": {"interchange", "audit", "report", "data", "training", "prediction", "study", "_compare"},
}
WINGS = {"interchange", "audit", "report", "data", "training", "prediction", "study", "cli"}


def _part(module: tuple[str, ...]) -> str:
    """The wing (or base, the top-level ``_compare``, the package face) a module belongs to."""
    if not module:
        return "face"
    head = module[0]
    if head in WINGS:
        return head
    if head in BASE:
        return "base"
    if head in ("_compare",):
        return "_compare"
    if head == "__main__":
        return "cli"
    raise AssertionError(f"pie_audit/{'/'.join(module)}: a module outside every wing; add it to one")


def _modules(extra: dict[str, str] | None = None) -> list[tuple[Path, tuple[str, ...], tuple[str, ...], str]]:
    """Each source file: its path, module path below ``pie_audit``, the package it resolves imports in,
    and its source; ``extra`` adds sources by path relative to the package (for the check's own test)."""
    sources = {path: path.read_text(encoding="utf-8") for path in sorted(PACKAGE.rglob("*.py"))}
    sources |= {PACKAGE / name: text for name, text in (extra or {}).items()}
    found = []
    for path, text in sources.items():
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        is_init = parts[-1] == "__init__"
        module = parts[:-1] if is_init else parts
        package = module if is_init else module[:-1]
        found.append((path, module, package, text))
    return found


def _imports(source: str, package: tuple[str, ...]) -> list[tuple[int, tuple[str, ...], tuple[str, ...]]]:
    """``(line, target module below pie_audit, names)`` of every pie_audit import in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            names = tuple(a.name for a in node.names)
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + tuple((node.module or "").split(".") if node.module else ())
            elif node.module and node.module.split(".")[0] == "pie_audit":
                target = tuple(node.module.split(".")[1:])
            else:
                continue
            found.append((node.lineno, target, names))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pie_audit":
                    found.append((node.lineno, tuple(alias.name.split(".")[1:]), ()))
    return found


def _violations(extra: dict[str, str] | None = None) -> list[str]:
    problems = []
    for path, module, package, source in _modules(extra):
        here = _part(module)
        where = path.relative_to(PACKAGE.parent)
        for line, target, names in _imports(source, package):
            # "from . import _compare" in a face names submodules of its own package.
            targets = [target + (n,) for n in names] if not target or (target == package and path.name == "__init__.py") else [target]
            for t in targets:
                there = _part(t)
                if there == here or there == "base":
                    continue
                if there not in ALLOWED[here]:
                    problems.append(f"{where}:{line}: {here} imports {there} ({'.'.join(t)}), which is above it")
                elif len(t) > 1 and t[0] in WINGS and t[1].startswith("_"):
                    problems.append(f"{where}:{line}: imports {'.'.join(t)}, a private module of another wing; use its face")
    return problems


def test_every_module_belongs_to_a_wing():
    for _, module, _, _ in _modules():
        assert _part(module) in ALLOWED


def test_imports_run_down_the_wings_and_through_their_faces():
    assert _violations() == []


@pytest.mark.parametrize(
    "source, problem",
    [
        ("from ..report import write_outputs\n", "audit imports report"),
        ("from ..interchange._population import load_population\n", "a private module of another wing"),
        ("def f():\n    from ..training import resolve_device\n", "audit imports training"),
    ],
)
def test_the_check_catches_an_import_running_back_up(source, problem):
    """The check itself can fail: a planted upward or private import in the audit wing is found."""
    assert any(problem in v for v in _violations({"audit/_planted.py": source}))


def test_faces_list_what_they_export():
    """Every wing's face has an ``__all__`` whose names exist, and no public name is a shadowed module."""
    import importlib

    for wing in sorted(WINGS - {"cli"}) + ["cli"]:
        face = importlib.import_module(f"pie_audit.{wing}")
        assert face.__all__, wing
        for name in face.__all__:
            assert hasattr(face, name), f"pie_audit.{wing}.{name}"
    for name in pie_audit.__all__:
        value = getattr(pie_audit, name)
        # A function named like a sub-package would hide it: pie_audit.compare is the function.
        assert not (PACKAGE / name).is_dir() and not (PACKAGE / f"{name}.py").is_file(), name
        assert value is not None


DOCUMENTS = [PACKAGE.parent / "README.md", *sorted((PACKAGE.parent / "docs").glob("*.md"))]
NOTEBOOKS = sorted((PACKAGE.parent / "notebooks").glob("*.ipynb"))
_TAUGHT_IMPORT = re.compile(r"from (pie_audit(?:\.\w+)*) import (?:\(([\w,\s]+)\)|([\w, ]+))")
_TAUGHT_NAME = re.compile(r"\bpie_audit((?:\.\w+)+)")


def _public(dotted: str) -> bool:
    """Whether ``pie_audit.<dotted>`` is a public name: a face, or a name in a face's ``__all__``."""
    import importlib

    parts = dotted.split(".")
    if any(p.startswith("_") and p != "__version__" for p in parts):
        return False
    for k in range(len(parts), -1, -1):
        module = ".".join(["pie_audit", *parts[:k]])
        try:
            face = importlib.import_module(module)
        except ImportError:
            continue
        rest = parts[k:]
        if not rest:
            return (PACKAGE.joinpath(*parts[:k], "__init__.py")).is_file() or not parts[:k]
        if rest[0] not in getattr(face, "__all__", ()):
            return False
        # An attribute of a public class (pie_audit.Population.from_arrays) is public too, when it exists.
        value = getattr(face, rest[0])
        for name in rest[1:]:
            if not hasattr(value, name):
                return False
            value = getattr(value, name)
        return True
    return False


@pytest.mark.parametrize("document", DOCUMENTS + NOTEBOOKS, ids=lambda d: d.name)
def test_the_docs_teach_only_public_names(document):
    text = document.read_text(encoding="utf-8")
    if document.suffix == ".ipynb":
        text = text.replace("\\n", "\n")
    taught = {m.group(1).removeprefix("pie_audit").lstrip(".") + "." + name.strip()
              for m in _TAUGHT_IMPORT.finditer(text) for name in (m.group(2) or m.group(3)).split(",")
              if name.strip()}  # fmt: skip
    taught |= {m.group(1).lstrip(".") for m in _TAUGHT_NAME.finditer(text)}
    private = sorted(name.lstrip(".") for name in taught if not _public(name.lstrip(".")))
    assert private == [], f"{document.name} teaches names that are not public: {private}"


def test_the_audit_runs_without_torch(tmp_path):
    """The audit wing, its face and ``compare(...).save()`` run in a process that never imports torch."""
    import subprocess
    import sys

    code = f"""
import sys
import numpy as np
import pie_audit
import pie_audit.audit, pie_audit.interchange, pie_audit.report
rng = np.random.default_rng(0)
labels = rng.integers(0, 4, 300)
noisy = lambda p: [np.where(rng.random(300) < p, labels, (labels + 1) % 4) for _ in range(4)]
base = pie_audit.Population.from_arrays(noisy(0.9), labels)
pruned = pie_audit.Population.from_arrays(noisy(0.8), labels)
result = pie_audit.compare(base, pruned)
result.save({str(tmp_path / "report")!r}, images=False)
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))[:5]
print(result.pies.count)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) > 0
    assert (tmp_path / "report" / "summary.json").is_file()
