"""``pie-audit predict``: evaluate saved models on a built-in dataset into a population directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import app
from ._options import DEFAULT_DATA_ROOT, DataRoot, Quiet, command_line


@app.command()
def predict(
    model_files: Annotated[
        list[Path],
        typer.Argument(
            help="Model files: model.pt state dicts (from pie-audit train), TorchScript archives, torch.export .pt2 programs, .onnx models.",
            show_default=False,
        ),
    ],
    dataset: Annotated[str, typer.Option(help="The test split to evaluate on: digits, fashion-mnist, cifar10 or celeba.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Population directory; one sub-directory per model file is added.", show_default=False)],
    arch: Annotated[
        Optional[str],
        typer.Option(help="Architecture of state dicts: small-cnn or resnet18-cifar. Default: run.json's, beside model.pt."),
    ] = None,
    data_root: DataRoot = DEFAULT_DATA_ROOT,
    target: Annotated[
        Optional[str],
        typer.Option(help="celeba: the attribute the models predict. Default: run.json's, beside model.pt, else Blond_Hair.", show_default=False),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps (torch models).")] = "auto",
    provider: Annotated[
        Optional[str],
        typer.Option(help="The onnxruntime execution provider of .onnx files. Default: CPUExecutionProvider.", show_default=False),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Test images per forward pass.")] = 1024,
    trust_code: Annotated[
        bool,
        typer.Option(
            "--trust-code",
            help="Allow TorchScript and torch.export files: they are programs, and loading them runs code from the file.",
        ),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate saved models on a dataset's test split, one model directory per file.

    A file named model.pt is written as its directory's name (runs/x/seed-0003/model.pt ->
    seed-0003), any other file as its stem. Nothing is written unless every file loads and runs.
    A dataset with attributes (celeba) also writes them as the population's groups.parquet.
    """
    from ..interchange import RUN_FILE, read_run
    from ..prediction import predict_files

    written = predict_files(
        model_files, dataset=dataset, out=out, arch=arch, data_root=data_root, target=target, device=device,
        batch_size=batch_size, trust_code=trust_code, command=command_line(), provider=provider,
    )  # fmt: skip
    if not quiet:
        for directory in written:
            run = read_run(directory / RUN_FILE)
            typer.echo(f"{directory}: accuracy {run['accuracy']:.2%} ({run['source_format'].replace('_', ' ')})")
