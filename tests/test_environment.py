"""environment.yml (conda users) and pyproject.toml (pip users) must list the same dependencies."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# conda-forge spells a few packages differently from PyPI.
CONDA_NAMES = {"torch": "pytorch"}


def _split(spec: str) -> tuple[str, str]:
    name, version = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec).groups()
    return name.lower().replace("_", "-"), version.replace(" ", "")


def _pyproject() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = meta["dependencies"] + meta["optional-dependencies"]["test"]
    return dict(_split(CONDA_NAMES.get(_split(s)[0], _split(s)[0]) + _split(s)[1]) for s in specs)


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    specs: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            specs.extend(dep.get("pip", []))
        elif dep != "pip" and not dep.startswith("python="):
            specs.append(dep)
    return dict(_split(s) for s in specs)


def test_environment_yml_lists_exactly_the_pyproject_dependencies():
    assert _environment() == _pyproject()


def test_torch_is_pinned_to_the_build_on_disk():
    deps = _pyproject()
    assert deps["pytorch"] == "==2.14.1"
    assert deps["torchvision"] == "==0.29.1"


def test_lock_file_pins_every_pyproject_dependency():
    locked = dict(
        _split(line.replace("==", " ==", 1))
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in _pyproject():
        pypi_name = {v: k for k, v in CONDA_NAMES.items()}.get(name, name)
        assert pypi_name in locked, f"{pypi_name} missing from requirements.lock"
        assert locked[pypi_name].startswith("=="), f"{pypi_name} is not pinned"
