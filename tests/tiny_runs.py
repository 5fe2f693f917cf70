"""Tiny configs of every study and one function that runs them (used by the crash-safety, refusal and bad-input
tests, in this process or as ``python tests/tiny_runs.py NOTEBOOK OUTPUT_DIR``). ``studies_under_test()`` is the
registry plus the toy study of ``toy_study.py``, which is registered only here."""
import sys
from pathlib import Path

TINY_TEXT = str(Path(__file__).parent / "data" / "tiny_text.txt")
GPT_TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 16, "max_iters": 6, "warmup_iters": 2,
            "eval_iters": 2, "eval_interval": 3}
COMMON = {"wandb_mode": "disabled", "progress": False, "executor": "serial"}
TINY = {
    "01_search": dict(episodes=3, epochs=1, dataset="synthetic", train_subset=128, test_subset=64, recheck_seeds=2,
                      val_size=64, device="cpu", explorer=False),
    "02_proxy_fidelity": dict(min_scale=0.75, max_scale=1.5, n_scales=4, seeds=2, crn_seeds=2, epochs=2, horizons=[1],
                              proxy_horizon=1, dataset="synthetic", train_subset=128, test_subset=64, bootstrap=100,
                              val_size=64, device="cpu"),
    "03_keras_validation": dict(s_proxy=1.25, seeds=2, epochs=1, dataset="synthetic", train_subset=64, test_subset=32,
                                val_size=32),
    "04_smooth_reinit": dict(dqn_variants=["eps0", "eps0_last_noise"], dqn_seeds=2, dqn_episodes=5, dqn_chunk=1,
                             gpt_variants=["baseline"], gpt_seeds=2, gpt_overrides=GPT_TINY, text_path=TINY_TEXT),
    "05_search_strategies": dict(strategies=["reinforce", "random"], repeats=2, budget=3, epochs=1, reference_scales=3,
                                 reference_seeds=1, checkpoints=[1.0], dataset="synthetic", train_subset=128,
                                 test_subset=64, val_size=64, device="cpu"),
    "06_init_methods": dict(arms=["he", "xavier_uniform"], seeds=2, proxy_epochs=1, long_epochs=4, widths=[],
                            dataset="synthetic", train_subset=128, test_subset=64, val_size=64, device="cpu"),
    "07_formula_search": dict(testbed="mlp10_relu_sgd", searchers=["reinforce", "random"], repeats=2, budget=2,
                              proxy_epochs=1, max_length=5, population=2, tournament=1, baselines=["he"],
                              validation_seeds=2, long_epochs=1, transfer_testbeds=[], dataset="synthetic",
                              train_subset=128, test_subset=64, val_size=64, device="cpu",
                              reward_searches=["activation_stability"], reward_searcher="reinforce"),
}


def studies_under_test() -> list[str]:
    from rlinit_lib.registry import STUDIES

    return [*STUDIES, "toy_study"]


def study(notebook: str):
    """A registered study by its notebook name, or a module of the tests that follows ``core.study``."""
    import importlib

    from rlinit_lib.registry import STUDIES

    return STUDIES[notebook] if notebook in STUDIES else importlib.import_module(notebook)


def config(notebook: str, output_dir: str, **changes):
    return study(notebook).Config.from_dict(TINY.get(notebook, {}) | COMMON | {"output_dir": str(output_dir)} | changes)


def run(notebook: str, cfg):
    """What the notebook's run cell does: ``core.study.run``."""
    from rlinit_lib.core.study import run as run_study

    return run_study(study(notebook), cfg)


def changed_setting(notebook: str, output_dir: str) -> tuple[str, object]:
    """A setting that changes results (an integer in the run's identity) and another valid value for it."""
    cfg = config(notebook, output_dir)
    for name, value in cfg.identity().items():
        if isinstance(value, int) and not isinstance(value, bool) and name in vars(cfg):
            try:
                config(notebook, output_dir, **{name: value + 1})
                return name, value + 1
            except Exception:
                continue
    raise AssertionError(f"{notebook} has no integer setting in its identity to change")


def slow_square(x: float, pid_dir: str) -> dict:
    """A trial that records which process ran it, then waits until the test writes ``pid_dir/release`` (for
    tests that kill worker processes while they run: the test decides when trials may end, not a timer)."""
    import os
    import time

    with open(Path(pid_dir) / f"{x}.{os.getpid()}", "w"):
        pass
    while not (Path(pid_dir) / "release").exists():
        time.sleep(0.01)
    return {"squares": [{"x": x, "y": x * x}]}


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    extra = {"executor": sys.argv[3], "workers": 2} if len(sys.argv) > 3 else {}
    run(sys.argv[1], config(sys.argv[1], sys.argv[2], **extra))
