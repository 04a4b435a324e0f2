"""Architectures, looked up by name in an explicit registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = [
    "ARCHITECTURES",
    "build_model",
    "input_shape",
    "forward_flops",
    "state_dict_mismatch",
    "SmallCNN",
    "resnet18_cifar",
    "UNKNOWN_ARCHITECTURE",
]

UNKNOWN_ARCHITECTURE = "unknown architecture {arch!r}; choose one of {choices}"


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks and a two-layer classifier, sized for 8x8 to 64x64 inputs.

    Parameters
    ----------
    in_channels : int
        Image channels.
    image_size : int
        Height (= width) of the input; fixes the classifier's input width.
    num_classes : int
        Output classes.
    width : int, default 32
        Channels of the first conv; the second has twice as many.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int, *, width: int = 32):
        super().__init__()
        self.input_shape = (in_channels, image_size, image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * side * side, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def resnet18_cifar(in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool, for 32x32 images."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.input_shape = (in_channels, image_size, image_size)
    return model


#: Each factory takes ``(in_channels, image_size, num_classes)``, and its model records the input it
#: was built for as ``input_shape``, ``(C, H, W)``: what tracing it needs (:func:`input_shape`).
ARCHITECTURES: dict[str, Callable[[int, int, int], nn.Module]] = {
    "small-cnn": SmallCNN,
    "resnet18-cifar": resnet18_cifar,
}


def build_model(
    arch: str, *, in_channels: int, image_size: int, num_classes: int
) -> nn.Module:
    """Build an architecture from the registry with its default (global-RNG) initialisation."""
    try:
        factory = ARCHITECTURES[arch]
    except KeyError:
        raise ConfigError(
            UNKNOWN_ARCHITECTURE.format(arch=arch, choices=", ".join(ARCHITECTURES))
        ) from None
    if arch == "small-cnn" and image_size % 4:
        raise ConfigError(f"small-cnn needs an image size divisible by 4, got {image_size}")
    return factory(in_channels, image_size, num_classes)


def input_shape(model: nn.Module) -> tuple[int, int, int]:
    """The ``(C, H, W)`` of one input that a registry model was built for.

    What tracing the model takes (structured pruning finds its coupled layers so); small-cnn's
    classifier fixes the image size, so a model cannot be traced on just any input.

    Raises
    ------
    ConfigError
        A model that does not record it (not built by a factory of :data:`ARCHITECTURES`).
    """
    shape = getattr(model, "input_shape", None)
    if not (isinstance(shape, tuple) and len(shape) == 3):
        raise ConfigError(f"{type(model).__name__} does not record the input shape it was built for")
    return shape


def _listed(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def state_dict_mismatch(model: nn.Module, state: Any) -> str | None:
    """Why ``model.load_state_dict(state, strict=True)`` would fail, in one line; ``None`` if it fits.

    Said without loading anything, so that a file of weights can be refused by name before a
    model is touched: a ``state`` that is not a mapping of names to tensors, the keys the model
    has that ``state`` lacks, the keys it does not have, and the first tensors whose shapes differ.

    Parameters
    ----------
    model : nn.Module
        The architecture the weights are for.
    state : object
        What was read from the file (``torch.load(weights_only=True)``).

    Examples
    --------
    >>> model = nn.Linear(2, 3)
    >>> state_dict_mismatch(model, {"weight": torch.zeros(3, 4), "bias": torch.zeros(3)})
    'weight has shape (3, 4), the architecture (3, 2)'
    >>> state_dict_mismatch(model, {"weight": torch.zeros(3, 2)}), state_dict_mismatch(model, model.state_dict())
    ('missing keys: bias', None)
    """
    if not isinstance(state, Mapping):
        return f"a {type(state).__name__}, not a state dict (a mapping of parameter names to tensors)"
    not_tensors = [str(k) for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if not_tensors:
        return f"not a state dict: entries that are not named tensors: {_listed(not_tensors)}"
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    shapes = [
        f"{k} has shape {tuple(state[k].shape)}, the architecture {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if shapes:
        more = f"; and {len(shapes) - 2} more shapes differ" if len(shapes) > 2 else ""
        problems.append("; ".join(shapes[:2]) + more)
    return "; ".join(problems) or None


def forward_flops(model: nn.Module, image_shape: tuple[int, int, int]) -> float:
    """Multiply-add FLOPs (x2) of one image's forward pass through conv and linear layers.

    Parameters
    ----------
    model : nn.Module
    image_shape : tuple of int
        ``(C, H, W)`` of one input image.
    """
    total = 0.0
    hooks = []

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal total
        kernel = m.weight[0].numel()  # in_channels/groups * kh * kw
        total += 2.0 * out[0].numel() * kernel

    def linear_hook(m: nn.Linear, inp, out):
        nonlocal total
        total += 2.0 * m.in_features * m.out_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *image_shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total
