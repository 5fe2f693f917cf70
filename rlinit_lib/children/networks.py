"""Child networks whose initial scale is searched.

``SimpleCNN`` follows the dissertation's Table 3.1: three 3x3 convolutions
(3->32->64->128, padding 1), each followed by the activation and a 2x2 max-pool,
then flatten (128*4*4 = 2048) -> Linear 256 + activation -> Linear 10. SiLU is the
dissertation's activation; ReLU, GELU and tanh are available by name. The number
of input channels is a parameter (Fashion-MNIST: 1 channel padded to 32x32).
``width`` multiplies every hidden width (channels and the 256 units; 1.0 is Table 3.1),
for notebook 06's width-transfer check.
"""
from __future__ import annotations

from torch import nn

from rlinit_lib.core.params import check_float, check_int
from rlinit_lib.initialisation.activations import make_activation


class SimpleCNN(nn.Module):
    """Table 3.1 of the dissertation; expects 32x32 inputs."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, activation: str = "silu", width: float = 1.0):
        super().__init__()
        check_int("in_channels", in_channels, low=1)
        check_int("num_classes", num_classes, low=2)
        check_float("width", width, low=0.0, low_open=True)
        c1, c2, c3, h = (max(1, round(c * width)) for c in (32, 64, 128, 256))
        act = lambda: make_activation(activation)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), act(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), act(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), act(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c3 * 4 * 4, h), act(), nn.Linear(h, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
