"""The dissertation's Phase-2 network in Keras 3 on the PyTorch backend (Table 4.1).

Three blocks of [Conv2D(3x3, same, swish) -> BatchNorm -> Conv2D(3x3, same, swish) ->
BatchNorm -> MaxPool(2) -> Dropout] with 32, 64 and 128 filters, then Flatten ->
Dense(512, swish) -> BatchNorm -> Dropout -> Dense(10, softmax). Keras' own defaults
hold (truncated-normal HeNormal, BatchNormalization momentum 0.99 / epsilon 1e-3, Adam
epsilon 1e-7). The dissertation does not give the dropout rates; they are parameters
(default 0.2, 0.3, 0.4 and 0.5). Every Conv2D and Dense kernel uses
``ScaledHeNormal(scale)``; biases are zero (Keras' default).

Random streams: a run's ``seed`` gives every kernel its own stream (``stream_seed(seed, "kernel_k")``) and
each of the four Dropout layers its own (``stream_seed(seed, "dropout_i")``, Keras 3's ``Dropout(seed=)``),
so no two layers share draws; the kernels' draws do not depend on ``scale``, so seed j gives every scale
the same weights, scaled (the paired design of notebook 03). :class:`KeepBestWeights` keeps the weights of
the epoch with the best validation accuracy.

``precision="bf16"`` gives every layer Keras' ``mixed_bfloat16`` policy (bf16 compute, fp32
variables; BatchNormalization computes its statistics in fp32 by itself), except the softmax
output layer, which stays fp32 so that the loss is computed in fp32.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from rlinit_lib.core.runtime import stream_seed  # noqa: E402

if keras.backend.backend() != "torch":
    raise ImportError(f"rlinit_lib.keras_validation.model needs KERAS_BACKEND=torch (keras was loaded with {keras.backend.backend()!r})")


@keras.saving.register_keras_serializable(package="rlinit")
class ScaledHeNormal(keras.initializers.HeNormal):
    """Keras' HeNormal (truncated normal, std sqrt(2/fan_in) before truncation) times ``scale``."""

    def __init__(self, scale: float = 1.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)  # kwargs: HeNormal's own config keys (e.g. input_axes)
        # not ``self.scale``: HeNormal is a VarianceScaling whose own ``scale`` (2.0) sets the variance
        self.scale_factor = float(scale)

    def __call__(self, shape, dtype=None):
        return super().__call__(shape, dtype) * self.scale_factor

    def get_config(self):
        return {**super().get_config(), "scale": self.scale_factor}


POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}


def layer_seed(seed: int | None, purpose: str) -> int | None:
    """One layer's seed from the run's ``seed`` (its own stream), in the int32 range Keras' seeds take."""
    return None if seed is None else stream_seed(seed, purpose) % 2**31


def build_vgg_swish(scale: float = 1.0, input_shape=(32, 32, 3), num_classes: int = 10,
                    block_dropout=(0.2, 0.3, 0.4), dense_dropout: float = 0.5, seed: int | None = None,
                    precision: str = "fp32"):
    """Table 4.1's network; kernels drawn from ScaledHeNormal(scale) and dropout masks each from their own
    stream of ``seed``."""
    kernels, dropouts = iter(range(1000)), iter(range(1000))
    dt = POLICIES[precision]

    def init():
        return ScaledHeNormal(scale, seed=layer_seed(seed, f"kernel_{next(kernels)}"))

    def dropout(rate):
        return keras.layers.Dropout(rate, seed=layer_seed(seed, f"dropout_{next(dropouts)}"), dtype=dt)

    layers = [keras.Input(shape=input_shape)]
    for filters, rate in zip((32, 64, 128), block_dropout):
        for _ in range(2):
            layers += [keras.layers.Conv2D(filters, 3, padding="same", activation="swish", kernel_initializer=init(),
                                           dtype=dt),
                       keras.layers.BatchNormalization(dtype=dt)]
        layers += [keras.layers.MaxPooling2D(2, dtype=dt), dropout(rate)]
    layers += [keras.layers.Flatten(dtype=dt),
               keras.layers.Dense(512, activation="swish", kernel_initializer=init(), dtype=dt),
               keras.layers.BatchNormalization(dtype=dt), dropout(dense_dropout),
               keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=init(), dtype="float32")]
    return keras.Sequential(layers, name="vgg_swish")  # no "." in names: torch parameter names


class KeepBestWeights(keras.callbacks.Callback):
    """Keeps the weights (and the 1-based epoch) with the best ``val_accuracy`` seen so far (the earliest on a
    tie); ``restore()`` puts them back into the model. The choice sees only validation data."""

    def __init__(self):
        super().__init__()
        self.best, self.epoch, self.weights = -np.inf, 0, None

    def on_epoch_end(self, epoch, logs=None):
        acc = float((logs or {}).get("val_accuracy", np.nan))
        if np.isfinite(acc) and acc > self.best:
            self.best, self.epoch, self.weights = acc, epoch + 1, self.model.get_weights()

    def restore(self) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


def probe_step(input_shape, num_classes: int, batch_size: int):
    """``make_step(precision)`` for ``core.precision.resolve_precision``: one ``train_on_batch`` of Table 4.1's
    network at the run's batch size."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((batch_size, *input_shape), dtype=np.float32)
    y = np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, batch_size)]

    def make_step(precision: str):
        model = build_vgg_swish(1.0, input_shape, num_classes, seed=0, precision=precision)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        return lambda: model.train_on_batch(x, y)

    return make_step
