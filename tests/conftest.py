"""Fixtures shared by every test package: the offline demo world, generated once and served."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Under pytest-xdist (`make test`: one test process per core) each test process, and the commands it
# starts, computes on one thread: two processes each spinning two OpenMP threads on two cores spend
# much of their CPU time waiting on each other. Set before torch is first imported.
#
# Each test process also keeps to a core of its own where there is one per process: the commands
# it starts inherit that, so a map's local cluster has one worker (pipeline.cluster counts the cores
# a process may use) instead of starting one per core of the machine beside the other test process.
_cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, "1")
    _index = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw"))
    if 1 < int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")) <= len(_cores):
        os.sched_setaffinity(0, {_cores[_index % len(_cores)]})

import pytest  # noqa: E402

from pipeline.demo import DemoWorld, ServedWorld, generate_world, serve_world

# Helpers every test package imports (landcover_here): this folder on the path, as each package's own is.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@contextmanager
def every_core() -> Iterator[None]:
    """This process back on every core it started with while the block runs (the demo world renders
    its tiles in a process each, while the other test processes wait for it)."""
    pinned = os.sched_getaffinity(0) if _cores else None
    if pinned is not None:
        os.sched_setaffinity(0, _cores)
    try:
        yield
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, pinned)


@pytest.fixture(scope="session")
def demo_world() -> DemoWorld:
    """The default demo world in the default cache: generated on the first run (~15 s on 2 cores),
    then reused."""
    with every_core():
        return generate_world()


@pytest.fixture(scope="session")
def served_world(demo_world: DemoWorld) -> Iterator[ServedWorld]:
    """The demo world behind a local STAC API and file server for the whole session."""
    with serve_world(demo_world) as served:
        yield served


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Random `tiny`-profile weights with a card: fast on 2 cores, not a land-cover model."""
    import torch

    from models.card import ModelCard
    from models.checkpoint import save_model
    from models.classifier import SRClassifier
    from models.profiles import get_profile

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    card = ModelCard.for_profile("tiny", training_data={"description": "random init, tests only", "synthetic": True})
    save_model(SRClassifier(get_profile("tiny"), card.variant), card, path)
    return path


REALDATA_ENV = "LANDCOVER_REALDATA"


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real-data folder (STAC items, pixels, BigEarthNet patches that nobody on this team
    made), read in place: ``$LANDCOVER_REALDATA`` or ``<repo>/../shared/realdata``. Tests that
    need it skip where it is absent, as in a user's clone."""
    import os

    override = os.environ.get(REALDATA_ENV)
    root = Path(override) if override else Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata"
    if not (root / "README.md").is_file():
        pytest.skip(f"real data not found at {root} (set {REALDATA_ENV} to the shared/realdata folder to run these tests)")
    return root.resolve()
