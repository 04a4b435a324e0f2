"""Masks and mask policies: which weights a model keeps, step by step.

Masks are plain boolean tensors keyed by parameter name (``True`` keeps a weight). The training
loop holds K models' parameters stacked along a leading model axis, ``(K, ...)``, and runs them
packed into one module (:mod:`._packing`), where ``torch.nn.utils.prune``'s forward hooks cannot
work; named tensors can, and every function here accepts such a leading model axis
(``batch_dims``).

The mask policies the loop calls before every step (:class:`._loop.MaskPolicy`):
:class:`GradualMagnitudePruning` (Zhu & Gupta, "To prune, or not to prune", arXiv 1710.01878),
:class:`GradualFilterPruning` (whole conv filters on the same schedule) and :class:`FixedMasks`
(the zeros of the starting point, held).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import ConfigError

__all__ = [
    "zhu_gupta_sparsity",
    "PruningSchedule",
    "prunable_weights",
    "exclude_patterns",
    "BAD_EXCLUDE",
    "magnitude_masks",
    "apply_masks_",
    "sparsity_report",
    "SCOPES",
    "Tensors",
    "default_frequency",
    "GradualMagnitudePruning",
    "FixedMasks",
    "conv_weights",
    "channel_coupled",
    "filter_masks",
    "channel_report",
    "GradualFilterPruning",
]

SCOPES = ("layer", "global")
#: Tensors by parameter name: one model's, or K models' stacked along a leading axis.
Tensors = Mapping[str, torch.Tensor]
BAD_EXCLUDE = "--exclude {pattern!r} is not a valid regular expression ({reason})"


def zhu_gupta_sparsity(
    step: int, *, final: float, initial: float = 0.0, begin_step: int, end_step: int
) -> float:
    """Target sparsity at ``step`` of the cubic schedule.

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0))**3`` for ``t0 <= t <= t_end``,
    ``s_i`` before ``t0`` and ``s_f`` after ``t_end``.
    """
    if step <= begin_step:
        return float(initial) if step < begin_step or end_step > begin_step else float(final)
    if step >= end_step:
        return float(final)
    progress = (step - begin_step) / (end_step - begin_step)
    return float(final + (initial - final) * (1.0 - progress) ** 3)


@dataclass(frozen=True)
class PruningSchedule:
    """When masks are recomputed and to what sparsity.

    Attributes
    ----------
    final : float
        Target sparsity in [0, 1); 0 means no pruning (a dense baseline).
    begin_step, end_step : int
        Pruning ramps from ``initial`` at ``begin_step`` to ``final`` at ``end_step``.
    frequency : int
        Masks are recomputed every ``frequency`` steps from ``begin_step`` on, and at ``end_step``.
    initial : float, default 0.0
        Sparsity at ``begin_step``.
    scope : {"layer", "global"}
        ``layer`` prunes each weight tensor to the target (the paper's default); ``global`` ranks
        all prunable weights together.
    """

    final: float
    begin_step: int
    end_step: int
    frequency: int
    initial: float = 0.0
    scope: str = "layer"

    def __post_init__(self) -> None:
        if not 0.0 <= self.final < 1.0:
            raise ConfigError(f"sparsity must be in [0, 1), got {self.final}")
        if not 0.0 <= self.initial <= self.final or self.initial >= 1.0:
            raise ConfigError(f"initial sparsity must be in [0, final], got {self.initial}")
        if self.begin_step < 0 or self.end_step < self.begin_step:
            raise ConfigError(
                f"pruning must end after it begins, got steps {self.begin_step}..{self.end_step}"
            )
        if self.frequency < 1:
            raise ConfigError(f"pruning frequency must be >= 1 step, got {self.frequency}")
        if self.scope not in SCOPES:
            raise ConfigError(f"unknown pruning scope {self.scope!r}; choose layer or global")

    @property
    def enabled(self) -> bool:
        return self.final > 0.0

    def sparsity_at(self, step: int) -> float:
        """Target sparsity at ``step``."""
        return zhu_gupta_sparsity(
            step,
            final=self.final,
            initial=self.initial,
            begin_step=self.begin_step,
            end_step=self.end_step,
        )

    def updates_at(self, step: int) -> bool:
        """Whether masks are recomputed before ``step``."""
        if not self.enabled or step < self.begin_step or step > self.end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step

    def to_dict(self) -> dict:
        return asdict(self) | {"kind": "zhu-gupta-cubic"}


def _final_classifier(model: nn.Module) -> str | None:
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    return last


def prunable_weights(
    model: nn.Module, *, exclude: Sequence[str] = (), prune_final: bool = False
) -> list[str]:
    """Names of the weight parameters to prune.

    Every conv and linear ``weight`` except the final classifier's (the last ``nn.Linear``);
    biases and normalisation layers are never pruned.

    Parameters
    ----------
    model : nn.Module
    exclude : sequence of str
        Module names or regular expressions (matched in full against the module name) to leave
        dense.
    prune_final : bool, default False
        Prune the final classifier too.
    """
    patterns = exclude_patterns(exclude)
    final = None if prune_final else _final_classifier(model)
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            continue
        if name == final or any(p.fullmatch(name) for p in patterns):
            continue
        names.append(f"{name}.weight" if name else "weight")
    return names


def exclude_patterns(exclude: Sequence[str]) -> list[re.Pattern[str]]:
    """Compile ``exclude`` (module names or regular expressions), refusing an invalid one.

    Raises
    ------
    ConfigError
        :data:`BAD_EXCLUDE`, naming the first pattern that does not compile.
    """
    patterns = []
    for pattern in exclude:
        try:
            patterns.append(re.compile(pattern))
        except re.error as e:
            raise ConfigError(BAD_EXCLUDE.format(pattern=pattern, reason=e)) from e
    return patterns


def _keep_mask(score: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Mask over the last axis keeping all but the ``n_prune`` lowest scores.

    A stable sort makes ties fall on the lower index, so masks are deterministic.
    """
    mask = torch.ones_like(score, dtype=torch.bool)
    if n_prune > 0:
        order = torch.argsort(score, dim=-1, stable=True)
        mask.scatter_(-1, order[..., :n_prune], False)
    return mask


@torch.no_grad()
def magnitude_masks(
    weights: Mapping[str, torch.Tensor],
    sparsity: float,
    *,
    scope: str = "layer",
    previous: Mapping[str, torch.Tensor] | None = None,
    batch_dims: int = 0,
) -> dict[str, torch.Tensor]:
    """Masks that prune the smallest-magnitude weights to ``sparsity``.

    Parameters
    ----------
    weights : mapping of name to Tensor of shape (*B, ...)
        The weights to prune; ``batch_dims`` leading axes index models trained jointly.
    sparsity : float
        Fraction of weights to prune: ``round(sparsity * n)`` per tensor (``layer``) or over all
        tensors together (``global``), so the achieved sparsity is exact to one weight.
    scope : {"layer", "global"}
    previous : mapping of name to bool Tensor, optional
        Current masks. Weights already pruned rank below every live weight, so a weight once
        pruned stays pruned while the target grows.
    batch_dims : int, default 0
        Number of leading model axes.

    Returns
    -------
    dict of name to bool Tensor, same shapes as ``weights``.
    """
    scores = {}
    for name, w in weights.items():
        s = w.detach().abs().float().flatten(start_dim=batch_dims)
        if previous is not None:
            s = torch.where(previous[name].flatten(start_dim=batch_dims), s, -1.0)
        scores[name] = s
    if scope == "layer":
        return {
            name: _keep_mask(s, round(sparsity * s.shape[-1])).view_as(weights[name])
            for name, s in scores.items()
        }
    if scope == "global":
        flat = torch.cat(list(scores.values()), dim=-1)
        keep = _keep_mask(flat, round(sparsity * flat.shape[-1]))
        sizes = [s.shape[-1] for s in scores.values()]
        return {
            name: part.reshape(weights[name].shape)
            for name, part in zip(scores, torch.split(keep, sizes, dim=-1))
        }
    raise ConfigError(f"unknown pruning scope {scope!r}; choose layer or global")


@torch.no_grad()
def apply_masks_(params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place."""
    for name, mask in masks.items():
        params[name].mul_(mask)


@torch.no_grad()
def sparsity_report(params: Tensors, names: Iterable[str]) -> dict[str, object]:
    """Achieved sparsity: the fraction of exactly-zero weights, per tensor and overall.

    Returns
    -------
    dict
        ``{"achieved": float, "layers": {name: float}, "n_weights": int, "n_zero": int}``.
    """
    counts = ((name, int((params[name] == 0).sum()), params[name].numel()) for name in names)
    return _zero_report(counts, "n_weights")


def _zero_report(counts: Iterable[tuple[str, int, int]], total_key: str) -> dict[str, object]:
    """``(name, zeros, size)`` per tensor, summed: the fraction per tensor and overall."""
    layers, total, zeros = {}, 0, 0
    for name, z, n in counts:
        layers[name] = z / n
        total += n
        zeros += z
    return {"achieved": zeros / total if total else 0.0, "layers": layers, total_key: total, "n_zero": zeros}


def default_frequency(begin_step: int, end_step: int, updates: int = 50) -> int:
    """Recompute masks about ``updates`` times over the ramp (at least every step)."""
    return max(1, math.ceil((end_step - begin_step) / updates))


class _OnSchedule:
    """What the gradual policies share: masks change only where the schedule updates them.

    A subclass has a ``schedule`` and computes the masks of one update (``masks_at``).
    """

    schedule: PruningSchedule

    def __call__(self, step: int, weights: Tensors, masks: Tensors | None) -> dict[str, torch.Tensor] | None:
        """New masks before ``step``, or ``None`` when the schedule does not update there.

        Parameters
        ----------
        step : int
        weights : mapping of name to Tensor of shape (K, ...)
            The stacked weights of the policy's ``names``.
        masks : mapping of name to bool Tensor of shape (K, ...), optional
            The current masks (``None`` before the first update).
        """
        if not self.schedule.updates_at(step):
            return None
        return self.masks_at(weights, self.schedule.sparsity_at(step), masks)

    def masks_at(self, weights: Tensors, sparsity: float, masks: Tensors | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@dataclass(frozen=True)
class GradualMagnitudePruning(_OnSchedule):
    """Mask policy of gradual magnitude pruning: the smallest weights, on Zhu & Gupta's schedule.

    Each model of the stack is ranked on its own weights, so every model reaches the target on
    its own. With ``schedule.final == 0`` it never returns masks: that is dense training.

    Attributes
    ----------
    schedule : PruningSchedule
    names : tuple of str
        The parameters it prunes (from :func:`prunable_weights`).
    """

    schedule: PruningSchedule
    names: tuple[str, ...]

    @property
    def target(self) -> float:
        """The final sparsity."""
        return self.schedule.final

    def masks_at(self, weights: Tensors, sparsity: float, masks: Tensors | None) -> dict[str, torch.Tensor]:
        """The magnitude masks of one update: a pruned weight stays pruned."""
        return magnitude_masks(weights, sparsity, scope=self.schedule.scope, previous=masks, batch_dims=1)

    def to_dict(self) -> dict:
        """The schedule, as a run record states it."""
        return self.schedule.to_dict()


@dataclass(frozen=True)
class FixedMasks:
    """Mask policy that holds the starting weights' zeros from the first step to the last.

    The methods that choose their masks before training (random masks, one-shot pruning of a
    parent, a lottery ticket's round) zero the pruned weights in the starting point; this policy
    reads the masks off those zeros at step 0 and never changes them, so the pruned weights stay
    zero however the optimizer moves the others.

    Attributes
    ----------
    names : tuple of str
        The parameters it masks.
    target : float
        The sparsity the starting point was pruned to, which the loop checks at the end.
    origin : str
        How the zeros were chosen (``"random"``, ``"parent-magnitude"``, ...), for the record.
    """

    names: tuple[str, ...]
    target: float
    origin: str

    def __call__(self, step: int, weights: Tensors, masks: Tensors | None) -> dict[str, torch.Tensor] | None:
        """Before the first step, ``weights != 0`` (bool, shape (K, ...)); afterwards ``None``."""
        if masks is not None:
            return None
        return {name: w.detach() != 0 for name, w in weights.items()}

    def to_dict(self) -> dict:
        """What the run record states: fixed masks, their origin and the target."""
        return {"kind": "fixed", "origin": self.origin, "final": self.target}


# ---- structured pruning: whole output channels (filters) of conv layers ----------------------


def conv_weights(model: nn.Module, *, exclude: Sequence[str] = ()) -> list[str]:
    """Names of the conv weights whose filters structured pruning may remove.

    Every ``nn.Conv1d/2d/3d`` weight not matched by ``exclude`` (as :func:`prunable_weights`);
    linear layers keep all their units.
    """
    patterns = exclude_patterns(exclude)
    return [
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
        and not any(p.fullmatch(name) for p in patterns)
    ]


def channel_coupled(model: nn.Module, names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The parameters that belong to each conv weight's output channels.

    A filter removed must take its whole feature map with it, or the channel would still carry
    a constant: its conv's bias, and the affine weight and bias of a BatchNorm applied directly
    to the conv's output (found by tracing the model with ``torch.fx``; a model that cannot be
    traced couples the bias only).

    Parameters
    ----------
    model : nn.Module
    names : sequence of str
        Conv weight names (:func:`conv_weights`).

    Returns
    -------
    dict of str to tuple of str
        Each conv weight's name to the names of its coupled parameters, each of shape (C_out,).
    """
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    following: dict[str, str] = {}
    try:
        import torch.fx

        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any tracing failure only loses the BatchNorm coupling
        graph = None
    if graph is not None:
        for node in graph.nodes:
            if node.op != "call_module" or not isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
                continue
            source = node.args[0] if node.args else None
            if getattr(source, "op", None) == "call_module" and len(source.users) == 1:
                following[source.target] = node.target
    coupled = {}
    for name in names:
        module = name[: -len(".weight")] if name.endswith(".weight") else ""
        extra = [f"{module}.bias" if module else "bias"]
        norm = following.get(module)
        if norm is not None:
            extra += [f"{norm}.weight", f"{norm}.bias"]
        coupled[name] = tuple(n for n in extra if n in params)
    return coupled


@torch.no_grad()
def filter_masks(
    weights: Mapping[str, torch.Tensor],
    sparsity: float,
    *,
    previous: Mapping[str, torch.Tensor] | None = None,
    batch_dims: int = 0,
    groups: Sequence[Sequence[str]] | None = None,
) -> dict[str, torch.Tensor]:
    """Channel masks that remove the filters of smallest L2 norm, ``round(sparsity * C_out)`` a group.

    Parameters
    ----------
    weights : mapping of name to Tensor of shape (*B, C_out, C_in, ...)
        Conv weights; ``batch_dims`` leading axes index models trained jointly.
    sparsity : float
        Fraction of each group's output channels to remove.
    previous : mapping of name to bool Tensor of shape (*B, C_out), optional
        Current channel masks: a removed filter ranks below every live one, so it stays removed
        while the target grows.
    batch_dims : int, default 0
    groups : sequence of sequence of str, optional
        Weights whose output channels are removed together (coupled by a residual sum,
        :func:`._compact.conv_groups`), each of the same ``C_out``: channel ``c`` of a group is
        ranked by the L2 norm of the group's filters ``c`` concatenated, and removed from all of
        them. Default: every weight a group of its own, ranked by its filter's norm.

    Returns
    -------
    dict of name to bool Tensor of shape (*B, C_out)
        ``True`` keeps the channel. A stable sort breaks ties towards the lower channel index.
    """
    if groups is None:
        groups = [(name,) for name in weights]
    masks = {}
    for group in groups:
        filters = torch.cat([weights[n].detach().float().flatten(start_dim=batch_dims + 1) for n in group], dim=-1)
        score = filters.norm(dim=-1)  # (*B, C_out)
        if previous is not None:
            alive = torch.stack([previous[n] for n in group]).all(dim=0)
            score = torch.where(alive, score, -1.0)
        keep = _keep_mask(score, round(sparsity * score.shape[-1]))
        for name in group:
            masks[name] = keep.clone()
    return masks


@torch.no_grad()
def channel_report(params: Tensors, names: Iterable[str]) -> dict[str, object]:
    """Achieved channel sparsity: the fraction of filters that are entirely zero.

    Parameters
    ----------
    params : mapping of name to Tensor
        One model's parameters (no model axis).
    names : iterable of str
        Conv weights of shape (C_out, C_in, ...).

    Returns
    -------
    dict
        ``{"achieved": float, "layers": {name: float}, "n_channels": int, "n_zero": int}``.
    """
    counts = ((name, int((params[name].flatten(start_dim=1) == 0).all(dim=1).sum()), params[name].shape[0])
              for name in names)  # fmt: skip
    return _zero_report(counts, "n_channels")


@dataclass(frozen=True)
class GradualFilterPruning(_OnSchedule):
    """Mask policy of structured pruning: whole filters of smallest L2 norm, on Zhu & Gupta's schedule.

    At each update every group of coupled conv layers (one conv alone, or the convs whose outputs
    a residual sum adds, :func:`._compact.conv_groups`) of every model loses the output channels
    of smallest L2 norm (over the group's filters together) until ``round(s_t * C_out)`` are gone,
    ``s_t`` following the cubic schedule to the final channel sparsity. A removed filter takes
    its coupled parameters with it (:func:`channel_coupled`), so its feature map is zero, as if
    the channel had been cut out; in a residual group it is the same channel of every conv, so
    the sum carries no trace of it either.

    Attributes
    ----------
    schedule : PruningSchedule
        ``final`` is the fraction of channels removed from each group.
    names : tuple of str
        The conv weights it prunes.
    coupled : tuple of (str, tuple of str)
        Each conv weight's coupled parameters (bias, following BatchNorm).
    target : float
        The fraction of the weights of :attr:`names` removed at the end: each layer loses
        ``round(final * C_out)`` whole filters, so this is exact, not ``final``.
    groups : tuple of tuple of str
        The weights whose channels are removed together; every name of :attr:`names` in one.
    """

    schedule: PruningSchedule
    names: tuple[str, ...]
    coupled: tuple[tuple[str, tuple[str, ...]], ...]
    target: float
    groups: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def build(cls, model: nn.Module, schedule: PruningSchedule, names: Sequence[str], *,
              groups: Sequence[Sequence[str]] | None = None) -> GradualFilterPruning:  # fmt: skip
        """The policy for ``model``'s conv weights ``names``, with its exact weight target.

        ``groups`` partitions ``names`` into weights pruned together (default: each alone).
        """
        params = dict(model.named_parameters())
        removed = sum(round(schedule.final * params[n].shape[0]) * params[n][0].numel() for n in names)
        total = sum(params[n].numel() for n in names)
        coupled = tuple(channel_coupled(model, names).items())
        groups = tuple(tuple(g) for g in groups) if groups is not None else tuple((n,) for n in names)
        if sorted(n for g in groups for n in g) != sorted(names):
            raise ValueError("the groups of structured pruning must hold each of its weights once")
        return cls(schedule, tuple(names), coupled, removed / total if total else 0.0, groups)

    def masks_at(self, weights: Tensors, sparsity: float, masks: Tensors | None) -> dict[str, torch.Tensor]:
        """Masks of one update for the conv weights (K, C_out, ...) and their coupled parameters
        (K, C_out): a removed filter stays removed."""
        previous = None
        if masks is not None:
            previous = {n: masks[n].flatten(start_dim=2).any(dim=-1) for n in self.names}
        groups = self.groups or tuple((n,) for n in self.names)
        channels = filter_masks(weights, sparsity, previous=previous, batch_dims=1, groups=groups)
        out = {}
        for name, extra in self.coupled:
            keep = channels[name]  # (K, C_out)
            w = weights[name]
            out[name] = keep.view(*keep.shape, *([1] * (w.dim() - 2))).expand_as(w).clone()
            for other in extra:
                out[other] = keep.clone()
        return out

    def to_dict(self) -> dict:
        """The schedule, as a run record states it, with what is pruned (and, in a residual network,
        which conv weights together: ``coupled``)."""
        record = self.schedule.to_dict() | {"unit": "filters (output channels), L2 norm"}
        coupled = [list(g) for g in self.groups if len(g) > 1]
        return record | {"coupled": coupled} if coupled else record
