"""Datasets: digits (embedded), Fashion-MNIST, CIFAR-10 and CelebA read offline, and their hash."""

from __future__ import annotations

from ._datasets import DATASETS, TARGETED, Dataset, dataset_hash, load_dataset, resolve_target

__all__ = ["DATASETS", "TARGETED", "Dataset", "dataset_hash", "load_dataset", "resolve_target"]
