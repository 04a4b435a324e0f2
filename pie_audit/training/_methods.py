"""Compression methods beyond gradual magnitude pruning, each a small object over one loop.

A method (:class:`pie_audit.training.Method`) is a frozen dataclass of its options that trains
a group of seeds through :func:`pie_audit.training.train_models`, changing only the loop's
seams: where each model starts, and its mask policy. ``gmp`` is
:class:`pie_audit.training.PruneConfig`; this module adds

- ``random`` (:class:`RandomPruning`): random masks fixed before training, the control of
  Liu et al. 2019 and Gale et al. 2019;
- ``oneshot`` (:class:`OneShotPruning`): magnitude pruning of a trained dense parent, then
  fine-tuning with the mask held (Han et al. 2015), paired with the parent by seed;
- ``lottery`` (:class:`LotteryTicket`): iterative magnitude pruning with weight rewinding
  (Frankle & Carbin 2019; Frankle et al. 2019);
- ``structured`` (:class:`StructuredPruning`): gradual removal of whole conv filters by L2
  norm (Li et al. 2017; He et al. 2018);
- ``int8`` (:class:`Int8Quantization`): post-training static int8 quantization of a trained
  dense parent, calibrated on training images (Jacob et al. 2018), paired with the parent.

:func:`make_method` builds one from the options a command line or a study spec gave, refusing
an option the method does not use. docs/methods.md describes each method and its defaults.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..data import Dataset
from ..errors import ConfigError
from ._population import model_dir_name
from ._pruning import (
    SCOPES,
    FixedMasks,
    GradualFilterPruning,
    apply_masks_,
    channel_report,
    conv_weights,
    exclude_patterns,
    magnitude_masks,
    prunable_weights,
)
from ..interchange import MODEL_FILE, POPULATION_FILE, RUN_FILE, incomplete_reason, read_json_object
from ._loop import (
    NOTHING_TO_PRUNE,
    PruneConfig,
    TrainConfig,
    TrainedModel,
    init_model,
    train_models,
    training_steps,
)

__all__ = [
    "METHODS",
    "DERIVED",
    "NO_SPARSITY",
    "METHOD_OPTIONS",
    "make_method",
    "RandomPruning",
    "OneShotPruning",
    "LotteryTicket",
    "StructuredPruning",
    "Int8Quantization",
    "CALIBRATION_IMAGES",
    "calibration_indices",
    "NO_CONV",
    "check_parent",
    "load_parent",
    "mask_seed",
    "FINETUNE_FRACTION",
    "FINETUNE_LR_FACTOR",
    "UNKNOWN_METHOD",
    "OPTION_NOT_USED",
    "NEEDS_SPARSITY",
    "NEEDS_FROM",
    "BAD_SCOPE",
    "BAD_REWIND",
    "BAD_COUNT",
    "PARENT_NOT_A_POPULATION",
    "PARENT_NOT_DENSE",
    "PARENT_OTHER",
    "PARENT_MISSING",
]

#: Every method, ``gmp`` (the default) first.
METHODS = ("gmp", "random", "oneshot", "lottery", "structured", "int8")
#: The methods that derive each model from a trained dense parent (``--from``).
DERIVED = ("oneshot", "int8")
#: Methods that take no sparsity: a population of theirs needs no ``sparsity`` key.
NO_SPARSITY = ("int8",)
#: The options each method takes, spelled as on the command line without ``--`` (and as in a
#: study's ``[[population]]``). Any other option given is refused (:data:`OPTION_NOT_USED`).
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "gmp": ("sparsity", "scope", "prune-begin", "prune-end", "prune-every", "exclude", "prune-final"),
    "random": ("sparsity", "exclude", "prune-final"),
    "oneshot": ("sparsity", "scope", "exclude", "prune-final", "from", "finetune-epochs"),
    "lottery": ("sparsity", "scope", "exclude", "prune-final", "rewind", "rounds"),
    "structured": ("sparsity", "prune-begin", "prune-end", "prune-every", "exclude"),
    "int8": ("from", "calibration-images"),
}
# Option name -> dataclass field, where they differ.
_FIELDS = {"prune-begin": "begin", "prune-end": "end", "prune-every": "frequency", "from": "source"}

#: Training images that calibrate an ``int8`` model's activation ranges unless
#: ``calibration-images`` says otherwise (all of them when the split is smaller). PyTorch's
#: static quantization recipes calibrate on a few hundred to a thousand images.
CALIBRATION_IMAGES = 512

#: One-shot fine-tuning lasts this fraction of the population's epochs unless
#: ``finetune-epochs`` says otherwise (at least one epoch).
FINETUNE_FRACTION = 0.25
#: Fine-tuning restarts the cosine schedule at this fraction of the learning rate: the parent is
#: already trained, and the full rate would undo much of it (Han et al. 2015 fine-tune lower).
FINETUNE_LR_FACTOR = 0.1

UNKNOWN_METHOD = "unknown method {method!r}; choose one of {choices}"
OPTION_NOT_USED = "option {option!r} is not used by method {method!r}, which takes: {options}"
NEEDS_SPARSITY = "method {method!r} needs a sparsity in (0, 1), got {sparsity!r}"
NEEDS_FROM = (
    "method {method!r} derives each model from a trained dense model: name the baseline "
    "population with --from"
)
BAD_SCOPE = "unknown pruning scope {scope!r}; choose layer or global"
BAD_REWIND = "rewind must be a fraction of training in [0, 1), got {value!r}"
BAD_COUNT = "{name} must be a whole number >= 1, got {value!r}"
NO_CONV = (
    "method 'structured' removes conv filters, and {arch} has no conv layer left to prune "
    "(--exclude {exclude})"
)
PARENT_NOT_A_POPULATION = "parent population {path}: not a pie-audit population ({reason})"
PARENT_NOT_DENSE = (
    "parent population {path}: not a dense population (method {method!r}, sparsity "
    "{sparsity!r}); {derived} derives from a dense baseline"
)
PARENT_OTHER = "parent population {path}: trained on {what} {theirs!r}, not {ours!r}"
PARENT_MISSING = (
    "parent population {path}: no finished model of seed {seeds}; train the baseline's seeds "
    "first (the same --seed-start and --population)"
)


def make_method(method: str, options: Mapping[str, Any]) -> Any:
    """The configuration of ``method`` from the options given, refusing one it does not use.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    options : mapping of str to value
        The options given, by their names in :data:`METHOD_OPTIONS` (``"prune-begin"``,
        ``"from"``); an option not given is absent (``None`` counts as absent).

    Returns
    -------
    Method
        A :class:`~pie_audit.training.PruneConfig` for ``gmp``, else this module's dataclass.

    Raises
    ------
    ConfigError
        :data:`UNKNOWN_METHOD`, :data:`OPTION_NOT_USED`, :data:`NEEDS_FROM`, or a value out of
        range.
    """
    if method not in METHODS:
        raise ConfigError(UNKNOWN_METHOD.format(method=method, choices=", ".join(METHODS)))
    takes = METHOD_OPTIONS[method]
    given = {k: v for k, v in options.items() if v is not None}
    for option in given:
        if option not in takes:
            raise ConfigError(
                OPTION_NOT_USED.format(option=option, method=method, options=", ".join(takes))
            )
    if method in DERIVED and "from" not in given:
        raise ConfigError(NEEDS_FROM.format(method=method))
    kwargs = {_FIELDS.get(k, k.replace("-", "_")): v for k, v in given.items()}
    if "exclude" in kwargs:
        kwargs["exclude"] = tuple(kwargs["exclude"])
    if "source" in kwargs:
        kwargs["source"] = str(kwargs["source"])
    cls = {"gmp": PruneConfig, "random": RandomPruning, "oneshot": OneShotPruning,
           "lottery": LotteryTicket, "structured": StructuredPruning,
           "int8": Int8Quantization}[method]  # fmt: skip
    if method != "gmp" and "sparsity" in takes and "sparsity" not in kwargs:
        raise ConfigError(NEEDS_SPARSITY.format(method=method, sparsity=None))
    return cls(**kwargs)


def _check_pruning(method: str, sparsity: float, scope: str, exclude: Sequence[str]) -> None:
    ok = isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool)
    if not (ok and 0.0 < sparsity < 1.0):
        raise ConfigError(NEEDS_SPARSITY.format(method=method, sparsity=sparsity))
    if scope not in SCOPES:
        raise ConfigError(BAD_SCOPE.format(scope=scope))
    exclude_patterns(exclude)


def _count(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(BAD_COUNT.format(name=name, value=value))


def _names(model: nn.Module, sparsity: float, exclude: Sequence[str], prune_final: bool) -> tuple[str, ...]:
    names = prunable_weights(model, exclude=exclude, prune_final=prune_final)
    if not names:
        raise ConfigError(NOTHING_TO_PRUNE.format(sparsity=sparsity))
    return tuple(names)


def mask_seed(seed: int) -> int:
    """The seed of a model's mask stream: independent of its init and data streams."""
    # A spawned child of the model's SeedSequence, which derive_seeds never draws from.
    child = np.random.SeedSequence(seed, spawn_key=(1,))
    return int(child.generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)


class _Trains:
    """What the methods that train from scratch share: no parent to check."""

    def check(self, dataset: Dataset, *, arch: str, seeds: Sequence[int] | None = None) -> None:
        """Nothing to check beyond :meth:`policy`: the method needs no parent."""


@dataclass(frozen=True)
class RandomPruning(_Trains):
    """Random unstructured masks, drawn before training from the model's seed and held.

    Each prunable tensor loses ``round(sparsity * n)`` weights chosen uniformly at random from
    the model's own mask stream (:func:`mask_seed`), so masks differ between seeds and ignore
    magnitude; the model then trains from its usual initialisation with the mask held from step
    0. The control of Liu et al. 2019 ("Rethinking the value of network pruning") and Gale et
    al. 2019 ("The state of sparsity in deep neural networks").
    """

    sparsity: float
    exclude: tuple[str, ...] = ()
    prune_final: bool = False
    method: ClassVar[str] = "random"

    def __post_init__(self) -> None:
        _check_pruning(self.method, self.sparsity, "layer", self.exclude)

    def policy(self, model: nn.Module, total_steps: int) -> FixedMasks:
        """Hold the zeros :meth:`start` drew."""
        names = _names(model, self.sparsity, self.exclude, self.prune_final)
        return FixedMasks(names, self.sparsity, "random")

    def start(self, arch: str, dataset: Dataset, seed: int) -> nn.Module:
        """The seed's initial model with a random ``sparsity`` of each prunable tensor zeroed."""
        model = init_model(arch, dataset, seed)
        params = dict(model.named_parameters())
        generator = torch.Generator().manual_seed(mask_seed(seed))
        masks = {}
        for name in _names(model, self.sparsity, self.exclude, self.prune_final):
            n = params[name].numel()
            keep = torch.ones(n, dtype=torch.bool)
            keep[torch.randperm(n, generator=generator)[: round(self.sparsity * n)]] = False
            masks[name] = keep.view_as(params[name])
        apply_masks_(params, masks)
        return model

    def train(self, dataset: Dataset, *, arch: str, seeds: Sequence[int], config: TrainConfig,
              device: torch.device | str = "cpu", on_epoch: Any = None) -> list[TrainedModel]:  # fmt: skip
        """Train each seed from its randomly masked initialisation with the mask held."""
        return train_models(dataset, arch=arch, seeds=seeds, config=config, prune=self,
                            device=device, start=self.start, on_epoch=on_epoch)  # fmt: skip


def _read_parent_spec(source: Path) -> dict:
    marker = source / POPULATION_FILE
    try:
        with open(marker, encoding="utf-8") as fh:
            record = json.load(fh)
    except FileNotFoundError as e:
        raise ConfigError(PARENT_NOT_A_POPULATION.format(path=source, reason=f"no {POPULATION_FILE}")) from e
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        reason = f"{POPULATION_FILE} is unreadable: {e}"
        raise ConfigError(PARENT_NOT_A_POPULATION.format(path=source, reason=reason)) from e
    spec = record.get("spec") if isinstance(record, dict) else None
    if not isinstance(spec, dict) or not isinstance(spec.get("prune"), dict):
        reason = f"{POPULATION_FILE} records no training configuration"
        raise ConfigError(PARENT_NOT_A_POPULATION.format(path=source, reason=reason))
    return spec


def check_parent(
    source: str | Path, dataset: Dataset, *, arch: str, derived: str, seeds: Sequence[int] | None = None
) -> None:
    """Refuse a parent population a derived method cannot use; nothing is written.

    Parameters
    ----------
    source : path
        The parent population directory (``--from``).
    dataset : Dataset
        The derived population's data: the parent must have been trained on the same.
    arch : str
    derived : str
        The derived method's name, for the message.
    seeds : sequence of int, optional
        Seeds whose finished parent models must be there; not checked when ``None`` (a study
        trains its baseline first).

    Raises
    ------
    ConfigError
        :data:`PARENT_NOT_A_POPULATION`, :data:`PARENT_NOT_DENSE`, :data:`PARENT_OTHER` or
        :data:`PARENT_MISSING`.
    """
    source = Path(source)
    spec = _read_parent_spec(source)
    method, sparsity = spec.get("method", "gmp"), spec["prune"].get("sparsity")
    if method != "gmp" or sparsity != 0:
        raise ConfigError(
            PARENT_NOT_DENSE.format(path=source, method=method, sparsity=sparsity, derived=derived)
        )
    if spec.get("dataset") != dataset.name:
        raise ConfigError(PARENT_OTHER.format(path=source, what="dataset", theirs=spec.get("dataset"), ours=dataset.name))
    ours = dataset.test_hash
    if spec.get("dataset_hash") != ours:
        raise ConfigError(PARENT_OTHER.format(path=source, what="test data of hash", theirs=spec.get("dataset_hash"), ours=ours))
    if spec.get("arch") != arch:
        raise ConfigError(PARENT_OTHER.format(path=source, what="architecture", theirs=spec.get("arch"), ours=arch))
    if seeds is not None:
        missing = [s for s in seeds if incomplete_reason(source / model_dir_name(s), seed=s) is not None]
        if missing:
            raise ConfigError(PARENT_MISSING.format(path=source, seeds=", ".join(map(str, missing))))


def load_parent(source: str | Path, seed: int) -> tuple[dict[str, torch.Tensor], dict]:
    """The finished parent model of ``seed``: its weights and the ``parent`` record.

    The weights are read with ``torch.load(weights_only=True)``: tensors only, no pickled code.

    Returns
    -------
    state_dict : dict of str to Tensor
    record : dict
        ``{"seed", "path", "model_sha256"}``, as ``run.json`` states the parent.

    Raises
    ------
    ConfigError
        :data:`PARENT_MISSING`: no finished model of ``seed`` (checked against its run.json).
    """
    directory = Path(source) / model_dir_name(seed)
    if incomplete_reason(directory, seed=seed) is not None:
        raise ConfigError(PARENT_MISSING.format(path=source, seeds=seed))
    run = read_json_object(directory / RUN_FILE)
    state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
    record = {"seed": seed, "path": str(directory.resolve()),
              "model_sha256": run["files"][MODEL_FILE]["sha256"]}  # fmt: skip
    return state, record


@dataclass(frozen=True)
class OneShotPruning:
    """Magnitude pruning of a trained dense parent, then fine-tuning with the mask held.

    Each seed's model starts from the parent population's model of the same seed (``source``),
    pruned by magnitude to ``sparsity`` (per tensor, or ranked together with ``scope="global"``),
    and is fine-tuned for ``finetune_epochs`` (default :data:`FINETUNE_FRACTION` of the
    population's epochs) at :data:`FINETUNE_LR_FACTOR` of its learning rate, without warm-up.
    Each model's ``run.json`` names its parent, so the audit pairs them (Han et al. 2015,
    "Learning both weights and connections for efficient neural networks").
    """

    sparsity: float
    source: str
    scope: str = "layer"
    finetune_epochs: int | None = None
    exclude: tuple[str, ...] = ()
    prune_final: bool = False
    method: ClassVar[str] = "oneshot"

    def __post_init__(self) -> None:
        _check_pruning(self.method, self.sparsity, self.scope, self.exclude)
        if self.finetune_epochs is not None:
            _count("finetune-epochs", self.finetune_epochs)

    def policy(self, model: nn.Module, total_steps: int) -> FixedMasks:
        """Hold the zeros of the pruned parent."""
        names = _names(model, self.sparsity, self.exclude, self.prune_final)
        return FixedMasks(names, self.sparsity, "parent-magnitude")

    def check(self, dataset: Dataset, *, arch: str, seeds: Sequence[int] | None = None) -> None:
        """Refuse a parent population that is not a dense one of this data and architecture."""
        check_parent(self.source, dataset, arch=arch, derived=self.method, seeds=seeds)

    def finetune_config(self, config: TrainConfig) -> TrainConfig:
        """The fine-tuning run's configuration, from the population's."""
        epochs = self.finetune_epochs or max(1, round(FINETUNE_FRACTION * config.epochs))
        return replace(config, epochs=epochs, lr=config.lr * FINETUNE_LR_FACTOR, warmup_epochs=0.0)

    def train(self, dataset: Dataset, *, arch: str, seeds: Sequence[int], config: TrainConfig,
              device: torch.device | str = "cpu", on_epoch: Any = None) -> list[TrainedModel]:  # fmt: skip
        """Prune each seed's parent and fine-tune it; each result records its parent."""
        parents = {seed: load_parent(self.source, seed) for seed in seeds}

        def start(arch: str, dataset: Dataset, seed: int) -> nn.Module:
            model = init_model(arch, dataset, seed)
            model.load_state_dict(parents[seed][0])
            params = dict(model.named_parameters())
            names = _names(model, self.sparsity, self.exclude, self.prune_final)
            masks = magnitude_masks({n: params[n] for n in names}, self.sparsity, scope=self.scope)
            apply_masks_(params, masks)
            return model

        finetune = self.finetune_config(config)
        results = train_models(dataset, arch=arch, seeds=seeds, config=finetune, prune=self,
                               device=device, start=start, on_epoch=on_epoch)  # fmt: skip
        extra = {"epochs": finetune.epochs, "lr": finetune.lr}
        return [replace(r, record={"parent": parents[r.seed][1], "finetune": extra}) for r in results]


@dataclass(frozen=True)
class _Held:
    """A lottery round's pruning: the zeros of its starting point, held."""

    names: tuple[str, ...]
    target: float

    def policy(self, model: nn.Module, total_steps: int) -> FixedMasks:
        return FixedMasks(self.names, self.target, "lottery-rewound")


@dataclass(frozen=True)
class LotteryTicket(_Trains):
    """Iterative magnitude pruning with weight rewinding: a lottery ticket per seed.

    Each seed trains dense from its own initialisation once, keeping its weights after
    ``rewind`` of the run's steps (0: the initialisation itself, Frankle & Carbin 2019; a few
    percent: rewinding, Frankle et al. 2019, "Stabilizing the lottery ticket hypothesis").
    Then ``rounds`` rounds each prune by magnitude the same fraction of the weights still alive
    (``1 - (1 - sparsity) ** (1 / rounds)``), ranked on the last round's trained weights, and
    retrain from the rewound weights with the mask held; the last round ends exactly at
    ``sparsity``. The whole state rewinds, BatchNorm statistics included, as in Frankle et al.
    """

    sparsity: float
    scope: str = "layer"
    rewind: float = 0.05
    rounds: int = 3
    exclude: tuple[str, ...] = ()
    prune_final: bool = False
    method: ClassVar[str] = "lottery"

    def __post_init__(self) -> None:
        _check_pruning(self.method, self.sparsity, self.scope, self.exclude)
        if not (isinstance(self.rewind, (int, float)) and not isinstance(self.rewind, bool)
                and math.isfinite(self.rewind) and 0 <= self.rewind < 1):  # fmt: skip
            raise ConfigError(BAD_REWIND.format(value=self.rewind))
        _count("rounds", self.rounds)

    def sparsity_after(self, round_: int) -> float:
        """Sparsity after round ``round_`` (1-based); the last is exactly :attr:`sparsity`."""
        if round_ >= self.rounds:
            return float(self.sparsity)
        return 1.0 - (1.0 - self.sparsity) ** (round_ / self.rounds)

    def policy(self, model: nn.Module, total_steps: int) -> FixedMasks:
        """The last round's policy (what :func:`pie_audit.training.check_training` sees)."""
        names = _names(model, self.sparsity, self.exclude, self.prune_final)
        return FixedMasks(names, self.sparsity, "lottery-rewound")

    def train(self, dataset: Dataset, *, arch: str, seeds: Sequence[int], config: TrainConfig,
              device: torch.device | str = "cpu", on_epoch: Any = None) -> list[TrainedModel]:  # fmt: skip
        """Train dense, then prune and retrain from the rewound weights ``rounds`` times."""
        seeds = list(seeds)
        rewind_step = round(self.rewind * training_steps(dataset, config))
        names = _names(init_model(arch, dataset, seeds[0]), self.sparsity, self.exclude, self.prune_final)
        rewound: dict[str, torch.Tensor] = {}  # (K, ...) by parameter and buffer name

        def keep(step: int, state: Mapping[str, torch.Tensor], masks: Any) -> None:
            # Called after each step: the state after rewind_step steps is seen at step - 1.
            if step + 1 == rewind_step:
                rewound.update({n: t.detach().cpu().clone() for n, t in state.items()})

        results = train_models(dataset, arch=arch, seeds=seeds, config=config, prune=PruneConfig(),
                               device=device, on_epoch=on_epoch,
                               on_step=keep if rewind_step > 0 else None)  # fmt: skip
        if rewind_step == 0:
            inits = [init_model(arch, dataset, s).state_dict() for s in seeds]
            rewound = {n: torch.stack([p[n] for p in inits]) for n in inits[0]}
        steps, wall = results[0].steps, results[0].wall_time_s
        masks = None
        for round_ in range(1, self.rounds + 1):
            target = self.sparsity_after(round_)
            trained = {n: torch.stack([r.state_dict[n] for r in results]) for n in names}
            masks = magnitude_masks(trained, target, scope=self.scope, previous=masks, batch_dims=1)

            def start(arch: str, dataset: Dataset, seed: int, masks: dict = masks) -> nn.Module:
                # The whole rewound state, BatchNorm statistics included, with the mask applied.
                i = seeds.index(seed)
                model = init_model(arch, dataset, seed)
                model.load_state_dict({name: tensor[i] for name, tensor in rewound.items()})
                apply_masks_(dict(model.named_parameters()), {n: m[i] for n, m in masks.items()})
                return model

            results = train_models(dataset, arch=arch, seeds=seeds, config=config,
                                   prune=_Held(names, target), device=device, start=start,
                                   on_epoch=on_epoch)  # fmt: skip
            steps += results[0].steps
            wall += results[0].wall_time_s
        record = {"lottery": {"rewind_step": rewind_step, "rounds": self.rounds,
                              "sparsity_per_round": [self.sparsity_after(r) for r in range(1, self.rounds + 1)]}}  # fmt: skip
        return [replace(r, steps=steps, wall_time_s=wall, record=record) for r in results]


@dataclass(frozen=True)
class StructuredPruning(_Trains):
    """Structured pruning: whole conv filters of smallest L2 norm, removed gradually during training.

    Each conv layer loses ``round(sparsity * C_out)`` of its output channels, chosen by the L2
    norm of their filters (He et al. 2018, "Soft filter pruning"; Li et al. 2017, "Pruning
    filters for efficient ConvNets", rank by L1) and removed on Zhu & Gupta's cubic schedule
    between ``begin`` and ``end`` of training, from scratch, like ``gmp``. A removed filter
    takes its bias and the BatchNorm scale and shift of its feature map with it, so the channel
    outputs zero, as if cut out. Linear layers are not pruned. Each ``run.json`` records the
    channel sparsity reached (``sparsity.channels``) beside the weight sparsity of the pruned
    conv layers (``sparsity.achieved``); ``sparsity.target`` is the channel fraction asked for.
    """

    sparsity: float
    begin: float = 0.2
    end: float = 0.8
    frequency: int | None = None
    exclude: tuple[str, ...] = ()
    method: ClassVar[str] = "structured"

    def __post_init__(self) -> None:
        _check_pruning(self.method, self.sparsity, "layer", self.exclude)
        # The schedule's own checks (begin <= end, frequency >= 1), with gmp's messages.
        self._schedule_config()

    def _schedule_config(self) -> PruneConfig:
        return PruneConfig(sparsity=self.sparsity, begin=self.begin, end=self.end,
                           frequency=self.frequency, exclude=self.exclude)  # fmt: skip

    def policy(self, model: nn.Module, total_steps: int) -> GradualFilterPruning:
        """Filter pruning of ``model``'s conv layers on the schedule of a run of ``total_steps``.

        Raises
        ------
        ConfigError
            :data:`NO_CONV`, or a schedule the run is too short for (as ``gmp``).
        """
        # gmp's policy checks the schedule against the run (PRUNING_TOO_LATE) and builds it.
        schedule = self._schedule_config().policy(model, total_steps).schedule
        names = conv_weights(model, exclude=self.exclude)
        if not names:
            arch = type(model).__name__
            raise ConfigError(NO_CONV.format(arch=arch, exclude=" ".join(self.exclude) or "none"))
        return GradualFilterPruning.build(model, schedule, names)

    def train(self, dataset: Dataset, *, arch: str, seeds: Sequence[int], config: TrainConfig,
              device: torch.device | str = "cpu", on_epoch: Any = None) -> list[TrainedModel]:  # fmt: skip
        """Train each seed from scratch, removing filters on the schedule; record channel sparsity."""
        return train_models(dataset, arch=arch, seeds=seeds, config=config, prune=self,
                            device=device, on_epoch=on_epoch, finish=self.record_channels)  # fmt: skip

    def record_channels(self, results: list[TrainedModel]) -> list[TrainedModel]:
        """Add the channel sparsity each finished model reached to its ``sparsity`` record.

        ``target`` becomes the channel fraction asked for; ``achieved`` stays the fraction of
        zero weights in the pruned conv layers, as for every method, and ``weights_target`` is
        the exact fraction of them that whole filters make (each layer is rounded to a filter).
        """
        out = []
        for r in results:
            names = list(r.sparsity["layers"])  # the policy's conv weights
            channels = channel_report(r.state_dict, names) | {"target": self.sparsity}
            sparsity = r.sparsity | {"target": self.sparsity, "weights_target": r.sparsity["target"],
                                     "channels": channels}  # fmt: skip
            out.append(replace(r, sparsity=sparsity))
        return out


def calibration_indices(n_train: int, n: int, seed: int) -> np.ndarray:
    """Which training images calibrate the int8 model of ``seed``: ``min(n, n_train)`` of them.

    The first ``n`` of a permutation of the training split drawn from a stream of the model's
    seed that is independent of its initialisation, data order and masks, so each model of a
    population calibrates on its own sample and the same model twice on the same one.

    Returns
    -------
    ndarray of int64, shape (min(n, n_train),)
        Sorted indices into the training split.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    return np.sort(rng.permutation(n_train)[: min(n, n_train)])


@dataclass(frozen=True)
class Int8Quantization:
    """Post-training static int8 quantization of a trained dense parent, seed by seed.

    Each seed's model is the parent population's model of the same seed (``source``), with
    int8 weights (per output channel, symmetric) and activations (per tensor, affine) whose
    ranges are calibrated on ``calibration_images`` training images
    (:func:`calibration_indices`), by the FX graph mode flow of the pinned torch with its x86
    backend (:mod:`pie_audit.training._quantization`). Nothing is trained; the model is evaluated on the
    CPU with int8 kernels. ``model.pt`` holds the quantized state dict, which
    :func:`pie_audit.training._quantization.load_quantized` reads back with ``weights_only``. Each
    ``run.json`` names its parent, so the audit pairs them (Jacob et al. 2018, "Quantization
    and training of neural networks for efficient integer-arithmetic-only inference"; the
    audit of Hooker et al. 2020, "Characterising bias in compressed models").
    """

    source: str
    calibration_images: int = CALIBRATION_IMAGES
    method: ClassVar[str] = "int8"

    def __post_init__(self) -> None:
        _count("calibration-images", self.calibration_images)

    def policy(self, model: nn.Module, total_steps: int) -> FixedMasks:
        """No masks: the weights are the parent's, quantized after training."""
        return FixedMasks((), 0.0, "none")

    def check(self, dataset: Dataset, *, arch: str, seeds: Sequence[int] | None = None) -> None:
        """Refuse a parent population that is not a dense one of this data and architecture."""
        check_parent(self.source, dataset, arch=arch, derived=self.method, seeds=seeds)

    def train(self, dataset: Dataset, *, arch: str, seeds: Sequence[int], config: TrainConfig,
              device: torch.device | str = "cpu", on_epoch: Any = None) -> list[TrainedModel]:  # fmt: skip
        """Quantize each seed's parent and evaluate it on the CPU; each result records its parent.

        ``device`` is not used: int8 kernels run on the CPU, and the record says so.
        """
        from ._quantization import int8_weights, predict_probabilities, quantize_static, scheme

        labels = dataset.y_test.numpy()
        results = []
        for seed in seeds:
            started = time.perf_counter()
            state, parent = load_parent(self.source, seed)
            model = init_model(arch, dataset, seed)
            model.load_state_dict(state)
            chosen = calibration_indices(len(dataset.x_train), self.calibration_images, seed)
            quantized = quantize_static(model, dataset.x_train[torch.from_numpy(chosen)])
            probabilities = predict_probabilities(quantized, dataset.x_test, batch_size=config.eval_batch_size)
            saved = quantized.state_dict()
            record = {"parent": parent,
                      "quantization": scheme() | {"calibration_images": int(len(chosen))}}  # fmt: skip
            results.append(
                TrainedModel(
                    seed=seed,
                    state_dict=saved,
                    probabilities=probabilities,
                    accuracy=float((probabilities.argmax(1) == labels).mean()),
                    # The zeros among the int8 weights (quantization rounds the smallest to 0),
                    # over the layers the other methods prune, so the figures compare.
                    sparsity=int8_weights(saved, names=prunable_weights(model))
                    | {"target": 0.0},
                    schedule={"kind": "post-training-quantization"},
                    steps=0,
                    wall_time_s=time.perf_counter() - started,
                    device="cpu",
                    jointly=1,
                    record=record,
                )
            )
        return results
