"""A sweep: one baseline audited against several pruned populations (e.g. one per sparsity).

:func:`sweep` runs :func:`pie_audit.compare.compare` once per pruned population, reading the
baseline only once; :func:`sweep_table` tabulates the results with each population's sparsity
from its ``run.json``; :func:`write_sweep` writes ``DIR/<name>/`` (a full compare report per
pruned population) and ``DIR/index.html`` (the sweep page), atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pandas as pd

from .errors import ConfigError, OutputError
from .store import REPORT_FILES, load_population, replace_directory

if TYPE_CHECKING:  # pragma: no cover
    from .compare import CompareResult
    from .thumbnails import Thumbnails

__all__ = ["SWEEP_PAGE", "SWEEP_COLUMNS", "sweep_names", "sweep", "sweep_table", "write_sweep"]

SWEEP_PAGE = "index.html"
SWEEP_COLUMNS = (
    "name",
    "href",
    "position",
    "sparsity_target",
    "sparsity_achieved",
    "n_models",
    "accuracy_mean",
    "accuracy_std",
    "baseline_accuracy_mean",
    "pie_count",
    "pie_fraction",
    "harmed",
    "helped",
    "gate_passed",
)
NO_PRUNED = "a sweep needs at least one pruned population"
DUPLICATE_NAME = (
    "pruned populations {first} and {second} share the name {name!r}; the sweep writes one "
    "report directory per name, so give them distinct directory names"
)
RESERVED_NAME = "pruned population {path} cannot be named {name!r}: the sweep page uses that name"
NOT_A_SWEEP = (
    "{path}: exists and holds {entry!r}, which is not part of a pie-audit sweep; refusing to replace it"
)


def sweep_names(pruned_dirs: Sequence[str | Path]) -> list[str]:
    """The report directory name of each pruned population: its directory's name.

    Raises
    ------
    ConfigError
        No population, two populations with one name, or a name the sweep page needs.
    """
    if not pruned_dirs:
        raise ConfigError(NO_PRUNED)
    seen: dict[str, Path] = {}
    for path in map(Path, pruned_dirs):
        name = path.resolve().name
        if name == SWEEP_PAGE:
            raise ConfigError(RESERVED_NAME.format(path=path, name=name))
        if name in seen:
            raise ConfigError(DUPLICATE_NAME.format(first=seen[name], second=path, name=name))
        seen[name] = path
    return list(seen)


def sweep(
    baseline_dir: str | Path, pruned_dirs: Sequence[str | Path], **options: Any
) -> list[tuple[str, CompareResult]]:
    """Audit every pruned population against one baseline.

    Parameters
    ----------
    baseline_dir : str or Path
    pruned_dirs : sequence of str or Path
        Pruned population directories, with distinct names (see :func:`sweep_names`).
    **options
        Passed to :func:`pie_audit.compare.compare` (``rules``, ``alpha``, ...).

    Returns
    -------
    list of (str, CompareResult)
        Name and result per pruned population, in the order given.
    """
    from .compare import compare

    names = sweep_names(pruned_dirs)
    baseline = load_population(Path(baseline_dir))
    return [(name, compare(baseline, Path(path), **options)) for name, path in zip(names, pruned_dirs, strict=True)]


def sweep_table(results: Sequence[tuple[str, CompareResult]]) -> pd.DataFrame:
    """One row per pruned population: sparsity, accuracy, PIEs, impacted classes and gate.

    Parameters
    ----------
    results : sequence of (str, CompareResult)
        As returned by :func:`sweep`.

    Returns
    -------
    DataFrame
        Columns :data:`SWEEP_COLUMNS`: ``name``; ``href`` (relative link to its report);
        ``position`` (1, 2, ... in the order given); ``sparsity_target`` and
        ``sparsity_achieved`` (from ``run.json``, NaN when not recorded); ``n_models``;
        ``accuracy_mean``, ``accuracy_std`` (NaN for one model) and ``baseline_accuracy_mean``;
        ``pie_count``, ``pie_fraction``; ``harmed``, ``helped`` (significant classes);
        ``gate_passed``.
    """
    from .provenance import population_provenance

    rows = []
    for position, (name, result) in enumerate(results, start=1):
        provenance = population_provenance(result.pruned_runs.values())
        accuracy = result.pruned_accuracy
        rows.append(
            {
                "name": name,
                "href": f"{quote(name)}/report.html",
                "position": position,
                "sparsity_target": provenance.sparsity_target,
                "sparsity_achieved": provenance.sparsity_achieved,
                "n_models": len(accuracy),
                "accuracy_mean": float(accuracy.mean()),
                "accuracy_std": float(accuracy.std(ddof=1)) if len(accuracy) > 1 else None,
                "baseline_accuracy_mean": float(result.baseline_accuracy.mean()),
                "pie_count": result.pies.count,
                "pie_fraction": result.pies.fraction,
                "harmed": int((result.classes["direction"] == "harmed").sum()),
                "helped": int((result.classes["direction"] == "helped").sum()),
                "gate_passed": result.gate.passed,
            }
        )
    table = pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))
    for column in ("sparsity_target", "sparsity_achieved", "accuracy_std"):
        table[column] = table[column].astype("float64")
    return table


def _is_sweep_entry(entry: Path) -> bool:
    if entry.name == SWEEP_PAGE:
        return entry.is_file()
    return entry.is_dir() and all(e.name in REPORT_FILES for e in entry.iterdir())


def write_sweep(
    results: Sequence[tuple[str, CompareResult]],
    out: str | Path,
    *,
    baseline: str | Path,
    thumbnails: Sequence[Thumbnails | None] | None = None,
    command: Sequence[str] | None = None,
) -> Path:
    """Write each compare into ``out/<name>/`` and the sweep page into ``out/index.html``.

    Everything is written into a temporary directory that then replaces ``out``: ``out`` may be
    missing or hold a previous sweep (``index.html`` and report directories); anything else is
    refused before anything is written.

    Parameters
    ----------
    results : sequence of (str, CompareResult)
        As returned by :func:`sweep`.
    out : str or Path
    baseline : str or Path
        The baseline directory, as the user gave it (shown on the page).
    thumbnails : sequence of (Thumbnails or None), optional
        Gallery images per result, in the same order.
    command : sequence of str, optional
        The command line, recorded on every page.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    OutputError
        ``out`` holds something that is not a sweep, or cannot be written.
    """
    from .compare import write_outputs
    from .report import render_sweep

    out = Path(out)
    if out.is_dir():
        for entry in out.iterdir():
            if not _is_sweep_entry(entry):
                raise OutputError(NOT_A_SWEEP.format(path=out, entry=entry.name))
    thumbnails = list(thumbnails) if thumbnails is not None else [None] * len(results)
    page = render_sweep(sweep_table(results), baseline=str(baseline), command=command)
    with replace_directory(out, accept=_is_sweep_entry) as tmp:
        for (name, result), images in zip(results, thumbnails, strict=True):
            write_outputs(result, tmp / name, thumbnails=images, command=command, sweep_link=f"../{SWEEP_PAGE}")
        (tmp / SWEEP_PAGE).write_text(page, encoding="utf-8")
    return out
