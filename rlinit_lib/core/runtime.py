"""Device choice, seeding and the environment record stored with every result (versions, device,
git commit, CPU flags, date)."""
from __future__ import annotations

import importlib.metadata
import os
import zlib
import platform
import random
import socket
import subprocess
from pathlib import Path
from datetime import datetime, timezone

import numpy as np
import torch

from rlinit_lib.core.params import ParameterError, check_str


def pick_device(device: str | None = None) -> torch.device:
    """``None``/``"auto"``: cuda, then mps, then cpu. Otherwise the named device, checked."""
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ParameterError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (got {device!r})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device must be 'auto' or 'cpu' here: CUDA is not available (got {device!r})")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ParameterError(f"device must be 'auto' or 'cpu' here: MPS is not available (got {device!r})")
    return dev


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; ask for deterministic kernels where the backend allows."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def derive_seed(*parts: int) -> int:
    """A seed that depends only on ``parts`` (e.g. run seed and episode index)."""
    ss = np.random.SeedSequence([int(p) % 2**32 for p in parts])
    return int(ss.generate_state(1)[0])


def purpose_key(purpose: str) -> int:
    """A stable integer for a purpose's name (CRC-32), so streams do not depend on a list's order."""
    if not isinstance(purpose, str) or not purpose:
        raise ValueError(f"purpose must be a non-empty string (got {purpose!r})")
    return zlib.crc32(purpose.encode())


def stream_seed(run_seed: int, purpose: str) -> int:
    """The seed of one purpose's random stream within a run (``init``, ``data_order``, ``weight_noise``,
    ``target_noise``, ``env``, ``replay``, ``exploration``, ``dropout_0``, ...).

    One ``numpy.random.SeedSequence`` per run (entropy = the run's seed) spawns a child per purpose
    (spawn key = the purpose's CRC-32), so no two purposes of a run share a stream, and run k's streams
    are unrelated to run k + 1's (seeds ``s`` and ``s + 1`` are different entropies, not offsets into
    one stream). Returns a 63-bit integer for ``torch.Generator.manual_seed`` and NumPy alike."""
    ss = np.random.SeedSequence(entropy=int(run_seed), spawn_key=(purpose_key(purpose),))
    lo, hi = (int(x) for x in ss.generate_state(2, np.uint32))
    return (hi << 32 | lo) & (2**63 - 1)


def environment_info(device: torch.device | str | None = None) -> dict:
    """Package versions, Python, platform, device and time, stored next to every result."""
    versions = {}
    for pkg in ("torch", "torchvision", "gymnasium", "numpy", "pandas", "wandb", "papermill", "keras"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    dev = torch.device(device) if device is not None else pick_device()
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "packages": versions,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    info["cpu_flags"] = cpu_flags()
    info["git_commit"] = git_commit()
    return info


SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "asimd", "sve")


def cpu_flags() -> list[str]:
    """The CPU's vector and matrix extensions that decide kernel speed (Linux /proc/cpuinfo)."""
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return [f for f in SPEED_FLAGS if f in words]


def git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` when files changed), or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_rule(name: str, value) -> None:
    """Declarative rule for a device parameter (see ``params.param``)."""
    check_str(name, value)
    try:
        pick_device(value)
    except ParameterError as err:
        raise ParameterError(str(err).replace("device", name, 1)) from None
