"""A study: one dense population and several compressed ones, declared in one TOML file.

The spec (``docs/study.md``; ``studies/digits.toml`` is an example) names a dataset, an
architecture, a number of seeded models per population, an output directory, optional training
overrides, and the populations: exactly one with sparsity 0 (the baseline), the others with any
pruning option of ``pie-audit train``; optionally a dataset's target (CelebA's task) and the
groups the audit compares (``groups``, ``group-by``). :func:`read_study` validates all of it
before anything is written; each population is then trained into ``out/<name>/`` in the
interchange format, by the same code and with the same resume and refusal rules as
``pie-audit train`` (the training wing's units of work, run here or on Ray), and audited into
``out/report/``.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .._atomic import exclusive_lock, resolve_output
from ..errors import ConfigError, OutputError
# A spec is checked against the methods, datasets and architectures training has, and its
# populations are trained by it: importing the study imports the training wing, and so torch.
from ..training import DERIVED, MAX_MODELS, METHODS, NO_SPARSITY, Method, UnitEvents, model_dir_name

__all__ = [
    "Study",
    "StudyPopulation",
    "PopulationStatus",
    "StudyOutcome",
    "read_study",
    "check_study_out",
    "study_status",
    "run_study",
    "REPORT_DIR",
    "RESERVED_NAMES",
]

#: Where ``study run`` writes the sweep report, inside the study's ``out``.
REPORT_DIR = "report"
#: Names no population may take (in any case: some filesystems ignore it): the report's
#: directory, the sweep page beside the populations' reports in it, and the records that make
#: a directory a population (``out/population.json`` would make ``out`` look like one).
RESERVED_NAMES = frozenset({REPORT_DIR, "index.html", "population.json", "groups.parquet"})
# Matched whole (fullmatch): ``$`` would let a final newline through, and split the verdict line.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

NO_FILE = "{path}: no such file"
NOT_A_FILE = "{path}: not a regular file; expected a TOML file"
BAD_TOML = "{path}: not valid TOML ({reason})"
MISSING_TABLE = "{path}: missing [{table}] table"
MISSING_KEY = "{path}: {where} is missing required key '{key}'"
UNKNOWN_KEY = "{path}: {where} has unknown key '{key}'; known keys: {known}"
WRONG_TYPE = "{path}: {where} {key} must be {expected}, not {value!r}"
BAD_VALUE = "{path}: {where} {problem}"
NO_POPULATIONS = "{path}: no [[population]]; a study needs a baseline (sparsity = 0) and at least one other"
DUPLICATE_NAME = "{path}: two populations are named {name!r}; names must be distinct (each is a directory)"
BASELINES = "{path}: a study needs exactly one baseline population (sparsity = 0), found {count}{names}"
RESERVED = "{path}: {where} name {name!r} is reserved ({reserved} are the study's own files)"
TOO_MANY = "{path}: [study] models must be at most {most} (models per population), not {models}"
OUT_IS_A_POPULATION = (
    "{path}: [study] out {out} is a population ({evidence}), not a study directory; a study "
    "writes its populations inside its out: choose another out"
)
OUT_HOLDS_OTHER = (
    "{path}: [study] out {out} holds {entry!r}, which is neither a population of the study nor "
    "its report; refusing to write there (move it away or choose another out)"
)
OUT_NOT_A_DIRECTORY = "{path}: [study] out {out} exists and is not a directory"
NOT_A_DATA_ROOT = "{data_root}: the data root is not a directory"
UNAUDITED_MODELS = (
    "{population}: the spec names {models} seeds ({first} to {last}); {count} more model "
    "director{ies} on disk ({shown}) {are} not audited"
)
NOT_THE_BASELINE = "must name the study's baseline population ({baseline!r}), not {name!r}"
NO_GROUPS_FILE = "{path}: [study] groups {file} is not a file"
BAD_GROUPS_SUFFIX = "{path}: [study] groups {file} must be a .parquet or .csv file"
GROUP_BY_EMPTY = "{path}: [study] group-by names no attribute"
GROUP_BY_REPEATED = "{path}: [study] group-by names {name!r} twice"
GROUP_BY_TARGET = "{path}: [study] group-by {name!r} is the target the models predict, not a group of examples"
GROUP_BY_UNKNOWN = "{path}: [study] group-by {name!r} is not an attribute of {dataset}; its attributes: {known}"
GROUP_BY_WITHOUT_GROUPS = (
    "{path}: [study] group-by needs groups = FILE: {dataset} has no attributes of its own"
)

_STUDY_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "dataset": (str,),
    "arch": (str,),
    "models": (int,),
    "seed-start": (int,),
    "out": (str,),
    "target": (str,),
    "groups": (str,),
    "group-by": (list,),
}
_REQUIRED_STUDY = ("name", "dataset", "arch", "models", "out")
# [train] keys: the TrainConfig fields that `pie-audit train` exposes as flags.
_TRAIN_KEYS: dict[str, tuple[type, ...]] = {
    "epochs": (int,),
    "batch-size": (int,),
    "lr": (int, float),
    "momentum": (int, float),
    "weight-decay": (int, float),
    "warmup-epochs": (int, float),
}
# [[population]] keys: the pruning options of `pie-audit train`, and the method.
_POPULATION_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "method": (str,),
    "sparsity": (int, float),
    "scope": (str,),
    "prune-begin": (int, float),
    "prune-end": (int, float),
    "prune-every": (int,),
    "exclude": (list,),
    "prune-final": (bool,),
    "from": (str,),
    "finetune-epochs": (int,),
    "rewind": (int, float),
    "rounds": (int,),
    "calibration-images": (int,),
}
_EXPECTED = {
    (str,): "a string",
    (int,): "an integer",
    (int, float): "a number",
    (list,): "a list of strings",
    (bool,): "true or false",
}


@dataclass(frozen=True)
class StudyPopulation:
    """One population of a study: its name, method and pruning configuration.

    Attributes
    ----------
    name : str
        Also its directory, ``out/<name>``.
    method : str
        One of :data:`METHODS`.
    prune : Method
        Its compression method's configuration (:func:`pie_audit.training.make_method`).
    """

    name: str
    method: str
    prune: Method

    @property
    def is_baseline(self) -> bool:
        return self.method == "gmp" and self.prune.sparsity == 0

    @property
    def is_derived(self) -> bool:
        """Whether its models derive from the baseline's, which must be trained first."""
        return self.method in DERIVED


@dataclass(frozen=True)
class Study:
    """A validated study spec.

    Attributes
    ----------
    path : Path
        The spec file.
    name, dataset, arch : str
    models : int
        Seeds per population: model ``i`` has seed ``seed_start + i``.
    seed_start : int
    out : Path
        The study directory (``out`` of the spec, relative to the spec file).
    train : TrainConfig
        The dataset's defaults with the spec's ``[train]`` overrides.
    populations : tuple of StudyPopulation
        In the spec's order; exactly one is the baseline.
    target : str or None
        The dataset's target attribute (CelebA: ``target``, default ``Blond_Hair``); ``None``
        for a dataset with fixed classes.
    groups : Path or None
        The spec's groups table (relative to the spec file); ``None``: the audit uses the
        baseline population's own ``groups.parquet`` when it has one.
    group_by : tuple of str or None
        The attributes the audit groups by; ``None``: every attribute of the groups table.
    """

    path: Path
    name: str
    dataset: str
    arch: str
    models: int
    seed_start: int
    out: Path
    train: Any  # TrainConfig
    populations: tuple[StudyPopulation, ...]
    target: str | None = None
    groups: Path | None = None
    group_by: tuple[str, ...] | None = None

    @property
    def baseline(self) -> StudyPopulation:
        return next(p for p in self.populations if p.is_baseline)

    @property
    def pruned(self) -> tuple[StudyPopulation, ...]:
        """Every population but the baseline, in the spec's order."""
        return tuple(p for p in self.populations if not p.is_baseline)

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed_start, self.seed_start + self.models))

    def directory(self, population: StudyPopulation) -> Path:
        """Where a population is trained: ``out/<name>``."""
        return self.out / population.name

    @property
    def report_dir(self) -> Path:
        return self.out / REPORT_DIR


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    if not path.is_file():
        # A FIFO or a device is never opened: open() on a FIFO blocks.
        raise ConfigError((NOT_A_FILE if path.exists() else NO_FILE).format(path=path))
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(BAD_TOML.format(path=path, reason=e)) from e


def _check_table(path: Path, where: str, table: Any, kinds: Mapping[str, tuple[type, ...]]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(BAD_VALUE.format(path=path, where=where, problem="must be a table"))
    for key, value in table.items():
        if key not in kinds:
            raise ConfigError(UNKNOWN_KEY.format(path=path, where=where, key=key, known=", ".join(kinds)))
        expected = kinds[key]
        ok = isinstance(value, expected) and (bool in expected or not isinstance(value, bool))
        if ok and expected == (list,):
            ok = all(isinstance(item, str) for item in value)
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok = False
        if not ok:
            raise ConfigError(
                WRONG_TYPE.format(path=path, where=where, key=key, expected=_EXPECTED[expected], value=value)
            )
    return dict(table)


def _wrapped(path: Path, where: str, build):  # noqa: ANN001, ANN202 - a thunk and what it builds
    """Call ``build``; a ConfigError it raises is reported against the spec file and table."""
    try:
        return build()
    except ConfigError as e:
        raise ConfigError(BAD_VALUE.format(path=path, where=where, problem=e)) from e


def read_study(path: str | Path) -> Study:
    """Read and validate a study spec; nothing is written.

    Parameters
    ----------
    path : str or Path
        The TOML file.

    Returns
    -------
    Study

    Raises
    ------
    ConfigError
        With the file, the table and key, and the problem: invalid TOML, a missing or unknown
        key, a value of the wrong type or out of range, an unknown dataset, architecture, method
        or target, duplicate population names, a name that is not letters, digits, '.', '_' or
        '-' (matched whole: no final newline) or is one of :data:`RESERVED_NAMES`, zero or two
        baselines, ``models < 1`` or beyond :data:`pie_audit.training.MAX_MODELS`, a
        ``groups`` that is not a file, a ``group-by`` that is empty, repeats a name, names the
        target or, without ``groups``, something other than one of the dataset's attributes.
    OutputError
        ``out`` holds something other than the study's populations and report, or its report
        holds a file that is not the study's (:func:`check_study_out`).
    """
    from ..data import DATASETS, TARGETED, resolve_target
    from ..training import ARCHITECTURES, DEFAULT_TRAIN_CONFIGS, make_method

    path = Path(path)
    document = _load_toml(path)
    unknown = sorted(set(document) - {"study", "train", "population"})
    if unknown:
        raise ConfigError(
            UNKNOWN_KEY.format(path=path, where="the spec", key=unknown[0], known="[study], [train], [[population]]")
        )
    if "study" not in document:
        raise ConfigError(MISSING_TABLE.format(path=path, table="study"))
    study = _check_table(path, "[study]", document["study"], _STUDY_KEYS)
    for key in _REQUIRED_STUDY:
        if key not in study:
            raise ConfigError(MISSING_KEY.format(path=path, where="[study]", key=key))
    if study["dataset"] not in DATASETS:
        raise ConfigError(
            BAD_VALUE.format(path=path, where="[study] dataset", problem=f"{study['dataset']!r} is not one of {', '.join(DATASETS)}")
        )
    if study["arch"] not in ARCHITECTURES:
        raise ConfigError(
            BAD_VALUE.format(path=path, where="[study] arch", problem=f"{study['arch']!r} is not one of {', '.join(ARCHITECTURES)}")
        )
    if study["models"] < 1:
        raise ConfigError(BAD_VALUE.format(path=path, where="[study] models", problem=f"must be >= 1, not {study['models']}"))
    seed_start = study.get("seed-start", 0)
    if seed_start < 0:
        raise ConfigError(BAD_VALUE.format(path=path, where="[study] seed-start", problem=f"must be >= 0, not {seed_start}"))
    if study["models"] > MAX_MODELS:
        raise ConfigError(TOO_MANY.format(path=path, most=f"{MAX_MODELS:,}", models=f"{study['models']:,}"))
    if not _NAME.fullmatch(study["name"]):
        raise ConfigError(BAD_VALUE.format(path=path, where="[study] name", problem=f"{study['name']!r} must be letters, digits, '.', '_' or '-'"))
    target = _wrapped(path, "[study] target", lambda: resolve_target(study["dataset"], study.get("target")))
    groups, group_by = _groups(path, study, target=target, attributes=TARGETED.get(study["dataset"], ((), None))[0])

    overrides = _check_table(path, "[train]", document.get("train", {}), _TRAIN_KEYS)
    train = _wrapped(
        path,
        "[train]",
        lambda: replace(DEFAULT_TRAIN_CONFIGS[study["dataset"]], **{k.replace("-", "_"): v for k, v in overrides.items()}),
    )

    tables = document.get("population", [])
    if not isinstance(tables, list) or not tables:
        raise ConfigError(NO_POPULATIONS.format(path=path))
    out = resolve_output(path.parent / study["out"]) if not Path(study["out"]).is_absolute() else Path(study["out"])
    # The baseline's name first: a derived method's ``from`` defaults to it and must name it.
    baseline_name = next(
        (t.get("name") for t in tables if isinstance(t, dict) and t.get("method", "gmp") == "gmp" and t.get("sparsity") == 0),
        None,
    )
    populations = []
    for number, table in enumerate(tables, start=1):
        where = f"[[population]] #{number}"
        table = _check_table(path, where, table, _POPULATION_KEYS)
        if "name" not in table:
            raise ConfigError(MISSING_KEY.format(path=path, where=where, key="name"))
        name = table["name"]
        where = f"[[population]] {name!r}"
        if not _NAME.fullmatch(name):
            raise ConfigError(BAD_VALUE.format(path=path, where=where, problem="name must be letters, digits, '.', '_' or '-', not starting with '.'"))
        if name.lower() in RESERVED_NAMES:
            reserved = ", ".join(sorted(RESERVED_NAMES))
            raise ConfigError(RESERVED.format(path=path, where=where, name=name, reserved=reserved))
        method = table.get("method", "gmp")
        if "sparsity" not in table and method not in NO_SPARSITY:
            raise ConfigError(MISSING_KEY.format(path=path, where=where, key="sparsity"))
        if method not in METHODS:
            raise ConfigError(
                BAD_VALUE.format(path=path, where=f"{where} method", problem=f"{method!r} is not one of {', '.join(METHODS)}")
            )
        options = {k: v for k, v in table.items() if k not in ("name", "method")}
        if "sparsity" in options:
            options["sparsity"] = float(options["sparsity"])
        for key in ("prune-begin", "prune-end", "rewind"):
            if key in options:
                options[key] = float(options[key])
        if method in DERIVED:
            parent = options.get("from", baseline_name)
            if parent is None or parent != baseline_name:
                raise ConfigError(BAD_VALUE.format(path=path, where=f"{where} from", problem=NOT_THE_BASELINE.format(name=parent, baseline=baseline_name)))
            options["from"] = str(out / parent)
        prune = _wrapped(path, where, lambda m=method, o=options: make_method(m, o))
        populations.append(StudyPopulation(name=name, method=method, prune=prune))

    names = [p.name for p in populations]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(DUPLICATE_NAME.format(path=path, name=name))
    baselines = [p.name for p in populations if p.is_baseline]
    if len(baselines) != 1:
        listed = f": {', '.join(map(repr, baselines))}" if baselines else ""
        raise ConfigError(BASELINES.format(path=path, count=len(baselines), names=listed))
    check_study_out(path, out, [p.name for p in populations])
    return Study(
        path=path,
        name=study["name"],
        dataset=study["dataset"],
        arch=study["arch"],
        models=study["models"],
        seed_start=seed_start,
        out=out,
        train=train,
        populations=tuple(populations),
        target=target,
        groups=groups,
        group_by=group_by,
    )


def check_study_out(path: Path, out: Path, names: Sequence[str]) -> None:
    """Refuse a study ``out`` that holds anything but the study's populations and report.

    ``out`` may be missing, or hold hidden entries (locks, temporaries), its report
    (:data:`REPORT_DIR`, as a sweep may hold it: :func:`pie_audit.report.check_outputs`), the
    spec's populations, and populations the spec no longer names (directories holding a
    ``population.json``). An ``out`` that is a population itself is refused with its own
    message. Nothing is written; a study refused here trains nothing.

    Raises
    ------
    OutputError
        The first entry refused, naming it.
    """
    from ..interchange import POPULATION_FILE, PREDICTIONS_FILE, RUN_FILE
    from ..report import check_outputs

    resolve_output(out)  # a loop of symbolic links is refused by name
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(OUT_NOT_A_DIRECTORY.format(path=path, out=out))
    entries = sorted(e for e in out.iterdir() if not e.name.startswith("."))
    if (out / POPULATION_FILE).is_file():
        raise OutputError(OUT_IS_A_POPULATION.format(path=path, out=out, evidence=f"it holds {POPULATION_FILE}"))
    for entry in entries:
        if entry.is_dir() and ((entry / RUN_FILE).is_file() or (entry / PREDICTIONS_FILE).is_file()):
            evidence = f"{entry.name!r} is a model directory"
            raise OutputError(OUT_IS_A_POPULATION.format(path=path, out=out, evidence=evidence))
    for entry in entries:
        if entry.name == REPORT_DIR:
            # What write_sweep would refuse after every model trained, refused now.
            # Not its lock: `study status` reads while a run writes; the run takes it when writing.
            check_outputs(entry, populations=[out / name for name in names], what="sweep", lock=False)
        elif not entry.is_dir() or (entry.name not in names and not (entry / POPULATION_FILE).is_file()):
            raise OutputError(OUT_HOLDS_OTHER.format(path=path, out=out, entry=entry.name))


def _groups(path: Path, study: Mapping[str, Any], *, target: str | None,
            attributes: tuple[str, ...]) -> tuple[Path | None, tuple[str, ...] | None]:  # fmt: skip
    """The spec's ``groups`` (a path, relative to the spec file) and ``group-by``, checked.

    Without ``groups`` the audit reads the baseline's own ``groups.parquet``, which holds the
    dataset's attributes but the target: ``group-by`` must name some of those. A groups file's
    columns are checked by the audit, against the examples of the populations.
    """
    groups = None
    if "groups" in study:
        file = Path(study["groups"])
        groups = file if file.is_absolute() else resolve_output(path.parent / file)
        if not groups.is_file():
            raise ConfigError(NO_GROUPS_FILE.format(path=path, file=groups))
        if groups.suffix.lower() not in (".parquet", ".pq", ".csv"):
            raise ConfigError(BAD_GROUPS_SUFFIX.format(path=path, file=groups))
    if "group-by" not in study:
        return groups, None
    group_by = tuple(study["group-by"])
    if not group_by:
        raise ConfigError(GROUP_BY_EMPTY.format(path=path))
    for name in group_by:
        if group_by.count(name) > 1:
            raise ConfigError(GROUP_BY_REPEATED.format(path=path, name=name))
        if groups is not None:
            continue
        if not attributes:
            raise ConfigError(GROUP_BY_WITHOUT_GROUPS.format(path=path, dataset=study["dataset"]))
        if name == target:
            raise ConfigError(GROUP_BY_TARGET.format(path=path, name=name))
        if name not in attributes:
            known = ", ".join(a for a in attributes if a != target)
            raise ConfigError(GROUP_BY_UNKNOWN.format(path=path, name=name, dataset=study["dataset"], known=known))
    return groups, group_by


@dataclass(frozen=True)
class PopulationStatus:
    """One population of a study on disk: its finished and missing seeds.

    ``problem`` says why the directory cannot be used as it is (another configuration), else
    ``None``.
    """

    name: str
    finished: tuple[int, ...]
    missing: tuple[int, ...]
    problem: str | None = None


@dataclass(frozen=True)
class StudyOutcome:
    """What :func:`run_study` did: the models it trained and, unless asked not to, the audits."""

    trained: int
    skipped: int
    results: list | None  # [(name, CompareResult)] in the spec's order, or None without report
    report: Path | None
    #: What the study says of its audits as a whole (model directories the spec no longer names).
    notes: tuple[str, ...] = ()


def _load(study: Study, data_root: str | Path):  # noqa: ANN202 - a Dataset
    from ..data import load_dataset

    if Path(data_root).exists() and not Path(data_root).is_dir():
        raise ConfigError(NOT_A_DATA_ROOT.format(data_root=data_root))
    return load_dataset(study.dataset, data_root=data_root, download=False, target=study.target)


def study_status(study: Study, *, data_root: str | Path = "data") -> list[PopulationStatus]:
    """Per population, which seeds are finished and which are missing; nothing is written.

    Parameters
    ----------
    study : Study
    data_root : str or Path
        Where the dataset is found (its hash tells a population of another configuration).
    """
    from ..errors import PieAuditError
    from ..training import population_spec, population_status

    dataset = _load(study, data_root)
    rows = []
    for population in study.populations:
        spec = population_spec(dataset, arch=study.arch, train=study.train, prune=population.prune)
        try:
            finished, missing = population_status(study.directory(population), study.seeds, spec)
            problem = None
        except PieAuditError as e:
            finished, missing, problem = [], study.seeds, str(e)
        rows.append(PopulationStatus(population.name, tuple(finished), tuple(missing), problem))
    return rows


class _Progress(UnitEvents):
    """The training driver's events, counted and told to :func:`run_study`'s ``progress``."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.trained = 0
        self._start = time.perf_counter()

    def model_written(self, unit: Any, result: Any) -> None:
        self.trained += 1

    def unit_written(self, unit: Any) -> None:
        if self.progress is not None:
            self.progress.unit_done(unit.population, list(unit.seeds), time.perf_counter() - self._start)


def run_study(
    study: Study,
    *,
    executor: str = "local",
    ray_address: str | None = None,
    gpus_per_unit: float | None = None,
    cpus_per_unit: float | None = None,
    device: str = "auto",
    jointly: int | None = None,
    data_root: str | Path = "data",
    report: bool = True,
    progress: Any = None,
    command: list[str] | None = None,
) -> StudyOutcome:
    """Train every missing model of a study, then audit each pruned population against the baseline.

    Parameters
    ----------
    study : Study
    executor : {"local", "ray"}
        Where the work units run (:func:`pie_audit.training.run_local`,
        :func:`pie_audit.training.run_ray`).
    ray_address, gpus_per_unit, cpus_per_unit
        For ``"ray"``: see :func:`pie_audit.training.run_ray`.
    device : str
    jointly : int, optional
        Models per unit; default from the device and the model
        (:func:`pie_audit.training.default_jointly`).
    data_root : str or Path
    report : bool, default True
        Write the sweep report to ``out/report/`` and return the audits.
    progress : object, optional
        ``planned(totals)`` and ``unit_done(population, seeds, seconds)`` (the CLI's progress bar).
    command : list of str, optional
        Recorded in each model's ``run.json`` and in the report.

    Returns
    -------
    StudyOutcome

    Raises
    ------
    ConfigError, OutputError
        A bad option, a data root that is not a directory, an ``out`` that holds something else
        (:func:`check_study_out`) or that another ``study run`` holds (its lock,
        :func:`pie_audit._atomic.exclusive_lock`, is held until the report is written), or a
        population directory holding another configuration (naming the key) or locked by
        another writer; found before any training.
    KeyboardInterrupt
        Finished models are kept; running the study again resumes.
    """
    import contextlib

    from ..training import EXECUTORS, check_arguments, default_jointly, open_population, plan_units
    from ..training import resolve_device, run_local, run_ray

    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    check_arguments(arch=study.arch, population=study.models, seed_start=study.seed_start, jointly=jointly, device=device if executor == "local" else "auto")
    if executor == "ray":
        # Looked up here, on the training wing's face, so that a test can take Ray away.
        from ..training import RAY_MISSING, ray_available

        if not ray_available():
            raise ConfigError(RAY_MISSING)
    dataset = _load(study, data_root)
    with contextlib.ExitStack() as stack:
        # The study's own lock first (one study run at a time writes its out), and its out checked
        # again under it; then every population is checked and locked before any training starts.
        stack.enter_context(exclusive_lock(study.out))
        check_study_out(study.path, study.out, [p.name for p in study.populations])
        writers = {
            p.name: stack.enter_context(
                open_population(dataset, arch=study.arch, out=study.directory(p), train=study.train, prune=p.prune, command=command)
            )
            for p in study.populations
        }
        todo = {p.name: (p.prune, writers[p.name].missing(study.seeds)) for p in study.populations}
        totals = {name: (study.models - len(seeds), study.models) for name, (_, seeds) in todo.items()}
        skipped = sum(done for done, _ in totals.values())
        if progress is not None:
            progress.planned(totals)
        largest = max((len(seeds) for _, seeds in todo.values()), default=1) or 1
        if jointly is None:
            jointly = default_jointly(study.arch, dataset, resolve_device(device if executor == "local" else "cpu"), largest)
        # Derived populations last: their units load the baseline's finished models.
        order = sorted(study.populations, key=lambda p: p.is_derived)
        units = plan_units({p.name: todo[p.name] for p in order}, jointly=jointly)
        events = _Progress(progress)
        if executor == "local":
            run_local(units, dataset=dataset, arch=study.arch, train=study.train, device=device, writers=writers,
                      jointly=jointly, events=events)  # fmt: skip
        elif units:
            # Two waves on one Ray instance: Ray runs a wave's units at once, and derived units
            # need the baseline's models.
            derived = {p.name for p in study.populations if p.is_derived}
            run_ray(
                [u for u in units if u.population not in derived], dataset=study.dataset, data_root=data_root,
                arch=study.arch, train=study.train, device=device, writers=writers, jointly=jointly,
                target=study.target, address=ray_address, gpus_per_unit=gpus_per_unit,
                cpus_per_unit=cpus_per_unit, events=events, then=[u for u in units if u.population in derived],
            )  # fmt: skip
        trained = events.trained
        if not report:
            return StudyOutcome(trained=trained, skipped=skipped, results=None, report=None)
        # Under the study's lock still: the report is the study's too.
        results, notes = _audit(study)
        from ..report import pie_gallery, write_sweep

        galleries = [pie_gallery(result, data_root=data_root) for _, result in results]
        write_sweep(results, study.report_dir, baseline=study.directory(study.baseline), galleries=galleries, command=command)
    return StudyOutcome(trained=trained, skipped=skipped, results=results, report=study.report_dir / "index.html", notes=notes)


def _audit(study: Study) -> tuple[list, tuple[str, ...]]:
    """Audit each pruned population against the baseline, on exactly the spec's seeds.

    A population directory may hold more models than the spec names (the spec shrank, or
    ``pie-audit train`` added some): those are not read, and a note on each audit that reads
    that population says so.

    Returns
    -------
    results : list of (str, CompareResult)
        In the spec's order.
    notes : tuple of str
        Those notes, once each, in the spec's order.
    """
    from dataclasses import replace as replaced

    from ..audit import resolve_settings
    from ..interchange import load_population
    from .._compare import compare_populations

    names = [model_dir_name(seed) for seed in study.seeds]
    notes: dict[str, str] = {}
    populations = {}
    for population in study.populations:
        directory = study.directory(population)
        populations[population.name] = load_population(directory, models=names)
        extra = _other_models(directory, set(names))
        if extra:
            shown = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
            notes[population.name] = UNAUDITED_MODELS.format(
                population=population.name, models=study.models, first=names[0], last=names[-1], count=len(extra),
                ies="y" if len(extra) == 1 else "ies", shown=shown, are="is" if len(extra) == 1 else "are",
            )  # fmt: skip
    settings = resolve_settings()
    group_by = list(study.group_by) if study.group_by is not None else None
    results = []
    for population in study.pruned:
        # Without the spec's groups, the audit uses the baseline's own groups.parquet (CelebA's).
        result = compare_populations(
            populations[study.baseline.name], populations[population.name], settings=settings,
            groups=study.groups, group_by=group_by,
        )  # fmt: skip
        these = tuple(notes[name] for name in (study.baseline.name, population.name) if name in notes)
        if these:
            result = replaced(result, notes=(*result.notes, *these))
        results.append((population.name, result))
    return results, tuple(notes.values())


def _other_models(directory: Path, audited: set[str]) -> list[str]:
    """The model directories of a population that the spec does not name, sorted (hidden ones,
    moved aside or unfinished, are no model)."""
    entries = (d for d in directory.iterdir() if d.is_dir() and not d.name.startswith("."))
    return sorted(ascii(d.name) if not d.name.isprintable() else d.name for d in entries if d.name not in audited)
