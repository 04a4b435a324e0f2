import pytest
import torch

from pie_audit.errors import ConfigError
from pie_audit.models import ARCHITECTURES, build_model


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
    with pytest.raises(ConfigError, match="unknown architecture 'vgg'"):
        build_model("vgg", in_channels=1, image_size=8, num_classes=10)
