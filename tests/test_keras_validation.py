import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from rlinit_lib.keras_validation.model import ScaledHeNormal, build_vgg_swish  # noqa: E402
from rlinit_lib.keras_validation.experiment import (KerasValidationConfig, compare, run_validation,  # noqa: E402
                                                   validation_report, verdict)
from rlinit_lib.core.params import ParameterError  # noqa: E402


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


def test_tiny_fit_on_torch_backend_statistics_and_report(tmp_path):
    assert keras.backend.backend() == "torch"
    # Keras on CPU: ~6 s per epoch of 512 images here, so keep it tiny
    cfg = KerasValidationConfig(s_proxy=1.25, seeds=2, epochs=1, dataset="synthetic", train_subset=128, test_subset=64,
                                wandb_mode="disabled", progress=False, executor="serial", output_dir=str(tmp_path / "k"))
    runs, hist = run_validation(cfg)
    assert len(runs) == 4 and set(runs["scale"]) == {1.0, 1.25} and len(hist) == 4
    assert runs["final_val_accuracy"].between(0, 1).all()
    again, _ = run_validation(cfg)  # resumes: nothing left to train
    pd.testing.assert_frame_equal(again, runs)
    result = compare(runs, 1.25)
    assert list(result["per_scale"]["n"]) == [2, 2] and result["difference"]["test"] == "paired t" and "accuracy" in verdict(result)
    rep = validation_report(cfg, runs, hist)
    assert "No 02_proxy_fidelity results" in rep.text() and "run 02_proxy_fidelity first" in rep.text()
    assert pd.read_csv(tmp_path / "k" / "table_5_1.csv")["mean_accuracy"].dtype == float


def test_s_proxy_comes_from_01_of_the_same_profile(tmp_path):
    (tmp_path / "01_search").mkdir()
    cfg = KerasValidationConfig(output_dir=str(tmp_path / "03_keras_validation"))
    s, source = cfg.resolve_s_proxy()
    assert s == 1.25 and "run 01_search first" in source
    (tmp_path / "01_search" / "results.json").write_text('{"best_scale": 0.94183}')
    assert cfg.resolve_s_proxy()[0] == 0.9418 and cfg.scales() == [1.0, 0.9418]


def test_transfer_check_interpolates_the_proxy_curve(tmp_path):
    from rlinit_lib.core.stats import transfer_agreement

    proxy = pd.DataFrame({"scale": [0.5, 1.0, 1.5], "accuracy": [0.6, 0.8, 0.7]})
    other = pd.DataFrame({"scale": [0.75, 1.0, 1.25, 3.0], "mean_accuracy": [0.5, 0.9, 0.85, 0.1]})
    t = transfer_agreement(proxy, other, pair=(1.25, 1.0))
    assert t["scales"] == [0.75, 1.0, 1.25] and t["spearman"] == pytest.approx(1.0)
    assert t["predicted_difference"] == pytest.approx(0.75 - 0.8) and t["measured_difference"] == pytest.approx(-0.05)
    assert t["same_sign"]


def test_keras_parameters_are_validated():
    with pytest.raises(ParameterError, match=r"^block_dropout must be a list of exactly 3 rates in \[0, 1\) \(got \[0.2, 0.3\]\)$"):
        KerasValidationConfig(block_dropout=[0.2, 0.3]).validate()
    with pytest.raises(ParameterError, match=r"^seeds must be an integer >= 2 \(got 1\)$"):
        KerasValidationConfig(seeds=1).validate()
    with pytest.raises(ParameterError, match=r"^unknown parameter 'epoch' for 03_keras_validation"):
        KerasValidationConfig.from_dict({"epoch": 3})


def test_short_training_warning_flags_a_large_train_validation_gap():
    from rlinit_lib.keras_validation.experiment import short_training_warning

    h = pd.DataFrame({"epoch": [1, 2, 2], "accuracy": [0.5, 0.8, 0.7], "val_accuracy": [0.4, 0.3, 0.5]})
    assert "BatchNormalization" in short_training_warning(h)
    assert short_training_warning(h.assign(val_accuracy=[0.4, 0.78, 0.69])) is None
