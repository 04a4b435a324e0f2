"""``random``: random unstructured masks drawn before training and held (the control)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ...data import Dataset
from .._loop import init_model
from .._pruning import FixedMasks, apply_masks_
from ._base import FromScratch, check_pruning, pruned_names

__all__ = ["RandomPruning", "mask_seed"]


def mask_seed(seed: int) -> int:
    """The seed of a model's mask stream: independent of its init and data streams."""
    # A spawned child of the model's SeedSequence, which derive_seeds never draws from.
    child = np.random.SeedSequence(seed, spawn_key=(1,))
    return int(child.generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)


@dataclass(frozen=True)
class RandomPruning(FromScratch):
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
        check_pruning(self.method, self.sparsity, "layer", self.exclude)

    def policy(self, model: nn.Module, total_steps: int) -> FixedMasks:
        """Hold the zeros :meth:`start` drew."""
        names = pruned_names(model, self.sparsity, self.exclude, self.prune_final)
        return FixedMasks(names, self.sparsity, "random")

    def start(self, arch: str, dataset: Dataset, seed: int) -> nn.Module:
        """The seed's initial model with a random ``sparsity`` of each prunable tensor zeroed."""
        model = init_model(arch, dataset, seed)
        params = dict(model.named_parameters())
        generator = torch.Generator().manual_seed(mask_seed(seed))
        masks = {}
        for name in pruned_names(model, self.sparsity, self.exclude, self.prune_final):
            n = params[name].numel()
            keep = torch.ones(n, dtype=torch.bool)
            keep[torch.randperm(n, generator=generator)[: round(self.sparsity * n)]] = False
            masks[name] = keep.view_as(params[name])
        apply_masks_(params, masks)
        return model
