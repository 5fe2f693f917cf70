import pytest
import torch
from torch import nn

from rlinit_lib.children.networks import SimpleCNN
from rlinit_lib.core.params import ParameterError


@pytest.mark.parametrize("channels", [3, 1])
def test_simplecnn_shapes_follow_table_3_1(channels):
    model = SimpleCNN(in_channels=channels)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (channels, 32, (3, 3), (1, 1)), (32, 64, (3, 3), (1, 1)), (64, 128, (3, 3), (1, 1))]
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(2048, 256), (256, 10)]
    assert model(torch.zeros(5, channels, 32, 32)).shape == (5, 10)
    assert model.features(torch.zeros(2, channels, 32, 32)).shape == (2, 128, 4, 4)


@pytest.mark.parametrize("name,cls", [("silu", nn.SiLU), ("relu", nn.ReLU), ("gelu", nn.GELU), ("tanh", nn.Tanh)])
def test_activation_by_name_is_used_after_every_hidden_layer(name, cls):
    model = SimpleCNN(activation=name)
    assert sum(isinstance(m, cls) for m in model.modules()) == 4


def test_unknown_activation_is_rejected():
    with pytest.raises(ParameterError, match=r"^activation must be one of 'silu', 'relu', 'gelu', 'tanh' \(got 'swish'\)$"):
        SimpleCNN(activation="swish")
