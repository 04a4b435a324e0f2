"""Progress display and summaries for the CLI (rich), kept out of the library."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


class TrainingProgress:
    """A two-level rich progress bar (models, epochs) implementing ``TrainingCallback``.

    On a non-terminal it prints one line per model instead, so CI logs stay readable.
    """

    def __init__(self, *, enabled: bool = True):
        self.enabled = enabled
        self.trained = 0
        self.skipped = 0
        self._live = enabled and console.is_terminal
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._models = None
        self._epochs = None

    def __enter__(self) -> "TrainingProgress":
        if self._live:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live:
            self._progress.stop()

    def started(self, total: int) -> None:
        if self._live:
            self._models = self._progress.add_task("models", total=total)

    def group_started(self, seeds) -> None:
        if not self._live:
            return
        if self._epochs is not None:
            self._progress.remove_task(self._epochs)
        label = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
        self._epochs = self._progress.add_task(f"  {label}", total=None)

    def epoch_done(self, epoch: int, epochs: int) -> None:
        if self._live and self._epochs is not None:
            self._progress.update(self._epochs, completed=epoch, total=epochs)

    def model_done(self, seed: int, result) -> None:
        if result is None:
            self.skipped += 1
        else:
            self.trained += 1
        if self._live and self._models is not None:
            self._progress.advance(self._models)
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
