import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from rlinit_lib.keras_validation.model import KeepBestWeights, ScaledHeNormal, build_vgg_swish  # noqa: E402
from rlinit_lib.core.study import run  # noqa: E402
from rlinit_lib.keras_validation import experiment as kv  # noqa: E402
from rlinit_lib.keras_validation.experiment import (RUN_COLUMNS, KerasValidationConfig,  # noqa: E402
                                                   comparison as compare, verdict_text as verdict)
from rlinit_lib.core.params import ParameterError  # noqa: E402
from rlinit_lib.core.runtime import stream_seed  # noqa: E402


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


def test_tiny_fit_validates_on_the_validation_split_and_reports_test(tmp_path, monkeypatch):
    assert keras.backend.backend() == "torch"
    seen = {"fit": [], "evaluate": []}
    fit, evaluate = keras.Model.fit, keras.Model.evaluate

    def spy_fit(self, x, y, validation_data=None, **kw):
        seen["fit"].append((len(x), len(validation_data[0])))
        return fit(self, x, y, validation_data=validation_data, **kw)

    def spy_evaluate(self, x, y, **kw):
        seen["evaluate"].append(len(x))
        return evaluate(self, x, y, **kw)

    monkeypatch.setattr(keras.Model, "fit", spy_fit)
    monkeypatch.setattr(keras.Model, "evaluate", spy_evaluate)
    # Keras on CPU: ~6 s per epoch of 512 images here, so keep it tiny
    cfg = KerasValidationConfig(s_proxy=1.25, seeds=2, epochs=2, dataset="synthetic", train_subset=128, test_subset=64,
                                val_size=32, wandb_mode="disabled", progress=False, executor="serial",
                                output_dir=str(tmp_path / "k"))
    r = run(kv, cfg)
    runs, hist = r.runs, r.histories
    assert seen["fit"] == [(128, 32)] * 4                      # validation_data: the 32 held-out images, not the test set
    assert seen["evaluate"] == [32, 32, 64, 64] * 4            # val after each epoch (inside fit); then test, last & best
    assert len(runs) == 4 and set(runs["scale"]) == {1.0, 1.25} and len(hist) == 8 and list(runs.columns) == RUN_COLUMNS
    assert runs[["test_accuracy", "final_test_accuracy", "best_val_accuracy"]].stack().between(0, 1).all()
    best = hist.loc[hist.groupby(["scale", "seed_index"])["val_accuracy"].idxmax()]   # the earliest best epoch
    assert list(runs["best_epoch"]) == list(best["epoch"]) and not runs["diverged"].any()
    again = run(kv, cfg).runs  # resumes: nothing left to train
    pd.testing.assert_frame_equal(again, runs)
    result = compare(runs, 1.25, cfg.sesoi)
    assert list(result["per_scale"]["n"]) == [2, 2] and list(result["rows"]["test"]) == ["paired t"]
    rep = kv.report(cfg, r)
    assert "No 02_proxy_fidelity results" in rep.text() and "run 02_proxy_fidelity first" in rep.text()
    assert "## Verdict\nSmallest effect of interest (declared before the run): **0.005 accuracy**" in rep.text()
    assert "bootstrap" not in rep.text()
    assert pd.read_csv(tmp_path / "k" / "table_5_1.csv")["mean_accuracy"].dtype == float


def test_the_four_dropout_layers_draw_from_distinct_streams():
    m = build_vgg_swish(1.0, block_dropout=(0.5, 0.5, 0.5), dense_dropout=0.5, seed=7)
    drops = [l for l in m.layers if type(l).__name__ == "Dropout"]
    assert [d.seed for d in drops] == [stream_seed(7, f"dropout_{i}") % 2**31 for i in range(4)]
    assert len({d.seed for d in drops}) == 4
    ones = np.ones((1, 4096), np.float32)
    masks = [keras.ops.convert_to_numpy(d(ones, training=True)) != 0 for d in drops]
    assert all(not np.array_equal(masks[i], masks[k]) for i in range(4) for k in range(i + 1, 4))
    again = build_vgg_swish(1.0, block_dropout=(0.5, 0.5, 0.5), dense_dropout=0.5, seed=7)   # reproducible
    first = [l for l in again.layers if type(l).__name__ == "Dropout"][0]
    assert np.array_equal(keras.ops.convert_to_numpy(first(ones, training=True)) != 0, masks[0])
    kernels = [l.kernel_initializer.seed for l in m.layers if hasattr(l, "kernel_initializer")]
    assert len(set(kernels)) == 8 and not set(kernels) & {d.seed for d in drops}


def test_the_best_epoch_is_chosen_on_validation_accuracy_only():
    class Model:
        weights = None

        def get_weights(self):
            return f"weights of epoch {self.epoch}"

        def set_weights(self, w):
            self.weights = w

    model, best = Model(), KeepBestWeights()
    best.set_model(model)
    for epoch, logs in enumerate([{"val_accuracy": 0.5, "accuracy": 0.9}, {"val_accuracy": 0.7, "accuracy": 0.5},
                                  {"val_accuracy": 0.7}, {"val_accuracy": float("nan")}, {"val_accuracy": 0.6}]):
        model.epoch = epoch + 1
        best.on_epoch_end(epoch, logs)
    best.restore()
    assert (best.epoch, best.best, model.weights) == (2, 0.7, "weights of epoch 2")


def _runs(rows):
    return pd.DataFrame([dict(zip(["scale", "seed_index", "test_accuracy", "diverged"], r)) |
                         {"final_test_accuracy": r[2], "best_val_accuracy": r[2], "best_epoch": 1} for r in rows])


def test_the_verdict_is_paired_by_seed_with_a_declared_margin():
    """Seed effects far larger than the difference: a paired design sees it, an unpaired one would not. The issue's
    report printed a paired interval with 0 inside next to an unpaired bootstrap without: one test only now."""
    rng = np.random.default_rng(0)
    base = 0.6 + 0.1 * rng.normal(size=6)
    runs = _runs([(1.0, j, b, False) for j, b in enumerate(base)] + [(1.25, j, b + 0.01 + 0.001 * rng.normal(), False) for j, b in enumerate(base)]
                 + [(0.75, j, b, False) for j, b in enumerate(base)])
    result = compare(runs, 1.25, sesoi=0.005)
    rows = result["rows"].set_index("comparison")
    assert list(rows.index) == ["s_proxy = 1.25 - s = 1", "s = 0.75 - s = 1"]
    assert rows.loc["s_proxy = 1.25 - s = 1", "role"] == "primary" and rows.loc["s_proxy = 1.25 - s = 1", "verdict"] == "better"
    assert rows.loc["s = 0.75 - s = 1", "verdict"] == "equivalent" and rows.loc["s = 0.75 - s = 1", "role"] == "exploratory"
    text = verdict(result)
    assert text.startswith("Smallest effect of interest (declared before the run): **0.005 accuracy**. Primary "
                           "comparison: s_proxy = 1.25 against s = 1")
    assert "**better**" in text and "[exploratory]" in text
    assert "nothing to compare" in verdict(compare(runs, 1.0, sesoi=0.005))


def test_diverged_runs_are_kept_at_chance_and_their_rate_reported():
    runs = _runs([(1.0, 0, 0.8, False), (1.0, 1, 0.8, False), (1.25, 0, 0.9, False), (1.25, 1, 0.95, True)])
    table = compare(runs, 1.25, sesoi=0.01)["per_scale"].set_index("scale")
    assert table.loc[1.25, "mean_accuracy"] == pytest.approx((0.9 + 0.1) / 2) and table.loc[1.25, "diverged_rate"] == 0.5
    assert table.loc[1.0, "diverged_rate"] == 0 and table.loc[1.25, "n"] == 2


def test_s_proxy_comes_from_01_of_the_same_profile(tmp_path):
    (tmp_path / "01_search").mkdir()
    cfg = KerasValidationConfig(output_dir=str(tmp_path / "03_keras_validation"))
    s, source = cfg.resolve_s_proxy()
    assert s == 1.25 and "run 01_search first" in source
    (tmp_path / "01_search" / "results.json").write_text('{"best_scale": 0.94183}')   # a CSV/JSON copy is not read
    assert cfg.resolve_s_proxy()[0] == 1.25
    from rlinit_lib.core.store import RunStore
    with RunStore(tmp_path / "01_search", "01_search", {"a": 1}) as st:
        st.put("episode/0", {"children": [{"scale": 0.94183, "epochs": 1, "reward": 7.0, "nan_detected": False}]})
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
    with pytest.raises(ParameterError, match=r"^sesoi must be a number > 0 \(got 0\)$"):
        KerasValidationConfig(sesoi=0).validate()
    with pytest.raises(ParameterError, match=r"^val_size must be an integer >= 1 \(got 0\)$"):
        KerasValidationConfig(val_size=0).validate()
    with pytest.raises(ParameterError, match=r"^unknown parameter 'epoch' for 03_keras_validation"):
        KerasValidationConfig.from_dict({"epoch": 3})


def test_short_training_warning_flags_a_large_train_validation_gap():
    from rlinit_lib.keras_validation.experiment import short_training_warning

    h = pd.DataFrame({"epoch": [1, 2, 2], "accuracy": [0.5, 0.8, 0.7], "val_accuracy": [0.4, 0.3, 0.5]})
    assert "BatchNormalization" in short_training_warning(h)
    assert short_training_warning(h.assign(val_accuracy=[0.4, 0.78, 0.69])) is None


def test_s_proxy_and_the_proxy_curve_come_from_the_upstream_stores_and_a_changed_upstream_is_refused(tmp_path):
    """Issue 25: 03 reads 01's best episode and 02's grid from their run stores (never CSV copies), records what
    it used in its identity, and refuses to relabel its runs when 01 changes."""
    from rlinit_lib.core.store import RunStore

    def episode(i, scale, reward, nan=False):
        return {"children": [{"scale": scale, "epochs": 2, "seed": i, "reward": reward, "nan_detected": nan}]}

    with RunStore(tmp_path / "01_search", "01_search", {"a": 1}) as s:
        s.put("episode/0", episode(0, 0.9, 7.0))
        s.put("episode/1", episode(1, 1.4, 7.5))
        s.put("episode/2", episode(2, 1.7, 9.0, nan=True))       # diverged: never the pick
        s.put("baseline", episode(3, 1.0, 9.5))                  # not an episode
    with RunStore(tmp_path / "02_proxy_fidelity", "02_proxy_fidelity", {"b": 1}, {"proxy_horizon": 1}) as s:
        s.put("grid", {"runs": [{"mode": "independent", "scale": sc, "seed_index": j, "epoch": 1,
                                 "test_accuracy": acc} for sc, acc in ((1.0, 0.8), (1.5, float("nan")))
                                for j in range(2)]})
    cfg = KerasValidationConfig.from_dict({"output_dir": str(tmp_path / "03"), "dataset": "synthetic",
                                           "precision": "fp32"})
    assert cfg.resolve_s_proxy() == (1.4, f"01_search's best episode ({tmp_path / '01_search'})")
    curve = cfg.upstream_02()[0].set_index("scale")["accuracy"]
    assert curve[1.0] == pytest.approx(0.8) and curve[1.5] == pytest.approx(0.1)   # diverged at chance
    RunStore.for_config(cfg).close()
    with RunStore(tmp_path / "01_search", "01_search", {"a": 1}) as s:
        s.put("episode/3", episode(4, 1.1, 8.0))                 # the search went on: 01's results changed
    with pytest.raises(ParameterError, match=r"01_search's results changed since this run \(digest: .*\); use another"):
        RunStore.for_config(cfg)
