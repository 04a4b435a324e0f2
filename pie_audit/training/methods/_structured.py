"""``structured``: whole conv filters of smallest L2 norm, removed gradually (Li et al. 2017; He et al. 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from ...data import Dataset
from ...errors import ConfigError
from .._compact import STRUCTURE_KEY, compact_model, conv_groups, structure_record
from .._loop import EpochCallback, TrainConfig, TrainedModel, train_models
from .._models import build_model, input_shape
from .._pruning import GradualFilterPruning, channel_report, conv_weights
from ._base import FromScratch, check_pruning
from ._gmp import PruneConfig

__all__ = ["StructuredPruning", "NO_CONV", "compact_result"]

NO_CONV = (
    "method 'structured' removes conv filters, and {arch} has no conv layer left to prune "
    "(--exclude {exclude})"
)


@dataclass(frozen=True)
class StructuredPruning(FromScratch):
    """Structured pruning: whole conv filters of smallest L2 norm, removed gradually during training.

    Each conv layer loses ``round(sparsity * C_out)`` of its output channels, chosen by the L2
    norm of their filters (He et al. 2018, "Soft filter pruning"; Li et al. 2017, "Pruning
    filters for efficient ConvNets", rank by L1) and removed on Zhu & Gupta's cubic schedule
    between ``begin`` and ``end`` of training, from scratch, like ``gmp``. Conv layers whose
    outputs a residual sum adds are pruned together (the same channels, ranked by their filters'
    norm together), found by Torch-Pruning's dependency graph; a group with a conv layer matched
    by ``exclude`` is left whole. A removed filter takes its bias and the BatchNorm scale and
    shift of its feature map with it, so the channel outputs zero, as if cut out. Linear layers
    are not pruned.

    When training ends, each model is compacted (:func:`compact_result`): the removed channels
    are cut out of the network with everything that depends on them, and ``model.pt`` holds the
    compact network's weights, with its conv widths recorded in ``run.json`` (``structure``).
    Each ``run.json`` records the channel sparsity reached (``sparsity.channels``) beside the
    weight sparsity of the pruned conv layers (``sparsity.achieved``), both measured against the
    dense architecture before compaction; ``sparsity.target`` is the channel fraction asked for.
    """

    sparsity: float
    begin: float = 0.2
    end: float = 0.8
    frequency: int | None = None
    exclude: tuple[str, ...] = ()
    method: ClassVar[str] = "structured"

    def __post_init__(self) -> None:
        check_pruning(self.method, self.sparsity, "layer", self.exclude)
        # The schedule's own checks (begin <= end, frequency >= 1), with gmp's messages.
        self._schedule_config()

    def _schedule_config(self) -> PruneConfig:
        return PruneConfig(sparsity=self.sparsity, begin=self.begin, end=self.end,
                           frequency=self.frequency, exclude=self.exclude)  # fmt: skip

    def policy(self, model: nn.Module, total_steps: int) -> GradualFilterPruning:
        """Filter pruning of ``model``'s conv layers on the schedule of a run of ``total_steps``.

        Coupled conv layers (:func:`pie_audit.training._compact.conv_groups`) are pruned as one
        group; a group holding a conv layer that ``exclude`` matches keeps all its channels.

        Raises
        ------
        ConfigError
            :data:`NO_CONV`, or a schedule the run is too short for (as ``gmp``).
        """
        # gmp's policy checks the schedule against the run (PRUNING_TOO_LATE) and builds it.
        schedule = self._schedule_config().policy(model, total_steps).schedule
        allowed = set(conv_weights(model, exclude=self.exclude))
        groups = [tuple(f"{m}.weight" for m in group) for group in conv_groups(model, input_shape(model))]
        groups = [g for g in groups if all(n in allowed for n in g)]
        names = [n for g in groups for n in g]
        if not names:
            arch = type(model).__name__
            raise ConfigError(NO_CONV.format(arch=arch, exclude=" ".join(self.exclude) or "none"))
        return GradualFilterPruning.build(model, schedule, names, groups=groups)

    def finish(self, results: list[TrainedModel]) -> list[TrainedModel]:
        """Add the channel sparsity each finished model reached to its ``sparsity`` record.

        ``target`` becomes the channel fraction asked for; ``achieved`` stays the fraction of
        zero weights in the pruned conv layers, as for every method, and ``weights_target`` is
        the exact fraction of them that whole filters make (each layer is rounded to a filter).
        The models keep the dense architecture's shapes (:meth:`train` compacts them after).
        """
        out = []
        for r in results:
            names = list(r.sparsity["layers"])  # the policy's conv weights
            channels = channel_report(r.state_dict, names) | {"target": self.sparsity}
            sparsity = r.sparsity | {"target": self.sparsity, "weights_target": r.sparsity["target"],
                                     "channels": channels}  # fmt: skip
            out.append(replace(r, sparsity=sparsity))
        return out

    def train(self, dataset: Dataset, *, arch: str, seeds: Sequence[int], config: TrainConfig,
              device: torch.device | str = "cpu", on_epoch: EpochCallback | None = None) -> list[TrainedModel]:  # fmt: skip
        """Train one model per seed under the filter masks, then compact each (:func:`compact_result`)."""

        def finish(results: list[TrainedModel]) -> list[TrainedModel]:
            return [compact_result(r, arch=arch, dataset=dataset) for r in self.finish(results)]

        return train_models(dataset, arch=arch, seeds=seeds, config=config, prune=self, device=device,
                            start=self.start, finish=finish, on_epoch=on_epoch)  # fmt: skip


def compact_result(result: TrainedModel, *, arch: str, dataset: Dataset) -> TrainedModel:
    """``result`` with its zeroed channels cut out (:func:`pie_audit.training._compact.compact_model`).

    Its ``state_dict`` becomes the compact network's (the same keys, smaller shapes), and its
    ``record`` gains ``structure`` (:func:`pie_audit.training._compact.structure_record`). The
    predictions, accuracy and sparsity stay the masked network's: the compact one computes the
    same function, up to floating-point rounding.
    """
    channels, height, _ = dataset.image_shape
    # build_model draws an initialisation from the global RNG, overwritten at once: forked, so
    # that compacting does not move the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        model = build_model(arch, in_channels=channels, image_size=height, num_classes=dataset.num_classes)
    model.load_state_dict(result.state_dict, strict=True)
    compact_model(model, dataset.image_shape, arch=arch)
    state = {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}
    return replace(result, state_dict=state, record=result.record | {STRUCTURE_KEY: structure_record(model)})
