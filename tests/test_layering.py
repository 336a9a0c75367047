"""The house has four layers, bottom to top: ``models`` <- ``pipeline`` <- ``workflows`` <- ``cli``.

A module imports only from its own layer or the layers below it, and no two modules import each
other, directly or round a circle, at module level or inside a function: each layer can be read,
tested and reused without the ones above it. (What ``models`` needs from the pipeline side, the
demo-world training source, is handed in by ``cli``, the one place that knows both.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("models", "pipeline", "workflows", "cli")  # bottom to top


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, module) of every import of one of ``known`` in a file, at any depth; ``from a import b``
    counts as importing ``a.b`` when that is a module, else ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif isinstance(node, ast.Call):  # importlib.import_module("x.y") / __import__("x.y")
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0] if node.args else None
            if called not in ("import_module", "__import__") or not isinstance(first, ast.Constant) \
                    or not isinstance(first.value, str):
                continue
            targets = [first.value]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name inside a module: the module itself
                target = target.rpartition(".")[0]
            if target and target != name:
                yield node.lineno, target


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: {t for _, t in imported(path, name, known)} for name, path in mods.items()}


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_no_module_imports_a_layer_above_its_own():
    mods = modules()
    known = set(mods)
    upward = [f"{path.relative_to(ROOT)}:{line} imports {target}"
              for name, path in mods.items() for line, target in imported(path, name, known)
              if layer(target) > layer(name)]
    assert upward == []


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the circles of the graph (components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in edges.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return circles


def package_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop the edges between a package and its own submodules (``pipeline.export`` re-exporting
    ``pipeline.export.writer`` is how a package shows its public surface, not a circle)."""
    def related(a: str, b: str) -> bool:
        return a.startswith(b + ".") or b.startswith(a + ".")

    return {a: {b for b in targets if not related(a, b)} for a, targets in edges.items()}


def test_no_import_cycles_anywhere():
    assert strongly_connected(package_edges(graph())) == []


@pytest.mark.parametrize(("edges", "circles"), [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_circles_and_only_circles(edges, circles):
    assert strongly_connected(edges) == circles


def test_the_scanner_sees_imports_inside_functions_and_relative_ones(tmp_path, monkeypatch):
    package = tmp_path / "pipeline"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from workflows import runner\n    importlib.import_module('cli')\n")
    (package / "b.py").write_text("from . import a\nfrom .a import f\n")
    known = {"pipeline", "pipeline.a", "pipeline.b", "workflows", "workflows.runner", "cli"}
    monkeypatch.setattr("test_layering.ROOT", tmp_path)
    assert sorted(imported(package / "a.py", "pipeline.a", known)) == [(2, "workflows.runner"), (3, "cli")]
    assert sorted(imported(package / "b.py", "pipeline.b", known)) == [(1, "pipeline.a"), (2, "pipeline.a")]


def test_planning_a_map_never_imports_torch(tmp_path):
    """The client plans and streams a run; only workers run models. torch costs ~0.6 GiB resident."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pipeline.demo import generate_world\n"
        "from pipeline.plan import make_plan\n"
        "from pipeline.run import stac_endpoint\n"
        "from pipeline.settings import MapConfig\n"
        "cfg = MapConfig(aoi=generate_world().aoi_path, out=Path('unused'))\n"
        "with stac_endpoint(cfg) as url:\n"
        "    make_plan(cfg, url)\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"
