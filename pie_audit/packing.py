"""Packing K models into one: grouped convolutions over models stacked along the channel axis.

A packed model takes ``(B, K*C, H, W)`` inputs: model k owns channels ``[k*C, (k+1)*C)`` at every
layer. Convolutions become grouped convolutions (``groups * K``), linear layers batched matrix
products, BatchNorm a BatchNorm over K*C channels (per-channel statistics are per-model
statistics), and element-wise or per-channel modules (ReLU, pooling, flatten, residual additions)
work unchanged. Parameters stay stacked ``(K, ...)`` exactly as ``torch.func.stack_module_state``
returns them; the packed layers only view them in grouped shapes, so masks, optimizer and
checkpoints see ordinary stacked tensors.

Measured on a 2-core CPU (bench/train_population.py) this ran 8x8 digits at K=16 about 1.6 times as
fast as ``vmap(functional_call)``, which spends its time re-laying out activations for pooling.
Architectures whose layers mix channels in other ways cannot be packed: :func:`packable` says so
and the joint trainer then falls back to ``vmap``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["packable", "pack_model", "pack_input", "unpack_output"]

# Modules that act on each channel (or element) independently: correct on packed channels as-is.
_CHANNELWISE = (
    nn.ReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Identity,
    nn.Dropout,
)
# Architectures whose forward code (not only their layers) is known to keep channels apart:
# a custom forward could mix channels (a mean over dim 1, say), which no layer check would see.
PACKABLE_ARCHITECTURES = frozenset({"small-cnn", "resnet18-cifar"})


def packable(arch: str, model: nn.Module) -> bool:
    """Whether ``model`` (an instance of registry architecture ``arch``) can be packed."""
    if arch not in PACKABLE_ARCHITECTURES:
        return False
    for module in model.modules():
        if next(module.children(), None) is not None:
            continue  # containers: their leaves are checked
        if isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros":
                return False
        elif isinstance(module, nn.BatchNorm2d):
            if not (module.affine and module.track_running_stats):
                return False
        elif isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                return False
        elif not isinstance(module, (nn.Linear, *_CHANNELWISE)):
            return False
    return True


class _PackedConv2d(nn.Module):
    def __init__(self, conv: nn.Conv2d, k: int):
        super().__init__()
        self.k = k
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.groups = conv.groups
        self.weight = nn.Parameter(torch.empty(0, device="meta"))
        self.bias = nn.Parameter(torch.empty(0, device="meta")) if conv.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.flatten() if self.bias is not None else None
        return F.conv2d(
            x, self.weight.flatten(0, 1), bias, self.stride, self.padding, self.dilation,
            self.groups * self.k,
        )  # fmt: skip


class _PackedLinear(nn.Module):
    def __init__(self, linear: nn.Linear, k: int):
        super().__init__()
        self.k, self.in_features, self.out_features = k, linear.in_features, linear.out_features
        self.weight = nn.Parameter(torch.empty(0, device="meta"))
        self.bias = nn.Parameter(torch.empty(0, device="meta")) if linear.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        h = x.reshape(-1, self.k, self.in_features).transpose(0, 1)  # (K, N, in)
        w = self.weight.transpose(1, 2)  # (K, in, out)
        out = torch.baddbmm(self.bias[:, None, :], h, w) if self.bias is not None else h @ w
        return out.transpose(0, 1).reshape(*lead, self.k * self.out_features)


class _PackedBatchNorm2d(nn.Module):
    def __init__(self, bn: nn.BatchNorm2d, k: int):
        super().__init__()
        self.k, self.eps, self.momentum = k, bn.eps, bn.momentum
        self.weight = nn.Parameter(torch.empty(0, device="meta"))
        self.bias = nn.Parameter(torch.empty(0, device="meta"))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, torch.empty(0, device="meta"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        momentum = self.momentum
        if self.training:
            # Every model sees one batch per step, so their counters move together.
            self.num_batches_tracked.add_(1)
            if momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked[0])
        # The stacked (K, C) statistics viewed as K*C channels: updates land in the stacked buffer.
        return F.batch_norm(
            x, self.running_mean.view(-1), self.running_var.view(-1), self.weight.flatten(),
            self.bias.flatten(), self.training, momentum or 0.0, self.eps,
        )  # fmt: skip


def pack_model(model: nn.Module, k: int) -> nn.Module:
    """A parameter-less packed copy of ``model`` for ``torch.func.functional_call``.

    Call it with the stacked parameters and buffers of K models (same names as ``model``'s) and a
    packed input from :func:`pack_input`.
    """
    packed = copy.deepcopy(model).to("meta")
    replacements = {nn.Conv2d: _PackedConv2d, nn.Linear: _PackedLinear, nn.BatchNorm2d: _PackedBatchNorm2d}
    for name, module in list(packed.named_modules()):
        for kind, packed_kind in replacements.items():
            if type(module) is kind:
                parent_name, _, attr = name.rpartition(".")
                parent = packed.get_submodule(parent_name) if parent_name else packed
                setattr(parent, attr, packed_kind(module, k))
    return packed


def pack_input(x: torch.Tensor) -> torch.Tensor:
    """``(K, B, C, H, W)`` -> ``(B, K*C, H, W)`` in channels_last, the layout packed layers expect."""
    k, b, c, h, w = x.shape
    return x.transpose(0, 1).reshape(b, k * c, h, w).contiguous(memory_format=torch.channels_last)


def unpack_output(y: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, K*classes)`` -> ``(K, B, classes)``."""
    b = y.shape[0]
    return y.view(b, k, -1).transpose(0, 1)
