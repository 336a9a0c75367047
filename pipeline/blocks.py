"""The block: the unit a map is planned, read, classified, stored and written in.

A block is ``cells_per_chunk`` x ``cells_per_chunk`` cells of the map grid
(:class:`pipeline.patches.PatchGrid`), with the pixels its windows need around them. This module
says which blocks a map has (:func:`iter_blocks`, lazily, so a country's blocks are never all in
memory), which scenes each one needs (:class:`ItemIndex`), which blocks are read together
(:func:`read_group`, :func:`group_pixels`) and the content key of a block's result
(:func:`block_key`), under which chunk stores (:mod:`pipeline.store`) keep it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import shapely

from pipeline.patches import PatchGrid

if TYPE_CHECKING:
    from pipeline.detail import DetailPlan
    from pipeline.halo import PixelPlan

# Blocks per side read and composited by one task: a 2 x 2 group decodes the COG tiles its
# inner edges cut once instead of twice (measured on the full demo tile: 18-30% less read time
# per block), while each block is still classified by its own task.
READ_GROUP = 2
# ... as long as the group's rectangle stays within this many read pixels a side (its planes:
# 11 bands of float32 over 3072^2 px = 0.4 GB, the dates read under them several times that).
# Every 9.6 km block groups 2 x 2 (2160 px with windows' margins, 2304 px with the block path's
# halo, 2000 px for the seed family's 30 m reads); the block path's 19.2 km blocks (2304 px each
# with their halo) already share their halo over 4x the ground and are read one per task.
READ_GROUP_PX = 3072


@dataclass(frozen=True, eq=False)
class BlockSpec:
    """One task: cells [cy0:cy1, cx0:cx1] of the cell grid, the pixel rows/cols they need, and
    which of its cells are part of the map (``inside``, bool (cy, cx))."""

    index: tuple[int, int]
    cells: tuple[slice, slice]
    pixels: tuple[slice, slice]
    inside: np.ndarray
    read_side: int = READ_GROUP  # blocks per side of its read group (:func:`read_group_side`)

    @property
    def n_inside(self) -> int:
        return int(self.inside.sum())


def cells_of_block(grid: PatchGrid, bi: int, bj: int) -> tuple[slice, slice]:
    """The cells (rows, cols) of block ``(bi, bj)`` of ``grid``."""
    ny, nx = grid.cell_geobox.shape
    step = grid.cells_per_chunk
    cy0, cx0 = bi * step, bj * step
    return slice(cy0, min(cy0 + step, ny)), slice(cx0, min(cx0 + step, nx))


def block_at(grid: PatchGrid, bi: int, bj: int, inside: np.ndarray | None = None,
             read_side: int = READ_GROUP) -> BlockSpec:
    """Block ``(bi, bj)`` of ``grid``, read in groups of ``read_side`` x ``read_side`` blocks."""
    s, m = grid.stride_px, grid.margin_px
    cells = cells_of_block(grid, bi, bj)
    (cy0, cy1), (cx0, cx1) = (cells[0].start, cells[0].stop), (cells[1].start, cells[1].stop)
    return BlockSpec(
        index=(bi, bj),
        cells=cells,
        # Padded pixel grid: cell (i, j)'s window starts at pixel (i*s, j*s).
        pixels=(slice(cy0 * s, cy1 * s + 2 * m), slice(cx0 * s, cx1 * s + 2 * m)),
        inside=grid.inside_cells(cells) if inside is None else inside,
        read_side=read_side,
    )


def plan_blocks(grid: PatchGrid) -> list[BlockSpec]:
    """Every block of ``cells_per_chunk`` x ``cells_per_chunk`` cells covering the cell grid."""
    ny, nx = grid.cell_geobox.shape
    step = grid.cells_per_chunk
    return [block_at(grid, bi, bj) for bi in range(-(-ny // step)) for bj in range(-(-nx // step))]


def iter_blocks(grid: PatchGrid, read_side: int = READ_GROUP) -> Iterator[BlockSpec]:
    """The blocks with at least one cell in the mapped area, row by row, planned as they are asked
    for: a country's blocks are never all in memory, and blocks the area misses cost one vectorised
    test per block row. Each is read in groups of ``read_side`` x ``read_side`` blocks."""
    for bi, bj in meeting_blocks(grid):
        block = block_at(grid, bi, bj, read_side=read_side)
        if block.inside.any():
            yield block


def meeting_blocks(grid: PatchGrid) -> Iterator[tuple[int, int]]:
    """Indices of the blocks whose square meets the mapped area's interior, row by row (a block
    may still have no cell in it: its cells decide)."""
    ny, nx = grid.cell_geobox.shape
    step = grid.cells_per_chunk
    n_cols = -(-nx // step)
    t = grid.cell_geobox.affine
    xs = t.c + t.a * np.minimum(np.arange(n_cols + 1) * step, nx)
    for bi in range(-(-ny // step)):
        y_top, y_bottom = t.f + t.e * bi * step, t.f + t.e * min((bi + 1) * step, ny)
        low, high = min(y_top, y_bottom), max(y_top, y_bottom)
        squares = shapely.box(xs[:-1], low, xs[1:], high)
        # The area's strip along this block row: small, so each row's test is cheap.
        strip = shapely.clip_by_rect(grid.area, min(xs[0], xs[-1]), low, max(xs[0], xs[-1]), high)
        if strip.is_empty:
            continue
        shapely.prepare(strip)
        meets = shapely.intersects(strip, squares) & ~shapely.touches(strip, squares)
        for bj in np.flatnonzero(meets):
            yield bi, int(bj)


def blocks_in_aoi(grid: PatchGrid) -> list[BlockSpec]:
    """Blocks with at least one cell in the AOI; the others never get a task."""
    return list(iter_blocks(grid))


@dataclass(frozen=True)
class BlockCount:
    blocks: int
    cells: int


def count_blocks(grid: PatchGrid) -> BlockCount:
    """Blocks and map cells of ``grid``, without building any graph (one pass over the blocks).

    The cells are counted by area: a block wholly inside the mapped area counts all its cells
    without any array or geometry per cell, a block on its edge rasterises the area onto its cells
    (:meth:`PatchGrid.count_inside`): a 10 m map of ~1,000 MGRS tiles (7.6e10 cells) is counted in
    about half a minute (benchmarks/scale.py), never one geometry per cell."""
    blocks = cells = 0
    for bi, bj in meeting_blocks(grid):
        n = grid.count_inside(cells_of_block(grid, bi, bj))
        if n:
            blocks += 1
            cells += n
    return BlockCount(blocks, cells)


class ItemIndex:
    """Scene footprints in a search tree, so finding the scenes of one block does not test every
    scene of a country."""

    def __init__(self, items: Iterable) -> None:
        self.items = list(items)
        self.tree = shapely.STRtree([shapely.geometry.shape(it.geometry) for it in self.items])

    def touching(self, footprint: shapely.Geometry) -> list:
        """The items whose footprint meets ``footprint`` (lon/lat), sorted by id."""
        hits = self.tree.query(footprint, predicate="intersects")
        return sorted((self.items[i] for i in hits), key=lambda it: it.id)


def block_footprint(block: BlockSpec, grid: PatchGrid) -> shapely.Geometry:
    """The ground the block's windows cover, in lon/lat."""
    return pixels_footprint(block.pixels, grid)


def pixels_footprint(pixels: tuple[slice, slice], grid: PatchGrid) -> shapely.Geometry:
    """The ground of ``pixels`` of the grid's padded pixel grid, in lon/lat."""
    ys, xs = pixels
    return grid.pixel_geobox[ys, xs].extent.to_crs("EPSG:4326").geom


def items_touching(block: BlockSpec, grid: PatchGrid, items: Iterable | ItemIndex) -> list[str]:
    """Ids of the items whose footprint meets the ground the block's windows cover."""
    index = items if isinstance(items, ItemIndex) else ItemIndex(items)
    return [it.id for it in index.touching(block_footprint(block, grid))]


def block_key(block: BlockSpec, grid: PatchGrid, item_ids: list[str], model_sha256: str, min_clear: float,
              detail: DetailPlan | PixelPlan | None = None) -> str:
    """Content key of a block result: same ground, same scenes, same model and rules -> same key.

    A run with one new scene changes the keys of only the blocks that scene touches.
    """
    ys, xs = block.pixels
    recipe = {
        "pixels": [str(grid.pixel_geobox[ys, xs].crs), list(grid.pixel_geobox[ys, xs].affine)[:6],
                   list(grid.pixel_geobox[ys, xs].shape)],
        "cells": [block.cells[0].start, block.cells[0].stop, block.cells[1].start, block.cells[1].stop],
        "windows": [grid.window_px, grid.stride_px, grid.margin_px],
        "inside": hashlib.sha256(np.ascontiguousarray(block.inside).tobytes()).hexdigest(),
        "items": item_ids,
        "model": model_sha256,
        "min_clear": min_clear,
        **({"detail": detail.key()} if detail else {}),
        # Classified from coarser planes: other pixels reach the model (absent for grid pixels,
        # so results stored before the option existed keep their keys).
        **({"read_factor": detail.read_factor} if detail and detail.read_factor != 1 else {}),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def read_group_side(grid: PatchGrid, read_factor: int = 1) -> int:
    """Blocks per side of ``grid``'s read groups: :data:`READ_GROUP`, fewer where a group of full
    blocks would span more than :data:`READ_GROUP_PX` pixels of the planes read (``read_factor``
    grid pixels each), at least one. Decided by the grid's full block, so every block of a map,
    partial ones at its edges included, is grouped alike."""
    block_px = grid.cells_per_chunk * grid.stride_px
    for side in range(READ_GROUP, 1, -1):
        if (side * block_px + 2 * grid.margin_px) / read_factor <= READ_GROUP_PX:
            return side
    return 1


def read_group(block: BlockSpec, side: int | None = None) -> tuple[int, int]:
    """The group of ``side`` x ``side`` blocks (default: the block's own :attr:`BlockSpec.read_side`)
    ``block`` is read with."""
    side = side or block.read_side
    return block.index[0] // side, block.index[1] // side


def group_pixels(grid: PatchGrid, block: BlockSpec, side: int | None = None) -> tuple[slice, slice]:
    """The padded pixels ``block``'s read group spans: the rectangle around those of its blocks
    that have a cell in the mapped area.

    It depends on the grid and the area alone, never on which blocks a run still computes, so a
    resumed or incremental run reads every block exactly as a fresh run does: reprojected pixels
    depend (slightly) on the rectangle a warp fills.
    """
    side = side or block.read_side
    gi, gj = read_group(block, side)
    ny, nx = grid.cell_geobox.shape
    step = grid.cells_per_chunk
    members = [block if (bi, bj) == block.index else block_at(grid, bi, bj)
               for bi in range(gi * side, min((gi + 1) * side, -(-ny // step)))
               for bj in range(gj * side, min((gj + 1) * side, -(-nx // step)))]
    members = [b for b in members if b is block or b.inside.any()]
    return (slice(min(b.pixels[0].start for b in members), max(b.pixels[0].stop for b in members)),
            slice(min(b.pixels[1].start for b in members), max(b.pixels[1].stop for b in members)))
