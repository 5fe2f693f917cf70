"""Tiny configs of every notebook and one function that runs them (used by the crash-safety and
refusal tests, in this process or as ``python tests/tiny_runs.py NOTEBOOK OUTPUT_DIR``)."""
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
}
TABLES = {"01_search": ["episodes", "recheck"], "02_proxy_fidelity": ["runs"], "03_keras_validation": ["runs"],
          "04_smooth_reinit": ["dqn_returns", "dqn_diagnostics", "gpt_losses"], "05_search_strategies": ["reference", "histories"],
          "06_init_methods": ["runs", "init"]}
# a setting that changes results, and another value for it
CHANGED = {"01_search": ("epochs", 2), "02_proxy_fidelity": ("epochs", 3), "03_keras_validation": ("epochs", 2),
           "04_smooth_reinit": ("dqn_episodes", 6), "05_search_strategies": ("budget", 4),
           "06_init_methods": ("long_epochs", 5)}


def config(notebook: str, output_dir: str, **changes):
    from rlinit_lib.registry import NOTEBOOKS

    return NOTEBOOKS[notebook].from_dict(TINY[notebook] | COMMON | {"output_dir": str(output_dir)} | changes)


def run(notebook: str, cfg) -> None:
    """The notebook's training step (what its run cell calls)."""
    if notebook == "01_search":
        from rlinit_lib.scale_search.search import run_search
        run_search(cfg)
    elif notebook == "02_proxy_fidelity":
        from rlinit_lib.scale_search.proxy_fidelity import run_grid
        run_grid(cfg)
    elif notebook == "03_keras_validation":
        from rlinit_lib.keras_validation.experiment import run_validation
        run_validation(cfg)
    elif notebook == "04_smooth_reinit":
        from rlinit_lib.smooth_reinit.experiment import run_dqn, run_gpt
        run_dqn(cfg)
        run_gpt(cfg)
    elif notebook == "05_search_strategies":
        from rlinit_lib.scale_search.strategy_comparison import run_comparison
        run_comparison(cfg)
    else:
        from rlinit_lib.scale_search.init_methods import run_init_methods
        run_init_methods(cfg)


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
