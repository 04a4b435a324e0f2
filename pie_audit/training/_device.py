"""Which torch device a run uses: ``auto`` resolved, an explicit one checked."""

from __future__ import annotations

import torch

from ..errors import ConfigError

__all__ = ["resolve_device"]


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must be available.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"}

    Returns
    -------
    torch.device

    Raises
    ------
    ConfigError
        An unknown device, or one this machine does not have.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise ConfigError(f"unknown device {device!r}; choose auto, cpu, cuda or mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available")
    if device == "mps" and not _mps_available():
        raise ConfigError("device mps requested but MPS is not available")
    return torch.device(device)
