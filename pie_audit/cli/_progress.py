"""Progress display and summaries for the CLI (rich), kept out of the library.

Both displays draw live bars only on a terminal, and print plain lines otherwise, so CI logs stay
readable.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class _Bars:
    """Rich progress bars on stderr, live only on a terminal; ``with`` starts and stops them."""

    def __init__(self, *, shown: bool, remaining: bool = False):
        self._live = shown and console.is_terminal
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        self._bar = Progress(*columns, *([TimeRemainingColumn()] if remaining else []), console=console, transient=True)

    def __enter__(self):  # noqa: ANN204 - the subclass
        if self._live:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live:
            self._bar.stop()


class TrainingProgress(_Bars):
    """A two-level rich progress bar (models, epochs) implementing ``TrainingCallback``.

    On a non-terminal it prints one line per model instead.
    """

    def __init__(self, *, enabled: bool = True):
        super().__init__(shown=enabled)
        self.enabled = enabled
        self.trained = 0
        self.skipped = 0
        self._models = None
        self._epochs = None

    def started(self, total: int) -> None:
        if self._live:
            self._models = self._bar.add_task("models", total=total)

    def group_started(self, seeds) -> None:
        if not self._live:
            return
        if self._epochs is not None:
            self._bar.remove_task(self._epochs)
        label = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
        self._epochs = self._bar.add_task(f"  {label}", total=None)

    def epoch_done(self, epoch: int, epochs: int) -> None:
        if self._live and self._epochs is not None:
            self._bar.update(self._epochs, completed=epoch, total=epochs)

    def model_done(self, seed: int, result) -> None:
        if result is None:
            self.skipped += 1
        else:
            self.trained += 1
        if self._live and self._models is not None:
            self._bar.advance(self._models)
        elif self.enabled:
            what = "already finished, skipped" if result is None else (
                f"accuracy {result.accuracy:.4f}, sparsity {result.sparsity['achieved']:.4f}, "
                f"{result.wall_time_s:.1f} s"
            )
            console.print(f"seed {seed}: {what}", highlight=False, soft_wrap=True)


def summarise(dirs: list[Path], out: Path, *, trained: int, skipped: int) -> None:
    """Print the population's accuracy and sparsity, read back from the run records."""
    import numpy as np

    from ..interchange import RUN_FILE, read_run

    runs = [read_run(d / RUN_FILE) for d in dirs if (d / RUN_FILE).is_file()]
    acc = np.array([r["accuracy"] for r in runs])
    sp = np.array([r["sparsity"]["achieved"] for r in runs])
    std = acc.std(ddof=1) if len(acc) > 1 else 0.0
    console.print(
        f"{len(runs)} models in {out} ({trained} trained, {skipped} already finished): "
        f"accuracy {acc.mean():.4f} ± {std:.4f}, sparsity {sp.mean():.4f}",
        highlight=False,
        soft_wrap=True,
    )


class StudyProgress(_Bars):
    """One progress bar for the whole study, a line per population; plain lines when not a terminal.

    Implements the ``progress`` protocol of :func:`pie_audit.study.run_study`.
    """

    def __init__(self, *, quiet: bool):
        super().__init__(shown=not quiet, remaining=True)
        self.quiet = quiet
        self._tasks: dict[str, int] = {}
        self._start = time.perf_counter()

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
