"""Run the study's notebooks in order with one parameter profile (the README's main command).

    python -m rlinit_lib.run_notebooks --profile quick

For every ``notebooks/NN_name.ipynb`` that has ``params/<profile>/NN_name.yaml`` the
notebook is executed by papermill from the repository root and the executed copy is
written to ``outputs/<profile>/NN_name.ipynb``. ``--prepare-only DIR`` writes the
parameterised notebooks without running them (used by the nbval tests).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from .notebook import repo_root


def notebook_jobs(root: Path, profile: str, only: list[str] | None = None) -> list[tuple[Path, Path]]:
    """(notebook, params file) pairs for ``profile``, in notebook order."""
    pdir = root / "params" / profile
    if not pdir.is_dir():
        known = sorted(p.name for p in (root / "params").iterdir() if p.is_dir())
        raise SystemExit(f"profile must be one of {', '.join(known)} (got {profile!r})")
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick", help="a folder of params/: paper, quick or smoke")
    ap.add_argument("--only", nargs="*", help="notebook names (e.g. 01_search) to run; default all")
    ap.add_argument("--prepare-only", metavar="DIR", help="write parameterised notebooks to DIR, do not run")
    ap.add_argument("--outputs-root", metavar="DIR",
                    help="put each notebook's results in DIR/<notebook> instead of the profile's output_dir")
    args = ap.parse_args(argv)

    import papermill as pm

    root = repo_root() or Path.cwd()
    jobs = notebook_jobs(root, args.profile, args.only)
    if not jobs:
        raise SystemExit(f"no notebook has parameters in params/{args.profile}/")
    out_dir = Path(args.prepare_only) if args.prepare_only else root / "outputs" / args.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    for nb, pfile in jobs:
        params = yaml.safe_load(pfile.read_text()) or {}
        if args.outputs_root:
            params["output_dir"] = str(Path(args.outputs_root).resolve() / nb.stem)
        target = out_dir / nb.name
        print(f"{'prepare' if args.prepare_only else 'run'} {nb.relative_to(root)} with "
              f"{pfile.relative_to(root)} -> {target}", flush=True)
        pm.execute_notebook(str(nb), str(target), parameters=params, cwd=str(root),
                            prepare_only=bool(args.prepare_only), progress_bar=not args.prepare_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
