"""One export of the blocks map, shared read-only by the tests of a module."""

from __future__ import annotations

import pytest
from export_helpers import AOI, blocks_map, make_provenance, two_scenes, utm_grid

from pipeline.export import export_map


@pytest.fixture(scope="module")
def scenes():
    return two_scenes()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, scenes):
    grid = utm_grid(40, 50)
    cmap = blocks_map()
    out = tmp_path_factory.mktemp("map") / "out"
    files = export_map(cmap, grid, out, aoi=AOI, scenes=scenes, provenance=make_provenance(scenes))
    return files, cmap, grid
