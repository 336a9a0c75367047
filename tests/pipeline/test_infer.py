"""Blocks of whole cells, their content keys, and the store that makes runs resumable."""

from __future__ import annotations


import numpy as np
import pytest
import shapely

from pipeline.aoi import parse_aoi
from pipeline.infer import (
    N_PLANES,
    DirectoryChunkStore,
    ModelRef,
    assemble,
    block_key,
    blocks_in_aoi,
    items_touching,
    plan_blocks,
)
from pipeline.patches import plan_grid

AOI = parse_aoi({"type": "Polygon", "coordinates": [[[11.80, 45.30], [12.10, 45.30], [12.10, 45.42], [11.80, 45.42], [11.80, 45.30]]]})
MODEL = ModelRef("weights.safetensors", "ab" * 32)


class Item:
    def __init__(self, id, geometry):
        self.id, self.geometry = id, shapely.geometry.mapping(geometry)


@pytest.fixture(scope="module")
def grid():
    return plan_grid(AOI, cells_per_chunk=4)


def test_blocks_tile_the_cell_grid_exactly_once(grid):
    ny, nx = grid.cell_geobox.shape
    seen = np.zeros((ny, nx), int)
    for block in plan_blocks(grid):
        seen[block.cells] += 1
        ys, xs = block.pixels
        # A block's pixels are its cells plus the window margin on every side.
        assert ys.stop - ys.start == (block.cells[0].stop - block.cells[0].start) * grid.stride_px + 2 * grid.margin_px
    assert (seen == 1).all()


def test_overlapping_windows_widen_the_pixel_blocks():
    grid = plan_grid(AOI, stride_px=60, cells_per_chunk=4)
    block = plan_blocks(grid)[0]
    assert grid.margin_px == 30
    assert block.pixels[0] == slice(0, 4 * 60 + 60)


def test_assemble_places_each_block_and_leaves_the_rest_nan(grid):
    blocks = blocks_in_aoi(grid)
    first = blocks[0]
    cy = first.cells[0].stop - first.cells[0].start
    cx = first.cells[1].stop - first.cells[1].start
    planes = assemble(grid, {first.index: (first, np.full((N_PLANES, cy, cx), 0.5, np.float32))})
    assert planes.shape == (N_PLANES, *grid.cell_geobox.shape)
    assert (planes[:, first.cells[0], first.cells[1]] == 0.5).all()
    assert np.isnan(planes[0]).sum() == planes[0].size - cy * cx


def test_a_new_scene_changes_only_the_keys_of_blocks_it_touches(grid):
    blocks = blocks_in_aoi(grid)
    assert len(blocks) > 1
    everywhere = Item("big", shapely.box(11.0, 45.0, 13.0, 46.0))
    # A small scene over the first block only.
    corner = grid.pixel_geobox[blocks[0].pixels].extent.to_crs("EPSG:4326").geom.centroid.buffer(0.001)
    small = Item("small", corner)
    before = {b.index: block_key(b, grid, items_touching(b, grid, [everywhere]), MODEL, 0.5) for b in blocks}
    after = {b.index: block_key(b, grid, items_touching(b, grid, [everywhere, small]), MODEL, 0.5) for b in blocks}
    changed = [i for i in before if before[i] != after[i]]
    assert changed == [blocks[0].index]


def test_keys_depend_on_model_and_rules(grid):
    block = blocks_in_aoi(grid)[0]
    key = block_key(block, grid, ["a"], MODEL, 0.5)
    assert key == block_key(block, grid, ["a"], MODEL, 0.5)
    assert key != block_key(block, grid, ["a"], ModelRef("w", "cd" * 32), 0.5)
    assert key != block_key(block, grid, ["a"], MODEL, 0.6)


def test_the_chunk_store_round_trips_and_leaves_no_partial_files(tmp_path):
    store = DirectoryChunkStore(tmp_path)
    values = np.arange(N_PLANES * 4, dtype=np.float32).reshape(N_PLANES, 2, 2)
    assert store.get("k") is None
    store.put("k", values)
    np.testing.assert_array_equal(store.get("k"), values)
    assert [p.name for p in tmp_path.iterdir()] == ["k.npy"]


def test_a_damaged_chunk_is_recomputed_not_trusted(tmp_path):
    store = DirectoryChunkStore(tmp_path)
    (tmp_path / "k.npy").write_bytes(b"\x93NUMPY garbage")
    assert store.get("k") is None
