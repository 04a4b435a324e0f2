"""``pie-audit study run|status SPEC``: a whole pruning study from one TOML file.

Exit codes: 0 when every population's gate passes, 1 when any fails, 2 on a bad spec or a
refused output, 3 on an internal error, 130 when interrupted (finished models are kept; running
the same command again resumes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ._app import EXIT_GATE_FAILED, app
from ._options import DEFAULT_DATA_ROOT, DataRoot, Device, command_line
from ._progress import StudyProgress

study_app = typer.Typer(
    help="Run a whole pruning study (a dense and several pruned populations) from a TOML spec.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study")

Spec = Annotated[Path, typer.Argument(help="The study's TOML file (docs/study.md).", show_default=False)]


@study_app.command("run")
def run(
    spec: Spec,
    executor: Annotated[str, typer.Option(help="local (this machine's device) or ray (a Ray cluster).")] = "local",
    ray_address: Annotated[
        Optional[str],
        typer.Option(help="auto or HOST:PORT of a running Ray cluster, which must answer within 30 s "
                          "(PIE_AUDIT_RAY_TIMEOUT=SECONDS changes it). Default: start a local instance."),
    ] = None,  # fmt: skip
    gpus_per_unit: Annotated[Optional[float], typer.Option(help="GPUs each unit asks Ray for (fractions allowed).")] = None,
    cpus_per_unit: Annotated[Optional[float], typer.Option(help="CPUs each unit asks Ray for.")] = None,
    device: Device = "auto",
    jointly: Annotated[
        Optional[int], typer.Option(help="Models per unit (trained at once). Default: chosen from the device and model.")
    ] = None,
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    no_report: Annotated[bool, typer.Option("--no-report", help="Train only; do not write the sweep report.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Plain lines instead of a progress bar; no summary.")] = False,
) -> None:
    """Train what is missing of a study, then audit every pruned population against the baseline."""
    from ..study import read_study, run_study

    study = read_study(spec)
    with StudyProgress(quiet=quiet) as progress:
        outcome = run_study(
            study, executor=executor, ray_address=ray_address, gpus_per_unit=gpus_per_unit,
            cpus_per_unit=cpus_per_unit, device=device, jointly=jointly, data_root=data_root,
            report=not no_report, progress=progress, command=command_line(),
        )  # fmt: skip
    if outcome.results is None:
        return
    out = Console(highlight=False, soft_wrap=True)
    for name, result in outcome.results:
        if not quiet:
            out.print(f"{name}: {result.verdict}; accuracy {result.baseline.accuracy_mean:.2%} -> "
                      f"{result.pruned.accuracy_mean:.2%}, PIEs {result.pies.fraction:.2%}, "
                      f"classes harmed {result.n_harmed}", markup=False)  # fmt: skip
    if not quiet:
        for note in outcome.notes:
            out.print(f"note: {note}", markup=False)
        out.print(f"report: {outcome.report}", markup=False)
    if not all(result.gate.passed for _, result in outcome.results):
        raise typer.Exit(EXIT_GATE_FAILED)


@study_app.command("status")
def status(spec: Spec, data_root: DataRoot = DEFAULT_DATA_ROOT) -> None:
    """Print, per population, the finished and the missing models."""
    from ..study import read_study, study_status

    study = read_study(spec)
    out = Console(highlight=False, soft_wrap=True)
    # The data tells a population of another configuration (its hash), so it is read here too.
    for row in study_status(study, data_root=data_root):
        missing = ", ".join(map(str, row.missing[:8])) + (", ..." if len(row.missing) > 8 else "")
        note = f"; missing seeds {missing}" if row.missing else ""
        refused = f"; {row.problem}" if row.problem else ""
        out.print(f"{row.name}: {len(row.finished)} of {study.models} finished{note}{refused}", markup=False)
