# ---- audit fixtures (pie, stats, gate, compare): synthetic populations -----------------------
import numpy as np
import pytest

from synthetic import planted_predictions, write_population

AUDIT_N_CLASSES = 5
AUDIT_HARMED_CLASS = 2


@pytest.fixture
def audit_labels():
    """400 examples, 80 per class, in a shuffled order."""
    return np.random.default_rng(7).permutation(np.arange(400) % AUDIT_N_CLASSES)


@pytest.fixture
def harmed_populations(tmp_path, audit_labels):
    """Baseline (8 models, 90% accurate) and pruned (8 models, 88%, but class 2 at 60%)."""
    base = planted_predictions(8, audit_labels, accuracy=0.9, n_classes=AUDIT_N_CLASSES, seed=1)
    pruned = planted_predictions(
        8,
        audit_labels,
        accuracy=0.88,
        n_classes=AUDIT_N_CLASSES,
        seed=2,
        class_accuracy={AUDIT_HARMED_CLASS: 0.6},
    )
    return (
        write_population(tmp_path / "base", base, audit_labels),
        write_population(tmp_path / "pruned", pruned, audit_labels),
    )


@pytest.fixture
def identical_populations(tmp_path, audit_labels):
    """The same eight models written twice."""
    base = planted_predictions(8, audit_labels, accuracy=0.9, n_classes=AUDIT_N_CLASSES, seed=1)
    return (
        write_population(tmp_path / "same-base", base, audit_labels),
        write_population(tmp_path / "same-pruned", base, audit_labels),
    )


# ---- end of audit fixtures ------------------------------------------------------------------
