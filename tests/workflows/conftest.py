"""The runs of the test region that several workflow tests look at or compare with."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from workflow_helpers import FIRST_AS_OF, MODEL, NEW_SCENE_AS_OF, quiet, write_region

from workflows.region import load_region
from workflows.runner import RunOutcome, run_region


@pytest.fixture(scope="session", autouse=True)
def test_region_model(tiny_model: Path) -> Path:
    MODEL["path"] = tiny_model
    return tiny_model


@dataclass(frozen=True)
class IncrementalRuns:
    """A region run on one date, repeated on that date, then run on a date with one more scene."""

    root: Path
    region_file: Path
    first: RunOutcome
    repeat: RunOutcome
    new_scene: RunOutcome


@pytest.fixture(scope="session")
def incremental_runs(tmp_path_factory: pytest.TempPathFactory, demo_world, test_region_model) -> Iterator[IncrementalRuns]:
    base = tmp_path_factory.mktemp("incremental")
    region_file = write_region(base / "regions", base / "maps")
    region = load_region(region_file)
    first = run_region(region, as_of=FIRST_AS_OF, console=quiet())
    repeat = run_region(region, as_of=FIRST_AS_OF, console=quiet())
    new_scene = run_region(region, as_of=NEW_SCENE_AS_OF, console=quiet())
    yield IncrementalRuns(base / "maps", region_file, first, repeat, new_scene)


@pytest.fixture(scope="session")
def uninterrupted_classes(incremental_runs: IncrementalRuns) -> bytes:
    """The class raster of the test region on FIRST_AS_OF from a run nothing disturbed."""
    return (incremental_runs.first.out_dir / "landcover.tif").read_bytes()
