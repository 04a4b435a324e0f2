"""``pie-audit study run|status SPEC``: a whole pruning study from one TOML file.

Exit codes: 0 when every population's gate passes, 1 when any fails, 2 on a bad spec or a
refused output, 3 on an internal error, 130 when interrupted (finished models are kept; running
the same command again resumes).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ._app import EXIT_GATE_FAILED, app
from ._options import command_line

study_app = typer.Typer(
    help="Run a whole pruning study (a dense and several pruned populations) from a TOML spec.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study")

Spec = Annotated[Path, typer.Argument(help="The study's TOML file (docs/study.md).", show_default=False)]
console = Console(stderr=True)


class StudyProgress:
    """One progress bar for the whole study, a line per population; plain lines when not a terminal.

    Implements the ``progress`` protocol of :func:`pie_audit.study.run_study`.
    """

    def __init__(self, *, quiet: bool):
        self.quiet = quiet
        self._live = not quiet and console.is_terminal
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._tasks: dict[str, int] = {}
        self._start = time.perf_counter()

    def __enter__(self) -> StudyProgress:
        if self._live:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live:
            self._bar.stop()

    def planned(self, totals: dict[str, tuple[int, int]]) -> None:
        """``totals``: per population, (models already finished, models in all)."""
        done = sum(d for d, _ in totals.values())
        total = sum(t for _, t in totals.values())
        if self._live:
            self._tasks["study"] = self._bar.add_task("study", total=total, completed=done)
            for name, (d, t) in totals.items():
                self._tasks[name] = self._bar.add_task(f"  {name}", total=t, completed=d)
        elif not self.quiet:
            console.print(f"study: {done} of {total} models finished; training {total - done}", highlight=False)

    def unit_done(self, population: str, seeds: list[int], seconds: float) -> None:
        if self._live:
            self._bar.advance(self._tasks["study"], len(seeds))
            self._bar.advance(self._tasks[population], len(seeds))
        elif not self.quiet:
            span = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
            console.print(
                f"{population}: {span} written ({time.perf_counter() - self._start:.0f} s elapsed)", highlight=False
            )


@study_app.command("run")
def run(
    spec: Spec,
    executor: Annotated[str, typer.Option(help="local (this machine's device) or ray (a Ray cluster).")] = "local",
    ray_address: Annotated[
        Optional[str], typer.Option(help="auto or HOST:PORT of a running Ray cluster. Default: start a local instance.")
    ] = None,
    gpus_per_unit: Annotated[Optional[float], typer.Option(help="GPUs each unit asks Ray for (fractions allowed).")] = None,
    cpus_per_unit: Annotated[Optional[float], typer.Option(help="CPUs each unit asks Ray for.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    jointly: Annotated[
        Optional[int], typer.Option(help="Models per unit (trained at once). Default: chosen from the device and model.")
    ] = None,
    data_root: Annotated[Path, typer.Option(help="Where dataset files are looked up.")] = Path("data"),
    no_report: Annotated[bool, typer.Option("--no-report", help="Train only; do not write the sweep report.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Plain lines instead of a progress bar; no summary.")] = False,
) -> None:
    """Train what is missing of a study, then audit every pruned population against the baseline."""
    from ..study import read_study, run_study

    study = read_study(spec)
    with StudyProgress(quiet=quiet) as progress:
        outcome = run_study(
            study,
            executor=executor,
            ray_address=ray_address,
            gpus_per_unit=gpus_per_unit,
            cpus_per_unit=cpus_per_unit,
            device=device,
            jointly=jointly,
            data_root=data_root,
            report=not no_report,
            progress=progress,
            command=command_line(),
        )
    if outcome.results is None:
        return
    out = Console(highlight=False, soft_wrap=True)
    for name, result in outcome.results:
        if not quiet:
            out.print(f"{name}: {result.verdict}; accuracy {result.baseline.accuracy_mean:.2%} -> "
                      f"{result.pruned.accuracy_mean:.2%}, PIEs {result.pies.fraction:.2%}, "
                      f"classes harmed {result.n_harmed}", markup=False)  # fmt: skip
    if not quiet:
        out.print(f"report: {outcome.report}", markup=False)
    if not all(result.gate.passed for _, result in outcome.results):
        raise typer.Exit(EXIT_GATE_FAILED)


@study_app.command("status")
def status(spec: Spec) -> None:
    """Print, per population, the finished and the missing models."""
    from ..study import read_study, study_status

    study = read_study(spec)
    out = Console(highlight=False, soft_wrap=True)
    for row in study_status(study):
        missing = ", ".join(map(str, row.missing[:8])) + (", ..." if len(row.missing) > 8 else "")
        note = f"; missing seeds {missing}" if row.missing else ""
        refused = f"; {row.problem}" if row.problem else ""
        out.print(f"{row.name}: {len(row.finished)} of {study.models} finished{note}{refused}", markup=False)
