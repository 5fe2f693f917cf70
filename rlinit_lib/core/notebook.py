"""Helpers that keep the notebooks thin: paths, parameter collection, and the report a notebook shows.

A notebook is parameters -> run -> report -> display. Every study's report function returns a
:class:`Report`: an ordered list of markdown, tables and figures that the notebook displays as they
are, and that is saved into the run's ``output_dir`` (tables as CSV that ``pandas.read_csv`` reads
back as numbers, figures as PNG; its verdict and headline figure as ``report.json``, which
``report_site`` shows on the study's index page).
"""
from __future__ import annotations

import ast
import math
import os
import sys
import time
from pathlib import Path

import pandas as pd

from rlinit_lib.core.params import ParameterError

PROGRESS_ENV = "RLINIT_PROGRESS"   # "summary": a line per finished bar instead of a bar (set by run_notebooks)


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


def with_profile(cls, values: dict, profile: str, root: Path | None = None, explicit=()) -> dict:
    """``values`` (a parameters cell) with ``params/<profile>/<notebook>.yaml`` applied to every parameter still at
    its default; a parameter set to another value keeps it (a user's edits win), and so does every name in
    ``explicit`` (papermill's ``-p``), even when its value equals the default."""
    import yaml

    root = Path(root or repo_root() or Path.cwd())
    path = root / "params" / str(profile) / f"{cls.notebook}.yaml"
    if not path.is_file():
        known = sorted(p.parent.name for p in (root / "params").glob(f"*/{cls.notebook}.yaml"))
        raise ParameterError(f"profile must be None or one of {', '.join(repr(k) for k in known)} for {cls.notebook} "
                             f"(got {profile!r})")
    chosen = yaml.safe_load(path.read_text()) or {}
    if not isinstance(chosen, dict):
        raise ParameterError(f"{path} must hold NAME: VALUE lines (a mapping), not a {type(chosen).__name__}")
    defaults = cls.defaults()
    return {**chosen, **{k: v for k, v in values.items()
                         if k in explicit or k not in chosen or k not in defaults or v != defaults[k]}}


def config_from_cell(cls, before: set[str], namespace: dict):
    """A notebook's validated config from its parameters cell (and papermill's injected cell); ``profile``, when
    not None, loads that profile's values first (:func:`with_profile`)."""
    values = parameters_since(before, namespace)
    profile = values.pop("profile", None)
    cfg = cls.from_dict(values if profile is None else with_profile(cls, values, profile,
                                                                    explicit=injected_names(namespace)))
    cfg.check_data()     # a missing dataset is one line here, before a store or a trial exists
    return cfg


def injected_names(namespace: dict) -> set[str]:
    """The names papermill's injected cell assigned (``-p``/``-f`` values: its source starts with
    ``# Parameters``), read from IPython's input history ``In``; empty when the notebook was not run by papermill."""
    for source in reversed(list(namespace.get("In") or [])):
        if source.lstrip().startswith("# Parameters"):
            return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)}
    return set()


def parameters_since(before: set[str], namespace: dict) -> dict:
    """The names a notebook's parameters cell (and papermill's injected cell) defined.

    ``before`` is ``set(globals())`` taken just before the parameters cell; names
    starting with an underscore are IPython's own and are skipped.
    """
    return {k: v for k, v in namespace.items() if k not in before and not k.startswith("_")}


class SummaryProgress:
    """What a progress bar says, as one line when it closes: executed copies of notebooks keep no stale bars."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.n, self.start = total, desc, 0, time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        if self.total > 1:
            print(f"{self.desc}: {self.n}/{self.total} done in {(time.perf_counter() - self.start) / 60:.1f} min",
                  file=sys.stdout, flush=True)


def progress_bar(total: int, desc: str, enabled: bool = True):
    """A tqdm bar for people watching (it disappears when done), or a one-line summary when the notebook runs
    unattended (``RLINIT_PROGRESS=summary``, which ``run_notebooks`` sets for papermill), or nothing."""
    from tqdm.auto import tqdm

    if enabled and os.environ.get(PROGRESS_ENV) == "summary":
        return SummaryProgress(total, desc)
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def upstream_dir(output_dir: str | os.PathLike, notebook: str) -> Path:
    """Where another notebook of the same profile keeps its results: a sibling of ``output_dir``
    (every profile puts its notebooks' results in ``<output root>/<notebook>``)."""
    return Path(output_dir).resolve().parent / notebook


def fmt(x, digits: int = 4) -> str:
    """A number for prose: ``n/a`` for None and NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


class Report:
    """What a notebook shows, in order: markdown, tables and figures, saved to ``directory``."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.items: list[tuple] = []
        self.directory = None if directory is None else Path(directory)
        self.summary: dict = {}          # verdict and headline figure, saved as report.json for the study's site

    def markdown(self, text: str) -> "Report":
        self.items.append(("markdown", text))
        return self

    def verdict(self, text: str) -> "Report":
        """Markdown that is this notebook's answer (shown, and the verdict of the study's site)."""
        self.summary["verdict"] = text
        self._save_summary()
        return self.markdown(text)

    def _save_summary(self) -> None:
        if self.directory is not None:
            import json

            tmp = self.directory / "report.json.tmp"
            tmp.write_text(json.dumps(self.summary, indent=2))
            os.replace(tmp, self.directory / "report.json")

    def table(self, name: str, df: pd.DataFrame, caption: str | None = None, show: bool = True) -> "Report":
        """Add a table (``show=False``: saved as ``<name>.csv`` only, e.g. per-run detail)."""
        if caption and show:
            self.markdown(caption)
        self.items.append(("table" if show else "hidden", name, df))
        if self.directory is not None:
            tmp = self.directory / f"{name}.csv.tmp"
            df.to_csv(tmp, index=False)
            os.replace(tmp, self.directory / f"{name}.csv")
        return self

    def figure(self, name: str, fig, headline: bool = False) -> "Report":
        """Add a figure (``headline``: the one the study's site shows for this notebook)."""
        self.items.append(("figure", name, fig))
        if self.directory is not None:
            fig.savefig(self.directory / f"{name}.png", dpi=120, bbox_inches="tight")
        if headline:
            self.summary["headline"] = f"{name}.png"
            self._save_summary()
        return self

    def tables(self) -> dict[str, pd.DataFrame]:
        return {i[1]: i[2] for i in self.items if i[0] in ("table", "hidden")}

    def figures(self) -> dict:
        return {i[1]: i[2] for i in self.items if i[0] == "figure"}

    def text(self) -> str:
        return "\n\n".join(i[1] for i in self.items if i[0] == "markdown")

    def _ipython_display_(self):
        import matplotlib.pyplot as plt
        from IPython.display import Markdown, display

        for item in self.items:
            if item[0] == "markdown":
                display(Markdown(item[1]))
            elif item[0] == "table":
                display(item[2].round(4))
            elif item[0] == "figure":
                display(item[2])
                plt.close(item[2])


# ---- what every notebook says the same way, written once ----

HOW_TO_RUN = """**Profiles.** The parameters cell holds the config's defaults, the source's settings (the `paper` profile).
To run another profile in JupyterLab, set `profile = 'quick'` (or `'smoke'`) there and Run All: every parameter
left at its default takes the value in `params/quick/{notebook}.yaml`, and a parameter you change keeps yours; a
value given with papermill's `-p` always wins. From a terminal:
`papermill notebooks/{notebook}.ipynb out.ipynb -f params/quick/{notebook}.yaml`.

**Results and resuming.** Results go to `output_dir` (here `{output_dir}`: a run store, `store.sqlite`, plus CSV and
PNG copies). Running again with the same `output_dir` resumes: finished trials are read back, never repeated, and
a changed setting that affects results is refused. `executor = 'auto'` trains trials in one single-thread process
per CPU core (the same tables as `'serial'`)."""


class Markdown(str):
    """Text that Jupyter shows as Markdown (and a terminal as plain text)."""

    def _repr_markdown_(self) -> str:
        return str(self)


def about(cfg) -> Markdown:
    """How profiles and resuming work, for ``cfg``'s notebook: the paragraph every notebook shows after its config."""
    return Markdown(HOW_TO_RUN.format(notebook=cfg.notebook, output_dir=cfg.output_dir))


def parameters_cell(cls, old: str = "") -> str:
    """The parameters cell of ``cls``'s notebook: ``profile`` then every field at its default (the study's own fields
    first),
    each line keeping the comment it had in ``old`` (``python -m rlinit_lib.run_notebooks --write-parameters`` rewrites
    the cells)."""
    comments = {}
    for line in old.splitlines():
        name, _, rest = line.partition("=")
        if "#" in rest:
            comments[name.strip()] = "#" + rest.split("#", 1)[1]
    defaults, order = cls.defaults(), ["profile"]
    for klass in cls.__mro__:        # the study's own fields first, then the shared groups it inherits
        order += [k for k in vars(klass).get("__annotations__", {}) if k in defaults and k not in order]
    values = {"profile": None, **{k: defaults[k] for k in order[1:]}}
    width = max(len(f"{k} = {v!r}") for k, v in values.items() if k in comments) + 1 if comments else 0
    lines = []
    for name, value in values.items():
        code = f"{name} = {value!r}"
        lines.append(f"{code:<{width}}{comments[name]}".rstrip() if name in comments else code)
    return "\n".join(lines)

