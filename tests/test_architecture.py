"""The layout is the architecture: core (leaf) < initialisation < children (the child networks and their
training) < one package per study < the notebook registry and runner. No module imports a higher layer or a sibling study."""
import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "rlinit_lib"
STUDY = 3   # one package per study; studies never import each other
LAYER = {"core": 0, "initialisation": 1, "children": 2, "scale_search": STUDY, "keras_validation": STUDY,
         "smooth_reinit": STUDY, "init_methods": STUDY, "formula_search": STUDY,
         "registry": 4, "run_notebooks": 4, "report_site": 4, "__init__": 4}


def part(module: str) -> str:
    """rlinit_lib.<part>[.x] -> part."""
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):   # function-level imports count too
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rlinit_lib"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("rlinit_lib")}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: use absolute imports (rlinit_lib....)")
    return out


def test_every_module_belongs_to_a_known_layer():
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("").parts
        assert rel[0] in LAYER, f"{path}: add its package to the layer table (and the README layout)"


def test_no_module_imports_a_higher_layer_or_a_sibling_study():
    bad = []
    for path in PKG.rglob("*.py"):
        mine = path.relative_to(PKG).with_suffix("").parts[0]
        for mod in imports(path):
            theirs = part(mod) if mod != "rlinit_lib" else "__init__"
            if theirs == mine:
                continue
            if LAYER[theirs] > LAYER[mine] or (LAYER[theirs] == LAYER[mine] == STUDY):
                bad.append(f"{path.relative_to(PKG)} imports {mod}")
    assert not bad, bad


def test_importing_the_core_loads_no_study():
    code = ("import sys, rlinit_lib.core.store, rlinit_lib.core.trials, rlinit_lib.core.notebook, rlinit_lib.core.plots, "
            "rlinit_lib.core.data, rlinit_lib.core.tracking, rlinit_lib.core.stats, rlinit_lib.core.runtime\n"
            "print(sorted(m for m in sys.modules if m.startswith('rlinit_lib.') and not m.startswith('rlinit_lib.core')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_module_has_a_docstring():
    for path in PKG.rglob("*.py"):
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no module docstring"


def test_the_readme_layout_names_every_module():
    readme = (PKG.parent / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for path in PKG.rglob("*.py"):
        if path.name != "__init__.py":
            assert path.name in layout, f"README's layout section does not mention {path.relative_to(PKG)}"
    for folder in ("core/", "initialisation/", "children/", "init_methods/", "scale_search/", "keras_validation/", "smooth_reinit/", "formula_search/", "benchmarks/"):
        assert folder in layout
