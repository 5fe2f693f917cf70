import numpy as np
import pytest
import torch
from torch import nn

from rlinit_lib.children.batched import train_many
from rlinit_lib.children.training import build_child, train_and_evaluate
from rlinit_lib.core.params import ParameterError

SCALES, SEEDS = [0.6, 1.0, 1.4], [3, 4, 5]


def test_k_networks_together_match_k_separate_runs(synthetic):
    together = train_many(SCALES, 2, synthetic, seeds=SEEDS, device="cpu", mechanism="vmap")
    for r, s, seed in zip(together, SCALES, SEEDS):
        alone = train_and_evaluate(s, 2, synthetic, seed=seed, device="cpu")
        np.testing.assert_allclose(r.train_loss[0], alone.train_loss[0], rtol=1e-4)  # first epoch: tight
        np.testing.assert_allclose(r.train_loss, alone.train_loss, rtol=2e-3)
        assert abs(r.test_accuracy - alone.test_accuracy) <= 0.02  # final accuracy within noise
        assert r.epochs_completed == 2 and not r.nan_detected


def test_a_diverging_network_leaves_the_others_unchanged(synthetic):
    """The isolation guaranteed: at the same stack size, the other networks are bit for bit what they are
    when the middle network trains normally (stacking K networks into grouped kernels may change the
    summation order with K, so across stack sizes only the float tolerance of the kernels holds)."""
    clean = train_many([0.8, 1.0, 1.2], 2, synthetic, seeds=[1, 9, 2], device="cpu", mechanism="vmap")
    mixed = train_many([0.8, 1e25, 1.2], 2, synthetic, seeds=[1, 9, 2], device="cpu", mechanism="vmap")
    assert mixed[1].nan_detected and np.isnan(mixed[1].test_accuracy) and mixed[1].epochs_completed == 0
    assert not clean[1].nan_detected
    for a, b in zip([clean[0], clean[2]], [mixed[0], mixed[2]]):
        assert a.train_loss == b.train_loss and a.test_accuracy == b.test_accuracy


def test_common_random_numbers_share_init_noise_up_to_scale(synthetic):
    built = []

    def build(scale, seed):
        built.append((scale, seed, build_child(synthetic.in_channels, 10, scale, seed=seed)))
        return built[-1][2]

    train_many([1.0, 1.5], 1, synthetic, seeds=[7, 8], common_random_numbers=True, build=build, device="cpu", mechanism="vmap")
    (s0, seed0, m0), (s1, seed1, m1) = built
    assert seed0 == seed1 == 7
    for p0, p1 in zip(m0.parameters(), m1.parameters()):
        torch.testing.assert_close(p1, 1.5 * p0)


def _bn_dropout_net(p_drop):
    def build(scale, seed):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(), nn.MaxPool2d(4),
                            nn.Flatten(), nn.Dropout(p_drop), nn.Linear(8 * 8 * 8, 10))
        with torch.no_grad():
            for m in net:
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.mul_(scale)
        return net
    return build


def test_batchnorm_statistics_are_kept_per_network(synthetic):
    build = _bn_dropout_net(0.0)
    together = train_many([0.5, 2.0], 1, synthetic, seeds=[1, 2], build=build, device="cpu", mechanism="vmap")
    for r, s, seed in zip(together, [0.5, 2.0], [1, 2]):
        alone = train_many([s], 1, synthetic, seeds=[seed], build=build, device="cpu", mechanism="vmap")[0]
        np.testing.assert_allclose(r.train_loss, alone.train_loss, rtol=1e-4)
        assert abs(r.test_accuracy - alone.test_accuracy) <= 0.01  # eval uses each network's running stats


def test_dropout_masks_differ_between_networks(synthetic):
    same = dict(seeds=[1, 1], device="cpu", mechanism="vmap")
    a, b = train_many([1.0, 1.0], 1, synthetic, build=_bn_dropout_net(0.0), **same)
    assert a.train_loss == b.train_loss
    a, b = train_many([1.0, 1.0], 1, synthetic, build=_bn_dropout_net(0.5), **same)
    assert a.train_loss != b.train_loss


def test_bad_batched_arguments_fail_with_one_line(synthetic):
    with pytest.raises(ParameterError, match=r"^seeds must have one seed per scale \(2\) \(got 1\)$"):
        train_many([1.0, 1.2], 1, synthetic, seeds=[0])
    with pytest.raises(ParameterError, match=r"^mechanism must be one of 'auto', 'vmap', 'loop'"):
        train_many([1.0], 1, synthetic, seeds=[0], mechanism="threads")
    with pytest.raises(ParameterError, match=r"^scales must hold at least one scale"):
        train_many([], 1, synthetic, seeds=[])


def test_loop_and_vmap_mechanisms_agree(synthetic):
    kw = dict(seeds=[1, 2], device="cpu", eval_every_epoch=True)
    loop = train_many([0.7, 1.3], 2, synthetic, mechanism="loop", **kw)
    vm = train_many([0.7, 1.3], 2, synthetic, mechanism="vmap", **kw)
    for a, b in zip(loop, vm):
        np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=2e-3)
        np.testing.assert_allclose(a.test_accuracy_per_epoch, b.test_accuracy_per_epoch, atol=0.02)
