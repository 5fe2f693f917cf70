import math

import pytest

from rlinit_lib.scale_search.scale_env import reward_of
from rlinit_lib.children.training import train_and_evaluate
from rlinit_lib.core.params import ParameterError


def test_learns_synthetic_task_well_above_chance(synthetic):
    runs = [train_and_evaluate(1.0, 3, synthetic, seed=s, device="cpu") for s in range(3)]
    for r in runs:
        assert not r.nan_detected and r.epochs_completed == 3
        assert r.train_loss[-1] < r.train_loss[0]
        assert r.seconds > 0
    assert sum(r.test_accuracy for r in runs) / 3 > 0.5  # chance is 0.1; single seeds vary at 3 epochs


def test_validation_split_is_held_out_and_evaluated():
    from rlinit_lib.core.data import load_dataset

    d = load_dataset("synthetic", synthetic_train=512, synthetic_test=256, val_size=128)
    assert len(d.y_val) == 128 and len(d.y_train) == 512
    rows = lambda x: {bytes(v.numpy().tobytes()) for v in x}   # noqa: E731
    assert not rows(d.x_val) & rows(d.x_train)      # no validation image is trained on
    again = load_dataset("synthetic", synthetic_train=512, synthetic_test=256, val_size=128)
    assert (again.x_val == d.x_val).all()           # the same split for every run and seed
    r = train_and_evaluate(1.0, 2, d, seed=0, device="cpu", eval_every_epoch=True)
    assert 0.0 <= r.val_accuracy <= 1.0 and len(r.val_accuracy_per_epoch) == 2
    with pytest.raises(ParameterError, match="val_size must be smaller"):
        from rlinit_lib.core.data import _hold_out
        _hold_out(load_dataset("synthetic", synthetic_train=64, synthetic_test=16), 64)


def test_same_seed_same_result_and_other_seed_differs(synthetic):
    a = train_and_evaluate(1.0, 1, synthetic, seed=5, device="cpu")
    b = train_and_evaluate(1.0, 1, synthetic, seed=5, device="cpu")
    c = train_and_evaluate(1.0, 1, synthetic, seed=6, device="cpu")
    assert a.train_loss == b.train_loss and a.test_accuracy == b.test_accuracy
    assert a.train_loss != c.train_loss


def test_huge_scale_diverges_stops_and_pays_minus_two(synthetic):
    r = train_and_evaluate(1e25, 3, synthetic, seed=0, device="cpu")
    assert r.nan_detected and math.isnan(r.test_accuracy) and r.epochs_completed == 0
    assert reward_of(r) == -2.0


def test_eval_every_epoch_records_each_horizon(synthetic):
    r = train_and_evaluate(1.0, 2, synthetic, seed=0, device="cpu", eval_every_epoch=True)
    assert len(r.test_accuracy_per_epoch) == 2 and r.test_accuracy_per_epoch[-1] == r.test_accuracy


@pytest.mark.parametrize("kw,msg", [({"epochs": 0}, r"^epochs must be an integer >= 1 \(got 0\)$"),
                                    ({"batch_size": -1}, r"^batch_size must be an integer >= 1"),
                                    ({"lr": 0.0}, r"^lr must be a number > 0")])
def test_bad_training_arguments(synthetic, kw, msg):
    args = {"scale": 1.0, "epochs": 1, "data": synthetic} | kw
    with pytest.raises(ParameterError, match=msg):
        train_and_evaluate(**args)


def test_short_real_training_on_fashion_mnist_beats_chance_widely(fashion_mnist):
    from rlinit_lib.core.data import load_dataset

    d = load_dataset("fashion_mnist", download=False, train_subset=4000, test_subset=2000)
    r = train_and_evaluate(1.0, 1, d, seed=0, device="cpu")
    assert r.test_accuracy > 0.6  # chance is 0.1
