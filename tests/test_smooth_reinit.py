from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rlinit_lib.smooth_reinit.experiment import (DQN_VARIANTS, GPT_VARIANTS, SmoothReinitConfig, compare_to_controls,
                                      dqn_metrics, run_dqn, run_gpt)
from rlinit_lib.core.params import ParameterError

TINY = str(Path(__file__).parent / "data" / "tiny_text.txt")
GPT_TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 16, "max_iters": 6, "warmup_iters": 2,
            "eval_iters": 2, "eval_interval": 3}


def cfg(tmp_path, **kw):
    base = dict(dqn_variants=["eps0", "eps0_last_noise"], dqn_seeds=2, dqn_episodes=5, gpt_variants=["baseline",
                "noise_last_mlp_proj"], gpt_seeds=2, gpt_overrides=GPT_TINY, text_path=TINY, progress=False, executor="serial",
                output_dir=str(tmp_path / "o"))
    return SmoothReinitConfig(**(base | kw)).validate()


def test_every_variant_has_a_known_control():
    for table in (DQN_VARIANTS, GPT_VARIANTS):
        for name, (_, control) in table.items():
            assert control is None or control in table


def test_every_profile_of_notebook_04_is_valid():
    files = sorted((Path(__file__).parents[1] / "params").glob("*/04_smooth_reinit.yaml"))
    assert {f.parent.name for f in files} >= {"paper", "quick", "smoke", "source_win"}
    for f in files:
        SmoothReinitConfig.from_dict(yaml.safe_load(f.read_text())).validate()


def test_a_dqn_only_run_leaves_the_gpt_tables_empty(tmp_path):
    c = cfg(tmp_path, gpt_variants=[])
    losses = run_gpt(c)
    assert losses.empty and not (tmp_path / "o" / "gpt_losses.csv").exists()
    table = compare_to_controls(losses, "val_loss", GPT_VARIANTS, lower_is_better=True)
    assert table.empty and "diff_vs_control" in table.columns


def test_dqn_runs_resume_without_repeats(tmp_path):
    c = cfg(tmp_path)
    first = run_dqn(cfg(tmp_path, dqn_seeds=2, dqn_variants=["eps0"])).returns
    both = run_dqn(c).returns
    assert len(first) == 2 * 5 and len(both) == 2 * 2 * 5
    assert not both.duplicated(["variant", "seed", "episode"]).any()
    m = dqn_metrics(both)
    assert len(m) == 4 and m["solved_at"].isna().all()  # 5 episodes never solve


def test_batched_and_one_at_a_time_dqn_runs_write_the_same_table(tmp_path):
    kw = dict(dqn_variants=["eps0_skip_middle_noise", "eps0_last_reset"], dqn_episodes=12, dqn_chunk=3)
    batched = run_dqn(cfg(tmp_path / "b", diag_every=3, **kw))
    faithful = run_dqn(cfg(tmp_path / "f", dqn_batched=False, diag_every=3, **kw))
    key = ["variant", "seed", "episode"]
    for name in ("returns", "diagnostics"):   # diagnostics too: the same weights at the same checkpoints
        pd.testing.assert_frame_equal(getattr(batched, name).sort_values(key).reset_index(drop=True),
                                      getattr(faithful, name).sort_values(key).reset_index(drop=True))
    assert len(batched.diagnostics) == 2 * 2 * (12 // 3 + 1)


def test_gpt_runs_place_noise_in_the_last_block(tmp_path):
    losses = run_gpt(cfg(tmp_path))
    assert set(losses["variant"]) == {"baseline", "noise_last_mlp_proj"} and set(losses["iter"]) == {0, 3, 6}
    final = losses[losses["iter"] == 6]
    assert final.groupby("variant")["val_loss"].apply(tuple).nunique() == 2  # the noise changed the runs


def test_compare_to_controls_finds_a_clear_effect_and_not_noise():
    rng = np.random.default_rng(0)
    m = pd.DataFrame({"variant": ["eps0"] * 10 + ["eps0_last_noise"] * 10 + ["eps0_skip"] * 10,
                      "auc": np.r_[rng.normal(100, 5, 10), rng.normal(150, 5, 10), rng.normal(100, 5, 10)]})
    t = compare_to_controls(m, "auc", DQN_VARIANTS, lower_is_better=False).set_index("variant")
    assert t.loc["eps0_last_noise", "verdict"] == "better" and t.loc["eps0_last_noise", "control"] == "eps0"
    assert t.loc["eps0_skip", "verdict"] == "not significant"


def test_bad_smooth_reinit_parameters(tmp_path):
    with pytest.raises(ParameterError, match=r"^dqn_variants must be one of"):
        cfg(tmp_path, dqn_variants=["eps1"])
    with pytest.raises(ParameterError, match=r"^dqn_chunk must be an integer >= 1 \(got 0\)$"):
        cfg(tmp_path, dqn_chunk=0)
    with pytest.raises(ParameterError, match=r"^dqn_device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' \(got 'gpu0'\)$"):
        cfg(tmp_path, dqn_device="gpu0")
    with pytest.raises(ParameterError, match=r"^unknown parameter 'layers' for char_gpt"):
        cfg(tmp_path, gpt_overrides={"layers": 2})
    with pytest.raises(ParameterError, match=r"^dormant_tau must be a number > 0 and < 1 \(got 1.0\)$"):
        cfg(tmp_path, dormant_tau=1.0)
    with pytest.raises(ParameterError, match=r"^diag_every must be an integer >= 1 \(got 0\)$"):
        cfg(tmp_path, diag_every=0)
    with pytest.raises(ParameterError, match=r"^redo_every must be an integer >= 1 \(got -5\)$"):
        cfg(tmp_path, redo_every=-5)
    with pytest.raises(ParameterError, match=r"^dqn_variants must be one of .*\(got 'eps0_dropout'\)$"):
        cfg(tmp_path, dqn_variants=["eps0", "eps0_dropout"])
