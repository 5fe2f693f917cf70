"""bf16 autocast against fp32: tolerances derived from bf16's unit roundoff, the ``auto`` rule, and the chosen
precision as part of a run's identity and environment record."""
import json

import pytest
import torch
import torch.nn.functional as F

from rlinit_lib.core import precision as P
from rlinit_lib.core.data import normalise
from rlinit_lib.core.params import ParameterError
from rlinit_lib.core.study import run
from rlinit_lib.scale_search import proxy_fidelity as pf
from rlinit_lib.scale_search.proxy_fidelity import FidelityConfig
from rlinit_lib.children.training import build_child, train_and_evaluate

U = torch.finfo(torch.bfloat16).eps / 2     # bf16's unit roundoff, 2^-8 (8 significant bits)
LAYERS = 5                                  # SimpleCNN's weight layers: 3 convolutions, 2 linear


def tolerance() -> float:
    """Rounding a layer's inputs and weights to bf16 (products accumulate in fp32) changes its output by at
    most about 2u relative, to first order; through LAYERS layers these add up."""
    return 2 * LAYERS * U


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.5])
def test_bf16_logits_at_init_are_fp32_within_the_rounding_bound(synthetic, scale):
    m = build_child(3, 10, scale, seed=3).requires_grad_(False)
    x = normalise(synthetic.x_train[:128])
    z32 = m(x)
    with P.autocast("bf16", "cpu"):
        z16 = m(x)
    assert z16.dtype == torch.bfloat16
    rel = float((z16.float() - z32).norm() / z32.norm())
    assert 0 < rel <= tolerance()     # it does round (not silently fp32), and no more than the bound


def test_a_few_bf16_training_steps_follow_fp32(synthetic):
    """Same init, same batches, 5 Adam steps: the training losses agree to the same relative bound (Adam's
    per-coordinate normalisation keeps an O(u) gradient error from growing over a few steps)."""
    losses = {}
    for p in ("fp32", "bf16"):
        m = build_child(3, 10, 1.0, seed=0)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        losses[p] = []
        for i in range(5):
            xb, yb = normalise(synthetic.x_train[i * 64:(i + 1) * 64]), synthetic.y_train[i * 64:(i + 1) * 64]
            with P.autocast(p, "cpu"):
                z = m(xb)
            loss = F.cross_entropy(z.float(), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[p].append(loss.item())
    for a, b in zip(losses["fp32"], losses["bf16"]):
        assert 0 < abs(a - b) <= tolerance() * abs(a)


def test_train_and_evaluate_in_bf16_keeps_fp32_weights_and_learns(synthetic):
    r = train_and_evaluate(1.0, 3, synthetic, seed=0, device="cpu", precision="bf16")
    f = train_and_evaluate(1.0, 3, synthetic, seed=0, device="cpu", precision="fp32")
    assert r.test_accuracy > 0.5 and not r.nan_detected
    assert r.train_loss != f.train_loss          # bf16 really ran
    # an epoch's mean loss is a smooth function of the weights: the rounding bound, loosened by the 8 Adam
    # steps per epoch over which bf16's differences accumulate
    for a, b in zip(r.train_loss, f.train_loss):
        assert abs(a - b) <= 8 * tolerance() * abs(b)


def test_decide_prefers_bf16_only_when_clearly_faster():
    assert P.decide(1.0, 0.5) == "bf16"
    assert P.decide(1.0, 0.95) == "fp32"           # a near-tie keeps the faithful fp32
    assert P.decide(0.07, 1.0) == "fp32"           # bf16 without bf16 hardware (AVX2): 14x slower


def test_auto_measures_caches_and_explicit_choices_skip_the_probe():
    calls = []

    def make_step(p):
        return lambda: calls.append(p)

    assert P.resolve_precision("fp32", "k", make_step) == {"requested": "fp32", "chosen": "fp32", "probe": None}
    assert P.resolve_precision("bf16", "k", make_step)["chosen"] == "bf16" and calls == []
    key = ("test-cache", id(calls))
    first = P.resolve_precision("auto", key, make_step)
    n = len(calls)
    assert n == 2 * (1 + 3) and calls.count("fp32") == calls.count("bf16")   # a first step + 3 alternated repeats
    assert P.resolve_precision("auto", key, make_step) == first and len(calls) == n   # cached
    probe = first["probe"]
    assert first["chosen"] == P.decide(probe["fp32_step_ms"], probe["bf16_step_ms"])


def test_a_far_slower_first_bf16_step_ends_the_probe_with_fp32(monkeypatch):
    """A fake clock that each step advances (bf16 50x slower): no sleeps, nothing a loaded machine can change."""
    import types

    now, calls = [0.0], []
    monkeypatch.setattr(P, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def make_step(p):
        return lambda: calls.append(p) or now.__setitem__(0, now[0] + (0.05 if p == "bf16" else 0.001))

    rec = P.resolve_precision("auto", ("test-screen", id(calls)), make_step)
    assert rec["chosen"] == "fp32" and calls == ["fp32", "bf16"] and "no bf16 hardware" in rec["probe"]["note"]


def test_auto_on_this_machine_picks_what_its_own_probe_measured():
    """On an AMX machine bf16 wins, on an AVX2-only one fp32 must (both satisfy this test)."""
    cfg = FidelityConfig(dataset="synthetic", device="cpu")
    rec = cfg.precision_record()
    p = rec["probe"]
    assert rec["chosen"] == P.decide(p["fp32_step_ms"], p["bf16_step_ms"]) and p["threads"] == 1


def test_bad_precision_is_refused_in_one_line():
    with pytest.raises(ParameterError, match=r"^precision must be one of 'fp32', 'bf16', 'auto' \(got 'fp16'\)$"):
        FidelityConfig(precision="fp16").validate()


def test_the_chosen_precision_is_the_runs_identity(tmp_path):
    tiny = dict(min_scale=0.75, max_scale=1.5, n_scales=3, seeds=2, crn_seeds=0, epochs=1, horizons=[1],
                proxy_horizon=1, compare_scales=[0.75, 1.5], dataset="synthetic", train_subset=64, test_subset=32, val_size=32,
                bootstrap=100, device="cpu", wandb_mode="disabled", progress=False, executor="serial")
    out = tmp_path / "o"
    cfg = FidelityConfig.from_dict(tiny | {"output_dir": str(out), "precision": "auto"})
    chosen = cfg.precision_record()["chosen"]
    run(pf, cfg).runs
    env = json.loads((out / "environment.json").read_text())
    assert env["precision"]["requested"] == "auto" and env["precision"]["chosen"] == chosen
    assert env["precision"]["probe"]["fp32_step_ms"] > 0
    run(pf, FidelityConfig.from_dict(tiny | {"output_dir": str(out), "precision": chosen})).runs   # same identity
    other = "fp32" if chosen == "bf16" else "bf16"
    with pytest.raises(ParameterError, match=f"holds a run with precision='{chosen}' \\(now precision='{other}'\\)"):
        run(pf, FidelityConfig.from_dict(tiny | {"output_dir": str(out), "precision": other})).runs
    # auto resumes a store in the precision it was trained in, whatever a new probe would say
    forced = tmp_path / "forced"
    run(pf, FidelityConfig.from_dict(tiny | {"output_dir": str(forced), "precision": other})).runs
    again = FidelityConfig.from_dict(tiny | {"output_dir": str(forced), "precision": "auto"})
    assert again.precision_record()["chosen"] == other
    run(pf, again).runs


def test_the_bf16_working_copy_is_bit_for_bit_bf16_autocast(synthetic):
    """Trainer's bf16 step (bf16 copy, fp32 master weights and Adam) computes exactly what autocast does."""
    from rlinit_lib.children.training import Trainer

    ref, mine = build_child(3, 10, 1.0, seed=1), Trainer(build_child(3, 10, 1.0, seed=1), 1e-3, "bf16")
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    for i in range(4):
        x, y = normalise(synthetic.x_train[i * 32:(i + 1) * 32]), synthetic.y_train[i * 32:(i + 1) * 32]
        with P.autocast("bf16", "cpu"):
            z = ref(x)
        loss = F.cross_entropy(z.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mine_loss = F.cross_entropy(mine.forward(x), y)
        mine.update(mine_loss)
        assert mine_loss.item() == loss.item()
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), mine.master.parameters()))
    assert all(p.dtype == torch.float32 for p in mine.master.parameters())
    assert all(p.dtype == torch.bfloat16 for p in mine.model.parameters())
