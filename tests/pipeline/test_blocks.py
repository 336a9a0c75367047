"""Blocks of whole cells, the scenes they touch, their read groups and their content keys."""

from __future__ import annotations


import numpy as np
import pytest
import shapely

from pipeline.aoi import parse_aoi
from pipeline.blocks import (
    block_key,
    blocks_in_aoi,
    group_pixels,
    iter_blocks,
    items_touching,
    plan_blocks,
    read_group,
)
from pipeline.patches import plan_grid

AOI = parse_aoi({"type": "Polygon", "coordinates": [[[11.80, 45.30], [12.10, 45.30], [12.10, 45.42], [11.80, 45.42], [11.80, 45.30]]]})
MODEL = "ab" * 32  # the sha256 of the weights: what a block key knows of the model


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


def test_streamed_blocks_are_exactly_the_blocks_with_cells_in_the_aoi(grid):
    """iter_blocks answers block by block (a country's blocks never sit in one list) and agrees
    with the whole-grid mask cell for cell."""
    streamed = {b.index: b for b in iter_blocks(grid)}
    every = plan_blocks(grid)
    assert set(streamed) == {b.index for b in every if grid.inside_aoi[b.cells].any()}
    for block in every:
        assert (block.inside == grid.inside_aoi[block.cells]).all()


def test_a_read_group_spans_the_rectangle_of_its_blocks_in_the_area():
    """Blocks are read 2 x 2 at a time: every block of a group reads the same rectangle, the one
    around the group's blocks with a cell in the area (so a triangle's corner group does not read
    the block it misses), whichever of them a run still has to compute."""
    triangle = parse_aoi({"type": "Polygon", "coordinates": [[[11.80, 45.30], [12.10, 45.30], [11.80, 45.42], [11.80, 45.30]]]})
    grid = plan_grid(triangle, cells_per_chunk=2)
    blocks = list(iter_blocks(grid))
    groups: dict[tuple[int, int], list] = {}
    for block in blocks:
        groups.setdefault(read_group(block), []).append(block)
    assert any(len(members) == 4 for members in groups.values()) and any(len(members) < 4 for members in groups.values())
    for members in groups.values():
        ys = slice(min(b.pixels[0].start for b in members), max(b.pixels[0].stop for b in members))
        xs = slice(min(b.pixels[1].start for b in members), max(b.pixels[1].stop for b in members))
        assert [group_pixels(grid, b) for b in members] == [(ys, xs)] * len(members)
        assert all(b.index[0] // 2 == members[0].index[0] // 2 and b.index[1] // 2 == members[0].index[1] // 2 for b in members)


def test_the_grid_is_clipped_to_the_scenes_footprints():
    """A scene over the western third of the AOI: the grid spans only what it covers."""
    west = shapely.box(11.0, 45.0, 11.90, 46.0)
    clipped = plan_grid(AOI, cells_per_chunk=4, coverage=west)
    assert clipped.shape[1] < plan_grid(AOI, cells_per_chunk=4).shape[1]
    assert clipped.inside_aoi.any()
    with pytest.raises(Exception, match="no scene footprint meets the AOI"):
        plan_grid(AOI, coverage=shapely.box(0.0, 0.0, 1.0, 1.0))


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
    assert key != block_key(block, grid, ["a"], "cd" * 32, 0.5)
    assert key != block_key(block, grid, ["a"], MODEL, 0.6)


def test_a_10m_per_pixel_grid_counts_its_cells_by_area_and_keeps_exactly_the_cells_of_one_box_per_cell():
    """Planning a 10 m map rasterises the area onto an edge block's cells instead of building one
    box per cell, and counts a block wholly inside without any per-cell array: the same cells as
    the box-per-cell rule, on an outline with a hole, a spike narrower than a cell and edges lying
    exactly on cell edges."""
    from dataclasses import replace

    from pipeline.blocks import BlockCount, count_blocks
    from pipeline.patches import cells_intersecting

    grid = plan_grid(AOI, window_px=1, stride_px=1, margin_px=32, cells_per_chunk=32)
    t = grid.cell_geobox.affine
    x0, y0 = t.c + 200.0, t.f - 2_000.0  # 10 m cell edges: multiples of 10 from the grid origin
    outline = shapely.Polygon([(x0, y0), (x0 + 1_500, y0), (x0 + 1_500, y0 + 700), (x0 + 753.7, y0 + 700),
                               (x0 + 752, y0 + 1_700), (x0 + 750, y0 + 700), (x0, y0 + 1_021.5)],
                              holes=[[(x0 + 250, y0 + 250), (x0 + 600, y0 + 250), (x0 + 420, y0 + 610)]])
    grid = replace(grid, area=outline)
    blocks = list(iter_blocks(grid))
    assert any(b.inside.all() for b in blocks) and any(not b.inside.all() for b in blocks)
    for block in blocks:
        assert (block.inside == cells_intersecting(grid.cell_geobox[block.cells], outline)).all(), block.index
    near = grid.cell_geobox[:256, :256]  # every cell the outline can meet
    counted = count_blocks(grid)
    assert counted == BlockCount(len(blocks), cells_intersecting(near, outline).sum())
