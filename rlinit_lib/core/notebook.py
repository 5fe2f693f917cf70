"""Helpers that keep the notebooks thin: paths, parameter collection, and the report a notebook shows.

A notebook is parameters -> run -> report -> display. Every study's report function returns a
:class:`Report`: an ordered list of markdown, tables and figures that the notebook displays as they
are, and that is saved into the run's ``output_dir`` (tables as CSV that ``pandas.read_csv`` reads
back as numbers, figures as PNG).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd


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

    def markdown(self, text: str) -> "Report":
        self.items.append(("markdown", text))
        return self

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

    def figure(self, name: str, fig) -> "Report":
        self.items.append(("figure", name, fig))
        if self.directory is not None:
            fig.savefig(self.directory / f"{name}.png", dpi=120, bbox_inches="tight")
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
