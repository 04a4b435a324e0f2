"""``pie-audit train``: train a baseline or a magnitude-pruned population."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import app

_DATASET_HELP = "digits (embedded, offline), fashion-mnist or cifar10."


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Population directory (one sub-directory per model).")],
    dataset: Annotated[str, typer.Option(help=_DATASET_HELP)] = "digits",
    arch: Annotated[str, typer.Option(help="small-cnn or resnet18-cifar.")] = "small-cnn",
    population: Annotated[int, typer.Option(help="Number of independently seeded models.")] = 16,
    sparsity: Annotated[float, typer.Option(help="Target sparsity in [0, 1); 0 is the dense baseline.")] = 0.0,
    seed_start: Annotated[int, typer.Option(help="Model i gets seed seed-start + i.")] = 0,
    epochs: Annotated[Optional[int], typer.Option(help="Default: per dataset.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Default: per dataset.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (SGD, cosine decay).")] = None,
    momentum: Annotated[Optional[float], typer.Option()] = None,
    weight_decay: Annotated[Optional[float], typer.Option()] = None,
    scope: Annotated[str, typer.Option(help="layer: each tensor to the target; global: ranked together.")] = "layer",
    prune_begin: Annotated[float, typer.Option(help="Pruning starts at this fraction of training.")] = 0.2,
    prune_end: Annotated[float, typer.Option(help="Pruning reaches the target at this fraction.")] = 0.8,
    prune_every: Annotated[Optional[int], typer.Option(help="Recompute masks every N steps (default: ~50 updates).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Module name or regex to keep dense (repeatable).")] = None,
    prune_final: Annotated[bool, typer.Option(help="Also prune the final classifier.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    jointly: Annotated[Optional[int], typer.Option(help="Models trained at once on the device (1: one at a time). Default: chosen from the device and model.")] = None,
    data_root: Annotated[Path, typer.Option(help="Where dataset files are looked up.")] = Path("data"),
    download: Annotated[bool, typer.Option(help="Download the dataset if it is not found.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a population of models: dense (--sparsity 0) or gradually magnitude-pruned.

    Re-running the same command resumes: finished models are kept, the rest are trained. Ctrl-C
    keeps every model finished so far (exit 130); a second run on the same --out while one is
    writing it is refused (exit 2).
    """
    from dataclasses import replace

    from ..data import load_dataset
    from ..population import check_arguments, train_population
    from ..training import DEFAULT_TRAIN_CONFIGS, PruneConfig
    from ._progress import TrainingProgress, summarise

    # Every check that needs no data first, so that a typo fails before any data is read (or
    # downloaded); the configurations below check themselves as they are made. What needs the
    # data (the schedule's step count, the dataset hash) train_population checks before writing.
    check_arguments(
        arch=arch, population=population, seed_start=seed_start, jointly=jointly, device=device,
        dataset=dataset, out=out,
    )  # fmt: skip
    prune = PruneConfig(
        sparsity=sparsity,
        scope=scope,
        begin=prune_begin,
        end=prune_end,
        frequency=prune_every,
        exclude=tuple(exclude or ()),
        prune_final=prune_final,
    )
    overrides = {
        k: v
        for k, v in dict(
            epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay
        ).items()
        if v is not None
    }
    config = replace(DEFAULT_TRAIN_CONFIGS[dataset], **overrides)

    data = load_dataset(dataset, data_root=data_root, download=download)
    with TrainingProgress(enabled=not quiet) as progress:
        dirs = train_population(
            data,
            arch=arch,
            out=out,
            population=population,
            seed_start=seed_start,
            train=config,
            prune=prune,
            device=device,
            jointly=jointly,
            callback=progress,
            command=["pie-audit", *sys.argv[1:]],
        )
    if not quiet:
        summarise(dirs, out, trained=progress.trained, skipped=progress.skipped)
