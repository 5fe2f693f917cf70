"""The study as a report: a static HTML site from an executed profile (the README's ``make report``).

    python -m rlinit_lib.report_site --profile quick        # -> build/report/quick/index.html

The index has one section per notebook: its question (``registry.QUESTIONS``), its verdict and its headline
figure (both from the ``report.json`` its report function saved in ``outputs/<profile>/NN_name/``), and a
link to the executed notebook (``outputs/<profile>/NN_name.ipynb``) rendered as HTML by nbconvert.

Why nbconvert: it is Jupyter's own converter, already installed with JupyterLab, renders the executed
notebooks exactly as saved (the explorer's picture included, through the widget's PNG fallback) and works
offline. Its lab template loads require.js, MathJax and Mermaid from a CDN; this site drops those three
scripts (the notebooks use none of them), so a page needs nothing from the network. Jupyter Book 1 and
Quarto would add a second build system and a large install for the same pages.
"""
from __future__ import annotations

import argparse
import html
import json
import shutil
import sys
from pathlib import Path

from rlinit_lib.core.notebook import repo_root

OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
section{border-top:1px solid #ccc;padding:1em 0}h1{margin-bottom:.2em}.question{font-style:italic}
img{max-width:100%;border:1px solid #eee}.missing{color:#a00}table{border-collapse:collapse}td,th{padding:2px 6px}
.verdict{background:#f6f8fa;padding:.2em 1em;border-radius:4px}"""


def render_notebook(path: Path, target: Path) -> None:
    """An executed notebook as one self-contained HTML page (images embedded, no scripts from the network).
    The widget state papermill saved is dropped: rendering it needs the widget manager from a CDN, and without
    it nbconvert shows each widget's fallback, the explorer's PNG."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)
    exporter = HTMLExporter(extra_loaders=[DictLoader({"rlinit_offline.html.j2": OFFLINE_TEMPLATE})],
                            template_file="rlinit_offline.html.j2")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
    target.write_text(body, encoding="utf-8")


def markdown_html(text: str) -> str:
    import mistune

    return mistune.html(text)


def build_site(outputs: Path, target: Path, profile: str) -> Path:
    """Write ``target/index.html`` and one page per executed notebook found in ``outputs``; returns the index."""
    from rlinit_lib.registry import NOTEBOOKS, QUESTIONS

    target.mkdir(parents=True, exist_ok=True)
    sections = []
    for name in NOTEBOOKS:
        executed, results = outputs / f"{name}.ipynb", outputs / name
        summary = json.loads((results / "report.json").read_text()) if (results / "report.json").is_file() else {}
        head = f"<h2>{html.escape(name)}</h2><p class='question'>{html.escape(QUESTIONS[name])}</p>"
        if not executed.is_file():
            sections.append(f"<section id='{name}'>{head}<p class='missing'>Not run in this profile: "
                            f"<code>make run PROFILE={html.escape(profile)}</code> runs it.</p></section>")
            continue
        render_notebook(executed, target / f"{name}.html")
        parts = [head]
        if summary.get("verdict"):
            parts.append(f"<div class='verdict'>{markdown_html(summary['verdict'])}</div>")
        else:
            parts.append("<p class='missing'>This run wrote no verdict (the notebook stopped early: see the page).</p>")
        if summary.get("headline") and (results / summary["headline"]).is_file():
            shutil.copy(results / summary["headline"], target / f"{name}-{summary['headline']}")
            parts.append(f"<img src='{name}-{html.escape(summary['headline'])}' alt='headline figure of {name}'>")
        parts.append(f"<p><a href='{name}.html'>The executed notebook</a> (tables, every figure, the code that made "
                     "them)</p>")
        sections.append(f"<section id='{name}'>{''.join(parts)}</section>")
    env = next((json.loads((outputs / n / "environment.json").read_text()) for n in NOTEBOOKS
                if (outputs / n / "environment.json").is_file()), {})
    where = ", ".join(str(x) for x in (env.get("time_utc"), env.get("device"), " ".join(env.get("cpu_flags", [])),
                                       env.get("git_commit")) if x)
    index = target / "index.html"
    index.write_text(
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>rlinit: {html.escape(profile)} profile"
        f"</title><style>{STYLE}</style></head><body><h1>rlinit: learned weight initialisation, "
        f"{html.escape(profile)} profile</h1><p>Each section: what the notebook asks, what this run found, its headline "
        f"figure, and the executed notebook. Run: {html.escape(where)}.</p>{''.join(sections)}</body></html>",
        encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--outputs-root", help="the executed profile (default outputs/<profile>)")
    ap.add_argument("--out", help="where the site goes (default build/report/<profile>)")
    args = ap.parse_args(argv)
    root = repo_root() or Path.cwd()
    outputs = Path(args.outputs_root) if args.outputs_root else root / "outputs" / args.profile
    if not outputs.is_dir():
        print(f"not built: no executed profile at {outputs}: run `make run PROFILE={args.profile}` first", file=sys.stderr)
        return 2
    index = build_site(outputs, Path(args.out) if args.out else root / "build" / "report" / args.profile, args.profile)
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
