"""Fixtures shared by every test package: the offline demo world, generated once and served."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.demo import DemoWorld, ServedWorld, generate_world, serve_world


@pytest.fixture(scope="session")
def demo_world() -> DemoWorld:
    """The default demo world in the default cache: generated on the first run (~20 s), then reused."""
    return generate_world()


@pytest.fixture(scope="session")
def served_world(demo_world: DemoWorld) -> Iterator[ServedWorld]:
    """The demo world behind a local STAC API and file server for the whole session."""
    with serve_world(demo_world) as served:
        yield served
