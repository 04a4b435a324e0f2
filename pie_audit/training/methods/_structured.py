"""``structured``: whole conv filters of smallest L2 norm, removed gradually (Li et al. 2017; He et al. 2018)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from torch import nn

from ...errors import ConfigError
from .._loop import TrainedModel
from .._pruning import GradualFilterPruning, channel_report, conv_weights
from ._base import FromScratch, check_pruning
from ._gmp import PruneConfig

__all__ = ["StructuredPruning", "NO_CONV"]

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
        check_pruning(self.method, self.sparsity, "layer", self.exclude)
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

    def finish(self, results: list[TrainedModel]) -> list[TrainedModel]:
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
