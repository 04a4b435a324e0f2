"""Options that several commands share, each declared once, and the audit commands' shared steps.

``pie-audit compare`` and ``pie-audit report`` take the same settings, gallery and quiet options:
:func:`audit_options` gives them to both, so that a flag, its help and its place in ``--help``
cannot drift apart. Each setting option defaults to ``None`` ("not given"), so that
:func:`settings_from` can let ``[tool.pie-audit]`` and then the library's defaults fill what the
command line leaves out.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..audit import SETTINGS, Settings, find_config, resolve_settings
from ..errors import ConfigError

#: Help of each setting's flag (``--max-class-drop``), by its name in ``SETTINGS``, in the order
#: ``--help`` lists them; the type comes from ``SETTINGS``. ``seed`` and ``n_bootstrap`` are listed
#: after a command's own options (:func:`audit_options`).
_SETTING_HELP = {
    "alpha": "Significance level for q-values. \\[default: 0.05]",
    "correction": "fdr_bh (Benjamini-Hochberg) or none (raw p). \\[default: fdr_bh]",
    "tie_break": "Tied modal labels: lowest or highest class index. \\[default: lowest]",
    "test": "Per-class test: auto, welch, paired or mcnemar. \\[default: auto]",
    "detect": "Class drop the power analysis asks about (fraction). \\[default: --max-class-drop]",
    "max_class_drop": "Fail when a class is significantly harmed by more than this (normalized recall, fraction). \\[default: 0.02]",
    "max_class_recall_drop": "Fail when a class's recall falls significantly by more than this (absolute, fraction). \\[default: 0.05]",
    "max_group_drop": "Fail when a group is significantly harmed by more than this (accuracy beyond the models' average, fraction). \\[default: 0.02]",
    "max_group_accuracy_drop": "Fail when a group's accuracy falls significantly by more than this (absolute, fraction). \\[default: 0.05]",
    "max_pie_fraction": "Fail when the PIE fraction exceeds this.",
    "stable_pies_only": "Count only PIEs stable under model resampling (>= 90%) for --max-pie-fraction. \\[default: all]",
    "allow_inconclusive": "Pass a gate whose only findings are drops beyond a limit that are not significant (they are still reported). \\[default: such a gate is INCONCLUSIVE, exit 1]",
    "max_accuracy_drop": "Fail when mean accuracy drops by more than this (fraction).",
    "max_harmed_classes": "Fail when more classes than this are significantly harmed.",
    "min_power": "Fail when the audit's power to detect a class drop of --detect is below this.",
    "min_group_support": "Groups with fewer examples are listed, not tested. \\[default: 30]",
    "seed": "Bootstrap seed. \\[default: 0]",
    "n_bootstrap": "Bootstrap resamples. \\[default: 1000]",
}
# A switch names both its sides; typer would otherwise offer --stable-pies-only/--no-stable-pies-only.
_SETTING_FLAGS = {
    "stable_pies_only": ("--stable-pies-only/--all-pies",),
    "allow_inconclusive": ("--allow-inconclusive/--no-allow-inconclusive",),
}


def _setting(name: str) -> Any:
    flags = _SETTING_FLAGS.get(name, ())
    extra = {"show_default": False} if flags else {}
    return Annotated[Optional[SETTINGS[name]], typer.Option(*flags, help=_SETTING_HELP[name], **extra)]


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
#: ``--device`` of the commands that run models.
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
#: Where datasets are looked up unless ``--data-root`` says otherwise (it may be missing).
DEFAULT_DATA_ROOT = Path("data")
DATA_ROOT_NOT_A_DIRECTORY = "--data-root {path} {problem}: it is where the report's PIE images are read from"


def check_data_root(value: Path) -> Path:
    """A ``--data-root`` the user named for the report's images must be a directory: a typo would
    leave the PIE gallery without images, silently. (Training and ``predict`` need no such
    check: a dataset missing from the root is refused by its loader, naming what it looked for.)"""
    if value != DEFAULT_DATA_ROOT and not value.is_dir():
        problem = "is not a directory" if value.exists() else "does not exist"
        raise ConfigError(DATA_ROOT_NOT_A_DIRECTORY.format(path=value, problem=problem))
    return value


#: ``--data-root`` of the commands that read datasets.
DataRoot = Annotated[Path, typer.Option(help="Where dataset files are looked up.")]

# (annotation, default) of each shared option of the audit commands, in --help order: the
# settings and --config follow the command's own options, the rest come last.
_SETTINGS_OPTIONS = {
    **{name: (_setting(name), None) for name in _SETTING_HELP if name not in ("seed", "n_bootstrap", "min_group_support")},
    "config": (
        Annotated[
            Optional[Path],
            typer.Option(help="pyproject.toml with \\[tool.pie-audit] settings. Default: the nearest one with that table, from here up."),
        ],
        None,
    ),
    "groups": (
        Annotated[
            Optional[Path],
            typer.Option(help="Groups table for the subgroup audit: example_id and attribute columns, .parquet or .csv (docs/groups.md). Default: the baseline's own groups.parquet, if any."),
        ],
        None,
    ),
    "group_by": (
        Annotated[
            Optional[str],
            typer.Option(help="Attributes to form groups from, comma-separated (COL,COL); with 2 or 3, their intersections too. Default: every attribute."),
        ],
        None,
    ),
}
_LAST_OPTIONS = {
    "min_group_support": (_setting("min_group_support"), None),
    "seed": (_setting("seed"), None),
    "n_bootstrap": (_setting("n_bootstrap"), None),
    "data_root": (
        Annotated[Path, typer.Option(help="Where to find the dataset named in run.json, for the report's PIE images.",
                                     callback=check_data_root)],
        DEFAULT_DATA_ROOT,
    ),
    "images": (
        Annotated[
            Optional[Path],
            typer.Option(help="Images of your own test set for the PIE gallery: an .npz of example_id and images (docs/interchange-format.md)."),
        ],
        None,
    ),
    "no_images": (Annotated[bool, typer.Option("--no-images", help="Show PIEs as ids and labels, without images.")], False),
    "quiet": (Quiet, False),
}

#: The colour of each gate outcome (``AuditResult.outcome``) on the console.
OUTCOME_COLOURS = {"passed": "green", "underpowered": "yellow", "inconclusive": "magenta", "failed": "red"}


def audit_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give an audit command the options it shares with the others, declared once here.

    ``command`` declares its own parameters and takes the shared ones as ``**options``. ``--help``
    lists its positional-or-keyword parameters first, then the settings and ``--config``, then
    its keyword-only parameters, then the seed, bootstrap, gallery and ``--quiet`` options.
    """
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]

    def shared(options: Mapping[str, tuple[Any, Any]]) -> list[inspect.Parameter]:
        return [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=d) for n, (a, d) in options.items()]

    parameters = [
        *(p for p in own if p.kind != p.KEYWORD_ONLY),
        *shared(_SETTINGS_OPTIONS),
        *(p for p in own if p.kind == p.KEYWORD_ONLY),
        *shared(_LAST_OPTIONS),
    ]
    # typer reads a command's options from its signature: this one lists the shared options too.
    command.__signature__ = inspect.Signature(
        [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in parameters], return_annotation=None
    )
    return command


def settings_from(options: Mapping[str, Any]) -> Settings:
    """The settings of an audit command's options: flags, then its config file, then defaults.

    The config file is ``--config``, else the nearest ``pyproject.toml`` with a
    ``[tool.pie-audit]`` table, from the working directory up.
    """
    config = options["config"] if options["config"] is not None else find_config()
    return resolve_settings({name: options[name] for name in SETTINGS}, config=config)


def groups_from(options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``groups`` and ``group_by`` keywords of the audit for ``--groups`` and ``--group-by``."""
    group_by = options["group_by"]
    if group_by is not None:
        group_by = [part.strip() for part in group_by.split(",")]
        if not all(group_by):
            raise typer.BadParameter(f"{options['group_by']!r} names an empty column", param_hint="'--group-by'")
    return {"groups": options["groups"], "group_by": group_by}


def gallery_of(result: Any, options: Mapping[str, Any]) -> Any:
    """The report's PIE gallery of ``result`` (a ``CompareResult``), as ``--data-root``, ``--images``
    and ``--no-images`` ask (:func:`pie_audit.pie_gallery`)."""
    from ..report import pie_gallery

    if options["no_images"]:
        return pie_gallery(result, data_root=None, images=None)
    return pie_gallery(result, data_root=options["data_root"], images=options["images"])


def rules_source(settings: Settings) -> str:
    """Where the rules came from, for the console: ``rules: path`` or ``rules: defaults``."""
    return f"rules: {settings.source}" if settings.source is not None else "rules: defaults"


def command_line() -> list[str]:
    """The command being run, for the report's provenance: ``main(argv)``'s arguments when it was
    called with some (from Python), else this process's command line."""
    from ._app import current_argv

    argv = current_argv()
    return ["pie-audit", *(sys.argv[1:] if argv is None else argv)]
