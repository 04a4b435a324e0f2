"""Evaluating your own models into the interchange format: a model in memory, or model files.

Model files are untrusted: nothing is unpickled but through ``torch.load(weights_only=True)``,
and programs (TorchScript, ``torch.export``) only with ``trust_code`` (``docs/predict.md``).
"""

from __future__ import annotations

from ._predict import predict, predict_files

__all__ = ["predict", "predict_files"]
