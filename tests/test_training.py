"""The one-model training loop: determinism, sparsity reached, masks hold at every step."""

import numpy as np
import pytest
import torch

from pie_audit.errors import ConfigError
from pie_audit.training import (
    PruneConfig,
    TrainConfig,
    augment_batch,
    cosine_lr,
    derive_seeds,
    make_schedule,
    resolve_device,
    train_model,
)

from tiny import PRUNE_90, TINY_CONFIG, tiny_digits


def test_same_seed_same_predictions_on_cpu():
    a = train_model(tiny_digits(), arch="small-cnn", seed=3, config=TINY_CONFIG, prune=PRUNE_90)
    b = train_model(tiny_digits(), arch="small-cnn", seed=3, config=TINY_CONFIG, prune=PRUNE_90)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k])


def test_different_seeds_differ_in_init_and_data_order():
    a = train_model(tiny_digits(), arch="small-cnn", seed=0, config=TINY_CONFIG, prune=PruneConfig())
    b = train_model(tiny_digits(), arch="small-cnn", seed=1, config=TINY_CONFIG, prune=PruneConfig())
    assert not np.array_equal(a.probabilities, b.probabilities)
    assert len(set(derive_seeds(0)) | set(derive_seeds(1))) == 4


def test_pruned_model_reaches_target_and_masks_hold_every_step():
    checked = []

    def check(step, model, masks):
        if masks is None:
            return
        params = dict(model.named_parameters())
        for name, mask in masks.items():
            assert torch.all(params[name][~mask] == 0), f"step {step}: {name} revived"
        checked.append(step)

    result = train_model(
        tiny_digits(), arch="small-cnn", seed=0, config=TINY_CONFIG, prune=PRUNE_90, on_step=check
    )
    assert checked, "pruning never started"
    layers = result.sparsity["layers"]
    for name, fraction in layers.items():
        n = result.state_dict[name].numel()
        assert int((result.state_dict[name] == 0).sum()) == round(0.9 * n)
        assert fraction == pytest.approx(round(0.9 * n) / n)
    assert result.sparsity["achieved"] == pytest.approx(0.9, abs=1e-3)
    assert result.sparsity["target"] == 0.9
    # Biases and the final classifier stay dense.
    assert int((result.state_dict["classifier.3.weight"] == 0).sum()) == 0


def test_baseline_is_dense_and_learns():
    config = TrainConfig(epochs=10, batch_size=32, lr=0.05)
    result = train_model(tiny_digits(), arch="small-cnn", seed=0, config=config, prune=PruneConfig())
    assert result.sparsity["achieved"] == 0.0
    assert result.accuracy > 0.8  # 10 classes: chance is 0.1
    assert result.probabilities.shape == (120, 10)
    assert result.probabilities.dtype == np.float32
    np.testing.assert_allclose(result.probabilities.sum(1), 1.0, rtol=1e-5)


def test_global_scope_reaches_overall_target():
    result = train_model(
        tiny_digits(),
        arch="small-cnn",
        seed=0,
        config=TINY_CONFIG,
        prune=PruneConfig(sparsity=0.75, scope="global"),
    )
    report = result.sparsity
    assert report["n_zero"] == round(0.75 * report["n_weights"])


def test_schedule_from_fractions():
    sched = make_schedule(PruneConfig(sparsity=0.5, begin=0.2, end=0.8), 100)
    assert (sched.begin_step, sched.end_step, sched.frequency) == (20, 80, 2)
    assert sched.sparsity_at(80) == 0.5


def test_cosine_lr():
    assert cosine_lr(0, total_steps=100, base_lr=0.1) == pytest.approx(0.1)
    assert cosine_lr(50, total_steps=100, base_lr=0.1) == pytest.approx(0.05)
    assert cosine_lr(100, total_steps=100, base_lr=0.1) == pytest.approx(0.0)
    assert cosine_lr(0, total_steps=100, base_lr=0.1, warmup_steps=10) == pytest.approx(0.01)


def test_augment_batch_shifts_and_flips_deterministically():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    a = augment_batch(x, torch.Generator().manual_seed(0), pad=2)
    b = augment_batch(x, torch.Generator().manual_seed(0), pad=2)
    assert a.shape == x.shape and torch.equal(a, b)
    # Zero padding is 2 wide: each output is a (possibly flipped) 8x8 window of the padded image.
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        found = any(
            torch.equal(a[i], w) or torch.equal(a[i], w.flip(-1))
            for dy in range(5)
            for dx in range(5)
            for w in [padded[i, :, dy : dy + 8, dx : dx + 8]]
        )
        assert found


def test_config_validation():
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="sparsity must be in"):
        PruneConfig(sparsity=1.0)
    with pytest.raises(ConfigError, match="begin <= end"):
        PruneConfig(sparsity=0.5, begin=0.9, end=0.1)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
