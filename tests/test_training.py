"""The training loop: K models at once (K = 1 included), each as it would train alone."""

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from torch import nn

from pie_audit.data._datasets import Dataset
from pie_audit.errors import ConfigError
from pie_audit.training import _loop as training_module
from pie_audit.training._pruning import BAD_EXCLUDE
from pie_audit.training._device import resolve_device
from pie_audit.training.methods._gmp import PRUNING_TOO_LATE, PruneConfig, make_schedule
from pie_audit.training.methods import NOTHING_TO_PRUNE
from pie_audit.training._loop import (
    BAD_LR,
    BAD_MOMENTUM,
    BAD_WARMUP,
    BAD_WEIGHT_DECAY,
    DIVERGED,
    NO_SEEDS,
    NOT_A_COUNT,
    NOT_PACKABLE,
    SPARSITY_MISSED,
    TrainConfig,
    augment_batch,
    check_training,
    cosine_lr,
    derive_seeds,
    init_model,
    train_models,
    training_steps,
)

from tiny import PRUNE_90, TINY_CONFIG, tiny_digits


def train(seeds, *, dataset=None, arch="small-cnn", config=TINY_CONFIG, prune=PRUNE_90, **kw):
    return train_models(
        dataset or tiny_digits(), arch=arch, seeds=seeds, config=config, prune=prune, **kw
    )


def tiny_rgb(n_train: int = 16) -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(
        name="synthetic-rgb",
        classes=tuple("abcd"),
        x_train=torch.randn(n_train, 3, 32, 32, generator=g),
        y_train=torch.randint(0, 4, (n_train,), generator=g),
        x_test=torch.randn(6, 3, 32, 32, generator=g),
        y_test=torch.randint(0, 4, (6,), generator=g),
        split="random",
        augment=True,
    )


@pytest.fixture(scope="module")
def alone():
    return [train([seed])[0] for seed in (0, 1, 2)]


@pytest.fixture(scope="module")
def together():
    return train([0, 1, 2])


# ---- one model ------------------------------------------------------------------------------


def test_same_seed_same_predictions_on_cpu(alone):
    [again] = train([0])
    np.testing.assert_array_equal(again.probabilities, alone[0].probabilities)
    for key in again.state_dict:
        assert torch.equal(again.state_dict[key], alone[0].state_dict[key])


def test_different_seeds_differ_in_init_and_data_order(together):
    assert len(set(derive_seeds(0)) | set(derive_seeds(1))) == 4
    assert not np.array_equal(together[0].probabilities, together[1].probabilities)


def test_baseline_is_dense_and_learns():
    config = TrainConfig(epochs=10, batch_size=32, lr=0.05)
    [result] = train([0], config=config, prune=PruneConfig())
    assert result.sparsity["achieved"] == 0.0 and result.sparsity["target"] == 0.0
    assert result.accuracy > 0.8  # 10 classes: chance is 0.1
    assert result.probabilities.shape == (120, 10)
    assert result.probabilities.dtype == np.float32
    np.testing.assert_allclose(result.probabilities.sum(1), 1.0, rtol=1e-5)
    assert result.jointly == 1 and result.steps == 80 and result.device == "cpu"


@pytest.mark.parametrize("k", [1, 2])
def test_pruned_models_reach_target_and_masks_hold_every_step(k):
    checked = []

    def check(step, params, masks):
        if masks is None:
            return
        for name, mask in masks.items():
            assert mask.shape == params[name].shape and mask.shape[0] == k
            assert torch.all(params[name][~mask] == 0), f"step {step}: {name} revived"
            # Each model is pruned to the target on its own.
            assert len(set((~mask).flatten(1).sum(1).tolist())) == 1
        checked.append(step)

    results = train(list(range(k)), on_step=check)
    assert checked, "pruning never started"
    assert checked == list(range(checked[0], results[0].steps))  # every step from the first mask
    for result in results:
        for name, fraction in result.sparsity["layers"].items():
            n = result.state_dict[name].numel()
            assert int((result.state_dict[name] == 0).sum()) == round(0.9 * n)
            assert fraction == pytest.approx(round(0.9 * n) / n)
        assert result.sparsity["achieved"] == pytest.approx(0.9, abs=1e-3)
        assert result.sparsity["target"] == 0.9
        # Biases and the final classifier stay dense.
        assert int((result.state_dict["classifier.3.weight"] == 0).sum()) == 0
        assert result.schedule["final"] == 0.9 and result.schedule["total_steps"] == 80


def test_global_scope_reaches_overall_target():
    [result] = train([0], prune=PruneConfig(sparsity=0.75, scope="global"))
    report = result.sparsity
    assert report["n_zero"] == round(0.75 * report["n_weights"])


# ---- K models at once -----------------------------------------------------------------------


def test_a_model_trained_in_a_group_matches_it_trained_alone(alone, together):
    for a, b in zip(alone, together):
        assert a.seed == b.seed and (a.jointly, b.jointly) == (1, 3)
        agreement = (a.probabilities.argmax(1) == b.probabilities.argmax(1)).mean()
        assert agreement >= 0.97
        assert abs(a.accuracy - b.accuracy) <= 0.02
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-3)
        assert a.sparsity == b.sparsity  # the same masks reach the same exact counts
        assert list(a.state_dict) == list(b.state_dict)
        for key in a.state_dict:
            torch.testing.assert_close(a.state_dict[key], b.state_dict[key], atol=1e-4, rtol=1e-3)


def test_a_model_does_not_depend_on_its_companions(together):
    other = train([5, 0])
    np.testing.assert_allclose(other[1].probabilities, together[0].probabilities, atol=1e-5)


def test_batchnorm_statistics_are_per_model_and_used_in_evaluation():
    data = tiny_rgb()
    config = TrainConfig(epochs=1, batch_size=8, lr=0.01, augment=True)
    prune = PruneConfig(sparsity=0.5, begin=0.0, end=0.5)
    joint = train([0, 1], dataset=data, arch="resnet18-cifar", config=config, prune=prune)
    for result in joint:
        [alone] = train([result.seed], dataset=data, arch="resnet18-cifar", config=config, prune=prune)
        for key in ("bn1.running_mean", "bn1.running_var", "layer4.1.bn2.running_mean"):
            # Grouped and plain convolution kernels round differently: close, not equal.
            torch.testing.assert_close(result.state_dict[key], alone.state_dict[key], atol=1e-3, rtol=1e-2)
        assert result.state_dict["bn1.num_batches_tracked"] == 2
        np.testing.assert_allclose(result.probabilities, alone.probabilities, atol=1e-3)
    assert not torch.equal(joint[0].state_dict["bn1.running_mean"], joint[1].state_dict["bn1.running_mean"])


@pytest.mark.parametrize(
    "arch,dataset,atol",
    [
        ("small-cnn", tiny_digits, 1e-5),
        # oneDNN's channels_last convolutions round to ~1e-4 here, in a plain module as packed.
        ("resnet18-cifar", lambda: tiny_rgb(8), 2e-4),
    ],
)
def test_one_step_updates_a_model_as_a_plain_module_would(arch, dataset, atol):
    """K = 1 runs packed; one SGD step must still be the plain module's step (computed exactly)."""
    data = dataset()
    # One step over the whole training set: its mean loss does not depend on the data order.
    config = TrainConfig(epochs=1, batch_size=len(data.x_train), lr=0.05)
    [result] = train([4], dataset=data, arch=arch, config=config, prune=PruneConfig())

    plain = init_model(arch, data, 4).double()
    optimizer = torch.optim.SGD(
        plain.parameters(), lr=config.lr, momentum=config.momentum,
        weight_decay=config.weight_decay, nesterov=True,
    )  # fmt: skip
    plain.train()
    nn.functional.cross_entropy(plain(data.x_train.double()), data.y_train).backward()
    optimizer.step()

    assert list(result.state_dict) == list(plain.state_dict())
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(
            result.state_dict[key], value.to(result.state_dict[key].dtype), atol=atol, rtol=1e-4
        )
    plain.eval()
    with torch.no_grad():
        probabilities = torch.softmax(plain(data.x_test.double()), dim=1).float().numpy()
    np.testing.assert_allclose(result.probabilities, probabilities, atol=atol)


def test_refuses_an_architecture_that_cannot_be_packed():
    def layer_norm_model(arch, dataset, seed):
        return nn.Sequential(nn.Flatten(), nn.LayerNorm(64), nn.Linear(64, 10))

    with pytest.raises(ConfigError) as e:
        train([0], start=layer_norm_model)
    assert str(e.value) == NOT_PACKABLE.format(arch="small-cnn")


def test_needs_a_seed():
    with pytest.raises(ConfigError) as e:
        train([])
    assert str(e.value) == NO_SEEDS


# ---- the seams: a method is a new small object, not a change to the loop --------------------


@dataclass(frozen=True)
class _KeepParentZeros:
    """A mask policy the loop has never seen: the parent's zeros, fixed from the first step."""

    parent: dict
    names: tuple[str, ...]
    target: float

    def __call__(self, step, weights, masks):
        if step > 0:
            return None
        k = next(iter(weights.values())).shape[0]
        keep = {name: self.parent[name] != 0 for name in self.names}
        return {name: mask.expand(k, *mask.shape) for name, mask in keep.items()}

    def to_dict(self):
        return {"kind": "fixed-from-parent"}


@dataclass(frozen=True)
class _FineTune:
    parent: dict
    sparsity: dict

    def policy(self, model, total_steps):
        names = tuple(self.sparsity["layers"])
        return _KeepParentZeros(self.parent, names, self.sparsity["target"])


def test_fine_tuning_a_pruned_parent_through_the_starting_point_and_mask_policy(alone):
    parent = alone[0]

    def from_parent(arch, dataset, seed):
        model = init_model(arch, dataset, seed)
        model.load_state_dict(parent.state_dict)
        return model

    config = replace(TINY_CONFIG, epochs=2, lr=0.01)
    children = train([10, 11], config=config, prune=_FineTune(parent.state_dict, parent.sparsity),
                     start=from_parent)  # fmt: skip
    for child in children:
        assert child.sparsity["target"] == 0.9
        assert child.schedule == {"kind": "fixed-from-parent", "total_steps": 16}
        for name in parent.sparsity["layers"]:
            pruned = parent.state_dict[name] == 0
            assert torch.all(child.state_dict[name][pruned] == 0)
            assert child.sparsity["layers"][name] == parent.sparsity["layers"][name]
        # Started from the parent, not from scratch: two epochs at a small rate keep it close.
        assert child.accuracy >= parent.accuracy - 0.05
    assert not np.array_equal(children[0].probabilities, children[1].probabilities)


def test_the_post_training_step_gets_the_finished_models_and_has_the_last_word():
    received = []

    def finish(models):
        received.append([m.seed for m in models])
        return [replace(m, accuracy=-1.0) for m in reversed(models)]

    config = replace(TINY_CONFIG, epochs=1)
    results = train([3, 4], config=config, prune=PruneConfig(), finish=finish)
    assert received == [[3, 4]]
    assert [r.seed for r in results] == [4, 3] and {r.accuracy for r in results} == {-1.0}


# ---- the pure helpers -----------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(epochs=0), NOT_A_COUNT.format(name="epochs", value=0)),
        (dict(epochs=2.5), NOT_A_COUNT.format(name="epochs", value=2.5)),
        (dict(batch_size=0), NOT_A_COUNT.format(name="batch-size", value=0)),
        (dict(lr=0.0), BAD_LR.format(value=0.0)),
        # "not lr > 0" let infinity through: the model then trained to NaN.
        (dict(lr=float("inf")), BAD_LR.format(value=float("inf"))),
        (dict(lr=float("nan")), BAD_LR.format(value=float("nan"))),
        (dict(momentum=float("nan")), BAD_MOMENTUM.format(value=float("nan"))),
        (dict(momentum=1.0), BAD_MOMENTUM.format(value=1.0)),
        (dict(weight_decay=float("nan")), BAD_WEIGHT_DECAY.format(value=float("nan"))),
        (dict(weight_decay=float("inf")), BAD_WEIGHT_DECAY.format(value=float("inf"))),
        (dict(weight_decay=-1e-4), BAD_WEIGHT_DECAY.format(value=-1e-4)),
        (dict(warmup_epochs=float("nan")), BAD_WARMUP.format(value=float("nan"))),
        (dict(warmup_epochs=-1.0), BAD_WARMUP.format(value=-1.0)),
    ],
)
def test_train_config_refuses(kwargs, message):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kwargs)
    assert str(e.value) == message


def test_prune_config_validation():
    with pytest.raises(ConfigError, match="sparsity must be in"):
        PruneConfig(sparsity=1.0)
    with pytest.raises(ConfigError, match="sparsity must be in"):
        PruneConfig(sparsity=float("nan"))
    with pytest.raises(ConfigError, match="begin <= end"):
        PruneConfig(sparsity=0.5, begin=0.9, end=0.1)
    with pytest.raises(ConfigError, match="begin <= end"):
        PruneConfig(sparsity=0.5, begin=float("nan"))
    # A bad regular expression is refused when the configuration is made, not when training
    # starts: by then a population directory used to have been written.
    with pytest.raises(ConfigError) as e:
        PruneConfig(sparsity=0.5, exclude=("features.0", "["))
    assert str(e.value) == BAD_EXCLUDE.format(
        pattern="[", reason="unterminated character set at position 0"
    )


# ---- what the run can carry out, checked before it starts -----------------------------------


@pytest.mark.parametrize("begin", [1.0, 0.995])
def test_a_schedule_that_begins_after_training_ends_is_refused(begin):
    """80 steps: begin 1.0 and 0.995 both round to step 80, after the last step (79)."""
    prune = PruneConfig(sparsity=0.5, begin=begin, end=1.0)
    assert training_steps(tiny_digits(), TINY_CONFIG) == 80
    with pytest.raises(ConfigError) as e:
        check_training(tiny_digits(), arch="small-cnn", config=TINY_CONFIG, prune=prune)
    assert str(e.value) == PRUNING_TOO_LATE.format(
        begin=begin, begin_step=80, total_steps=80, sparsity=0.5, max_begin=0.9875
    )
    with pytest.raises(ConfigError) as again:
        train([0], prune=prune)
    assert str(again.value) == str(e.value)


def test_the_latest_begin_the_message_offers_reaches_the_target():
    prune = PruneConfig(sparsity=0.5, begin=0.9875, end=1.0)
    policy = check_training(tiny_digits(), arch="small-cnn", config=TINY_CONFIG, prune=prune)
    assert policy.schedule.begin_step == policy.schedule.end_step == 79
    [result] = train([0], prune=prune)
    assert result.sparsity["achieved"] == pytest.approx(0.5, abs=1e-4)


def test_a_dense_run_ignores_the_schedule():
    prune = PruneConfig(sparsity=0.0, begin=1.0, end=1.0)
    check_training(tiny_digits(), arch="small-cnn", config=TINY_CONFIG, prune=prune)


def test_nothing_left_to_prune_is_refused():
    prune = PruneConfig(sparsity=0.5, exclude=(".*",))
    with pytest.raises(ConfigError) as e:
        check_training(tiny_digits(), arch="small-cnn", config=TINY_CONFIG, prune=prune)
    assert str(e.value) == NOTHING_TO_PRUNE.format(sparsity=0.5)


def test_check_training_refuses_an_architecture_that_cannot_be_packed(monkeypatch):
    monkeypatch.setattr(training_module, "packable", lambda arch, model: False)
    with pytest.raises(ConfigError) as e:
        check_training(tiny_digits(), arch="small-cnn", config=TINY_CONFIG, prune=PRUNE_90)
    assert str(e.value) == NOT_PACKABLE.format(arch="small-cnn")


# ---- what training produced, checked before it is returned ---------------------------------


def test_a_diverging_run_stops_with_the_seeds_and_the_step():
    epochs = []
    config = replace(TINY_CONFIG, lr=1e6)
    with pytest.raises(ConfigError) as e:
        train([3, 4], config=config, on_epoch=lambda epoch, total: epochs.append(epoch))
    assert str(e.value) == DIVERGED.format(
        what="the loss", seeds="seeds 3, 4", step=2, total_steps=80, lr=1e6
    )
    assert epochs == []  # stopped at the end of the first epoch


def test_divergence_names_only_the_models_that_diverged():
    def nan_for_seed_6(arch, dataset, seed):
        model = init_model(arch, dataset, seed)
        if seed == 6:
            with torch.no_grad():
                model.classifier[3].bias.fill_(float("nan"))
        return model

    with pytest.raises(ConfigError) as e:
        train([5, 6], start=nan_for_seed_6, prune=PruneConfig())
    assert str(e.value) == DIVERGED.format(
        what="the loss", seeds="seed 6", step=0, total_steps=80, lr=TINY_CONFIG.lr
    )


def test_predictions_that_are_not_finite_are_refused(monkeypatch):
    real = training_module._evaluate

    def nan_for_the_second(model, x, *, k, batch_size):
        probabilities = real(model, x, k=k, batch_size=batch_size)
        probabilities[1, 0, 0] = np.nan
        return probabilities

    monkeypatch.setattr(training_module, "_evaluate", nan_for_the_second)
    config = replace(TINY_CONFIG, epochs=1)
    with pytest.raises(ConfigError) as e:
        train([0, 1], config=config, prune=PruneConfig())
    assert str(e.value) == DIVERGED.format(
        what="the predictions", seeds="seed 1", step=8, total_steps=8, lr=config.lr
    )


@dataclass(frozen=True)
class _NeverPrunes:
    """A broken mask policy: it claims a target and never applies a mask."""

    names: tuple[str, ...]
    target: float = 0.9

    def __call__(self, step, weights, masks):
        return None

    def to_dict(self):
        return {"kind": "broken"}


@dataclass(frozen=True)
class _Broken:
    def policy(self, model, total_steps):
        return _NeverPrunes(tuple(PRUNE_90.policy(model, total_steps).names))


def test_a_model_that_misses_its_target_sparsity_is_a_bug_not_a_result():
    with pytest.raises(RuntimeError) as e:
        train([2], config=replace(TINY_CONFIG, epochs=1), prune=_Broken())
    assert not isinstance(e.value, ConfigError)  # exit 3, not "bad input"
    n_weights = 32 * 9 + 64 * 32 * 9 + 256 * 128
    assert str(e.value) == SPARSITY_MISSED.format(
        seed=2, n_zero=0, n_weights=n_weights, target=0.9, expected=0.9 * n_weights, n_layers=3
    )


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
