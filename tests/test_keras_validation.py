import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from rlinit_lib.keras_model import ScaledHeNormal, build_vgg_swish  # noqa: E402
from rlinit_lib.keras_validation import KerasValidationConfig, compare, run_validation, verdict  # noqa: E402
from rlinit_lib.validation import ParameterError  # noqa: E402


def test_model_matches_table_4_1_layer_by_layer():
    m = build_vgg_swish(1.25, seed=1)
    kinds = [type(l).__name__ for l in m.layers]
    block = ["Conv2D", "BatchNormalization", "Conv2D", "BatchNormalization", "MaxPooling2D", "Dropout"]
    assert kinds == block * 3 + ["Flatten", "Dense", "BatchNormalization", "Dropout", "Dense"]
    convs = [l for l in m.layers if type(l).__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [32, 32, 64, 64, 128, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" and c.activation is keras.activations.get("swish")
               for c in convs)  # Keras 3 resolves "swish" to its silu function
    dense = [l for l in m.layers if type(l).__name__ == "Dense"]
    assert [d.units for d in dense] == [512, 10] and dense[1].activation.__name__ == "softmax"
    assert [l.rate for l in m.layers if type(l).__name__ == "Dropout"] == [0.2, 0.3, 0.4, 0.5]
    bn = [l for l in m.layers if type(l).__name__ == "BatchNormalization"]
    assert all(b.momentum == 0.99 and b.epsilon == 1e-3 for b in bn)
    assert m.output_shape == (None, 10) and m.layers[18].output.shape == (None, 2048)
    assert all(isinstance(l.kernel_initializer, ScaledHeNormal) and l.kernel_initializer.scale_factor == 1.25
               for l in convs + dense)


def test_scaled_he_normal_std_is_scale_times_he_normal():
    shape = (3, 3, 64, 128)
    base = keras.ops.convert_to_numpy(keras.initializers.HeNormal(seed=3)(shape))
    for s in (0.5, 1.25, 2.0):
        w = keras.ops.convert_to_numpy(ScaledHeNormal(s, seed=3)(shape))
        assert np.std(w) / np.std(base) == pytest.approx(s, rel=1e-5)
        assert np.std(w) == pytest.approx(s * np.sqrt(2 / (3 * 3 * 64)), rel=0.02)  # Keras corrects for truncation
    restored = ScaledHeNormal.from_config(ScaledHeNormal(1.7, seed=2).get_config())
    assert restored.scale_factor == 1.7


def test_tiny_fit_on_torch_backend_and_statistics(tmp_path):
    from rlinit_lib.data import make_synthetic

    synthetic = make_synthetic(128, 64)  # Keras on CPU: ~6 s per epoch of 512 images here, so keep it tiny
    assert keras.backend.backend() == "torch"
    cfg = KerasValidationConfig(s_proxy=1.25, seeds=2, epochs=1, dataset="synthetic", wandb_mode="disabled",
                                progress=False, output_dir=str(tmp_path / "k"))
    runs, hist = run_validation(cfg, data=synthetic)
    assert len(runs) == 4 and set(runs["scale"]) == {1.0, 1.25} and len(hist) == 4
    assert runs["final_val_accuracy"].between(0, 1).all()
    again, _ = run_validation(cfg, data=None)  # resumes: nothing left to train, no data needed
    assert len(again) == 4
    result = compare(runs, 1.25)
    assert result["per_scale"][1.0]["n"] == 2 and "welch" in result and "accuracy" in verdict(result)


def test_keras_parameters_are_validated():
    with pytest.raises(ParameterError, match=r"^block_dropout must be a list of three rates"):
        KerasValidationConfig(block_dropout=[0.2, 0.3]).validate()
    with pytest.raises(ParameterError, match=r"^seeds must be an integer >= 2 \(got 1\)$"):
        KerasValidationConfig(seeds=1).validate()
    with pytest.raises(ParameterError, match=r"^unknown parameter 'epoch' for 03_keras_validation"):
        KerasValidationConfig.from_dict({"epoch": 3})


def test_short_training_warning_flags_a_large_train_validation_gap():
    import pandas as pd

    from rlinit_lib.keras_validation import short_training_warning

    h = pd.DataFrame({"epoch": [1, 2, 2], "accuracy": [0.5, 0.8, 0.7], "val_accuracy": [0.4, 0.3, 0.5]})
    assert "BatchNormalization" in short_training_warning(h)
    assert short_training_warning(h.assign(val_accuracy=[0.4, 0.78, 0.69])) is None
