"""Compact models: structured pruning's channels removed for real, and rebuilt from a record.

Structured pruning (:class:`._pruning.GradualFilterPruning`) trains with masks: a removed channel
is computed and outputs zero. Once training is over, :func:`compact_model` removes those channels
from the network with Torch-Pruning (Fang et al. 2023, "DepGraph: towards any structural
pruning"), together with everything that depends on them: the BatchNorm that normalises them,
the input channels of the convolutions that read them, the input features of a linear layer
after ``Flatten``, and in a residual network every layer of the residual stream they belong to.
The compact network computes what the masked one computed (the removed channels only ever added
zeros) with fewer parameters and FLOPs.

A compact model is saved as an ordinary weights-only state dict, and its ``run.json`` records its
structure (:func:`structure_record`): the output channels of every conv layer. Nothing of the
network's code is pickled; :func:`compact_architecture` rebuilds it from the registry's
architecture and those counts, and :func:`load_compact` loads a state dict into it, checked
shape for shape. The same Torch-Pruning dependency graph says which conv layers' output channels
are coupled (:func:`conv_groups`), so that training masks them together.
"""

from __future__ import annotations

import copy
import importlib.metadata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, FormatError

__all__ = [
    "CONV_TYPES",
    "STRUCTURE_KEY",
    "conv_groups",
    "compact_model",
    "structure_record",
    "recorded_channels",
    "state_channels",
    "compact_architecture",
    "load_compact",
    "library_version",
    "NOT_COUPLABLE",
    "COMPACT_CHANGED",
    "BAD_STRUCTURE",
    "STRUCTURE_MISMATCH",
]

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Where ``run.json`` records a compact model's structure.
STRUCTURE_KEY = "structure"

NOT_COUPLABLE = (
    "{arch}: conv layer {name!r} shares its output channels with layers of other widths; "
    "structured pruning cannot remove them together"
)
#: Raised as a RuntimeError: a compaction that changes the outputs is a bug in pie-audit.
COMPACT_CHANGED = (
    "compacting {arch} changed its outputs (by up to {error:.3g}): a channel removed was not zero "
    "in every layer that reads it"
)
BAD_STRUCTURE = "{path}: its {key!r} record cannot be rebuilt as {arch} ({reason})"
STRUCTURE_MISMATCH = "{path}: a state dict that does not fit the compact {arch} that {run} records ({reason})"


def library_version() -> str:
    """``torch-pruning <version>``, the version of the installed distribution."""
    return f"torch-pruning {importlib.metadata.version('torch-pruning')}"


def _dependency_graph(model: nn.Module, input_shape: tuple[int, ...]) -> Any:
    """Torch-Pruning's dependency graph of ``model``, traced on one zero input of ``input_shape``.

    Traced in eval mode (Torch-Pruning's own choice, and no BatchNorm statistic moves) with
    autograd on, which the tracer needs; the mode the model came in is restored.
    """
    import torch_pruning as tp

    was_training = model.training
    try:
        with torch.enable_grad():
            # A tuple, so that the tracer calls model(x): given a bare tensor it first tries
            # model(*x), whose failure would leave layers counted twice.
            example = (torch.zeros(1, *input_shape),)
            return tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    finally:
        model.train(was_training)


def _groups(graph: Any, model: nn.Module, *, arch: str) -> list[tuple[nn.Module, list[str], Any]]:
    """Each conv group: its root conv, the names of its convs whose output channels are coupled,
    and Torch-Pruning's group of every channel of the root (what removing them touches).

    In the order of ``model.named_modules()``, each group's convs too; every conv is in one group.

    Raises
    ------
    ConfigError
        :data:`NOT_COUPLABLE`: coupled convs of different widths (a coupling by a concatenation
        or a slice, which structured pruning does not do).
    """
    seen: set[nn.Module] = set()
    groups = []
    for module in model.modules():
        if not isinstance(module, CONV_TYPES) or module in seen:
            continue
        pruner = graph.get_pruner_of_module(module)
        group = graph.get_pruning_group(module, pruner.prune_out_channels, idxs=list(range(module.out_channels)))
        members = {
            dep.target.module
            for dep, _ in group
            if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(dep.target.module, CONV_TYPES)
        }
        members.add(module)
        ordered = [(n, m) for n, m in model.named_modules() if m in members]
        for member_name, member in ordered:
            if member.out_channels != module.out_channels:
                raise ConfigError(NOT_COUPLABLE.format(arch=arch, name=member_name))
        seen |= members
        groups.append((module, [n for n, _ in ordered], group))
    return groups


def conv_groups(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, ...]]:
    """The conv layers whose output channels are coupled, by module name.

    Two conv layers are coupled when their outputs are added (a residual block's last conv, the
    block's input and a downsampling conv): a channel removed from one but kept in another would
    stay alive through the sum. Found by tracing with Torch-Pruning's ``DependencyGraph``.

    Parameters
    ----------
    model : nn.Module
        Not changed (traced on a copy).
    input_shape : tuple of int
        One input's ``(C, H, W)``.

    Returns
    -------
    list of tuple of str
        Every conv layer in exactly one group, in the order of ``model.named_modules()``; a conv
        coupled to no other is a group of one. small-cnn: ``[("features.0",), ("features.3",)]``.
    """
    # A copy: tracing runs the model, and the caller's model (about to be trained) stays as it was.
    traced = copy.deepcopy(model)
    graph = _dependency_graph(traced, input_shape)
    return [tuple(names) for _, names, _ in _groups(graph, traced, arch=type(model).__name__)]


def _zero_rows(module: nn.Module) -> torch.Tensor | None:
    """Per output channel, whether ``module`` outputs exactly zero there whatever its input;
    ``None`` for a layer this cannot tell of (one of another kind, a bare parameter)."""
    if isinstance(module, (*CONV_TYPES, nn.Linear)):
        zero = (module.weight.detach().flatten(start_dim=1) == 0).all(dim=1)
        if module.bias is not None:
            zero &= module.bias.detach() == 0
        return zero
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if not module.affine:
            # It shifts a zero input by its running mean: not zero.
            return torch.zeros(module.num_features, dtype=torch.bool)
        return (module.weight.detach() == 0) & (module.bias.detach() == 0)
    return None


def _parameter_free(module: Any) -> bool:
    """An operation without weights in the traced graph (a ReLU, a pooling, the residual sum)."""
    return isinstance(module, nn.Module) and next(module.parameters(recurse=False), None) is None


def _dead_channels(graph: Any, group: Any, channels: int) -> list[int]:
    """The channels of a full group that every layer producing them outputs as exactly zero.

    The operations between those layers keep a zero a zero in the registry's architectures
    (ReLU, pooling, sums); :func:`compact_model` checks the outputs after, for any other.
    """
    dead = torch.ones(channels, dtype=torch.bool)
    for item in group:
        module = item.dep.target.module
        if not graph.is_out_channel_pruning_fn(item.dep.handler) or _parameter_free(module):
            continue
        zero = _zero_rows(module)
        if zero is None:
            return []  # a layer we cannot reason about: nothing of its group is removed
        roots = torch.as_tensor(item.root_idxs, dtype=torch.long)
        dead[roots] &= zero[torch.as_tensor(item.idxs, dtype=torch.long)]
    return torch.nonzero(dead).flatten().tolist()


@torch.no_grad()
def compact_model(model: nn.Module, input_shape: tuple[int, ...], *, arch: str = "") -> nn.Module:
    """Remove, in place, every conv output channel that is exactly zero, with what depends on it.

    A channel is removed when every layer that produces it outputs zero there whatever the input
    (zero filter and bias; a BatchNorm with zero scale and shift), in every conv of its group
    (:func:`conv_groups`), as structured pruning's masks leave it. Torch-Pruning removes it from
    those layers and from every layer that reads it (next conv's input channels, the linear
    layer's features after ``Flatten``, BatchNorm statistics). A group whose every channel is zero
    keeps one (the first), so that the network still has a path from input to output: it outputs
    zero as before.

    Parameters
    ----------
    model : nn.Module
        A registry architecture with its masked weights; changed in place.
    input_shape : tuple of int
        One input's ``(C, H, W)``, to trace the model.
    arch : str, optional
        Its name, for messages.

    Returns
    -------
    nn.Module
        ``model``, compact, in the mode it came in. Its predictions are the masked model's, up to
        floating-point rounding (sums over fewer zero terms): checked on random inputs.

    Raises
    ------
    RuntimeError
        :data:`COMPACT_CHANGED`: the compact model's outputs differ from the masked one's (an
        operation between the layers that did not keep a zero a zero); a bug, not bad input.
    """
    arch = arch or type(model).__name__
    graph = _dependency_graph(model, input_shape)
    plan = []
    for root, _, group in _groups(graph, model, arch=arch):
        dead = _dead_channels(graph, group, root.out_channels)
        if len(dead) == root.out_channels:
            dead = dead[1:]
        if dead:
            plan.append((root, graph.get_pruner_of_module(root).prune_out_channels, dead))
    if not plan:
        return model
    was_training = model.training
    masked = copy.deepcopy(model).eval()
    # Planned first, pruned after: one group's removal changes other groups' input channels only.
    for root, prune_out, dead in plan:
        graph.get_pruning_group(root, prune_out, idxs=dead).prune()
    _check_same_function(masked, model.eval(), input_shape, arch=arch)
    return model.train(was_training)


def _check_same_function(masked: nn.Module, compact: nn.Module, input_shape: tuple[int, ...], *, arch: str) -> None:
    """Raise :data:`COMPACT_CHANGED` unless both models give the same outputs on random inputs (eval mode)."""
    x = torch.randn(4, *input_shape, generator=torch.Generator().manual_seed(0))
    expected, got = masked(x), compact(x)
    scale = max(1.0, float(expected.abs().max()))
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * scale):
        error = float((got - expected).abs().max()) if got.shape == expected.shape else float("nan")
        raise RuntimeError(COMPACT_CHANGED.format(arch=arch, error=error))


def structure_record(model: nn.Module) -> dict[str, Any]:
    """What ``run.json`` records of a compact model (``structure``).

    Returns
    -------
    dict
        ``{"compact": True, "library": "torch-pruning <version>", "channels": {name: out_channels}}``,
        every conv layer by module name in the order of ``model.named_modules()``.
    """
    channels = {name: int(m.out_channels) for name, m in model.named_modules() if isinstance(m, CONV_TYPES)}
    return {"compact": True, "library": library_version(), "channels": channels}


def recorded_channels(run: Mapping[str, Any] | None, *, path: str | Path, arch: str) -> dict[str, int] | None:
    """The conv channel counts a ``run.json`` records for a compact model; ``None`` for a dense one.

    Raises
    ------
    FormatError
        :data:`BAD_STRUCTURE`: a ``structure`` that is not ``{"compact": true, "channels":
        {name: count >= 1}}``, naming ``path`` (the ``run.json``).
    """
    if run is None or STRUCTURE_KEY not in run:
        return None
    record = run[STRUCTURE_KEY]

    def bad(reason: str) -> FormatError:
        return FormatError(BAD_STRUCTURE.format(path=path, key=STRUCTURE_KEY, arch=arch, reason=reason))

    if not isinstance(record, Mapping) or not isinstance(record.get("compact"), bool):
        raise bad("not an object with a true or false 'compact'")
    if not record["compact"]:
        return None
    channels = record.get("channels")
    if not isinstance(channels, Mapping) or not channels:
        raise bad("no 'channels' object of conv layer names to channel counts")
    for name, count in channels.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise bad(f"channels of {name!r} is {count!r}, not a whole number >= 1")
    return dict(channels)


def state_channels(model: nn.Module, state: Mapping[str, Any]) -> dict[str, int] | None:
    """The conv output channels a state dict's shapes say, for ``model``'s conv layers; ``None``
    when a conv weight is missing or not a tensor of the conv's rank."""
    channels = {}
    for name, module in model.named_modules():
        if not isinstance(module, CONV_TYPES):
            continue
        weight = state.get(f"{name}.weight" if name else "weight")
        if not isinstance(weight, torch.Tensor) or weight.dim() != module.weight.dim() or weight.shape[0] < 1:
            return None
        channels[name] = int(weight.shape[0])
    return channels


def compact_architecture(
    arch: str, *, in_channels: int, image_size: int, num_classes: int, channels: Mapping[str, int]
) -> nn.Module:
    """The registry architecture ``arch`` with its conv layers cut to ``channels``, from its code alone.

    The dense architecture is built (:func:`._models.build_model`), then each group of coupled
    conv layers (:func:`conv_groups`) is cut to its recorded count by Torch-Pruning, which
    resizes the layers that depend on it (BatchNorm, the next layers' inputs, the classifier's
    features): the same layers, of the sizes a compact model of ``arch`` has. The weights are the
    fresh initialisation's, to be replaced by :func:`load_compact`.

    Parameters
    ----------
    arch : str
    in_channels, image_size, num_classes : int
        As :func:`._models.build_model`.
    channels : mapping of str to int
        Output channels of every conv layer, by module name (``run.json`` ``structure.channels``).

    Raises
    ------
    ConfigError
        ``channels`` that do not name ``arch``'s conv layers, a count larger than the dense
        layer's, or coupled layers given different counts; one line, without a path (the caller
        names the file).
    """
    from ._models import build_model

    with torch.random.fork_rng(devices=[]):
        model = build_model(arch, in_channels=in_channels, image_size=image_size, num_classes=num_classes)
    convs = {name: m for name, m in model.named_modules() if isinstance(m, CONV_TYPES)}
    unknown = [name for name in channels if name not in convs]
    if unknown:
        raise ConfigError(f"{arch} has no conv layer {unknown[0]!r}")
    missing = [name for name in convs if name not in channels]
    if missing:
        raise ConfigError(f"no channel count for conv layer {missing[0]!r}")
    for name, count in channels.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ConfigError(f"channels of {name!r} is {count!r}, not a whole number >= 1")
        if count > convs[name].out_channels:
            raise ConfigError(f"{name!r} has {count} channels, more than the {convs[name].out_channels} of {arch}")
    graph = _dependency_graph(model, (in_channels, image_size, image_size))
    plan = []
    for root, names, _ in _groups(graph, model, arch=arch):
        counts = {channels[name] for name in names}
        if len(counts) > 1:
            listed = ", ".join(f"{name} {channels[name]}" for name in names)
            raise ConfigError(f"coupled conv layers must keep as many channels as each other, not {listed}")
        keep = counts.pop()
        if keep < root.out_channels:
            plan.append((root, graph.get_pruner_of_module(root).prune_out_channels, list(range(keep, root.out_channels))))
    for root, prune_out, removed in plan:
        graph.get_pruning_group(root, prune_out, idxs=removed).prune()
    return model


def load_compact(
    state: Mapping[str, torch.Tensor],
    *,
    arch: str,
    in_channels: int,
    image_size: int,
    num_classes: int,
    channels: Mapping[str, int],
    path: str | Path,
    run: str | Path,
) -> nn.Module:
    """A compact model rebuilt from ``arch``'s code and ``channels``, loaded with ``state``.

    Parameters
    ----------
    state : mapping of str to Tensor
        Read with ``torch.load(weights_only=True)``.
    arch, in_channels, image_size, num_classes, channels
        As :func:`compact_architecture`.
    path : path
        The model file, for messages.
    run : path
        The record that gave ``channels`` (its ``run.json``), for messages.

    Returns
    -------
    nn.Module
        On the CPU, ``load_state_dict(state, strict=True)`` done.

    Raises
    ------
    FormatError
        :data:`BAD_STRUCTURE` (the record cannot be rebuilt, naming ``run``) or
        :data:`STRUCTURE_MISMATCH` (``state``'s keys or shapes differ from the rebuilt model's,
        naming ``path``).
    """
    from ._models import state_dict_mismatch

    try:
        model = compact_architecture(arch, in_channels=in_channels, image_size=image_size,
                                     num_classes=num_classes, channels=channels)  # fmt: skip
    except ConfigError as e:
        raise FormatError(BAD_STRUCTURE.format(path=run, key=STRUCTURE_KEY, arch=arch, reason=e)) from e
    reason = state_dict_mismatch(model, state)
    if reason is not None:
        raise FormatError(STRUCTURE_MISMATCH.format(path=path, arch=arch, run=run, reason=reason))
    model.load_state_dict(state, strict=True)
    return model
