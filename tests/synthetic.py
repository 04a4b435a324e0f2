"""Synthetic populations in the interchange format, for the audit's tests and benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def planted_predictions(
    n_models: int,
    labels: np.ndarray,
    *,
    accuracy: float,
    n_classes: int,
    seed: int,
    class_accuracy: dict[int, float] | None = None,
) -> np.ndarray:
    """Predictions of shape (n_models, N): right with probability ``accuracy`` (or the class's
    entry in ``class_accuracy``), otherwise a uniformly drawn wrong class."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    p_right = np.full(labels.size, accuracy)
    for c, a in (class_accuracy or {}).items():
        p_right[labels == c] = a
    right = rng.random((n_models, labels.size)) < p_right
    wrong = (labels + rng.integers(1, n_classes, size=(n_models, labels.size))) % n_classes
    return np.where(right, labels, wrong)


def write_population(
    path: Path,
    predictions: np.ndarray,
    labels: np.ndarray,
    *,
    example_ids: np.ndarray | None = None,
    classes: list[str] | None = None,
    shuffle_seed: int | None = None,
    prefix: str = "model-",
    run: dict | None = None,
) -> Path:
    """Write one model directory per row of ``predictions`` (only the required columns).

    With ``shuffle_seed``, each file's rows are in a different random order. With ``classes``
    or ``run``, each model gets a ``run.json`` holding them (and its seed).
    """
    path = Path(path)
    predictions = np.asarray(predictions)
    ids = np.arange(predictions.shape[1]) if example_ids is None else np.asarray(example_ids)
    rng = np.random.default_rng(shuffle_seed)
    for m, row in enumerate(predictions):
        model = path / f"{prefix}{m:03d}"
        model.mkdir(parents=True)
        order = rng.permutation(ids.size) if shuffle_seed is not None else np.arange(ids.size)
        table = pa.table(
            {
                "example_id": pa.array(ids[order].astype(np.int64)),
                "label": pa.array(np.asarray(labels)[order].astype(np.int64)),
                "prediction": pa.array(row[order].astype(np.int64)),
            }
        )
        pq.write_table(table, model / "predictions.parquet")
        if classes is not None or run is not None:
            record = {"seed": m, **({"classes": classes} if classes is not None else {}), **(run or {})}
            (model / "run.json").write_text(json.dumps(record))
    return path
