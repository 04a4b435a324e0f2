"""Writing audits to disk: a report directory per audit, and a sweep directory over several.

A report directory holds :data:`REPORT_FILES`: ``summary.json`` (stable schema), ``examples.parquet``,
``classes.csv``, ``report.html``, ``groups.csv`` when the audit has groups and, when asked for,
``junit.xml``. A sweep directory holds one
report directory per pruned population and the sweep page, :data:`SWEEP_PAGE`. Both are written
into a temporary directory that then replaces the old one (:mod:`pie_audit._atomic`), and an
output location holding anything else is refused before anything is written.

This is the only module that asks for images for the report's PIE gallery (:mod:`._thumbnails`
finds them): the gallery's rows are chosen once (:func:`pie_gallery`) and handed to both the
images and the page.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from .._atomic import (
    IS_A_LINK,
    NOT_A_DIRECTORY,
    NOT_REPLACEABLE,
    atomic_file,
    check_output_path,
    check_unlocked,
    exclusive_lock,
    replace_directory,
    resolve_output,
)
from ..audit import SWEEP_PAGE, AuditResult, junit_xml, sweep_table
from ..errors import OutputError
from ._render import GALLERY_SIZE, NO_IMAGES, Gallery, render_report, render_sweep
from ._thumbnails import Thumbnails, dataset_thumbnails, file_thumbnails

__all__ = [
    "SUMMARY_FILE",
    "EXAMPLES_FILE",
    "CLASSES_FILE",
    "GROUPS_CSV",
    "ATTRIBUTE_PREFIX",
    "REPORT_FILE",
    "JUNIT_FILE",
    "OUTPUT_FILES",
    "REPORT_FILES",
    "SWEEP_PAGE",
    "check_outputs",
    "groups_csv_frame",
    "pie_gallery",
    "write_outputs",
    "write_junit",
    "write_sweep",
]

SUMMARY_FILE = "summary.json"
EXAMPLES_FILE = "examples.parquet"
CLASSES_FILE = "classes.csv"
REPORT_FILE = "report.html"
JUNIT_FILE = "junit.xml"
#: One row per group, beside ``classes.csv``, written only when the audit has groups.
GROUPS_CSV = "groups.csv"
#: ``groups.csv`` spells a group's attributes as one column per attribute, ``attribute:<name>``.
ATTRIBUTE_PREFIX = "attribute:"
#: What :func:`write_outputs` always writes (and :data:`GROUPS_CSV` with groups).
OUTPUT_FILES = (SUMMARY_FILE, EXAMPLES_FILE, CLASSES_FILE, REPORT_FILE)
#: What a report directory may hold; anything else there is the user's and is never replaced.
REPORT_FILES = frozenset({*OUTPUT_FILES, GROUPS_CSV, JUNIT_FILE})
OUT_IN_INPUT = (
    "{out}: the output would {relation} the population {population}; choose an output directory "
    "outside the populations"
)
NOT_A_SWEEP = (
    "{path}: exists and holds {entry!r}, which is not part of a pie-audit sweep; refusing to replace it"
)


def pie_gallery(
    result: AuditResult,
    *,
    data_root: str | Path | None = None,
    images: str | Path | None = None,
    size: int = GALLERY_SIZE,
) -> Gallery:
    """The PIEs the report's gallery shows, with their images when they can be found.

    Parameters
    ----------
    result : AuditResult
    data_root : str or Path, optional
        Where the dataset named in the models' ``run.json`` is looked for (never downloaded);
        ``None`` shows no image.
    images : str or Path, optional
        An images file of one's own data (:func:`pie_audit.report.read_images`); it wins
        over ``data_root``.
    size : int, default=GALLERY_SIZE
        How many PIEs: the highest-scoring, as :meth:`AuditResult.top_pies` orders them.

    Returns
    -------
    Gallery
        The rows, and images for them or the reason there are none
        (:func:`._thumbnails.dataset_thumbnails`).
    """
    rows = result.top_pies(size)
    if images is not None:
        return Gallery(rows=rows, thumbnails=file_thumbnails(images, rows["example_id"].to_numpy()))
    if data_root is None:
        return Gallery(rows=rows, thumbnails=Thumbnails(note=NO_IMAGES))
    runs = [*result.baseline_runs.values(), *result.pruned_runs.values()]
    images = dataset_thumbnails(
        runs, rows["example_id"].to_numpy(), rows["label"].to_numpy(), data_root=data_root
    )
    return Gallery(rows=rows, thumbnails=images)


def _check_apart_from_inputs(out: Path, populations: Sequence[str | Path]) -> None:
    """Refuse an output inside an input population (the next audit would read it as a model)."""
    target = resolve_output(out)
    for given in populations:
        population = resolve_output(given)
        if target == population or population in target.parents:
            relation = "replace" if target == population else "lie inside"
        elif target in population.parents:
            relation = "contain"
        else:
            continue
        raise OutputError(OUT_IN_INPUT.format(out=out, relation=relation, population=population))


def _audited(results: Sequence[AuditResult]) -> list[Path]:
    """The population directories the audits read (none for populations built in memory)."""
    return [Path(p) for r in results for p in (r.baseline_dir, r.pruned_dir) if p is not None]


def _read_files(results: Sequence[AuditResult]) -> list[Path]:
    """The other files the audits read: their rules and groups tables."""
    return [Path(p) for r in results for p in (r.config_source, r.group_source) if p is not None]


def check_outputs(
    out: str | Path,
    *,
    populations: Sequence[str | Path],
    junit: str | Path | None = None,
    inputs: Sequence[str | Path] = (),
    what: str = "report",
    lock: bool = True,
) -> None:
    """Refuse now, before any audit is computed, every output :func:`write_outputs` or
    :func:`write_sweep` would refuse; nothing is written.

    Parameters
    ----------
    out : str or Path
        The report directory (``what="report"``) or the sweep directory (``what="sweep"``).
    populations : sequence of str or Path
        The population directories the command reads: ``out`` must neither be, lie inside, nor
        contain one; ``junit`` must not lie inside one.
    junit : str or Path, optional
        The JUnit file (``--junit``): missing or a regular file (:func:`pie_audit._atomic.check_output_path`),
        outside the populations, ``inputs`` and ``out``, except ``out/junit.xml``, which is written
        with the report.
    inputs : sequence of str or Path
        The other files the command reads (``--config``, ``--groups``, ``--images``): ``junit``
        must be none of them.
    what : {"report", "sweep"}
    lock : bool, default True
        Also refuse an ``out`` whose lock another writer holds (:func:`pie_audit._atomic.check_unlocked`).

    Raises
    ------
    OutputError
        The first output refused, naming it.
    """
    out = Path(out)
    _check_apart_from_inputs(out, populations)
    if out.is_symlink():
        raise OutputError(IS_A_LINK.format(path=out))
    accept, message = (_is_report_file, NOT_REPLACEABLE) if what == "report" else (_is_sweep_entry, NOT_A_SWEEP)
    if out.exists():
        if not out.is_dir():
            raise OutputError(NOT_A_DIRECTORY.format(path=out))
        for entry in out.iterdir():
            if not accept(entry):
                raise OutputError(message.format(path=out, entry=entry.name, what=what))
    if junit is not None:
        allowed = [out / JUNIT_FILE] if what == "report" else []
        check_output_path(junit, inputs=[*populations, *inputs], outputs=[out], allowed=allowed)
    if lock:
        check_unlocked(out)


def _junit_inside(out: Path, junit: str | Path | None) -> bool:
    """Whether ``junit`` is ``out/junit.xml``: then written with the report, in one step."""
    return junit is not None and resolve_output(junit) == resolve_output(out) / JUNIT_FILE


def _is_report_file(entry: Path) -> bool:
    return entry.name in REPORT_FILES and not entry.is_dir()


def write_outputs(
    result: AuditResult,
    out: str | Path,
    *,
    gallery: Gallery | None = None,
    junit: str | Path | None = None,
    command: Sequence[str] | None = None,
    sweep_link: str | None = None,
    review: pd.DataFrame | None = None,
) -> Path:
    """Write ``summary.json``, ``examples.parquet``, ``classes.csv``, ``report.html`` and, when the
    audit has groups, ``groups.csv`` (:func:`groups_csv_frame`).

    The files are written into a temporary directory that then replaces ``out``: ``out`` may be
    missing or hold a previous report (:data:`REPORT_FILES`); anything else, an ``out`` inside
    or around an audited population, or a ``junit`` path that is refused by :func:`check_outputs`
    (a device, FIFO, socket, symbolic link or directory, a path inside an input or inside
    ``out`` but ``out/junit.xml``) is refused before anything is written.

    Parameters
    ----------
    result : AuditResult
    out : str or Path
        The report directory.
    gallery : Gallery, optional
        The report's PIE gallery (:func:`pie_gallery`); default: its PIEs without images.
    junit : str or Path, optional
        Also write the gate as JUnit XML there (:func:`write_junit`); ``out/junit.xml`` is
        written with the report, in the same step.
    command : sequence of str, optional
        The command line, recorded in the report's provenance.
    sweep_link : str, optional
        Relative link from ``report.html`` back to a sweep page.
    review : DataFrame, optional
        A blinded human review's tally (:func:`tally_review`, ``docs/review.md``): shown in the
        report's PIE section and kept in ``summary.json`` ``review``.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    OutputError
        ``out`` holds files that are not a report, lies inside or around an audited population,
        or cannot be written; or ``junit`` is refused (:func:`check_outputs`).
    """
    out = Path(out)
    check_outputs(out, populations=_audited([result]), junit=junit, inputs=_read_files([result]))
    gallery = gallery if gallery is not None else pie_gallery(result)
    # Rendered first: the slowest step, and nothing is replaced if it fails.
    html = render_report(result, gallery=gallery, command=command, sweep_link=sweep_link, review=review)
    inside = _junit_inside(out, junit)
    # One writer at a time: a second would clean up the first's temporary directory.
    with exclusive_lock(out), replace_directory(out, accept=_is_report_file, what="report") as tmp:
        _write_report_files(result, tmp, html, review=review)
        if inside:
            write_junit(result, tmp / JUNIT_FILE)
    if junit is not None and not inside:
        write_junit(result, junit)
    return out


def groups_csv_frame(result: AuditResult) -> pd.DataFrame | None:
    """What ``groups.csv`` holds: :attr:`AuditResult.groups` with one column per attribute.

    Parameters
    ----------
    result : AuditResult

    Returns
    -------
    DataFrame or None
        One row per group, in :attr:`AuditResult.groups`' order: ``group``, then
        ``attribute:<name>`` for each of :attr:`AuditResult.group_attributes` (the group's value,
        empty where the group does not constrain that attribute), then the other columns of
        :attr:`AuditResult.groups` but ``attributes``. ``None`` without groups.
    """
    groups = result.groups
    if groups is None:
        return None
    values = {
        f"{ATTRIBUTE_PREFIX}{name}": pd.Series([a.get(name) for a in groups["attributes"]], index=groups.index, dtype=object)
        for name in result.group_attributes
    }
    rest = groups.drop(columns=["group", "attributes"])
    return pd.concat([groups[["group"]], pd.DataFrame(values, index=groups.index), rest], axis=1)


def _write_report_files(result: AuditResult, directory: Path, html: str, *, review: pd.DataFrame | None = None) -> None:
    summary = result.to_summary()
    if review is not None:
        summary["review"] = review_records(review)
    with open(directory / SUMMARY_FILE, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2, allow_nan=False)
        fh.write("\n")
    result.examples.to_parquet(directory / EXAMPLES_FILE, index=False)
    result.classes.to_csv(directory / CLASSES_FILE, index=False)
    groups = groups_csv_frame(result)
    if groups is not None:
        groups.to_csv(directory / GROUPS_CSV, index=False)
    (directory / REPORT_FILE).write_text(html, encoding="utf-8")


def review_records(review: pd.DataFrame) -> list[dict[str, Any]]:
    """A review tally as strict-JSON rows: an infinite or undefined odds ratio becomes ``null``."""
    rows = []
    for row in review.to_dict(orient="records"):
        rows.append({k: (None if isinstance(v, float) and not np.isfinite(v) else (v.item() if isinstance(v, np.generic) else v)) for k, v in row.items()})
    return rows


def write_junit(result: AuditResult, path: str | Path) -> Path:
    """Write the gate's verdict as JUnit XML (:func:`pie_audit.audit.junit_xml`), atomically."""
    path = Path(path)
    properties = {
        "rules-source": str(result.config_source) if result.config_source is not None else "defaults",
        **{f"rule:{name}": value for name, value in result.gate.rules.limits().items()},
        "test": result.test,
        "power": result.power_sentence(),
    }
    with atomic_file(path) as fh:
        fh.write(junit_xml(result.gate, properties=properties))
    return path


def _is_sweep_entry(entry: Path) -> bool:
    if entry.name == SWEEP_PAGE:
        return entry.is_file()
    return entry.is_dir() and all(_is_report_file(e) for e in entry.iterdir())


def write_sweep(
    results: Sequence[tuple[str, AuditResult]],
    out: str | Path,
    *,
    baseline: str | Path,
    galleries: Sequence[Gallery | None] | None = None,
    command: Sequence[str] | None = None,
) -> Path:
    """Write each compare into ``out/<name>/`` and the sweep page into ``out/index.html``.

    Everything is written into a temporary directory that then replaces ``out``: ``out`` may be
    missing or hold a previous sweep (``index.html`` and report directories); anything else is
    refused before anything is written.

    Parameters
    ----------
    results : sequence of (str, AuditResult)
        As returned by :func:`pie_audit.sweep`.
    out : str or Path
    baseline : str or Path
        The baseline directory, as the user gave it (shown on the page).
    galleries : sequence of (Gallery or None), optional
        Each result's PIE gallery (:func:`pie_gallery`), in the same order.
    command : sequence of str, optional
        The command line, recorded on every page.

    Returns
    -------
    Path
        ``out``, holding ``index.html`` and one report directory per result.

    Raises
    ------
    OutputError
        ``out`` holds something that is not a sweep, lies inside or around an audited
        population, or cannot be written.
    """
    out = Path(out)
    # Before any page is rendered, with the sweep's own message.
    check_outputs(out, populations=_audited([result for _, result in results]), what="sweep")
    galleries = list(galleries) if galleries is not None else [None] * len(results)
    pages = [
        render_report(
            result,
            gallery=gallery if gallery is not None else pie_gallery(result),
            command=command,
            sweep_link=f"../{SWEEP_PAGE}",
        )
        for (_, result), gallery in zip(results, galleries, strict=True)
    ]
    links = [f"{quote(name)}/{REPORT_FILE}" for name, _ in results]
    index = render_sweep(sweep_table(results), links=links, baseline=str(baseline), command=command)
    with exclusive_lock(out), replace_directory(out, accept=_is_sweep_entry, what="sweep") as tmp:
        for (name, result), html in zip(results, pages, strict=True):
            (tmp / name).mkdir()
            _write_report_files(result, tmp / name, html)
        (tmp / SWEEP_PAGE).write_text(index, encoding="utf-8")
    return out
