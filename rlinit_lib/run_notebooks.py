"""Run the study's notebooks in order with one parameter profile (the README's main command).

    python -m rlinit_lib.run_notebooks --profile quick

For every ``notebooks/NN_name.ipynb`` that has ``params/<profile>/NN_name.yaml`` the notebook is
executed by papermill from the repository root and the executed copy is written to
``outputs/<profile>/NN_name.ipynb``. Before the first notebook starts, every notebook's parameters
and the data it needs are checked; a problem stops the run in one line. A notebook that fails does
not stop the others: the run ends with a summary table (notebook, status, minutes, the one-line
error) and exits 1. ``--prepare-only DIR`` writes the parameterised notebooks without running them
(used by the nbval tests). ``--write-parameters`` rewrites every notebook's parameters cell from its
config's defaults (a test checks that they agree).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from rlinit_lib.core.notebook import repo_root


def notebook_jobs(root: Path, profile: str, only: list[str] | None = None) -> list[tuple[Path, Path]]:
    """(notebook, params file) pairs for ``profile``, in notebook order."""
    pdir = root / "params" / profile
    if not pdir.is_dir():
        known = sorted(p.name for p in (root / "params").iterdir() if p.is_dir())
        raise SystemExit(f"profile must be one of {', '.join(known)} (got {profile!r})")
    known = sorted(nb.stem for nb in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    unknown = sorted(set(only or []) - set(known))
    if unknown:
        raise SystemExit(f"--only names unknown notebook {unknown[0]!r}; known notebooks: {', '.join(known)}")
    jobs = []
    for nb in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if only and nb.stem not in only:
            continue
        pfile = pdir / f"{nb.stem}.yaml"
        if pfile.is_file():
            jobs.append((nb, pfile))
        else:
            print(f"skip {nb.name}: no {pfile.relative_to(root)}", file=sys.stderr)
    return jobs


def profile_parameters(jobs, outputs_root: str | None, overrides: dict | None = None) -> list[dict]:
    """Each notebook's parameters: its profile file, then ``overrides`` for the parameters its config has."""
    from rlinit_lib.registry import NOTEBOOKS

    params, used = [], set()
    for nb, pfile in jobs:
        p = yaml.safe_load(pfile.read_text()) or {}
        if not isinstance(p, dict):
            raise SystemExit(f"{pfile} must hold NAME: VALUE lines (a mapping), not a {type(p).__name__}")
        known = set(NOTEBOOKS[nb.stem].defaults()) if nb.stem in NOTEBOOKS else set()
        p |= {k: v for k, v in (overrides or {}).items() if k in known}
        used |= known & set(overrides or {})
        if outputs_root:
            p["output_dir"] = str(Path(outputs_root).resolve() / nb.stem)
        params.append(p)
    unused = sorted(set(overrides or {}) - used)
    if unused:
        raise SystemExit(f"--set names {unused[0]!r}, which no notebook of this run has as a parameter")
    return params


def parse_overrides(items: list[str] | None) -> dict:
    """``NAME=VALUE`` pairs (VALUE read as YAML: 3, 0.5, fp32, [1, 2]) -> a dict."""
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set must be NAME=VALUE (got {item!r})")
        out[name] = yaml.safe_load(value)
    return out


def check_profile(root: Path, jobs, params: list[dict]) -> str | None:
    """Every notebook's parameters and data, checked before any work; the first problem as one line."""
    from rlinit_lib.registry import config_for

    configs = []
    for (nb, pfile), p in zip(jobs, params):
        try:
            configs.append((nb, pfile, config_for(nb.stem, p)))
        except Exception as exc:
            return f"{pfile.relative_to(root)}: {type(exc).__name__}: {exc}"
    for nb, pfile, cfg in configs:
        try:
            print(f"{nb.stem}: {cfg.check_data()}", flush=True)   # say where data came from (data_root or elsewhere)
        except Exception as exc:
            return f"{nb.stem} ({pfile.relative_to(root)}): {type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def ipc_kernel_manager(log: Path | None = None):
    """The kernel manager papermill starts each notebook's kernel with: IPC transport (Unix sockets in the
    runtime directory, readable by this user only) instead of TCP on localhost, so there is no unencrypted
    port for ipykernel to warn about ("Kernel is running over TCP without encryption"). With ``log``, the
    kernel process's own stderr (its start-up and shut-down logging, e.g. ipykernel's "Task was destroyed but
    it is pending!" at exit) goes to that file instead of the terminal; a cell's output and errors still go
    to the executed notebook, as always."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if log is None:
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            with open(log, "w") as f:           # the kernel process keeps its own copy of the descriptor
                return await super()._async_launch_kernel(kernel_cmd, **kw, stderr=f)

    return IPCKernelManager


def error_line(exc: Exception) -> str:
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    first = str(evalue).strip().splitlines()
    return f"{ename}: {first[0] if first else ''}"


def write_parameters_cells(root: Path) -> list[str]:
    """Rewrite every registered notebook's parameters cell from its config (``core.notebook.parameters_cell``,
    keeping each line's comment); returns the notebooks whose cell changed."""
    import json

    from rlinit_lib.core.notebook import parameters_cell
    from rlinit_lib.registry import NOTEBOOKS

    changed = []
    for name, cls in NOTEBOOKS.items():
        path = root / "notebooks" / f"{name}.ipynb"
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
        old = "".join(cell["source"])
        new = parameters_cell(cls, old)
        if new != old:
            cell["source"] = new
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(name)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick", help="a folder of params/: paper, quick, smoke or source_win")
    ap.add_argument("--only", nargs="*", help="notebook names (e.g. 01_search) to run; default all")
    ap.add_argument("--prepare-only", metavar="DIR", help="write parameterised notebooks to DIR, do not run")
    ap.add_argument("--set", nargs="*", metavar="NAME=VALUE", help="override a parameter in every notebook that has it "
                                                                    "(e.g. --set precision=fp32)")
    ap.add_argument("--outputs-root", metavar="DIR",
                    help="put each notebook's results in DIR/<notebook> (and its executed copy in DIR) instead of the "
                         "profile's output_dir")
    ap.add_argument("--write-parameters", action="store_true",
                    help="rewrite the notebooks' parameters cells from the configs' defaults, then stop")
    args = ap.parse_args(argv)

    root = repo_root()
    if root is None or not (root / "notebooks").is_dir():
        raise SystemExit(f"run_notebooks must run inside the rlinit checkout (with notebooks/ and params/); "
                         f"{Path.cwd()} is not in one: cd into the checkout first")
    if args.write_parameters:
        print("rewrote:", ", ".join(write_parameters_cells(root)) or "nothing (every cell equals its config)")
        return 0
    jobs = notebook_jobs(root, args.profile, args.only)
    if not jobs:
        raise SystemExit(f"no notebook has parameters in params/{args.profile}/")
    params = profile_parameters(jobs, args.outputs_root, parse_overrides(args.set))
    problem = check_profile(root, jobs, params)
    if problem:
        print(f"not started: {problem}", file=sys.stderr)
        return 2

    import os

    import papermill as pm

    from rlinit_lib.core.notebook import PROGRESS_ENV

    os.environ.setdefault(PROGRESS_ENV, "summary")   # kernels inherit it: no stale bars in executed copies

    # executed copies sit next to the results: outputs/<profile>/NN_name.ipynb beside outputs/<profile>/NN_name/
    out_dir = Path(args.prepare_only or args.outputs_root or root / "outputs" / args.profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = []
    for (nb, pfile), p in zip(jobs, params):
        target = out_dir / nb.name
        print(f"{'prepare' if args.prepare_only else 'run'} {nb.relative_to(root)} with "
              f"{pfile.relative_to(root)} -> {target}", flush=True)
        start = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(target), parameters=p, cwd=str(root),
                                prepare_only=bool(args.prepare_only), progress_bar=False,
                                kernel_manager_class=ipc_kernel_manager(out_dir / f"{nb.stem}.kernel.log"))
            summary.append((nb.stem, "ok", time.perf_counter() - start, ""))
        except Exception as exc:  # one notebook's failure must not stop the others
            summary.append((nb.stem, "failed", time.perf_counter() - start, error_line(exc)))
            print(f"  failed: {summary[-1][3]} (full traceback in {target})", flush=True)
    if not args.prepare_only:
        print(f"\n{'notebook':<24} {'status':<7} {'minutes':>7}  error")
        for name, status, seconds, err in summary:
            print(f"{name:<24} {status:<7} {seconds / 60:7.1f}  {err}")
    return 1 if any(s[1] != "ok" for s in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
