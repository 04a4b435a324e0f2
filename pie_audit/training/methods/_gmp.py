"""``gmp``: gradual magnitude pruning during training from scratch (Zhu & Gupta 2017).

:class:`PruneConfig` is the method and its options; with ``sparsity == 0`` it trains the dense
baseline every other method is compared with. Its mask policy is
:class:`~pie_audit.training._pruning.GradualMagnitudePruning` on the cubic schedule that
:func:`make_schedule` places in the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ...errors import ConfigError
from .._pruning import GradualMagnitudePruning, PruningSchedule, default_frequency, exclude_patterns, prunable_weights
from ._base import NOTHING_TO_PRUNE, FromScratch

__all__ = ["PruneConfig", "make_schedule", "PRUNING_TOO_LATE"]

PRUNING_TOO_LATE = (
    "prune-begin {begin} starts pruning at step {begin_step} of a {total_steps}-step run, when "
    "training is over, so the models could never reach sparsity {sparsity}; choose prune-begin "
    "<= {max_begin} or train longer"
)


@dataclass(frozen=True)
class PruneConfig(FromScratch):
    """What and when to prune; steps are derived from fractions of the training run.

    It builds the run's mask policy (:meth:`policy`): gradual magnitude pruning, or dense training
    when ``sparsity`` is 0.

    ``begin`` and ``end`` are fractions of all training steps (pruning ramps from 20% to 80% of
    training by default, leaving the last fifth to recover at the final sparsity); ``frequency``
    is in steps (default: about 50 mask updates over the ramp).
    """

    sparsity: float = 0.0
    scope: str = "layer"
    begin: float = 0.2
    end: float = 0.8
    frequency: int | None = None
    exclude: tuple[str, ...] = ()
    prune_final: bool = False
    #: Its name as a compression method (:class:`~._base.Method`): gradual magnitude pruning.
    method: ClassVar[str] = "gmp"

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if not 0.0 <= self.begin <= self.end <= 1.0:
            raise ConfigError(
                f"pruning must satisfy 0 <= begin <= end <= 1, got begin={self.begin} end={self.end}"
            )
        if self.scope not in ("layer", "global"):
            raise ConfigError(f"unknown pruning scope {self.scope!r}; choose layer or global")
        if self.frequency is not None and self.frequency < 1:
            raise ConfigError(f"pruning frequency must be >= 1 step, got {self.frequency}")
        # Here rather than when training starts, so that a typo fails before anything is written.
        exclude_patterns(self.exclude)

    def policy(self, model: nn.Module, total_steps: int) -> GradualMagnitudePruning:
        """The mask policy for a run of ``total_steps`` on ``model``'s architecture.

        Raises
        ------
        ConfigError
            With a sparsity above 0: no layer is left to prune (:data:`NOTHING_TO_PRUNE`), or
            pruning would begin after the last step (:data:`PRUNING_TOO_LATE`); either way the
            models would be dense while their run record claims the target.
        """
        names = prunable_weights(model, exclude=self.exclude, prune_final=self.prune_final)
        schedule = make_schedule(self, total_steps)
        if self.sparsity > 0 and not names:
            raise ConfigError(NOTHING_TO_PRUNE.format(sparsity=self.sparsity))
        # Masks change before steps begin_step..end_step; the loop's last step is total_steps - 1.
        if self.sparsity > 0 and schedule.end_step > total_steps - 1:
            raise ConfigError(
                PRUNING_TOO_LATE.format(
                    begin=self.begin,
                    begin_step=schedule.begin_step,
                    total_steps=total_steps,
                    sparsity=self.sparsity,
                    # Floored, so the value printed is one that works.
                    max_begin=math.floor((total_steps - 1) / total_steps * 1e4) / 1e4,
                )
            )
        return GradualMagnitudePruning(schedule, tuple(names))


def make_schedule(prune: PruneConfig, total_steps: int) -> PruningSchedule:
    """Turn a :class:`PruneConfig` into step numbers for a run of ``total_steps``.

    ``end_step`` is at most the last step, ``total_steps - 1``, unless ``begin_step`` is later:
    ``begin`` close to 1 rounds to ``total_steps``, a schedule that never runs
    (:meth:`PruneConfig.policy` refuses it).
    """
    begin = int(round(prune.begin * total_steps))
    end = max(begin, min(total_steps - 1, int(round(prune.end * total_steps))))
    frequency = prune.frequency or default_frequency(begin, end)
    return PruningSchedule(
        final=prune.sparsity, begin_step=begin, end_step=end, frequency=frequency, scope=prune.scope
    )
