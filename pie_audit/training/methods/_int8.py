"""``int8``: post-training static int8 quantization of a trained dense parent (Jacob et al. 2018).

Nothing is trained: each seed's parent model is quantized (:mod:`.._quantization`) and evaluated
on the CPU, so this method does not run the training loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ...data import Dataset
from .._loop import TrainConfig, TrainedModel, init_model
from .._pruning import FixedMasks, prunable_weights
from ._base import check_count
from ._parent import FromParent, load_parent

__all__ = ["Int8Quantization", "CALIBRATION_IMAGES", "calibration_indices"]

#: Training images that calibrate an ``int8`` model's activation ranges unless
#: ``calibration-images`` says otherwise (all of them when the split is smaller). PyTorch's
#: static quantization recipes calibrate on a few hundred to a thousand images.
CALIBRATION_IMAGES = 512


def calibration_indices(n_train: int, n: int, seed: int) -> np.ndarray:
    """Which training images calibrate the int8 model of ``seed``: ``min(n, n_train)`` of them.

    The first ``n`` of a permutation of the training split drawn from a stream of the model's
    seed that is independent of its initialisation, data order and masks, so each model of a
    population calibrates on its own sample and the same model twice on the same one.

    Returns
    -------
    ndarray of int64, shape (min(n, n_train),)
        Sorted indices into the training split.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    return np.sort(rng.permutation(n_train)[: min(n, n_train)])


@dataclass(frozen=True)
class Int8Quantization(FromParent):
    """Post-training static int8 quantization of a trained dense parent, seed by seed.

    Each seed's model is the parent population's model of the same seed (``source``), with
    int8 weights (per output channel, symmetric) and activations (per tensor, affine) whose
    ranges are calibrated on ``calibration_images`` training images
    (:func:`calibration_indices`), by the FX graph mode flow of the pinned torch with its x86
    backend (:mod:`pie_audit.training._quantization`). Nothing is trained; the model is
    evaluated on the CPU with int8 kernels. ``model.pt`` holds the quantized state dict, which
    :func:`pie_audit.training.load_quantized` reads back with ``weights_only``. Each
    ``run.json`` names its parent, so the audit pairs them (Jacob et al. 2018, "Quantization
    and training of neural networks for efficient integer-arithmetic-only inference"; the
    audit of Hooker et al. 2020, "Characterising bias in compressed models").
    """

    source: str
    calibration_images: int = CALIBRATION_IMAGES
    method: ClassVar[str] = "int8"

    def __post_init__(self) -> None:
        check_count("calibration-images", self.calibration_images)

    def policy(self, model: nn.Module, total_steps: int) -> FixedMasks:
        """No masks: the weights are the parent's, quantized after training."""
        return FixedMasks((), 0.0, "none")

    def train(self, dataset: Dataset, *, arch: str, seeds: Sequence[int], config: TrainConfig,
              device: torch.device | str = "cpu", on_epoch: Any = None) -> list[TrainedModel]:  # fmt: skip
        """Quantize each seed's parent and evaluate it on the CPU; each result records its parent.

        ``device`` is not used: int8 kernels run on the CPU, and the record says so.
        """
        from .._quantization import int8_weights, predict_probabilities, quantize_static, scheme

        labels = dataset.y_test.numpy()
        results = []
        for seed in seeds:
            started = time.perf_counter()
            state, parent = load_parent(self.source, seed, arch=arch, dataset=dataset)
            model = init_model(arch, dataset, seed)
            model.load_state_dict(state)
            chosen = calibration_indices(len(dataset.x_train), self.calibration_images, seed)
            quantized = quantize_static(model, dataset.x_train[torch.from_numpy(chosen)])
            probabilities = predict_probabilities(quantized, dataset.x_test, batch_size=config.eval_batch_size)
            saved = quantized.state_dict()
            record = {"parent": parent,
                      "quantization": scheme() | {"calibration_images": int(len(chosen))}}  # fmt: skip
            results.append(
                TrainedModel(
                    seed=seed,
                    state_dict=saved,
                    probabilities=probabilities,
                    accuracy=float((probabilities.argmax(1) == labels).mean()),
                    # The zeros among the int8 weights (quantization rounds the smallest to 0),
                    # over the layers the other methods prune, so the figures compare.
                    sparsity=int8_weights(saved, names=prunable_weights(model))
                    | {"target": 0.0},
                    schedule={"kind": "post-training-quantization"},
                    steps=0,
                    wall_time_s=time.perf_counter() - started,
                    device="cpu",
                    jointly=1,
                    record=record,
                )
            )
        return results
