"""The joint trainer: K models at once, each the same as when trained alone."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from pie_audit.data import Dataset
from pie_audit.joint import default_jointly, forward_flops, train_models_jointly
from pie_audit.models import build_model
from pie_audit.training import PruneConfig, TrainConfig, train_model

from tiny import PRUNE_90, TINY_CONFIG, tiny_digits


@pytest.fixture(scope="module")
def alone():
    return [
        train_model(tiny_digits(), arch="small-cnn", seed=s, config=TINY_CONFIG, prune=PRUNE_90)
        for s in (0, 1, 2)
    ]


@pytest.fixture(scope="module")
def together():
    return train_models_jointly(
        tiny_digits(), arch="small-cnn", seeds=[0, 1, 2], config=TINY_CONFIG, prune=PRUNE_90
    )


def test_joint_matches_one_at_a_time(alone, together):
    for a, b in zip(alone, together):
        assert a.seed == b.seed
        agreement = (a.probabilities.argmax(1) == b.probabilities.argmax(1)).mean()
        assert agreement >= 0.97
        assert abs(a.accuracy - b.accuracy) <= 0.02
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-3)
        assert a.sparsity == b.sparsity  # the same masks reach the same exact counts
        assert list(a.state_dict) == list(b.state_dict)
        for key in a.state_dict:
            torch.testing.assert_close(a.state_dict[key], b.state_dict[key], atol=1e-4, rtol=1e-3)


def test_models_differ_from_each_other(together):
    assert not np.array_equal(together[0].probabilities, together[1].probabilities)


def test_a_model_does_not_depend_on_its_companions(together):
    other = train_models_jointly(
        tiny_digits(), arch="small-cnn", seeds=[5, 0], config=TINY_CONFIG, prune=PRUNE_90
    )
    np.testing.assert_allclose(other[1].probabilities, together[0].probabilities, atol=1e-5)


def test_masks_hold_for_every_model_at_every_step():
    steps = []

    def check(step, params, masks):
        if masks is None:
            return
        for name, mask in masks.items():
            assert mask.shape[0] == 2
            assert torch.all(params[name][~mask] == 0)
            # Each model is pruned to the target on its own.
            pruned = (~mask).flatten(1).sum(1)
            assert pruned[0] == pruned[1]
        steps.append(step)

    train_models_jointly(
        tiny_digits(), arch="small-cnn", seeds=[0, 1], config=replace(TINY_CONFIG, epochs=3),
        prune=PRUNE_90, on_step=check,
    )  # fmt: skip
    assert steps


def _tiny_rgb() -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(
        name="synthetic-rgb",
        classes=tuple("abcd"),
        x_train=torch.randn(16, 3, 32, 32, generator=g),
        y_train=torch.randint(0, 4, (16,), generator=g),
        x_test=torch.randn(6, 3, 32, 32, generator=g),
        y_test=torch.randint(0, 4, (6,), generator=g),
        split="random",
        augment=True,
    )


def test_batchnorm_statistics_are_per_model_and_used_in_evaluation():
    data = _tiny_rgb()
    config = TrainConfig(epochs=1, batch_size=8, lr=0.01, augment=True)
    prune = PruneConfig(sparsity=0.5, begin=0.0, end=0.5)
    joint = train_models_jointly(data, arch="resnet18-cifar", seeds=[0, 1], config=config, prune=prune)
    for result in joint:
        alone = train_model(data, arch="resnet18-cifar", seed=result.seed, config=config, prune=prune)
        for key in ("bn1.running_mean", "bn1.running_var", "layer4.1.bn2.running_mean"):
            # Different convolution kernels (grouped vs NHWC) round differently: close, not equal.
            torch.testing.assert_close(result.state_dict[key], alone.state_dict[key], atol=1e-3, rtol=1e-2)
        assert result.state_dict["bn1.num_batches_tracked"] == 2
        np.testing.assert_allclose(result.probabilities, alone.probabilities, atol=1e-3)
    assert not torch.equal(joint[0].state_dict["bn1.running_mean"], joint[1].state_dict["bn1.running_mean"])


def test_forward_flops_hand_computed():
    model = build_model("small-cnn", in_channels=1, image_size=8, num_classes=10)
    conv1 = 2 * (32 * 8 * 8) * 9
    conv2 = 2 * (64 * 4 * 4) * (32 * 9)
    linear = 2 * 256 * 128 + 2 * 128 * 10
    assert forward_flops(model, (1, 8, 8)) == conv1 + conv2 + linear


def test_default_jointly_rule():
    digits = tiny_digits()
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_jointly("small-cnn", digits, cpu, 16) == 16
    assert default_jointly("small-cnn", digits, cpu, 5) == 5
    assert default_jointly("small-cnn", digits, cpu, 100) == 16
    big = replace(digits, x_train=torch.zeros(4, 1, 28, 28), x_test=torch.zeros(2, 1, 28, 28))
    assert default_jointly("small-cnn", big, cpu, 16) == 1  # compute-bound on a CPU
    assert default_jointly("resnet18-cifar", _tiny_rgb(), cpu, 16) == 1
    assert default_jointly("small-cnn", big, cuda, 100) == 32
