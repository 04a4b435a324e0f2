"""Evaluating your own models into the interchange format: a model in memory, or model files.

- :mod:`._predict`: :func:`predict`, a model in memory over a data loader, into one model directory;
- :mod:`._loading`: model files, which are untrusted: nothing is unpickled but through
  ``torch.load(weights_only=True)``, and programs (TorchScript, ``torch.export``) are loaded only
  with ``trust_code`` (``docs/predict.md``);
- :mod:`._onnx`: ``.onnx`` files (and ``onnxruntime.InferenceSession`` objects) run by ONNX
  Runtime, the optional ``onnx`` extra, imported only when an ONNX model is evaluated;
- :mod:`._files`: :func:`predict_files` (``pie-audit predict``), saved models on a built-in
  dataset's test split, into a population directory.
"""

from __future__ import annotations

from ._files import predict_files
from ._predict import predict

__all__ = ["predict", "predict_files"]
