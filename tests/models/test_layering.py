"""The dependency runs one way: pipeline/ -> models/, never models/ -> pipeline/.

models/ holds networks, checkpoints, cards and training; it must stay usable (and testable)
without the batch pipeline. What it needs from the pipeline side (the demo-world training
source) is handed in by the command line, the one place that knows both.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "models"
FORBIDDEN = "pipeline"


def _is_forbidden(module: str | None) -> bool:
    return module is not None and (module == FORBIDDEN or module.startswith(FORBIDDEN + "."))


def pipeline_imports(path: Path) -> list[str]:
    """``line: statement`` of every import of pipeline in a file, at any depth (module level,
    functions, ``if TYPE_CHECKING``, ``__main__`` blocks) and by ``importlib.import_module`` /
    ``__import__`` with a literal name."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if _is_forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module] if node.level == 0 and _is_forbidden(node.module) else []
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0] if node.args else None
            literal = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
            names = [literal] if name in ("import_module", "__import__") and _is_forbidden(literal) else []
        else:
            continue
        if names:
            found.append((node.lineno, f"{node.lineno}: {ast.get_source_segment(source, node) or names[0]}"))
    return [text for _, text in sorted(found)]


def test_the_import_scanner_sees_every_form(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n"
        "import pipeline\n"
        "from pipeline.errors import LandcoverError\n"
        "import pipeline.load as pl\n"
        "from pipelines_elsewhere import x\n"
        "from sklearn.pipeline import make_pipeline\n"
        "def f():\n"
        "    from pipeline.demo.world import generate_world\n"
        "    import importlib\n"
        "    importlib.import_module('pipeline.load')\n"
        "if __name__ == '__main__':\n"
        "    from pipeline import __version__\n"
    )
    assert [line.split(":")[0] for line in pipeline_imports(sample)] == ["2", "3", "4", "8", "10", "12"]


def test_models_never_imports_pipeline():
    files = sorted(MODELS.rglob("*.py"))
    assert files, f"no Python files under {MODELS}"
    offenders = {path.relative_to(MODELS.parent).as_posix(): hits for path in files if (hits := pipeline_imports(path))}
    if offenders:
        report = "\n".join(f"  {name}\n" + "\n".join(f"    line {hit}" for hit in hits) for name, hits in offenders.items())
        pytest.fail(
            f"{len(offenders)} file(s) under models/ import pipeline (models/ must not; use models.errors / "
            f"models.__version__, or have the CLI hand in what is needed):\n{report}",
            pytrace=False,
        )


def test_pipeline_errors_reexport_the_one_base_class():
    import models.errors
    import pipeline.errors
    from models.training.config import TrainConfigError

    assert pipeline.errors.LandcoverError is models.errors.LandcoverError
    assert issubclass(pipeline.errors.AOIError, models.errors.LandcoverError)
    with pytest.raises(pipeline.errors.LandcoverError):  # what the CLI catches
        raise TrainConfigError("raised in models/")


def test_one_version_for_both_packages():
    import models
    import pipeline

    assert isinstance(models.__version__, str) and models.__version__
    assert pipeline.__version__ == models.__version__


# --------------------------------------------------------------------------- no import cycles in models/


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, at any depth (functions and
    ``if TYPE_CHECKING`` blocks too: a lazy import still makes two modules one unit)."""
    package = root.name
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                # ``from models import train_cli`` imports the module models.train_cli
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:  # ``import models.x.y`` where y is a name
                    target = target.rpartition(".")[0]
                if target.split(".")[0] == package and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_sees_a_lazy_cycle_and_not_a_chain(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n")
    (pkg / "c.py").write_text("import pkg.a\nfrom .sub import d\n")
    (pkg / "sub" / "d.py").write_text("from ..a import x\n")
    graph = import_graph(pkg)
    assert graph["pkg.c"] == {"pkg.a", "pkg.sub.d"} and graph["pkg.sub.d"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_models_has_no_import_cycle():
    found = cycles(import_graph(MODELS))
    assert not found, "import cycles in models/ (move the shared piece down into a module both can import): " + \
        "; ".join(" <-> ".join(c) for c in found)
