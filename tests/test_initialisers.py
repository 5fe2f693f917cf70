import math

import pytest
import torch
from torch import nn

from rlinit_lib.initialisation.initialisers import fan_in, initialise
from rlinit_lib.children.networks import SimpleCNN
from rlinit_lib.core.params import ParameterError


@pytest.mark.parametrize("scale", [0.3, 1.0, 1.25, 1.7])
def test_scaled_he_std_matches_formula_for_every_layer(scale):
    model = initialise(SimpleCNN(), "he_scaled", scale, generator=torch.Generator().manual_seed(0))
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 5
    for m in layers:
        expected = scale * math.sqrt(2.0 / fan_in(m.weight))
        n = m.weight.numel()
        # the sample std of n normals has relative standard error ~ 1/sqrt(2n); allow 5 of them
        assert abs(m.weight.std().item() / expected - 1) < 5 / math.sqrt(2 * n)
        assert abs(m.weight.mean().item()) < 5 * expected / math.sqrt(n)
        assert torch.count_nonzero(m.bias) == 0


def test_fan_in_uses_channels_and_kernel():
    conv = nn.Conv2d(32, 64, 3)
    assert fan_in(conv.weight) == 32 * 3 * 3
    assert fan_in(nn.Linear(2048, 256).weight) == 2048


def test_xavier_uniform_bounds_and_zero_bias():
    model = initialise(SimpleCNN(), "xavier_uniform")
    fc = model.classifier[1]
    bound = math.sqrt(6 / (2048 + 256))
    assert fc.weight.abs().max().item() <= bound
    assert fc.weight.abs().max().item() > 0.9 * bound
    assert torch.count_nonzero(fc.bias) == 0


def test_same_generator_seed_gives_weights_proportional_to_scale():
    a = initialise(SimpleCNN(), "he_scaled", 1.0, generator=torch.Generator().manual_seed(3))
    b = initialise(SimpleCNN(), "he_scaled", 1.5, generator=torch.Generator().manual_seed(3))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb, 1.5 * pa)


def test_bad_method_and_scale_are_rejected_with_one_line():
    with pytest.raises(ParameterError, match=r"^init must be one of 'he_scaled'.*\(got 'lecun'\)$"):
        initialise(SimpleCNN(), "lecun")
    with pytest.raises(ParameterError, match=r"^scale must be a number > 0"):
        initialise(SimpleCNN(), "he_scaled", 0.0)
