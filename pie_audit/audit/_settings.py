"""The audit's settings: statistics options and gate rules, resolved in one place.

Every setting has one name, a field of :class:`Settings` or of :class:`~pie_audit.audit.GateRules`.
Those that ``[tool.pie-audit]`` and the command line take are listed once in :data:`SETTINGS`
(each is a key of the table and a flag of ``pie-audit compare`` and ``pie-audit report``);
``confidence`` (the level of the bootstrap interval), the one in :data:`PYTHON_SETTINGS`, is set
only from Python, as a keyword of :func:`pie_audit.compare`. Values come from three places,
the first that has one winning: options given explicitly (command-line flags, or keyword arguments
of :func:`pie_audit.compare`), the ``[tool.pie-audit]`` table of a ``pyproject.toml``, and the
defaults of :class:`Settings`. :func:`resolve_settings` applies that order, so the CLI and the
Python API reproduce each other from the same inputs.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._gate import GateRules
from ._groups import BAD_MIN_SUPPORT, DEFAULT_MIN_SUPPORT
from ._pie import BAD_TIE_BREAK, TIE_BREAKS
from ._power import DEFAULT_DETECT
from ._stats import BAD_ALPHA, BAD_CONFIDENCE, BAD_CORRECTION, BAD_N_BOOTSTRAP, CORRECTIONS, MAX_BOOTSTRAP

__all__ = [
    "SETTINGS",
    "PYTHON_SETTINGS",
    "CONFIG_FILE",
    "Settings",
    "find_config",
    "read_settings",
    "resolve_settings",
]

CONFIG_FILE = "pyproject.toml"
SETTINGS_TABLE = "tool.pie-audit"

#: Every setting ``[tool.pie-audit]`` and the command line accept, with its type: the keys of the
#: table, and the flags of the audit commands. Statistics options are fields of :class:`Settings`,
#: gate rules fields of :class:`~pie_audit.audit.GateRules`.
SETTINGS: dict[str, type] = {
    "alpha": float,
    "correction": str,
    "tie_break": str,
    "test": str,
    "detect": float,
    "n_bootstrap": int,
    "seed": int,
    "min_group_support": int,
    "max_class_drop": float,
    "max_class_recall_drop": float,
    "max_group_drop": float,
    "max_group_accuracy_drop": float,
    "max_pie_fraction": float,
    "max_accuracy_drop": float,
    "max_harmed_classes": int,
    "min_power": float,
    "stable_pies_only": bool,
    "allow_inconclusive": bool,
}
#: Settings only Python takes (:func:`resolve_settings` options, :func:`pie_audit.compare`
#: keywords): neither a ``[tool.pie-audit]`` key nor a flag.
PYTHON_SETTINGS = ("confidence",)
_RULES = frozenset(f.name for f in fields(GateRules))

NO_CONFIG = "{path}: no such file"
#: open() on a FIFO blocks, and a device never ends: only a regular file is read.
NOT_A_CONFIG_FILE = "{path}: not a regular file; expected a TOML file"
BAD_TOML = "{path}: not valid TOML ({reason})"
UNKNOWN_KEY = "{path}: unknown key '{key}' in [tool.pie-audit]; known keys: {known}"
BAD_VALUE = "{path}: [tool.pie-audit] {key} must be {expected}, not {value!r}"
NOT_A_TABLE = "{path}: [tool.pie-audit] must be a table"
TOOL_NOT_A_TABLE = "{path}: tool must be a table ([tool.pie-audit]), not {value!r}"
NO_TABLE = (
    "{path}: has no [tool.pie-audit] table, so it sets no rule; add the table or leave out --config"
)
BAD_SETTING = "{path}: [tool.pie-audit] {problem}"
BAD_SEED = "seed must be a non-negative integer, not {value!r}"
UNKNOWN_SETTING = "unknown setting {name!r}; known settings: {known}"
_EXPECTED = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}
TESTS = ("auto", "welch", "paired", "mcnemar")
BAD_TEST = "test must be one of {choices}, not {value!r}"
BAD_DETECT = "detect must be a drop in (0, 1], not {value!r}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Settings:
    """Everything that decides an audit's numbers and verdict, validated.

    Attributes
    ----------
    alpha : float
        A class is significant when its q-value is at most ``alpha``.
    correction : {"fdr_bh", "none"}
        Multiple-testing correction across classes; ``"none"`` is the paper's raw p rule.
    tie_break : {"lowest", "highest"}
        Which label wins a tied modal vote; ``"highest"`` is the paper's code.
    test : {"auto", "welch", "paired", "mcnemar"}
        The per-class test: ``"auto"`` picks McNemar for one model against one, paired t-tests
        when every pruned model names a distinct baseline parent, and Welch's otherwise.
    detect : float or None
        The class drop of interest for the power analysis (a fraction); ``None``: the
        ``max-class-drop`` limit, or 2 points when that rule is off.
    n_bootstrap : int
        Bootstrap resamples for the ``normalized_change`` interval.
    confidence : float
        Level of that interval.
    seed : int
        Seed of the bootstrap.
    min_group_support : int
        Groups (and cells) of the subgroup audit with fewer examples are described, not tested.
    rules : GateRules
        The CI gate's limits.
    source : Path or None
        The ``pyproject.toml`` that supplied settings, or ``None`` for none.
    """

    alpha: float = 0.05
    correction: str = "fdr_bh"
    tie_break: str = "lowest"
    test: str = "auto"
    detect: float | None = None
    n_bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    min_group_support: int = DEFAULT_MIN_SUPPORT
    rules: GateRules = field(default_factory=GateRules)
    source: Path | None = None

    def __post_init__(self) -> None:
        if self.correction not in CORRECTIONS:
            raise ConfigError(BAD_CORRECTION.format(choices=", ".join(CORRECTIONS), value=self.correction))
        if self.tie_break not in TIE_BREAKS:
            raise ConfigError(BAD_TIE_BREAK.format(choices=", ".join(TIE_BREAKS), value=self.tie_break))
        if self.test not in TESTS:
            raise ConfigError(BAD_TEST.format(choices=", ".join(TESTS), value=self.test))
        if self.detect is not None and (not _is_number(self.detect) or not 0 < self.detect <= 1):
            raise ConfigError(BAD_DETECT.format(value=self.detect))
        if not _is_number(self.alpha) or not 0 < self.alpha < 1:
            raise ConfigError(BAD_ALPHA.format(value=self.alpha))
        if not _is_number(self.confidence) or not 0 < self.confidence < 1:
            raise ConfigError(BAD_CONFIDENCE.format(value=self.confidence))
        if isinstance(self.n_bootstrap, bool) or not isinstance(self.n_bootstrap, int) or not 1 <= self.n_bootstrap <= MAX_BOOTSTRAP:
            raise ConfigError(BAD_N_BOOTSTRAP.format(value=self.n_bootstrap))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(BAD_SEED.format(value=self.seed))
        if isinstance(self.min_group_support, bool) or not isinstance(self.min_group_support, int) or self.min_group_support < 1:
            raise ConfigError(BAD_MIN_SUPPORT.format(value=self.min_group_support))
        if not isinstance(self.rules, GateRules):
            raise ConfigError(f"rules must be a GateRules, not {type(self.rules).__name__}")

    @property
    def detect_drop(self) -> float:
        """The drop the power analysis asks about: ``detect``, else the ``max-class-drop`` limit."""
        if self.detect is not None:
            return float(self.detect)
        limit = self.rules.max_class_drop
        return float(limit) if limit else DEFAULT_DETECT

    def statistics(self) -> dict[str, Any]:
        """The statistics options by their Python names (:attr:`AuditResult.settings`)."""
        return {
            "alpha": self.alpha,
            "correction": self.correction,
            "tie_break": self.tie_break,
            "test": self.test,
            "detect": self.detect_drop,
            "n_bootstrap": self.n_bootstrap,
            "confidence": self.confidence,
            "seed": self.seed,
            "min_group_support": self.min_group_support,
        }


def find_config(directory: str | Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` with a ``[tool.pie-audit]`` table, as pytest and ruff find theirs.

    Parameters
    ----------
    directory : str or Path, optional
        Where the search starts (default: the working directory); it goes up to the root.

    Returns
    -------
    Path or None
        ``None`` when no ``pyproject.toml`` on the way up has the table.

    Raises
    ------
    ConfigError
        A ``pyproject.toml`` on the way is not valid TOML (it may hold the table).
    """
    start = Path(directory if directory is not None else Path.cwd()).absolute()
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILE
        if not candidate.is_file():
            continue
        tool = _read_toml(candidate).get("tool", {})
        # A ``tool`` that is not a table holds no [tool.pie-audit]: passed over, as one without.
        if isinstance(tool, dict) and "pie-audit" in tool:
            return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            document = tomllib.load(fh)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(BAD_TOML.format(path=path, reason=e)) from e
    return document


def _tool_table(path: Path, *, required: bool) -> dict[str, Any] | None:
    """``[tool.pie-audit]`` of a config file; ``None`` when it has none and none is ``required``."""
    tool = _read_toml(path).get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(TOOL_NOT_A_TABLE.format(path=path, value=tool))
    if "pie-audit" not in tool:
        if required:
            raise ConfigError(NO_TABLE.format(path=path))
        return None
    table = tool["pie-audit"]
    if not isinstance(table, dict):
        raise ConfigError(NOT_A_TABLE.format(path=path))
    return table


def read_settings(path: str | Path, *, required: bool = True) -> dict[str, Any]:
    """Read ``[tool.pie-audit]`` from a ``pyproject.toml``.

    Keys use dashes (``max-class-drop``); underscores are accepted too. Sub-tables belong to
    other commands and are ignored; an unknown key is an error, so that a typo cannot turn a
    rule off silently.

    Parameters
    ----------
    path : str or Path
        The ``pyproject.toml``.
    required : bool, default=True
        When False, a missing file gives ``{}`` instead of an error.

    Returns
    -------
    dict
        The settings present, by their names in :data:`SETTINGS` (``max_class_drop``, ...).

    Raises
    ------
    ConfigError
        Missing file (when required), invalid TOML, a ``tool`` that is not a table, an unknown key
        or a value of the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        if required or path.exists():
            raise ConfigError((NOT_A_CONFIG_FILE if path.exists() else NO_CONFIG).format(path=path))
        return {}
    table = _tool_table(path, required=False)
    return _parse_table(path, table) if table is not None else {}


def _parse_table(path: Path, table: Mapping[str, Any]) -> dict[str, Any]:
    known = ", ".join(name.replace("_", "-") for name in SETTINGS)
    settings: dict[str, Any] = {}
    for raw, value in table.items():
        if isinstance(value, dict):
            continue
        name = raw.replace("-", "_")
        if name not in SETTINGS:
            raise ConfigError(UNKNOWN_KEY.format(path=path, key=raw, known=known))
        kind = SETTINGS[name]
        if kind is float:
            ok = _is_number(value)
        elif kind is bool:
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            raise ConfigError(BAD_VALUE.format(path=path, key=raw, expected=_EXPECTED[kind], value=value))
        settings[name] = value
    return settings


def resolve_settings(
    options: Mapping[str, Any] | None = None,
    *,
    config: str | Path | None = None,
    base: Settings | None = None,
) -> Settings:
    """Settings from explicit options, then a ``pyproject.toml``, then ``base``.

    Parameters
    ----------
    options : mapping, optional
        Settings given explicitly, by their names in :data:`SETTINGS` and :data:`PYTHON_SETTINGS`;
        ``None`` values are ignored, so unset command-line flags can be passed as they are.
    config : str or Path, optional
        A ``pyproject.toml`` whose ``[tool.pie-audit]`` table is read; it must exist and hold
        the table (:data:`NO_TABLE`). Without it no file is read (:func:`find_config` finds the working directory's).
    base : Settings, optional
        The values neither ``options`` nor ``config`` set; default :class:`Settings` ``()``.

    Returns
    -------
    Settings
        With ``source`` set to ``config`` when it was read.

    Raises
    ------
    ConfigError
        An unknown option, an unreadable or invalid ``config``, or an invalid value (a value
        from ``config`` is reported with the file's path).
    """
    base = base if base is not None else Settings()
    given = {k: v for k, v in (options or {}).items() if v is not None}
    for name in given:
        if name not in SETTINGS and name not in PYTHON_SETTINGS:
            raise ConfigError(UNKNOWN_SETTING.format(name=name, known=", ".join([*SETTINGS, *PYTHON_SETTINGS])))
    from_file = _read_config(Path(config)) if config is not None else {}
    source = Path(config) if config is not None else base.source
    if from_file:
        # Checked alone first, so that a bad value in the file is reported against the file.
        try:
            _build(base, from_file, source)
        except ConfigError as e:
            raise ConfigError(BAD_SETTING.format(path=config, problem=e)) from e
    return _build(base, {**from_file, **given}, source)


def _read_config(path: Path) -> dict[str, Any]:
    """The settings of a config file named to be read: it must exist and hold the table, else
    ``rules: FILE`` would name a file that set nothing."""
    if not path.is_file():
        raise ConfigError((NOT_A_CONFIG_FILE if path.exists() else NO_CONFIG).format(path=path))
    return _parse_table(path, _tool_table(path, required=True))


def _build(base: Settings, values: Mapping[str, Any], source: Path | None) -> Settings:
    rules = replace(base.rules, **{k: v for k, v in values.items() if k in _RULES})
    statistics = {k: v for k, v in values.items() if k not in _RULES}
    return replace(base, **statistics, rules=rules, source=source)
