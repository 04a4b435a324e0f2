"""Datasets: digits (embedded), Fashion-MNIST and CIFAR-10 read offline, and their hash."""

from __future__ import annotations

from ._datasets import DATASETS, Dataset, dataset_hash, load_dataset

__all__ = ["DATASETS", "Dataset", "dataset_hash", "load_dataset"]
