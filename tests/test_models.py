import pytest
import torch

from pie_audit.errors import ConfigError
from pie_audit.training._models import ARCHITECTURES, UNKNOWN_ARCHITECTURE, build_model, forward_flops


@pytest.mark.parametrize("channels,size", [(1, 8), (1, 28), (3, 32)])
def test_small_cnn_shapes(channels, size):
    model = build_model("small-cnn", in_channels=channels, image_size=size, num_classes=10)
    assert model(torch.zeros(2, channels, size, size)).shape == (2, 10)


def test_resnet18_cifar_stem():
    model = build_model("resnet18-cifar", in_channels=3, image_size=32, num_classes=10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    model.eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_registry_and_unknown_arch():
    assert set(ARCHITECTURES) == {"small-cnn", "resnet18-cifar"}
    with pytest.raises(ConfigError) as e:
        build_model("vgg", in_channels=1, image_size=8, num_classes=10)
    expected = UNKNOWN_ARCHITECTURE.format(arch="vgg", choices="small-cnn, resnet18-cifar")
    assert str(e.value) == expected
    assert str(e.value).startswith("unknown architecture 'vgg'; choose one of small-cnn")


def test_forward_flops_hand_computed():
    model = build_model("small-cnn", in_channels=1, image_size=8, num_classes=10)
    conv1 = 2 * (32 * 8 * 8) * 9
    conv2 = 2 * (64 * 4 * 4) * (32 * 9)
    linear = 2 * 256 * 128 + 2 * 128 * 10
    assert forward_flops(model, (1, 8, 8)) == conv1 + conv2 + linear
    assert model.training  # measured in eval mode, handed back as it was
