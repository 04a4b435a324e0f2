"""Options shared by ``pie-audit compare`` and ``pie-audit report``, declared once.

Each setting option defaults to ``None`` ("not given"), so that :func:`settings_from` can let
``[tool.pie-audit]`` and then the library's defaults fill what the command line leaves out.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..audit import SETTINGS, Settings, find_config, resolve_settings

Alpha = Annotated[Optional[float], typer.Option(help="Significance level for q-values. \\[default: 0.05]")]
Correction = Annotated[
    Optional[str], typer.Option(help="fdr_bh (Benjamini-Hochberg) or none (raw p). \\[default: fdr_bh]")
]
TieBreak = Annotated[
    Optional[str], typer.Option(help="Tied modal labels: lowest or highest class index. \\[default: lowest]")
]
MaxClassDrop = Annotated[
    Optional[float],
    typer.Option(help="Fail when a class is significantly harmed by more than this (normalized recall, fraction). \\[default: 0.02]"),
]
MaxClassRecallDrop = Annotated[
    Optional[float],
    typer.Option(help="Fail when a class's recall falls significantly by more than this (absolute, fraction). \\[default: 0.05]"),
]
MaxPieFraction = Annotated[Optional[float], typer.Option(help="Fail when the PIE fraction exceeds this.")]
StablePiesOnly = Annotated[
    Optional[bool],
    typer.Option(
        "--stable-pies-only/--all-pies",
        help="Count only PIEs stable under model resampling (>= 90%) for --max-pie-fraction. \\[default: all]",
        show_default=False,
    ),
]
MinPower = Annotated[
    Optional[float],
    typer.Option(help="Fail when the audit's power to detect a class drop of --detect is below this."),
]
Test = Annotated[
    Optional[str],
    typer.Option(help="Per-class test: auto, welch, paired or mcnemar. \\[default: auto]"),
]
Detect = Annotated[
    Optional[float],
    typer.Option(help="Class drop the power analysis asks about (fraction). \\[default: --max-class-drop]"),
]
MaxAccuracyDrop = Annotated[
    Optional[float], typer.Option(help="Fail when mean accuracy drops by more than this (fraction).")
]
MaxHarmedClasses = Annotated[
    Optional[int], typer.Option(help="Fail when more classes than this are significantly harmed.")
]
Config = Annotated[
    Optional[Path],
    typer.Option(help="pyproject.toml with \\[tool.pie-audit] settings. Default: the nearest one with that table, from here up."),
]
Seed = Annotated[Optional[int], typer.Option(help="Bootstrap seed. \\[default: 0]")]
NBootstrap = Annotated[Optional[int], typer.Option(help="Bootstrap resamples. \\[default: 1000]")]
DataRoot = Annotated[
    Path, typer.Option(help="Where to find the dataset named in run.json, for the report's PIE images.")
]
Images = Annotated[
    Optional[Path],
    typer.Option(help="Images of your own test set for the PIE gallery: an .npz of example_id and images (docs/interchange-format.md)."),
]
NoImages = Annotated[bool, typer.Option("--no-images", help="Show PIEs as ids and labels, without images.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]


def settings_from(params: Mapping[str, Any]) -> Settings:
    """The settings of a command's parsed parameters: flags, then its config file, then defaults.

    The config file is ``--config``, else the nearest ``pyproject.toml`` with a
    ``[tool.pie-audit]`` table, from the working directory up.
    """
    config = params["config"] if params["config"] is not None else find_config()
    return resolve_settings({name: params[name] for name in SETTINGS}, config=config)


def rules_source(settings: Settings) -> str:
    """Where the rules came from, for the console: ``rules: path`` or ``rules: defaults``."""
    return f"rules: {settings.source}" if settings.source is not None else "rules: defaults"


def command_line() -> list[str]:
    """This process's command line, for the report's provenance."""
    return ["pie-audit", *sys.argv[1:]]
