"""``oneshot``: magnitude pruning of a trained dense parent, then fine-tuning (Han et al. 2015)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn

from ...data import Dataset
from .._loop import TrainConfig, TrainedModel, init_model, train_models
from .._pruning import FixedMasks, apply_masks_, magnitude_masks
from ._base import check_count, check_pruning, pruned_names
from ._parent import FromParent, load_parent

__all__ = ["OneShotPruning", "FINETUNE_FRACTION", "FINETUNE_LR_FACTOR"]

#: One-shot fine-tuning lasts this fraction of the population's epochs unless
#: ``finetune-epochs`` says otherwise (at least one epoch).
FINETUNE_FRACTION = 0.25
#: Fine-tuning restarts the cosine schedule at this fraction of the learning rate: the parent is
#: already trained, and the full rate would undo much of it (Han et al. 2015 fine-tune lower).
FINETUNE_LR_FACTOR = 0.1


@dataclass(frozen=True)
class OneShotPruning(FromParent):
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
        check_pruning(self.method, self.sparsity, self.scope, self.exclude)
        if self.finetune_epochs is not None:
            check_count("finetune-epochs", self.finetune_epochs)

    def policy(self, model: nn.Module, total_steps: int) -> FixedMasks:
        """Hold the zeros of the pruned parent."""
        names = pruned_names(model, self.sparsity, self.exclude, self.prune_final)
        return FixedMasks(names, self.sparsity, "parent-magnitude")

    def finetune_config(self, config: TrainConfig) -> TrainConfig:
        """The fine-tuning run's configuration, from the population's."""
        epochs = self.finetune_epochs or max(1, round(FINETUNE_FRACTION * config.epochs))
        return replace(config, epochs=epochs, lr=config.lr * FINETUNE_LR_FACTOR, warmup_epochs=0.0)

    def train(self, dataset: Dataset, *, arch: str, seeds: Sequence[int], config: TrainConfig,
              device: torch.device | str = "cpu", on_epoch: Any = None) -> list[TrainedModel]:  # fmt: skip
        """Prune each seed's parent and fine-tune it; each result records its parent."""
        parents = {seed: load_parent(self.source, seed, arch=arch, dataset=dataset) for seed in seeds}

        def start(arch: str, dataset: Dataset, seed: int) -> nn.Module:
            model = init_model(arch, dataset, seed)
            model.load_state_dict(parents[seed][0])
            params = dict(model.named_parameters())
            names = pruned_names(model, self.sparsity, self.exclude, self.prune_final)
            masks = magnitude_masks({n: params[n] for n in names}, self.sparsity, scope=self.scope)
            apply_masks_(params, masks)
            return model

        finetune = self.finetune_config(config)
        results = train_models(dataset, arch=arch, seeds=seeds, config=finetune, prune=self,
                               device=device, start=start, on_epoch=on_epoch)  # fmt: skip
        extra = {"epochs": finetune.epochs, "lr": finetune.lr}
        return [replace(r, record={"parent": parents[r.seed][1], "finetune": extra}) for r in results]
