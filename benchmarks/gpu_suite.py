"""Every GPU row of BENCHMARKS.md in one call (issue 26): one script, one machine, one Markdown table.

    python -m benchmarks.gpu_suite --out DIR              # on a GPU machine: under 8 minutes on one H200
    python -m benchmarks.gpu_suite --tiny --out DIR       # everything minimal, on the CPU (the test runs this)

Sections, each wrapped so that a failure is recorded as ``failed: <one line>`` and the others still run:

* ``device``: GPU name, memory and capability, torch / CUDA / cuDNN versions, the host CPU's model and
  flags (``/proc/cpuinfo``), cores, memory, date.
* ``training``: child-network training of SimpleCNN on synthetic CIFAR-shaped data (50,000 training
  images, 10,000 test): ``benchmarks.bench_training``'s paths (a) the dissertation loop, (b) the resident
  single-model path and (c) K networks at once (``train_many``, vmap), (b) and (c) in fp32 and bf16;
  seconds per model-epoch (training plus its share of the final test evaluation, as bench_training
  counts it), images per second, x vs (a), peak GPU memory. Each timed path is first warmed up on a
  small subset (CUDA context, cuDNN plans, vmap), then timed for ``--train-epochs`` epochs.
* ``search``: notebook 01's REINFORCE search over the He scale (``core.study.run`` of ``rlinit_lib.scale_search.search``,
  the dissertation's agent) with its children trained on synthetic CIFAR-shaped data (50,000 training
  images, of which the child config's ``val_size`` are held out where the library has a validation split).
  Episodes are 1 epoch, not the dissertation's 7 (the budget); the suite reports the measured 1-epoch
  episodes and, labelled as extrapolation, 7 x that per 7-epoch episode and 200 of those per search.
* ``dqn``: notebook 04's batched DQN (``dqn_batched.train_dqn_batched``) on CartPole, K runs at once
  (K = 10, 100, 1000) on the GPU and on the same machine's CPU, ``--dqn-episodes`` episodes per run, without
  notebook 04's diagnostics and with an earlier learning start (``section_dqn`` says why it does not call
  ``bench_dqn.main``): runs per second and environment steps per second, against the faithful one-run path.

``--section-budget-s`` bounds each section: before each measurement the suite predicts its time from the
ones before it and leaves out what would not fit (reported as ``not run: budget``; a DQN batch is run with
fewer episodes instead where at least 5 fit, and says so), and a measurement still running when the budget
is spent is interrupted (SIGALRM) and reported as stopped. Results go to ``DIR/gpu_suite.md`` and
``DIR/gpu_suite.json`` (raw numbers), rewritten after every section. ``--fail-section NAME`` makes a
section raise at its start (to check the wrapping). Exit status 1 when a section failed.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

SECTIONS = ("device", "training", "search", "dqn")
BUDGETS = {"device": 30.0, "training": 180.0, "search": 60.0, "dqn": 170.0}   # seconds: 7.3 minutes at most
TINY_BUDGETS = {name: 60.0 for name in SECTIONS}


# the CPU's vector and matrix extensions that decide kernel speed (as core.runtime.SPEED_FLAGS)
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "asimd", "sve")


def log(msg: str) -> None:
    print(f"[gpu_suite {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class ForcedFailure(RuntimeError):
    """Raised at the start of a section named by ``--fail-section``."""


class Budget:
    """A section's time budget: what is left, and whether a measurement predicted to take ``seconds`` fits."""

    def __init__(self, seconds: float):
        self.seconds, self.start = float(seconds), time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def fits(self, seconds: float) -> bool:
        return seconds <= self.left()


class OverBudget(BaseException):
    """Raised by ``hard_limit`` when a measurement outruns the section's budget (a BaseException, so that
    code catching ``Exception``, such as a trial executor, lets it through)."""


@contextlib.contextmanager
def hard_limit(seconds: float):
    """Interrupt the block after ``seconds`` (SIGALRM; main thread on Unix only, elsewhere no limit)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return
    if seconds <= 0:
        raise OverBudget("no time left in the section budget")

    def stop(signum, frame):
        raise OverBudget(f"interrupted after {seconds:.0f} s, the rest of the section budget")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "(no message)"
    return f"{type(err).__name__}: {text}"[:300]


def _finite(x):
    """JSON-safe numbers: NaN and inf become None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return _finite(x.item())
    return x


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------ device

def cpu_info() -> dict:
    """CPU model, flags, cores and memory of this host, from /proc (Linux). Needs nothing of rlinit_lib, so
    that this section reports the machine even where the library does not import."""
    info = {"cpu_model": platform.processor() or platform.machine(), "cpu_flags_all": [],
            "cpu_cores": os.cpu_count() or 1,
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                info["cpu_model"] = value.strip()
            if key.strip() in ("flags", "Features") and not info["cpu_flags_all"]:
                info["cpu_flags_all"] = value.split()
    except OSError:
        pass
    try:
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        info["host_memory_GiB"] = int(mem.split()[1]) / 2**20
    except (OSError, StopIteration, ValueError):
        pass
    info["cpu_flags_speed"] = [f for f in SPEED_FLAGS if f in info["cpu_flags_all"]]
    return info


def section_device(s: "Settings", budget: Budget, out: dict) -> None:
    device = s.device
    info = {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": str(device),
            "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "numpy": np.__version__, "torch_threads": torch.get_num_threads(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32, **cpu_info()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"gpu": torch.cuda.get_device_name(device), "gpu_memory_GiB": props.total_memory / 2**30,
                 "gpu_capability": f"{props.major}.{props.minor}", "gpu_multiprocessors": props.multi_processor_count,
                 "bf16_supported": torch.cuda.is_bf16_supported()}
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            info["driver"] = smi.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    for pkg in ("gymnasium", "pandas", "torchvision"):
        try:
            info[pkg] = __import__(pkg).__version__
        except Exception as err:   # a missing package is recorded; the section that needs it fails by itself
            info[pkg] = f"missing ({one_line(err)})"
    out["info"] = info
    out["rows"] = [{"item": "host CPU cores", "value": info["cpu_cores"]},
                   {"item": "host memory GiB", "value": info.get("host_memory_GiB")}]
    if device.type == "cuda":
        out["rows"].append({"item": "GPU memory GiB", "value": info["gpu_memory_GiB"]})
    out["summary"] = (f"{info.get('gpu', 'CPU only')}; torch {info['torch']}, CUDA {info['cuda']}, cuDNN {info['cudnn']}; "
                      f"host {info['cpu_model']}, {info['cpu_cores']} cores, flags {' '.join(info['cpu_flags_speed']) or '-'}; "
                      f"{info['date_utc'][:10]}")
    log(out["summary"])


# ------------------------------------------------------------------------------------------ training

@functools.lru_cache(maxsize=4)
def synthetic_data(n_train: int, n_test: int, val_size: int | None = None):
    """The CIFAR-shaped synthetic dataset, on the CPU (``val_size`` held out where the library supports it)."""
    from rlinit_lib.core.data import load_dataset

    kwargs = {"val_size": val_size} if val_size else {}
    return load_dataset("synthetic", synthetic_train=n_train, synthetic_test=n_test, **kwargs)


@functools.lru_cache(maxsize=4)
def resident_data(n_train: int, n_test: int, val_size: int | None, device: torch.device):
    """``synthetic_data`` moved to ``device`` once per process (what ``core.data.load_cached`` does)."""
    return synthetic_data(n_train, n_test, val_size).to(device)


def _head(data, n: int):
    from rlinit_lib.core.data import ImageData

    return ImageData(data.name, data.x_train[:n], data.y_train[:n], data.x_test[:n], data.y_test[:n])


def section_training(s: "Settings", budget: Budget, out: dict) -> None:
    from benchmarks.bench_training import _timed, dissertation_loop
    from rlinit_lib.children.batched import train_many
    from rlinit_lib.children.training import train_and_evaluate

    device, epochs = s.device, s.train_epochs
    data = synthetic_data(s.train_images, s.test_images)
    resident = data.to(device)
    warm = _head(resident, s.warm_images)
    n = len(data.y_train)
    log(f"training: {data} resident on {device}; {epochs} epoch(s) per timed path, warm-up on {s.warm_images} images")

    def c_path(k, p, d, ep):
        scales = list(np.linspace(0.8, 1.4, k)) if k > 1 else [1.0]
        return float(np.nanmean([r.test_accuracy for r in train_many(scales, ep, d, seeds=list(range(k)),
                                                                   mechanism="vmap", precision=p)]))

    paths = [("(a) dissertation loop", "fp32", 1, s.baseline_epochs, None,
              lambda: dissertation_loop(data, s.baseline_epochs, device))]
    for p in s.precisions:
        paths.append(("(b) resident", p, 1, epochs,
                      lambda p=p: train_and_evaluate(1.0, 1, warm, seed=0, precision=p),
                      lambda p=p: train_and_evaluate(1.0, epochs, resident, seed=0, precision=p).test_accuracy))
    for k in s.ks:
        for p in s.precisions:
            paths.append(("(c) batched (vmap)", p, k, epochs, lambda k=k, p=p: c_path(k, p, warm, 1),
                          lambda k=k, p=p: c_path(k, p, resident, epochs)))

    rows, per_model_epoch = [], {}      # last measured seconds per model-epoch, per precision
    out["rows"] = rows
    base = None
    for name, p, k, ep, warm_fn, fn in paths:
        guess = per_model_epoch.get(p, per_model_epoch.get("fp32"))
        predicted = None if guess is None else guess * k * ep * 1.2 + 2.0   # no gain from K assumed: cautious
        row = {"path": name, "precision": p, "K": k, "epochs": ep, "train_images": n}
        if predicted is not None and not budget.fits(predicted):
            row["not_run"] = f"budget: predicted {predicted:.0f} s, {max(budget.left(), 0):.0f} s left"
            rows.append(row)
            log(f"training: {name} {p} K={k}: not run ({row['not_run']})")
            continue
        try:
            with hard_limit(budget.left()):
                if warm_fn is not None:
                    warm_fn()
                    _sync(device)
                wall, cpu, acc, peak = _timed(fn, device)
        except OverBudget as err:
            row["not_run"] = f"stopped: {err}"
            rows.append(row)
            log(f"training: {name} {p} K={k}: {row['not_run']}")
            break
        spe = wall / (k * ep)
        per_model_epoch[p] = spe
        if base is None and name.startswith("(a)"):
            base = spe
        row |= {"seconds": wall, "s_per_model_epoch": spe, "cpu_s_per_model_epoch": cpu / (k * ep),
                "images_per_s": n * k * ep / wall, "accuracy": acc, "peak_gpu_MiB": peak,
                "x_vs_a": None if base is None else base / spe}
        rows.append(row)
        log(f"training: {name:<22} {p:<4} K={k:<3} {spe:8.4f} s/model-epoch  {row['images_per_s']:10.0f} img/s  "
            f"x vs (a) {row['x_vs_a'] or 0:7.2f}  peak {peak or 0:7.0f} MiB  acc {acc:.4f}")
    done = [r for r in rows if "seconds" in r]
    if not done:
        raise RuntimeError("no training path fitted the budget")
    best = min(done, key=lambda r: r["s_per_model_epoch"])
    out["summary"] = (f"fastest: {best['path']} {best['precision']} K={best['K']}: {best['s_per_model_epoch']:.4f} s per "
                      f"model-epoch ({best['x_vs_a'] or float('nan'):.0f}x (a)); {len(done)} of {len(rows)} paths measured")
    out["partial"] = len(done) < len(rows)


# ------------------------------------------------------------------------------------------ search

def section_search(s: "Settings", budget: Budget, out: dict) -> None:
    from rlinit_lib.children.child import result_row
    from rlinit_lib.core.study import run
    from rlinit_lib.scale_search import search
    from rlinit_lib.scale_search.search import SearchConfig
    from rlinit_lib.children.training import train_and_evaluate

    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    tmp = Path(tempfile.mkdtemp(prefix="gpu-suite-search-"))
    params = {"dataset": "synthetic", "device": str(s.device), "precision": s.search_precision, "epochs": s.search_epochs,
              "recheck_seeds": 0, "executor": "serial", "wandb_mode": "disabled", "progress": False,
              "explorer": False, "output_dir": str(tmp / "store")}
    if "val_size" in fields and s.val_size is not None:
        params["val_size"] = s.val_size
    trained = []     # one entry per child trained: (wall seconds of the trial, TrainResult.seconds)

    def evaluator(child: dict, scale: float, epochs: int, seed: int, **kwargs) -> dict:
        """What ``search.child_trial`` does, with the children's data the suite's 50,000-image synthetic set."""
        data = resident_data(s.train_images, s.test_images, child.get("val_size"), s.device)
        out.setdefault("child_data", repr(data))
        _sync(s.device)
        start = time.perf_counter()
        result = train_and_evaluate(scale, epochs, data, batch_size=child["batch_size"], lr=child["lr"],
                                    activation=child["activation"], seed=seed, device=s.device,
                                    precision=child.get("precision", "fp32"))
        _sync(s.device)
        trained.append((time.perf_counter() - start, result.seconds))
        row = result_row(result, kwargs["reward_split"]) if "reward_split" in kwargs else result_row(result)
        return {"children": [{"scale": scale, "epochs": epochs, "seed": seed, **row}]}

    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    rows, calls = [], []
    out["rows"] = rows
    try:
        log(f"search: REINFORCE (update_every 1), {s.search_epochs}-epoch episodes on {s.train_images} synthetic "
            f"images (less the child config's val_size, if any), precision {s.search_precision}, up to "
            f"{s.search_episodes} episodes")
        result = None
        for episodes in range(1, s.search_episodes + 1):
            if calls:
                predicted = 1.5 * max(c["seconds"] for c in calls[1:] or calls)
                if not budget.fits(predicted):
                    out["notes"] = [f"stopped after {episodes - 1} of {s.search_episodes} episodes: budget "
                                    f"(next predicted {predicted:.0f} s, {max(budget.left(), 0):.0f} s left)"]
                    log("search: " + out["notes"][0])
                    break
            n_before = len(trained)
            start = time.perf_counter()
            # a larger ``episodes`` extends the finished search in the same store (the notebook's resume)
            try:
                with hard_limit(budget.left()):
                    result = run(search, SearchConfig.from_dict({**params, "episodes": episodes}), evaluator=evaluator)
            except OverBudget as err:
                out["notes"] = [f"stopped after {episodes - 1} of {s.search_episodes} episodes: {err}"]
                log("search: " + out["notes"][0])
                break
            calls.append({"episodes": episodes, "seconds": time.perf_counter() - start,
                          "children": len(trained) - n_before})
            t = result.table.iloc[-1]
            wall, child_s = trained[n_before]
            rows.append({"episode": int(t["episode"]), "scale": float(t["scale"]), "reward": float(t["reward"]),
                         "child_seconds": float(child_s), "trial_wall_s": wall, "search_call_s": calls[-1]["seconds"]})
            log(f"search: episode {episodes - 1}: s = {t['scale']:.3f}, reward {t['reward']:.3f}, child {child_s:.2f} s, "
                f"search call {calls[-1]['seconds']:.2f} s" + (" (includes the s = 1.0 baseline child)"
                                                               if calls[-1]["children"] > 1 else ""))
        if not rows:
            raise RuntimeError("no episode fitted the budget")
        med = statistics.median(r["child_seconds"] for r in rows)
        overhead = [c["seconds"] - sum(w for w, _ in trained[sum(x["children"] for x in calls[:i]):
                                                             sum(x["children"] for x in calls[:i + 1])])
                    for i, c in enumerate(calls)]
        out["extrapolation"] = {
            "note": (f"measured: {s.search_epochs}-epoch episodes; the dissertation's episodes are 7 epochs. "
                     "Extrapolated as 7 / measured epochs x the median measured child time (build and final "
                     "evaluation counted 7 times: an upper bound)"),
            "median_child_s_per_measured_episode": med,
            "per_7_epoch_episode_s": med * 7 / s.search_epochs,
            "search_200_episodes_min": 200 * med * 7 / s.search_epochs / 60,
            "driver_overhead_s_per_call_median": statistics.median(overhead),
            "precision": SearchConfig.from_dict({**params, "episodes": 1}).precision_record(),
        }
        e = out["extrapolation"]
        log(f"search: children trained on {out.get('child_data')}")
        out["summary"] = (f"{len(rows)} episodes of {s.search_epochs} epoch: child {med:.2f} s per episode (median); "
                          f"extrapolated: {e['per_7_epoch_episode_s']:.1f} s per 7-epoch episode, "
                          f"{e['search_200_episodes_min']:.1f} min per 200-episode search")
        out["partial"] = len(rows) < s.search_episodes
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1], saved[2]
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------ dqn

def dqn_configs(k: int, episodes: int, learning_starts: int) -> list:
    """K runs of notebook 04's ``minimalrl_schedule`` arm (``SmoothReinitConfig.dqn_config``, as bench_dqn builds
    them), seeds 0..K-1, without the diagnostics and with ``learning_starts`` (see ``section_dqn``)."""
    from rlinit_lib.smooth_reinit.experiment import SmoothReinitConfig

    cfg = SmoothReinitConfig(dqn_episodes=episodes, dqn_step_budget=0).dqn_config("minimalrl_schedule", 0)
    cfg = dataclasses.replace(cfg, diag_every=0, learning_starts=learning_starts)
    return [dataclasses.replace(cfg, seed=s) for s in range(k)]


def section_dqn(s: "Settings", budget: Budget, out: dict) -> None:
    """K runs at once of ``dqn_batched.train_dqn_batched`` per device, ``--dqn-episodes`` episodes per run.

    Not ``bench_dqn.main``: it fixes notebook 04's diagnostics (every 20 episodes, one network at a time, an SVD
    each: 164 of 188 s of a 4-episode, 1000-run batch on the 2-core CPU) and minimalRL's learning start after
    2,000 transitions (about 90 episodes), so the short runs that fit the budget would time diagnostics and no
    update at all. Here the runs have no diagnostics and start learning after ``--dqn-learning-starts``
    transitions; the rest is notebook 04's arm, and bench_dqn's baseline (a), the faithful one-run path
    (``dqn.train_dqn``) with the same settings, gives the x-vs-faithful column (ratio of env steps per second:
    runs that learn play longer episodes, so steps, not episodes, are the comparable unit)."""
    from rlinit_lib.smooth_reinit.dqn import train_dqn
    from rlinit_lib.smooth_reinit.dqn_batched import train_dqn_batched

    rows, last = [], {}          # last: device -> [(K, seconds per episode)] of its measured batches
    out["rows"] = rows
    out["notes"] = [f"minimalrl_schedule arm of notebook 04, no diagnostics, learning starts after "
                    f"{s.dqn_learning_starts} transitions (notebook: 2000), {s.dqn_episodes} episodes per run unless "
                    "a row says fewer; runs in lock step (wait_fraction 1)"]
    devices = [torch.device(d) for d in s.dqn_devices]
    with hard_limit(budget.left()):    # warm-up: CUDA context, cuBLAS, Gymnasium, first calls; not timed
        for dev in devices:
            train_dqn_batched(dqn_configs(2, 2, 32), device=dev)
        train_dqn(dqn_configs(1, 1, 32)[0])
    log(f"dqn: CartPole, K = {s.dqn_ks} runs at once on {[str(d) for d in devices]}; torch threads "
        f"{torch.get_num_threads()}; {out['notes'][0]}")
    with hard_limit(budget.left()):
        t = time.perf_counter()
        faithful = train_dqn(dqn_configs(1, s.dqn_episodes, s.dqn_learning_starts)[0])
        faithful_s = time.perf_counter() - t
    out["faithful"] = {"seconds": faithful_s, "env_steps": sum(faithful["returns"]),
                       "env_steps_per_s": sum(faithful["returns"]) / faithful_s}
    log(f"dqn: faithful one-run path (train_dqn, CPU): {faithful_s:.2f} s, "
        f"{out['faithful']['env_steps_per_s']:.0f} env steps/s")
    for k in s.dqn_ks:
        for dev in devices:
            episodes, row = s.dqn_episodes, {"device": dev.type, "K": k}
            seen = last.get(dev.type, [])
            if seen:
                (k1, t1) = seen[-1]
                power = 1.0
                if len(seen) > 1 and seen[-2][0] != k1:       # the scaling measured so far on this device
                    power = min(2.0, max(0.3, math.log(t1 / seen[-2][1]) / math.log(k1 / seen[-2][0])))
                per_episode = 1.3 * t1 * (k / k1) ** power
                if not budget.fits(per_episode * episodes + 2.0):
                    episodes = int((budget.left() - 2.0) / per_episode)
                    if episodes < min(5, s.dqn_episodes):
                        row["not_run"] = (f"budget: predicted {per_episode * s.dqn_episodes:.0f} s, "
                                          f"{max(budget.left(), 0):.0f} s left")
                        rows.append(row)
                        log(f"dqn: K={k} on {dev.type}: not run ({row['not_run']})")
                        continue
                    row["note"] = (f"{episodes} episodes, not {s.dqn_episodes}: budget "
                                   f"(predicted {per_episode * s.dqn_episodes:.0f} s for {s.dqn_episodes})")
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            runs = dqn_configs(k, episodes, s.dqn_learning_starts)
            try:
                with hard_limit(budget.left()):
                    _sync(dev)
                    t = time.perf_counter()
                    results = train_dqn_batched(runs, device=dev)
                    _sync(dev)
                    seconds = time.perf_counter() - t
            except OverBudget as err:
                row["not_run"] = f"stopped: {err}"
                rows.append(row)
                log(f"dqn: K={k} on {dev.type}: {row['not_run']}")
                break
            steps = sum(sum(r["returns"]) for r in results)
            row |= {"episodes": episodes, "seconds": seconds, "runs_per_s": k / seconds,
                    "run_episodes_per_s": k * episodes / seconds, "env_steps": steps,
                    "env_steps_per_s": steps / seconds,
                    "x_vs_faithful": (steps / seconds) / out["faithful"]["env_steps_per_s"],
                    "peak_gpu_MiB": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None}
            rows.append(row)
            last.setdefault(dev.type, []).append((k, seconds / episodes))
            log(f"dqn: K={k:<5} {dev.type:<4} {episodes} episodes: {seconds:7.2f} s, {row['runs_per_s']:8.2f} runs/s, "
                f"{row['env_steps_per_s']:9.0f} env steps/s, {row['x_vs_faithful']:.1f}x the faithful path's env steps/s")
    done = [r for r in rows if "seconds" in r]
    if not done:
        raise RuntimeError("no DQN batch fitted the budget")
    top = max(r["K"] for r in done)
    parts = [f"{r['device']} {r['env_steps_per_s']:.0f} env steps/s ({r['run_episodes_per_s']:.0f} run-episodes/s)"
             for r in done if r["K"] == top]
    out["summary"] = f"K={top}: " + ", ".join(parts) + f"; {len(done)} of {len(rows)} batches measured"
    out["partial"] = len(done) < len(rows) or any("note" in r for r in rows)


RUNNERS = {"device": section_device, "training": section_training, "search": section_search, "dqn": section_dqn}


# ------------------------------------------------------------------------------------------ driver

@dataclasses.dataclass
class Settings:
    device: torch.device
    train_images: int
    test_images: int
    warm_images: int
    train_epochs: int
    baseline_epochs: int
    ks: list
    precisions: list
    search_episodes: int
    search_epochs: int
    search_precision: str
    val_size: int | None
    dqn_ks: list
    dqn_episodes: int
    dqn_learning_starts: int
    dqn_devices: list
    budgets: dict


def parse_budgets(values: list[str] | None, tiny: bool) -> dict:
    """``--section-budget-s 120`` (every section) or ``dqn=200 search=60`` (named ones)."""
    budgets = dict(TINY_BUDGETS if tiny else BUDGETS)
    for v in values or []:
        name, _, secs = v.rpartition("=")
        if name and name not in SECTIONS:
            raise SystemExit(f"--section-budget-s: unknown section {name!r} (known: {', '.join(SECTIONS)})")
        try:
            seconds = float(secs)
        except ValueError:
            raise SystemExit(f"--section-budget-s: {v!r} is not SECONDS or SECTION=SECONDS") from None
        if seconds <= 0:
            raise SystemExit(f"--section-budget-s must be > 0 (got {v!r})")
        for n in ([name] if name else SECTIONS):
            budgets[n] = seconds
    return budgets


def pick_device(name: str) -> torch.device:
    """auto: cuda where torch sees one, else cpu (no import of rlinit_lib: the device section must run anyway)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available here")
    return device


def settings_from(args) -> Settings:
    tiny = args.tiny
    device = pick_device("cpu" if tiny and args.device == "auto" else args.device)
    pick = lambda value, full, small: value if value is not None else (small if tiny else full)  # noqa: E731
    dqn_devices = args.dqn_devices or ([device.type, "cpu"] if device.type == "cuda" else ["cpu"])
    return Settings(
        device=device,
        train_images=pick(args.train_images, 50_000, 128), test_images=pick(args.test_images, 10_000, 64),
        warm_images=pick(None, 1024, 64), train_epochs=pick(args.train_epochs, 1, 1), baseline_epochs=1,
        ks=pick(args.ks, [1, 8, 32, 64], [2]), precisions=pick(args.precisions, ["fp32", "bf16"], ["fp32", "bf16"]),
        search_episodes=pick(args.search_episodes, 6, 2), search_epochs=pick(args.search_epochs, 1, 1),
        search_precision=pick(args.search_precision, "fp32", "fp32"), val_size=pick(None, None, 32),
        dqn_ks=pick(args.dqn_ks, [10, 100, 1000], [2, 4]), dqn_episodes=pick(args.dqn_episodes, 40, 3),
        dqn_learning_starts=pick(args.dqn_learning_starts, 300, 32),
        dqn_devices=dqn_devices, budgets=parse_budgets(args.section_budget_s, tiny))


def run_section(name: str, s: Settings, fail: set) -> dict:
    budget = Budget(s.budgets[name])
    out: dict = {"name": name, "budget_s": budget.seconds}
    log(f"section {name}: start (budget {budget.seconds:.0f} s)")
    try:
        if name in fail:
            raise ForcedFailure(f"forced by --fail-section {name}")
        RUNNERS[name](s, budget, out)
        out["status"] = "stopped at budget" if out.get("partial") else "ok"
    except KeyboardInterrupt:
        raise
    except BaseException as err:      # SystemExit too: a benchmark's argument check must not end the suite
        out["status"] = f"failed: {one_line(err)}"
        out["traceback"] = traceback.format_exc()
        log(f"section {name}: {out['status']}")
    out["seconds"] = budget.elapsed()
    log(f"section {name}: {out['status']} after {out['seconds']:.1f} s")
    return out


def _fmt(x, digits=4):
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.{digits}f}" if abs(x) < 100 else f"{x:,.0f}"
    return str(x)


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def markdown(report: dict) -> str:
    sec = report["sections"]
    dev = sec.get("device", {}).get("info", {})
    lines = [f"# GPU suite: {dev.get('gpu', report['device'])}, {report['date_utc'][:10]}", "",
             f"Command: `{report['command']}`", ""]
    lines += _table(["section", "status", "seconds", "result"],
                    [[n, v["status"], f"{v['seconds']:.1f}", v.get("summary", "")] for n, v in sec.items()])
    t = sec.get("training", {})
    if t.get("rows"):
        lines += ["", "## Child training (SimpleCNN, synthetic CIFAR-shaped data)", ""]
        lines += _table(["path", "precision", "K", "epochs", "s per model-epoch", "images/s", "x vs (a)", "peak GPU MiB",
                         "accuracy"],
                        [[r["path"], r["precision"], r["K"], r["epochs"], "not run: " + r["not_run"], "", "", "", ""]
                         if "not_run" in r else
                         [r["path"], r["precision"], r["K"], r["epochs"], _fmt(r["s_per_model_epoch"]),
                          _fmt(r["images_per_s"], 0), _fmt(r["x_vs_a"], 2), _fmt(r["peak_gpu_MiB"], 0), _fmt(r["accuracy"])]
                         for r in t["rows"]])
    se = sec.get("search", {})
    if se.get("rows"):
        lines += ["", "## REINFORCE search (notebook 01's driver), measured episodes", "",
                  f"Children's data: {se.get('child_data')}", ""]
        lines += _table(["episode", "scale", "reward", "child s", "search call s"],
                        [[r["episode"], _fmt(r["scale"], 3), _fmt(r["reward"], 3), _fmt(r["child_seconds"], 2),
                          _fmt(r["search_call_s"], 2)] for r in se["rows"]])
        e = se.get("extrapolation")
        if e:
            lines += ["", f"Extrapolation ({e['note']}): **{e['per_7_epoch_episode_s']:.1f} s per 7-epoch episode, "
                          f"{e['search_200_episodes_min']:.1f} min per 200-episode search** (not measured)."]
        lines += [f"Note: {n}" for n in se.get("notes", [])]
    d = sec.get("dqn", {})
    if d.get("rows"):
        lines += ["", "## Batched DQN on CartPole (dqn_batched), K runs at once", ""]
        lines += [f"Note: {n}" for n in d.get("notes", [])]
        f = d.get("faithful")
        if f:
            lines += [f"Faithful one-run path (train_dqn, CPU), same settings: {f['seconds']:.2f} s, "
                      f"{f['env_steps_per_s']:.0f} env steps/s."]
        lines += [""]
        lines += _table(["device", "K", "episodes", "seconds", "runs/s (at its episodes)", "run-episodes/s", "env steps/s",
                         "x faithful env steps/s", "peak GPU MiB", "note"],
                        [[r["device"], r["K"], "", "", "", "", "", "", "", "not run: " + r["not_run"]] if "not_run" in r else
                         [r["device"], r["K"], r["episodes"], _fmt(r["seconds"], 2), _fmt(r["runs_per_s"], 2),
                          _fmt(r["run_episodes_per_s"], 1), _fmt(r["env_steps_per_s"], 0), _fmt(r["x_vs_faithful"], 1),
                          _fmt(r["peak_gpu_MiB"], 0), r.get("note", "")] for r in d["rows"]])
    return "\n".join(lines) + "\n"


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_suite.json").write_text(json.dumps(_finite(report), indent=2, default=str))
    (out / "gpu_suite.md").write_text(markdown(report))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for gpu_suite.md and gpu_suite.json")
    ap.add_argument("--tiny", action="store_true", help="everything minimal, on the CPU (seconds)")
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu (--tiny: cpu unless named)")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--section-budget-s", nargs="+", metavar="[SECTION=]SECONDS",
                    help=f"time budget per section (defaults {BUDGETS}; --tiny: 60 each)")
    ap.add_argument("--fail-section", nargs="*", default=[], choices=SECTIONS, help="make these sections fail (tests)")
    ap.add_argument("--train-images", type=int)
    ap.add_argument("--test-images", type=int)
    ap.add_argument("--train-epochs", type=int)
    ap.add_argument("--ks", type=int, nargs="+", help="K networks at once for path (c) (default 1 8 32 64)")
    ap.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"])
    ap.add_argument("--search-episodes", type=int)
    ap.add_argument("--search-epochs", type=int)
    ap.add_argument("--search-precision", choices=["fp32", "bf16", "auto"],
                    help="default fp32, the paper profile's (params/paper/01_search.yaml)")
    ap.add_argument("--dqn-ks", type=int, nargs="+", help="runs at once (default 10 100 1000)")
    ap.add_argument("--dqn-episodes", type=int)
    ap.add_argument("--dqn-learning-starts", type=int, help="transitions before updates (default 300; notebook 2000)")
    ap.add_argument("--dqn-devices", nargs="+")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    s = settings_from(args)
    out = Path(args.out)
    report = {"command": "python -m benchmarks.gpu_suite " + " ".join(sys.argv[1:] if argv is None else argv),
              "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": str(s.device),
              "tiny": args.tiny, "settings": {k: (str(v) if isinstance(v, torch.device) else v)
                                               for k, v in dataclasses.asdict(s).items()},
              "sections": {}}
    start = time.perf_counter()
    log(f"start on {s.device}: sections {args.sections}, budgets {s.budgets}")
    for name in args.sections:
        report["sections"][name] = run_section(name, s, set(args.fail_section))
        report["seconds"] = time.perf_counter() - start
        write(report, out)               # after every section: a run killed later keeps what it measured
    try:
        from rlinit_lib.core.runtime import environment_info

        report["environment"] = environment_info(s.device)
    except Exception as err:
        report["environment"] = {"error": one_line(err)}
    write(report, out)
    log(f"done in {report['seconds']:.1f} s: {out / 'gpu_suite.md'}")
    print(markdown(report), flush=True)
    return 1 if any(v["status"].startswith("failed") for v in report["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
