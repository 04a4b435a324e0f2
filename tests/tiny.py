"""Small real data for training tests: a slice of sklearn's digits, so models train in a blink."""

from dataclasses import replace
from functools import lru_cache

from pie_audit.data._datasets import Dataset, load_dataset
from pie_audit.training import PruneConfig, TrainConfig

TINY_CONFIG = TrainConfig(epochs=10, batch_size=32, lr=0.05)
PRUNE_90 = PruneConfig(sparsity=0.9, begin=0.1, end=0.6)


@lru_cache(maxsize=1)
def tiny_digits() -> Dataset:
    full = load_dataset("digits")
    return replace(
        full,
        x_train=full.x_train[:256],
        y_train=full.y_train[:256],
        x_test=full.x_test[:120],
        y_test=full.y_test[:120],
    )
