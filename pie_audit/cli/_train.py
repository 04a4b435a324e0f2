"""``pie-audit train``: train a baseline or a compressed population (``--method``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import app
from ._options import DEFAULT_DATA_ROOT, DataRoot, Device, command_line

_DATASET_HELP = "digits (embedded, offline), fashion-mnist, cifar10 or celeba (read from --data-root, never downloaded)."
_TARGET_HELP = "celeba: the attribute the models predict (docs/training.md). \\[default: Blond_Hair]"


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Population directory (one sub-directory per model).")],
    dataset: Annotated[str, typer.Option(help=_DATASET_HELP)] = "digits",
    target: Annotated[Optional[str], typer.Option(help=_TARGET_HELP, show_default=False)] = None,
    arch: Annotated[str, typer.Option(help="small-cnn or resnet18-cifar.")] = "small-cnn",
    population: Annotated[
        Optional[int],
        typer.Option(help="Number of independently seeded models, at most 10,000. Default: 16; with --from, as many as the parent has.", show_default=False),
    ] = None,
    method: Annotated[str, typer.Option(help="gmp (gradual magnitude pruning), random, oneshot, lottery, structured or int8 (docs/methods.md).")] = "gmp",
    source: Annotated[Optional[Path], typer.Option("--from", help="oneshot, int8: the dense baseline population its models derive from, seed by seed.")] = None,
    sparsity: Annotated[Optional[float], typer.Option(help="Target sparsity; gmp: in [0, 1), 0 is the dense baseline; structured: of each conv layer's channels; others: in (0, 1).")] = None,
    seed_start: Annotated[
        Optional[int],
        typer.Option(help="Model i gets seed seed-start + i. Default: 0; with --from, the parent's first seed.", show_default=False),
    ] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Default: per dataset.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Default: per dataset.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (SGD, cosine decay).")] = None,
    momentum: Annotated[Optional[float], typer.Option()] = None,
    weight_decay: Annotated[Optional[float], typer.Option()] = None,
    scope: Annotated[Optional[str], typer.Option(help="layer: each tensor to the target; global: ranked together. \\[default: layer]")] = None,
    prune_begin: Annotated[Optional[float], typer.Option(help="gmp: pruning starts at this fraction of training. \\[default: 0.2]")] = None,
    prune_end: Annotated[Optional[float], typer.Option(help="gmp: pruning reaches the target at this fraction. \\[default: 0.8]")] = None,
    prune_every: Annotated[Optional[int], typer.Option(help="Recompute masks every N steps (default: ~50 updates).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Module name or regex to keep dense (repeatable).")] = None,
    prune_final: Annotated[bool, typer.Option(help="Also prune the final classifier.")] = False,
    finetune_epochs: Annotated[Optional[int], typer.Option(help="oneshot: fine-tuning epochs. \\[default: a quarter of the epochs]")] = None,
    rewind: Annotated[Optional[float], typer.Option(help="lottery: rewind to the weights after this fraction of the first run. \\[default: 0.05]")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="lottery: prune-and-retrain rounds to reach the target. \\[default: 3]")] = None,
    calibration_images: Annotated[Optional[int], typer.Option(help="int8 and onnx-int8: training images that calibrate the activation ranges. \\[default: 512]")] = None,
    device: Device = "auto",
    jointly: Annotated[Optional[int], typer.Option(help="Models trained at once on the device (1: one at a time). Default: chosen from the device and model.")] = None,
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    download: Annotated[bool, typer.Option(help="Download the dataset if it is not found.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a population of models: dense (--sparsity 0), gradually magnitude-pruned, or by another --method.

    Re-running the same command resumes: finished models are kept, the rest are trained. Ctrl-C
    keeps every model finished so far (exit 130); a second run on the same --out while one is
    writing it is refused (exit 2).
    """
    from dataclasses import replace

    from ..data import load_dataset
    from ..training import check_arguments, train_population
    from ..training import make_method
    from ..training import DEFAULT_TRAIN_CONFIGS
    from ..training import check_population_size
    from ._progress import TrainingProgress, summarise

    population, seed_start = _seeds(population, seed_start, source)
    check_population_size(population)

    # Every check that needs no data first, so that a typo fails before any data is read (or
    # downloaded); the configurations below check themselves as they are made. What needs the
    # data (the schedule's step count, the dataset hash) train_population checks before writing.
    check_arguments(
        arch=arch, population=population, seed_start=seed_start, jointly=jointly, device=device,
        dataset=dataset, target=target, out=out,
    )  # fmt: skip
    # Only the options given: a method refuses one it does not use. Flags that are off count as
    # not given.
    options = {
        "sparsity": sparsity, "scope": scope, "prune-begin": prune_begin, "prune-end": prune_end,
        "prune-every": prune_every, "exclude": exclude or None, "prune-final": prune_final or None,
        "from": source, "finetune-epochs": finetune_epochs, "rewind": rewind, "rounds": rounds,
        "calibration-images": calibration_images,
    }  # fmt: skip
    prune = make_method(method, options)
    overrides = {
        k: v
        for k, v in dict(
            epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay
        ).items()
        if v is not None
    }
    config = replace(DEFAULT_TRAIN_CONFIGS[dataset], **overrides)

    data = load_dataset(dataset, data_root=data_root, download=download, target=target)
    with TrainingProgress(enabled=not quiet) as progress:
        dirs = train_population(
            data, arch=arch, out=out, population=population, seed_start=seed_start, train=config,
            prune=prune, device=device, jointly=jointly, callback=progress, command=command_line(),
        )  # fmt: skip
    if not quiet:
        summarise(dirs, out, trained=progress.trained, skipped=progress.skipped)


#: Models a population gets when neither --population nor --from says how many.
DEFAULT_POPULATION = 16


def _seeds(population: int | None, seed_start: int | None, source: Path | None) -> tuple[int, int]:
    """``--population`` and ``--seed-start``, or what they default to.

    A derived population (``--from``) takes its parent's seeds: from the parent's first model's
    seed (or ``--seed-start``) to its last model's, so that every parent model gets its derived one. A
    parent with no model leaves the plain defaults, for the method's check to refuse.
    """
    from ..training import model_seeds

    seeds = model_seeds(source) if source is not None and (population is None or seed_start is None) else []
    if seed_start is None:
        seed_start = seeds[0] if seeds else 0
    if population is None:
        later = [seed for seed in seeds if seed >= seed_start]
        population = later[-1] - seed_start + 1 if later else DEFAULT_POPULATION
    return population, seed_start
