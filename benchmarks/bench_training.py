"""Side-by-side timing of child-network training (issue: fast evaluation).

    python -m benchmarks.bench_training --dataset synthetic --train-subset 5000 --ks 1 4 8

Times, in one run on the same machine and data:
  (a) the dissertation's loop: a torchvision-style dataset doing per-image
      PIL -> ToTensor -> Normalize, DataLoader(batch 128, shuffle, num_workers=0), one model;
  (b) this library's single-model path (``train_and_evaluate``: resident uint8 data);
  (c) the batched path (``train_many``) for each K.
Each reports seconds per model-epoch (training plus its share of the final test
evaluation), the speed-up over (a), and peak GPU memory on CUDA. Results are printed
and written to ``outputs/bench/`` (JSON + markdown) with device, versions and date.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rlinit_lib.scale_search.batched import train_many
from rlinit_lib.core.data import DATASETS, ImageData, load_dataset
from rlinit_lib.core.runtime import environment_info, pick_device
from rlinit_lib.scale_search.training import build_child, train_and_evaluate


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
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return time.perf_counter() - t, out, peak


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
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--baseline-epochs", type=int, default=1, help="epochs for the slow loop (a)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.baseline_epochs < 1 or min(args.ks) < 1:
        raise SystemExit("epochs, baseline-epochs and every K must be >= 1")

    device = pick_device(args.device)
    data = load_dataset(args.dataset, args.data_root, train_subset=args.train_subset, test_subset=args.test_subset,
                        synthetic_train=args.synthetic_train, synthetic_test=10_000)
    print(f"{data} on {device}", flush=True)
    resident = data.to(device)
    train_and_evaluate(1.0, 1, ImageData(data.name, resident.x_train[:256], resident.y_train[:256],
                                         resident.x_test[:256], resident.y_test[:256]), seed=0)  # warm-up
    rows = []

    def record(name, k, epochs, seconds, acc, peak):
        per = seconds / (k * epochs)
        rows.append({"path": name, "K": k, "epochs": epochs, "seconds": seconds, "s_per_model_epoch": per,
                     "accuracy": acc, "peak_gpu_MiB": peak})
        print(f"{name:<28} K={k:<4} {per:9.4f} s/model-epoch  acc={acc:.4f}"
              + (f"  peak={peak:.0f} MiB" if peak is not None else ""), flush=True)

    sec, acc, peak = _timed(lambda: dissertation_loop(data, args.baseline_epochs, device), device)
    record("(a) dissertation loop", 1, args.baseline_epochs, sec, acc, peak)
    sec, res, peak = _timed(lambda: train_and_evaluate(1.0, args.epochs, resident, seed=0), device)
    record("(b) single-model resident", 1, args.epochs, sec, res.test_accuracy, peak)
    for k in args.ks:
        scales = list(np.linspace(0.8, 1.4, k)) if k > 1 else [1.0]
        sec, res, peak = _timed(lambda: train_many(scales, args.epochs, resident, seeds=list(range(k))), device)
        record("(c) batched (vmap)", k, args.epochs, sec, float(np.nanmean([r.test_accuracy for r in res])), peak)

    base = rows[0]["s_per_model_epoch"]
    for r in rows:
        r["speedup_vs_a"] = base / r["s_per_model_epoch"]
    report = {"rows": rows, "args": vars(args), "data": repr(data), "environment": environment_info(device)}
    save_report(args.out, f"bench-{device.type}", report,
                ["path", "K", "s per model-epoch", "x vs (a)", "accuracy", "peak GPU MiB"],
                [[r["path"], r["K"], f"{r['s_per_model_epoch']:.4f}", f"{r['speedup_vs_a']:.2f}", f"{r['accuracy']:.4f}",
                  _mib(r["peak_gpu_MiB"])] for r in rows])
    return report


if __name__ == "__main__":
    main()
