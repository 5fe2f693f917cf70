import copy

import pytest
import torch
from torch import nn

from rlinit_lib.smooth_reinit.noise import WeightNoise, reset_parameters_of, shrink_and_perturb
from rlinit_lib.core.params import ParameterError


def qnet():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))


def test_noise_is_multiplicative_with_the_right_spread_and_only_on_named_params():
    net = qnet()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    WeightNoise(net, ["4.weight"], sigma=0.1, seed=1)
    net(torch.zeros(1, 4))
    after = dict(net.named_parameters())
    ratio = (after["4.weight"] - before["4.weight"]) / before["4.weight"]
    assert ratio.std().item() == pytest.approx(0.1, rel=0.2)  # 256 draws of N(0, 0.1^2)
    assert abs(ratio.mean().item()) < 0.03
    for n in before:
        if n != "4.weight":
            assert torch.equal(after[n], before[n])
    zero = qnet()
    with torch.no_grad():
        zero[4].weight.zero_()
    WeightNoise(zero, ["4.weight"], sigma=1.0)
    zero(torch.zeros(1, 4))
    assert torch.count_nonzero(zero[4].weight) == 0  # multiplicative: zero stays zero


def test_decay_halves_sigma_each_forward_and_noise_becomes_negligible():
    net = qnet()
    noise = WeightNoise(net, ["4.weight", "4.bias"], sigma=1.0, decay=0.5, seed=0)
    for _ in range(40):
        net(torch.zeros(1, 4))
    assert noise.sigma == pytest.approx(0.5 ** 40) and noise.steps == 40
    w = net[4].weight.detach().clone()
    net(torch.zeros(1, 4))
    assert torch.allclose(net[4].weight, w, rtol=1e-9, atol=0)


def test_same_seed_same_perturbation_and_eval_switch():
    a, b = qnet(), qnet()
    WeightNoise(a, ["2.weight"], sigma=0.5, seed=7)
    WeightNoise(b, ["2.weight"], sigma=0.5, seed=7)
    a(torch.zeros(1, 4)), b(torch.zeros(1, 4))
    assert torch.equal(a[2].weight, b[2].weight)
    c = qnet()
    WeightNoise(c, ["2.weight"], sigma=0.5, in_eval=False)
    c.eval()
    c(torch.zeros(1, 4))
    assert torch.equal(c[2].weight, qnet()[2].weight)


def test_schedule_overrides_decay():
    net = qnet()
    seen = []
    noise = WeightNoise(net, ["4.weight"], schedule=lambda step: seen.append(step) or 0.0)
    for _ in range(3):
        net(torch.zeros(1, 4))
    assert seen == [0, 1, 2] and noise.steps == 3


def test_shrink_and_perturb_and_reset():
    net, fresh = qnet(), copy.deepcopy(qnet())
    for p in fresh.parameters():
        nn.init.normal_(p)
    old = net[4].weight.detach().clone()
    shrink_and_perturb(net, fresh, 0.4, 0.1, names=["4.weight"])
    assert torch.allclose(net[4].weight, 0.4 * old + 0.1 * fresh[4].weight)
    assert torch.equal(net[0].weight, qnet()[0].weight)
    reset_parameters_of(net[4])
    assert not torch.equal(net[4].weight, old)


def test_bad_noise_arguments():
    with pytest.raises(ParameterError, match=r"^names must be one of"):
        WeightNoise(qnet(), ["fc3.weight"])
    with pytest.raises(ParameterError, match=r"^decay must be a number >= 0 and <= 1 \(got 1.5\)$"):
        WeightNoise(qnet(), ["4.weight"], decay=1.5)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_initial_weights_and_first_noise_draws_are_uncorrelated():
    """The issue's defect: WeightNoise was seeded with the initialisation's seed, so the first noise draws were a
    function of the initial weights (fc1's correlation with them was about -0.35 here). Now the init, the online
    noise and the target noise each come from their own stream of the run's seed."""
    from rlinit_lib.smooth_reinit.dqn import DQNConfig, QNet, networks

    torch.manual_seed(0)
    old = QNet()
    assert abs(_corr(old.fc1.weight, torch.randn(128, 4, generator=torch.Generator().manual_seed(0)))) > 0.25
    for seed in range(5):
        q, _, noises = networks(DQNConfig(seed=seed, epsilon=0.0, noise_layer="fc2", noise_decay=1.0))
        assert len(noises) == 2
        first = []
        for hook in noises:      # the draws each hook makes on its first forward (fc2's weight first)
            g = torch.Generator().set_state(hook.generator.get_state())
            first.append(torch.randn(128, 128, generator=g))
            assert abs(_corr(q.fc1.weight, first[-1].flatten()[:512])) < 0.15
            assert abs(_corr(q.fc2.weight, first[-1])) < 0.05
        assert abs(_corr(first[0], first[1])) < 0.05       # online and target noise differ too


def test_no_two_random_streams_of_dqn_runs_coincide_over_100_consecutive_seeds():
    from rlinit_lib.core.runtime import derive_seed, stream_seed
    from rlinit_lib.smooth_reinit.dqn import env_seed, indexed_seed, noise_seed

    purposes = ("init", "exploration", "replay", "replay_states", "param_noise", "soft_shrink_perturb",
                "noisynet_online", "noisynet_target")
    seeds = []
    for s in range(100):
        run = derive_seed(0, s)
        seeds += [stream_seed(run, p) for p in purposes] + [noise_seed(run), noise_seed(run, target=True)]
        seeds += [env_seed(run, e) for e in range(5)] + [indexed_seed(run, "reinit_net", e) for e in (200, 400)]
    assert len(set(seeds)) == len(seeds)
