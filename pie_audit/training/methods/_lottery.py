"""``lottery``: iterative magnitude pruning with weight rewinding (Frankle & Carbin 2019)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn

from ...data import Dataset
from ...errors import ConfigError
from .._loop import TrainConfig, TrainedModel, init_model, train_models, training_steps
from .._pruning import FixedMasks, apply_masks_, magnitude_masks
from ._base import FromScratch, check_count, check_pruning, pruned_names
from ._gmp import PruneConfig

__all__ = ["LotteryTicket", "BAD_REWIND"]

BAD_REWIND = "rewind must be a fraction of training in [0, 1), got {value!r}"


@dataclass(frozen=True)
class _Held:
    """A lottery round's pruning: the zeros of its starting point, held."""

    names: tuple[str, ...]
    target: float

    def policy(self, model: nn.Module, total_steps: int) -> FixedMasks:
        return FixedMasks(self.names, self.target, "lottery-rewound")


@dataclass(frozen=True)
class LotteryTicket(FromScratch):
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
        check_pruning(self.method, self.sparsity, self.scope, self.exclude)
        if not (isinstance(self.rewind, (int, float)) and not isinstance(self.rewind, bool)
                and math.isfinite(self.rewind) and 0 <= self.rewind < 1):  # fmt: skip
            raise ConfigError(BAD_REWIND.format(value=self.rewind))
        check_count("rounds", self.rounds)

    def sparsity_after(self, round_: int) -> float:
        """Sparsity after round ``round_`` (1-based); the last is exactly :attr:`sparsity`."""
        if round_ >= self.rounds:
            return float(self.sparsity)
        return 1.0 - (1.0 - self.sparsity) ** (round_ / self.rounds)

    def policy(self, model: nn.Module, total_steps: int) -> FixedMasks:
        """The last round's policy (what :func:`pie_audit.training._loop.check_training` sees)."""
        names = pruned_names(model, self.sparsity, self.exclude, self.prune_final)
        return FixedMasks(names, self.sparsity, "lottery-rewound")

    def train(self, dataset: Dataset, *, arch: str, seeds: Sequence[int], config: TrainConfig,
              device: torch.device | str = "cpu", on_epoch: Any = None) -> list[TrainedModel]:  # fmt: skip
        """Train dense, then prune and retrain from the rewound weights ``rounds`` times."""
        seeds = list(seeds)
        rewind_step = round(self.rewind * training_steps(dataset, config))
        names = pruned_names(init_model(arch, dataset, seeds[0]), self.sparsity, self.exclude, self.prune_final)
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
