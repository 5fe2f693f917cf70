"""Helpers that keep the notebooks thin: paths, parameter collection, plain-language summaries."""
from __future__ import annotations

import math
import os
from pathlib import Path


def repo_root(start: str | os.PathLike | None = None) -> Path | None:
    """The checkout's root (the folder whose pyproject.toml names rlinit-lib), searching upwards."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        f = d / "pyproject.toml"
        if f.is_file() and 'name = "rlinit-lib"' in f.read_text():
            return d
    return None


def enter_repo_root() -> Path:
    """chdir to the checkout's root so relative paths (data/, outputs/) mean the same everywhere:
    JupyterLab opened in notebooks/, papermill from the root, nbval from a temporary folder."""
    root = repo_root()
    if root is not None:
        os.chdir(root)
    return Path.cwd()


def parameters_since(before: set[str], namespace: dict) -> dict:
    """The names a notebook's parameters cell (and papermill's injected cell) defined.

    ``before`` is ``set(globals())`` taken just before the parameters cell; names
    starting with an underscore are IPython's own and are skipped.
    """
    return {k: v for k, v in namespace.items() if k not in before and not k.startswith("_")}


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def describe_search(summary: dict) -> str:
    """A short markdown paragraph saying what a search run found, with its uncertainty."""
    lines = [
        f"- Best episode: s = {summary['best_scale']:.3f} with proxy accuracy {_pct(summary['best_accuracy'])}; "
        f"baseline s = {summary['baseline_scale']:g}: {_pct(summary['baseline_accuracy'])} "
        f"(difference {_pct(summary['difference'])}, one run each, {summary['nan_count']} NaN episodes "
        f"of {summary['episodes']})."
        if summary.get("best_scale") is not None else "- Every episode diverged (NaN): no best scale."
    ]
    rc = summary.get("recheck")
    if rc:
        d = rc["paired_difference"]
        if rc["n_seeds"] < 2:
            verdict = "one seed gives no interval; raise recheck_seeds to say anything."
        elif d["ci_low"] > 0:
            verdict = "the best scale is better than the baseline at 95% confidence."
        elif d["ci_high"] < 0:
            verdict = "the best scale is *worse* than the baseline at 95% confidence: the search's pick was luck."
        else:
            verdict = ("the interval contains 0: **the difference is not significant** at this number of seeds.")
        lines.append(
            f"- Re-trained on {rc['n_seeds']} fresh seeds (paired): best scale {_pct(rc['best_mean'])} vs baseline "
            f"{_pct(rc['baseline_mean'])}; difference {_pct(d['mean'])}, 95% CI [{_pct(d['ci_low'])}, "
            f"{_pct(d['ci_high'])}], p = {d['p_value']:.3g}: {verdict}")
    return "\n".join(lines)
