"""Packing K models into one: how a stack of models runs.

The training loop (:func:`pie_audit.training.train_models`) trains K models of one architecture
(K = 1 included) as the one module :func:`pack` returns. Its parameters and buffers are the K
models', stacked along a leading axis, ``(K, ...)``, under each model's own names, so masks, the
optimizer and checkpoints see ordinary stacked tensors. Inside, model k owns channels
``[k*C, (k+1)*C)`` of every activation: convolutions are grouped convolutions (``groups * K``),
linear layers batched matrix products, BatchNorm a BatchNorm over K*C channels (per-channel
statistics are per-model statistics), and element-wise or per-channel modules (ReLU, pooling,
flatten, residual additions) work unchanged. With K = 1 every packed layer computes what the plain
layer does (a grouped convolution with ``groups * 1`` groups is the convolution itself), so one
model alone runs the same code as a group.

Packing was chosen over ``vmap(functional_call)``: measured on a 2-core CPU
(bench/train_population.py) it ran 8x8 digits at K=16 about 1.6 times as fast, because vmap spends
its time re-laying out activations for pooling. Packing is only correct when nothing mixes
channels across models, so :func:`packable` checks the architecture and every layer; the training
loop refuses an architecture that fails the check rather than train it some other way.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PACKABLE_ARCHITECTURES", "packable", "pack"]

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


def _stack(tensors: Sequence[torch.Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach() for t in tensors]))


class _PackedConv2d(nn.Module):
    def __init__(self, convs: Sequence[nn.Conv2d]):
        super().__init__()
        conv = convs[0]
        self.k = len(convs)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.groups = conv.groups
        weight = torch.stack([c.weight.detach() for c in convs])  # (K, out, in/groups, kh, kw)
        # Stored so that the grouped (K*out, ...) view is channels_last, like the activations, as
        # in a plain module moved to channels_last (measured ~2% faster a step on CPU).
        grouped = weight.flatten(0, 1).contiguous(memory_format=torch.channels_last)
        self.weight = nn.Parameter(grouped.unflatten(0, weight.shape[:2]))
        self.bias = _stack([c.bias for c in convs]) if conv.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.flatten() if self.bias is not None else None
        return F.conv2d(
            x, self.weight.flatten(0, 1), bias, self.stride, self.padding, self.dilation,
            self.groups * self.k,
        )  # fmt: skip


class _PackedLinear(nn.Module):
    def __init__(self, linears: Sequence[nn.Linear]):
        super().__init__()
        linear = linears[0]
        self.k = len(linears)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = _stack([m.weight for m in linears])  # (K, out, in)
        self.bias = _stack([m.bias for m in linears]) if linear.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.k == 1:
            # One model's batched product is a plain one; addmm skips bmm's reshapes (measured
            # ~5% of a training step of the small CNN on digits).
            return F.linear(x, self.weight[0], self.bias[0] if self.bias is not None else None)
        lead = x.shape[:-1]
        h = x.reshape(-1, self.k, self.in_features).transpose(0, 1)  # (K, N, in)
        w = self.weight.transpose(1, 2)  # (K, in, out)
        out = torch.baddbmm(self.bias[:, None, :], h, w) if self.bias is not None else h @ w
        return out.transpose(0, 1).reshape(*lead, self.k * self.out_features)


class _PackedBatchNorm2d(nn.Module):
    def __init__(self, bns: Sequence[nn.BatchNorm2d]):
        super().__init__()
        bn = bns[0]
        self.k, self.eps, self.momentum = len(bns), bn.eps, bn.momentum
        self.weight = _stack([m.weight for m in bns])  # (K, C)
        self.bias = _stack([m.bias for m in bns])
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, torch.stack([getattr(m, name) for m in bns]))

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


_PACKED_LAYERS = {
    nn.Conv2d: _PackedConv2d,
    nn.Linear: _PackedLinear,
    nn.BatchNorm2d: _PackedBatchNorm2d,
}


def pack(models: Sequence[nn.Module]) -> nn.Module:
    """The K models as one module that runs them side by side.

    Parameters
    ----------
    models : sequence of nn.Module
        K >= 1 instances of one architecture, each passing :func:`packable`; they are not changed.

    Returns
    -------
    nn.Module
        Called on ``x`` of shape (K, B, C, H, W) (model k's batch at ``x[k]``), it returns the
        logits, shape (K, B, classes). Its ``named_parameters()``, ``named_buffers()`` and
        ``state_dict()`` are the models' own, stacked: same names, shapes ``(K, ...)``, and
        ``state_dict()[name][k]`` is model k's tensor. ``train()`` and ``eval()`` work as usual,
        and in training mode each model's BatchNorm statistics are its own.

    Examples
    --------
    >>> from pie_audit.training._models import build_model
    >>> models = [build_model("small-cnn", in_channels=1, image_size=8, num_classes=10)
    ...           for _ in range(3)]
    >>> packed = pack(models)
    >>> packed(torch.zeros(3, 5, 1, 8, 8)).shape
    torch.Size([3, 5, 10])
    >>> packed.state_dict()["features.0.weight"].shape
    torch.Size([3, 32, 1, 3, 3])
    """
    k = len(models)
    packed = copy.deepcopy(models[0])
    for name, module in list(packed.named_modules()):
        packed_layer = _PACKED_LAYERS.get(type(module))
        if packed_layer is None:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = packed.get_submodule(parent_name) if parent_name else packed
        setattr(parent, attr, packed_layer([m.get_submodule(name) for m in models]))
    # The architecture's own forward runs on packed (B, K*C, H, W) activations; these hooks
    # translate from and to the stacked (K, B, ...) tensors the caller sees.
    packed.register_forward_pre_hook(lambda module, args: (_pack_input(args[0]),))
    packed.register_forward_hook(lambda module, args, out: _unpack_output(out, k))
    return packed


def _pack_input(x: torch.Tensor) -> torch.Tensor:
    # (K, B, C, H, W) -> (B, K*C, H, W) in channels_last (NHWC) memory, which convolutions run
    # faster on, with CPUs (oneDNN) and CUDA (tensor cores) alike. Allocated as channels_last
    # rather than converted with .contiguous(memory_format=...), which leaves a one-channel input
    # (K*C = 1) in NCHW strides: every layer after it then runs in NCHW, measured 1.3x slower for
    # the small CNN on digits.
    k, b, c, h, w = x.shape
    out = torch.empty(
        (b, k * c, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last
    )
    return out.copy_(x.transpose(0, 1).reshape(b, k * c, h, w))


def _unpack_output(y: torch.Tensor, k: int) -> torch.Tensor:
    # (B, K*classes) -> (K, B, classes)
    b = y.shape[0]
    return y.view(b, k, -1).transpose(0, 1)
