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
    from models.train import TrainConfigError

    assert pipeline.errors.LandcoverError is models.errors.LandcoverError
    assert issubclass(pipeline.errors.AOIError, models.errors.LandcoverError)
    with pytest.raises(pipeline.errors.LandcoverError):  # what the CLI catches
        raise TrainConfigError("raised in models/")


def test_one_version_for_both_packages():
    import models
    import pipeline

    assert isinstance(models.__version__, str) and models.__version__
    assert pipeline.__version__ == models.__version__
