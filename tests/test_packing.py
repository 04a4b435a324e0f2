"""Packing: K models run as one module compute what each computes alone, K = 1 included."""

import copy

import pytest
import torch
from torch import nn

from pie_audit.training._models import build_model
from pie_audit.training._packing import PACKABLE_ARCHITECTURES, pack, packable

SHAPES = {"small-cnn": (1, 8, 8), "resnet18-cifar": (3, 32, 32)}


def _models(arch: str, k: int) -> list[nn.Module]:
    channels, size, _ = SHAPES[arch]
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        model = build_model(arch, in_channels=channels, image_size=size, num_classes=10)
        # Non-trivial BatchNorm state, so that evaluation shows whose statistics are used.
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        models.append(model)
    return models


@pytest.mark.parametrize("arch", list(SHAPES))
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("training", [True, False])
def test_packed_models_compute_what_each_computes_alone(arch, k, training):
    # In float64, so that any difference is a packing error, not the rounding of other kernels
    # (which BatchNorm over a batch of 4 amplifies to ~1e-2 in float32 gradients).
    models = [m.double() for m in _models(arch, k)]
    packed = pack(models).train(training)
    x = torch.randn(k, 4, *SHAPES[arch], generator=torch.Generator().manual_seed(0)).double()
    labels = torch.randint(0, 10, (k, 4), generator=torch.Generator().manual_seed(1))

    out = packed(x)
    assert out.shape == (k, 4, 10)
    nn.functional.cross_entropy(out.flatten(0, 1), labels.flatten(), reduction="sum").backward()
    grads = {name: p.grad for name, p in packed.named_parameters()}
    state = packed.state_dict()
    for i, model in enumerate(models):
        model.train(training)
        alone = model(x[i])
        torch.testing.assert_close(out[i], alone, atol=1e-10, rtol=1e-10)
        nn.functional.cross_entropy(alone, labels[i], reduction="sum").backward()
        for name, p in model.named_parameters():
            # Each model's gradient is its own: the others' losses do not reach it.
            torch.testing.assert_close(grads[name][i], p.grad, atol=1e-10, rtol=1e-10)
        for name, buffer in model.named_buffers():
            # In training mode the running statistics moved, each model's with its own batch.
            torch.testing.assert_close(state[name][i], buffer, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("arch", list(SHAPES))
@pytest.mark.parametrize("training", [True, False])
def test_one_packed_model_in_float32_matches_the_plain_module(arch, training):
    [model] = _models(arch, 1)
    packed = pack([model]).train(training)
    x = torch.randn(1, 8, *SHAPES[arch], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(packed(x)[0], model.train(training)(x[0]), atol=1e-5, rtol=1e-4)


def test_state_is_the_models_stacked_under_their_own_names():
    models = _models("resnet18-cifar", 2)
    state = pack(models).state_dict()
    assert list(state) == list(models[0].state_dict())
    for name, tensor in state.items():
        for i, model in enumerate(models):
            assert torch.equal(tensor[i], model.state_dict()[name])


def test_packing_leaves_the_models_alone():
    models = _models("small-cnn", 2)
    before = copy.deepcopy([m.state_dict() for m in models])
    packed = pack(models)
    with torch.no_grad():
        for p in packed.parameters():
            p.zero_()
    for model, state in zip(models, before):
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, state[name])


def test_packable():
    for arch in PACKABLE_ARCHITECTURES:
        assert packable(arch, _models(arch, 1)[0])
    model = _models("small-cnn", 1)[0]
    assert not packable("some-other-arch", model)  # its forward is not known to keep channels apart
    layer_norm = nn.Sequential(nn.Flatten(), nn.LayerNorm(64), nn.Linear(64, 10))
    assert not packable("small-cnn", layer_norm)
    circular = copy.deepcopy(model)
    circular.features[0].padding_mode = "circular"
    assert not packable("small-cnn", circular)
