"""What a compression method is, and what the methods that train from scratch share.

A method is a frozen dataclass of its options (:class:`Method`): it checks them when made, builds
the mask policy of a run (``policy``) and trains a group of seeds (``train``), through the one
training loop (:func:`pie_audit.training.train_models`) and its seams. :class:`FromScratch` is
the ``check``, ``start``, ``finish`` and ``train`` of a method whose models start from their own
initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from ...data import Dataset
from ...errors import ConfigError
from .._loop import EpochCallback, Pruning, TrainConfig, TrainedModel, init_model, train_models
from .._pruning import SCOPES, exclude_patterns, prunable_weights

__all__ = [
    "Method",
    "FromScratch",
    "check_pruning",
    "check_count",
    "pruned_names",
    "NEEDS_SPARSITY",
    "BAD_SCOPE",
    "BAD_COUNT",
    "NOTHING_TO_PRUNE",
]

NEEDS_SPARSITY = "method {method!r} needs a sparsity in (0, 1), got {sparsity!r}"
BAD_SCOPE = "unknown pruning scope {scope!r}; choose layer or global"
BAD_COUNT = "{name} must be a whole number >= 1, got {value!r}"
NOTHING_TO_PRUNE = (
    "sparsity {sparsity} asks for pruning, but no layer of the model is left to prune "
    "(--exclude and --prune-final leave none)"
)


class Method(Pruning, Protocol):
    """A compression method: what a population is configured with (``--method``).

    A frozen dataclass whose fields are the method's options, recorded in ``population.json``
    and ``run.json`` (``method_params``); :class:`~pie_audit.training.methods.PruneConfig` is
    ``gmp``, and :mod:`pie_audit.training.methods` lists the others.
    """

    method: ClassVar[str]

    def check(self, dataset: Dataset, *, arch: str, seeds: Sequence[int] | None = None) -> None:
        """Refuse, before anything is written, what :meth:`train` would refuse (a bad parent)."""

    def train(self, dataset: Dataset, *, arch: str, seeds: Sequence[int], config: TrainConfig,
              device: torch.device | str = "cpu", on_epoch: EpochCallback | None = None) -> list[TrainedModel]:  # fmt: skip
        """The finished models of ``seeds``, in seed order."""


class FromScratch:
    """A method whose models start from their own initialisation and train in one run of the loop.

    ``start`` and ``finish`` are the loop's starting point and post-training step (fresh weights
    and nothing, unless a method says otherwise); ``policy`` is the method's own.
    """

    def check(self, dataset: Dataset, *, arch: str, seeds: Sequence[int] | None = None) -> None:
        """Nothing to check beyond ``policy``: the method needs no parent."""

    def start(self, arch: str, dataset: Dataset, seed: int) -> nn.Module:
        """The model a seed starts from: its fresh initialisation (:func:`init_model`)."""
        return init_model(arch, dataset, seed)

    def finish(self, results: list[TrainedModel]) -> list[TrainedModel]:
        """What the run keeps of its finished models: all of them, as they are."""
        return results

    def train(self, dataset: Dataset, *, arch: str, seeds: Sequence[int], config: TrainConfig,
              device: torch.device | str = "cpu", on_epoch: EpochCallback | None = None) -> list[TrainedModel]:  # fmt: skip
        """Train one model per seed from :meth:`start` under ``policy`` (:func:`train_models`)."""
        return train_models(dataset, arch=arch, seeds=seeds, config=config, prune=self, device=device,
                            start=self.start, finish=self.finish, on_epoch=on_epoch)  # fmt: skip


def check_pruning(method: str, sparsity: Any, scope: str, exclude: Sequence[str]) -> None:
    """Refuse a sparsity outside (0, 1), an unknown scope or an invalid ``exclude`` pattern."""
    ok = isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool)
    if not (ok and 0.0 < sparsity < 1.0):
        raise ConfigError(NEEDS_SPARSITY.format(method=method, sparsity=sparsity))
    if scope not in SCOPES:
        raise ConfigError(BAD_SCOPE.format(scope=scope))
    exclude_patterns(exclude)


def check_count(name: str, value: Any) -> None:
    """Refuse a ``value`` that is not a whole number >= 1 (:data:`BAD_COUNT`)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(BAD_COUNT.format(name=name, value=value))


def pruned_names(model: nn.Module, sparsity: float, exclude: Sequence[str], prune_final: bool) -> tuple[str, ...]:
    """The weights a method prunes (:func:`prunable_weights`); :data:`NOTHING_TO_PRUNE` if none."""
    names = prunable_weights(model, exclude=exclude, prune_final=prune_final)
    if not names:
        raise ConfigError(NOTHING_TO_PRUNE.format(sparsity=sparsity))
    return tuple(names)
