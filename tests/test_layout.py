"""The layout holds: data flows one way (capture → top → analysis / engine → share), no module-level
import cycles, features do not import the bus, and a wheel built from a clean clone carries
the subpackages and the templates."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.paths import ROOT

PACKAGE = ROOT / "evtkit"
TOP = {"trace", "store", "schema", "observation", "event", "errors", "_headers", "env",
       "subject", "_parquet"}
"""Top-level modules that everything may use and that use no layer below them."""


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, module_level: bool) -> set[str]:
    """evtkit modules ``path`` imports: at module level only (not under TYPE_CHECKING, not
    inside functions), or anywhere."""
    tree = ast.parse(path.read_text())
    here = _name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    nodes: list[ast.AST] = []
    if module_level:
        todo = list(tree.body)
        while todo:
            node = todo.pop()
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.If | ast.Try):
                todo += [*node.body, *node.orelse, *getattr(node, "handlers", [])]
            nodes.append(node)
    else:
        nodes = list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("evtkit")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("evtkit"):
                continue
            for alias in node.names:  # `from . import x` may name a submodule
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
    return found


def _exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_import_cycle_at_module_level():
    graph = {m: {t for t in _imports(p, module_level=True) if t in MODULES and t != m}
             for m, p in MODULES.items()}
    # A package's __init__ runs before its submodules; edges into `evtkit` itself (the
    # front door, which imports everything) are how Python works, not a design cycle.
    graph = {m: targets - {"evtkit"} for m, targets in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layers_depend_one_way(module):
    """capture never reaches analysis or share; analysis never reaches capture or share;
    the engine (analysis at scale) never reaches capture or share either;
    share never imports capture at run time; the top never imports a layer at module
    level (Trace's methods hand off to analysis lazily)."""
    path = MODULES[module]
    anywhere = _imports(path, module_level=False)
    at_load = _imports(path, module_level=True)
    layer = module.split(".")[1] if module.count(".") >= 1 else ""
    if layer == "capture":
        assert not {m for m in anywhere if m.startswith(("evtkit.analysis", "evtkit.share"))}
    elif layer in ("analysis", "engine"):
        assert not {m for m in anywhere if m.startswith(("evtkit.capture", "evtkit.share"))}
    elif layer == "share":
        assert not {m for m in at_load if m.startswith("evtkit.capture")}
    elif layer in TOP:
        assert not {m for m in at_load if m.startswith(
            ("evtkit.capture", "evtkit.analysis", "evtkit.share"))}
        assert not {m for m in anywhere if m.startswith("evtkit.capture")}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("evtkit.capture.")
                                          and m != "evtkit.capture.bus"))
def test_features_do_not_import_the_bus(module):
    """Features get a Router (capture/contract.py, capture/router.py), never the Bus."""
    assert "evtkit.capture.bus" not in _imports(MODULES[module], module_level=False)


def test_no_module_is_too_long():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_wheel_from_a_clean_clone_has_subpackages_and_templates(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", f"file://{ROOT}", str(clone)],
                   check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp_path / "dist"), str(clone)],
                   check=True, timeout=300, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("evtkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    committed = subprocess.run(["git", "ls-files", "evtkit"], cwd=clone, check=True,
                               capture_output=True, text=True).stdout.split()
    assert set(committed) <= names, sorted(set(committed) - names)
    for needed in ("evtkit/capture/bus.py", "evtkit/analysis/lag.py",
                   "evtkit/share/report.py", "evtkit/share/templates/report/report.html.j2",
                   "evtkit/share/templates/evtkit_offline/index.html.j2", "evtkit/py.typed"):
        assert needed in names
