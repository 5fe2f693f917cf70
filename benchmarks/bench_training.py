"""Side-by-side timing of child-network training (issue: fast evaluation).

    python -m benchmarks.bench_training --dataset fashion_mnist --train-subset 5000 --threads 1 --repeat 5

Times, in one run on the same machine and data:
  (a) the dissertation's loop: a torchvision-style dataset doing per-image
      PIL -> ToTensor -> Normalize, DataLoader(batch 128, shuffle, num_workers=0), one model;
  (b) this library's single-model path (``train_and_evaluate``: resident uint8 data, channels_last),
      in fp32 and with bf16 autocast;
  (c) the batched path (``train_many``, vmap) for each K given, in both precisions.
``--repeat N`` runs every path N times, alternating the order, and reports medians. Each path
reports wall and process-CPU seconds per model-epoch (training plus its share of the final test
evaluation), the speed-up over (a), and peak GPU memory on CUDA. On the CPU it first prints what
oneDNN reports (its ISA and the convolution kernels it picked for fp32 and bf16), and what
``precision: auto`` chooses here with its probe's numbers. ``ONEDNN_MAX_CPU_ISA=AVX2`` in the
environment makes oneDNN behave as on an AVX2-only CPU (no AMX, no AVX-512 bf16). Results are
written to ``outputs/bench/`` (JSON + markdown) with device, versions, CPU flags and date.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rlinit_lib.children.batched import train_many
from rlinit_lib.core.data import DATASETS, ImageData, load_dataset
from rlinit_lib.core.runtime import environment_info, pick_device
from rlinit_lib.core.precision import resolve_precision
from rlinit_lib.children.training import build_child, probe_step, train_and_evaluate


class PerImageDataset(torch.utils.data.Dataset):
    """What torchvision's CIFAR10 does per item: PIL image from the uint8 array, then the transform."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        from torchvision import transforms

        c = x.shape[1]
        self.images = x.permute(0, 2, 3, 1).squeeze(-1).numpy() if c == 1 else x.permute(0, 2, 3, 1).numpy()
        self.labels = y.tolist()
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * c, (0.5,) * c)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def dissertation_loop(data: ImageData, epochs: int, device: torch.device, seed: int = 0) -> float:
    """Baseline (a): the dissertation's training loop; returns the final test accuracy."""
    torch.manual_seed(seed)
    cpu = ImageData(data.name, data.x_train.cpu(), data.y_train.cpu(), data.x_test.cpu(), data.y_test.cpu())
    train = torch.utils.data.DataLoader(PerImageDataset(cpu.x_train, cpu.y_train), batch_size=128, shuffle=True,
                                        num_workers=0)
    test = torch.utils.data.DataLoader(PerImageDataset(cpu.x_test, cpu.y_test), batch_size=128, num_workers=0)
    model = build_child(data.in_channels, data.num_classes, 1.0, seed=seed, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        model.train()
        for x, y in train:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test:
            correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
    return correct / len(cpu.y_test)


def _timed(fn, device):
    """(wall seconds, process CPU seconds, result, peak GPU MiB) of ``fn()``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return time.perf_counter() - t, time.process_time() - c, out, peak


ISA_PROBE = """
import torch
x = torch.randn(64, 32, 16, 16).contiguous(memory_format=torch.channels_last)
conv = torch.nn.Conv2d(32, 32, 3, padding=1).to(memory_format=torch.channels_last)
with torch.autocast("cpu", dtype=torch.bfloat16):
    conv(x)
conv(x)
"""


def onednn_isa() -> dict:
    """What oneDNN reports on this CPU (``ONEDNN_VERBOSE``): its ISA line and the kernels it ran for a small
    fp32 and bf16 convolution (e.g. ``brg_conv_fwd:avx10_1_512_amx`` on AMX machines)."""
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", ISA_PROBE], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "ONEDNN_VERBOSE": "1", "OMP_NUM_THREADS": "1"}).stdout
    isa = next((line.split("isa:", 1)[1].strip() for line in out.splitlines() if "isa:" in line), "unknown")
    kernels = {}
    for line in out.splitlines():
        parts = line.split(",")
        if len(parts) > 6 and parts[0] == "onednn_verbose" and "convolution" in parts:
            i = parts.index("convolution")
            dtype = "bf16" if "bf16" in line else "fp32"
            kernels.setdefault(dtype, parts[i + 1])
    return {"isa": isa, "conv_kernels": kernels}


def save_report(out: str, stem: str, report: dict, header: list, rows: list) -> None:
    """Write ``report`` (JSON) and a markdown table of ``rows`` under ``out`` as ``stem-<time>``; print the table."""
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (path / f"{stem}-{stamp}.json").write_text(json.dumps(report, indent=2, default=str))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    (path / f"{stem}-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _mib(x):
    return "" if x is None else f"{x:.0f}"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="Time child-network training paths side by side.")
    ap.add_argument("--dataset", default="synthetic", choices=DATASETS)
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--test-subset", type=int, default=None)
    ap.add_argument("--synthetic-train", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--ks", type=int, nargs="*", default=[], help="K for the batched path (c), e.g. 8 32 on a GPU")
    ap.add_argument("--baseline-epochs", type=int, default=1, help="epochs for the slow loop (a)")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                    help="precisions of the library's paths (b) and (c)")
    ap.add_argument("--repeat", type=int, default=1, help="alternated repeats of every path; medians are reported")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.baseline_epochs < 1 or args.repeat < 1 or min(args.ks, default=1) < 1:
        raise SystemExit("epochs, baseline-epochs, repeat and every K must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    device = pick_device(args.device)
    isa = onednn_isa() if device.type == "cpu" else {}
    if isa:
        print(f"oneDNN: {isa['isa']}; convolution kernels: {isa['conv_kernels']}", flush=True)
    data = load_dataset(args.dataset, args.data_root, train_subset=args.train_subset, test_subset=args.test_subset,
                        synthetic_train=args.synthetic_train, synthetic_test=10_000)
    print(f"{data} on {device}, {torch.get_num_threads()} threads", flush=True)
    resident = data.to(device)
    warm = ImageData(data.name, resident.x_train[:256], resident.y_train[:256], resident.x_test[:256],
                     resident.y_test[:256])
    for p in args.precisions:
        train_and_evaluate(1.0, 1, warm, seed=0, precision=p)
    start = time.perf_counter()
    auto = resolve_precision("auto", ("bench", data.in_channels), probe_step(data.in_channels, 128, device=device), device)
    auto["probe_seconds"] = time.perf_counter() - start
    print(f"precision auto chooses {auto['chosen']} here (probe: {auto['probe']}; {auto['probe_seconds']:.1f} s)", flush=True)

    paths = [("(a) dissertation loop", 1, args.baseline_epochs,
              lambda: dissertation_loop(data, args.baseline_epochs, device))]
    for p in args.precisions:
        paths.append((f"(b) resident, {p}", 1, args.epochs,
                      lambda p=p: train_and_evaluate(1.0, args.epochs, resident, seed=0, precision=p).test_accuracy))
    for k in args.ks:
        scales = list(np.linspace(0.8, 1.4, k)) if k > 1 else [1.0]
        for p in args.precisions:
            paths.append((f"(c) batched (vmap), {p}", k, args.epochs, lambda scales=scales, k=k, p=p: float(np.nanmean(
                [r.test_accuracy for r in train_many(scales, args.epochs, resident, seeds=list(range(k)),
                                                     mechanism="vmap", precision=p)]))))
    runs = {name: [] for name, *_ in paths}
    for r in range(args.repeat):
        order = paths[r % len(paths):] + paths[:r % len(paths)]   # alternate who goes first
        for name, k, epochs, fn in order:
            wall, cpu, acc, peak = _timed(fn, device)
            runs[name].append({"wall": wall / (k * epochs), "cpu": cpu / (k * epochs), "accuracy": acc, "peak": peak})
            print(f"repeat {r}: {name:<28} K={k:<4} {runs[name][-1]['wall']:9.4f} s/model-epoch wall, "
                  f"{runs[name][-1]['cpu']:9.4f} CPU  acc={acc:.4f}", flush=True)
    rows = []
    for name, k, epochs, _ in paths:
        rs = runs[name]
        rows.append({"path": name, "K": k, "epochs": epochs, "s_per_model_epoch": float(np.median([x["wall"] for x in rs])),
                     "cpu_s_per_model_epoch": float(np.median([x["cpu"] for x in rs])), "accuracy": rs[-1]["accuracy"],
                     "peak_gpu_MiB": rs[-1]["peak"], "repeats": rs})
    base, base_cpu = rows[0]["s_per_model_epoch"], rows[0]["cpu_s_per_model_epoch"]
    for r in rows:
        r["speedup_vs_a"] = base / r["s_per_model_epoch"]
        r["cpu_speedup_vs_a"] = base_cpu / r["cpu_s_per_model_epoch"]
    report = {"rows": rows, "args": vars(args), "data": repr(data), "onednn": isa, "auto": auto,
              "environment": environment_info(device)}
    save_report(args.out, f"bench-{device.type}", report,
                ["path", "K", "wall s per model-epoch", "x vs (a)", "CPU s per model-epoch", "x vs (a), CPU",
                 "accuracy", "peak GPU MiB"],
                [[r["path"], r["K"], f"{r['s_per_model_epoch']:.4f}", f"{r['speedup_vs_a']:.2f}",
                  f"{r['cpu_s_per_model_epoch']:.4f}", f"{r['cpu_speedup_vs_a']:.2f}", f"{r['accuracy']:.4f}",
                  _mib(r["peak_gpu_MiB"])] for r in rows])
    return report


if __name__ == "__main__":
    main()
