"""Stage 5: class probabilities per patch cell, computed chunk by chunk on dask workers.

Each task holds a block of whole cells (plus the window margin when windows overlap), cuts the
120 px windows, applies the model card's preprocessing and runs the batched predictor. The model is
loaded once per worker process and reused by every task that lands there.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import shapely

import dask
import numpy as np

from models.classes import NUM_CLASSES
from pipeline.cluster import GPU_RESOURCE
from pipeline.patches import PatchGrid

# Output planes of a block: the class probabilities, then the clear fraction of each cell.
N_PLANES = NUM_CLASSES + 1


@dataclass(frozen=True)
class ModelRef:
    """How a worker finds the model: a path it can read (shared storage on a cluster) and the
    sha256 the client saw, so a worker never runs different weights than the map records."""

    path: str
    sha256: str
    device: str = "auto"
    batch_size: int | None = None


@dataclass(frozen=True, eq=False)
class BlockSpec:
    """One task: cells [cy0:cy1, cx0:cx1] of the cell grid, the pixel rows/cols they need, and
    which of its cells are part of the map (``inside``, bool (cy, cx))."""

    index: tuple[int, int]
    cells: tuple[slice, slice]
    pixels: tuple[slice, slice]
    inside: np.ndarray

    @property
    def n_inside(self) -> int:
        return int(self.inside.sum())


def _block(grid: PatchGrid, bi: int, bj: int, inside: np.ndarray | None = None) -> BlockSpec:
    ny, nx = grid.cell_geobox.shape
    step, s, m = grid.cells_per_chunk, grid.stride_px, grid.margin_px
    cy0, cx0 = bi * step, bj * step
    cy1, cx1 = min(cy0 + step, ny), min(cx0 + step, nx)
    cells = (slice(cy0, cy1), slice(cx0, cx1))
    return BlockSpec(
        index=(bi, bj),
        cells=cells,
        # Padded pixel grid: cell (i, j)'s window starts at pixel (i*s, j*s).
        pixels=(slice(cy0 * s, cy1 * s + 2 * m), slice(cx0 * s, cx1 * s + 2 * m)),
        inside=grid.inside_cells(cells) if inside is None else inside,
    )


def plan_blocks(grid: PatchGrid) -> list[BlockSpec]:
    """Every block of ``cells_per_chunk`` x ``cells_per_chunk`` cells covering the cell grid."""
    ny, nx = grid.cell_geobox.shape
    step = grid.cells_per_chunk
    return [_block(grid, bi, bj) for bi in range(-(-ny // step)) for bj in range(-(-nx // step))]


def iter_blocks(grid: PatchGrid) -> Iterator[BlockSpec]:
    """The blocks with at least one cell in the mapped area, row by row, planned as they are asked
    for: a country's blocks are never all in memory, and blocks the area misses cost one vectorised
    test per block row."""
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
            block = _block(grid, bi, int(bj))
            if block.inside.any():
                yield block


def blocks_in_aoi(grid: PatchGrid) -> list[BlockSpec]:
    """Blocks with at least one cell in the AOI; the others never get a task."""
    return list(iter_blocks(grid))


@functools.lru_cache(maxsize=2)
def _predictor(path: str, sha256: str, device: str, batch_size: int | None):
    # A per-process cache is what makes "load once per worker" true: dask reuses the worker
    # process for every task, and the cache key includes the sha256 the client recorded.
    from models.card import sha256_file
    from models.predictor import Predictor

    actual = sha256_file(Path(path))
    if actual != sha256:
        raise RuntimeError(f"model file {path} changed during the run (sha256 {actual[:12]} != {sha256[:12]})")
    return Predictor.from_path(Path(path), device=None if device == "auto" else device, batch_size=batch_size)


def load_model_here(model: ModelRef) -> str:
    """Load the model into this worker's cache now (run on every worker before the first task),
    so importing torch and reading the weights is not paid inside the first block; returns the
    device it landed on."""
    return str(_predictor(model.path, model.sha256, model.device, model.batch_size).device)


@dataclass(frozen=True)
class DetailSpec:
    """How a block's windows are placed, evaluated and blended into cells (:mod:`pipeline.detail`),
    as the client knows it; the dense grid side is asked of the model on the worker."""

    window_stride_px: int
    cell_px: int
    dense: bool = True
    weight: str = "box"
    min_clear: float = 0.5
    # Grid pixels per pixel of the planes a block is classified from: 2 when a model that sees
    # its window coarser than 20 m gets the 20 m composite itself, never upsampled to the grid.
    read_factor: int = 1

    def plan(self, window_px: int, dense_grid: int = 1):
        """The :class:`pipeline.detail.DetailPlan` for a model window, in grid pixels (the dense
        grid moves no window, so margins and window counts need only the default)."""
        from pipeline.detail import DetailPlan

        return DetailPlan(window_px=window_px, stride_px=self.window_stride_px, cell_px=self.cell_px,
                          dense_grid=dense_grid, weight=self.weight)

    def plane_plan(self, window_px: int, dense_grid: int = 1):
        """:meth:`plan` in the pixels of the planes the classifier gets (``read_factor`` times the grid's)."""
        plan = self.plan(window_px, dense_grid).coarsened(self.read_factor)
        if plan is None:
            raise ValueError(f"a window of {window_px} px every {self.window_stride_px} px into cells of {self.cell_px} px "
                             f"is no whole number of {self.read_factor}x coarser pixels")
        return plan


@functools.lru_cache(maxsize=2)
def _dense_grid(path: str, sha256: str, device: str, batch_size: int | None) -> int:
    return _predictor(path, sha256, device, batch_size).dense_grid()


def detail_plan(model: ModelRef, spec: DetailSpec):
    """The worker's :class:`pipeline.detail.DetailPlan` in the pixels of the planes it classifies:
    the spec plus the model's dense grid."""
    predictor = _predictor(model.path, model.sha256, model.device, model.batch_size)
    g = _dense_grid(model.path, model.sha256, model.device, model.batch_size) if spec.dense else 1
    return spec.plane_plan(predictor.card.window_px, g)


def classify_blocks(planes: list[np.ndarray], blocks: list[BlockSpec], model: ModelRef, spec: DetailSpec) -> list[np.ndarray]:
    """Composite planes of blocks -> one (20, cy, cx) float32 per block: class probabilities in map
    order (NaN where not mapped), then each cell's clear fraction.

    ``planes[k]`` is block k's (bands + 1, H, W) composite (the card's bands' reflectance, then
    the clear-observation count) padded by the plan's margin, on pixels ``spec.read_factor``
    times the grid's. Several blocks per task keep a GPU fed when each has few windows; the
    windows are cut here, where the model runs, so the task's input is the composite rather
    than the (much larger) stack of overlapping windows.
    """
    from pipeline.detail import classify_pixels

    predictor = _predictor(model.path, model.sha256, model.device, model.batch_size)
    plan = detail_plan(model, spec)
    if plan.dense_grid > 1:
        predict = functools.partial(predictor.predict_reflectance_dense, window_px=plan.window_px)
    else:
        def predict(windows: np.ndarray) -> np.ndarray:
            return predictor.predict_reflectance(windows).probs[:, :, None, None]

    out = []
    for block_planes, block in zip(planes, blocks, strict=True):
        origin = (block.cells[0].start * plan.cell_px, block.cells[1].start * plan.cell_px)
        cells = classify_pixels(
            block_planes[:-1], block_planes[-1] > 0, block.inside, plan, predict,
            n_classes=len(predictor.card.classes), min_clear=spec.min_clear, origin_px=origin,
        )
        cy, cx = block.inside.shape
        values = np.empty((N_PLANES, cy, cx), dtype=np.float32)
        # The card's class order -> map codes (reBEN's alphabetical order, the seed's own).
        values[:NUM_CLASSES] = predictor.card.to_map_order(cells[:-1].reshape(-1, cy * cx).T).T.reshape(NUM_CLASSES, cy, cx)
        values[-1] = cells[-1]
        out.append(values)
    return out


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


def block_key(block: BlockSpec, grid: PatchGrid, item_ids: list[str], model: ModelRef, min_clear: float,
              detail: DetailSpec | None = None) -> str:
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
        "model": model.sha256,
        "min_clear": min_clear,
        **({"detail": [detail.window_stride_px, detail.cell_px, detail.dense, detail.weight]} if detail else {}),
        # Classified from coarser planes: other pixels reach the model (absent for grid pixels,
        # so results stored before the option existed keep their keys).
        **({"read_factor": detail.read_factor} if detail and detail.read_factor != 1 else {}),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


class ChunkStore(Protocol):
    """Where finished block results persist, so a killed or repeated run does not redo them."""

    def get(self, key: str) -> np.ndarray | None: ...

    def put(self, key: str, values: np.ndarray) -> None: ...


class DirectoryChunkStore:
    """One ``<key>.npy`` per finished block, written to a temporary name and renamed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):  # a foreign or damaged file: recompute rather than trust it
            return None

    def put(self, key: str, values: np.ndarray) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key[:16]}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(values, dtype=np.float32), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __contains__(self, key: str) -> bool:
        return self._path(key).exists()


# A GPU worker takes windows of several blocks per task, so each forward pass gets at least
# this many (the predictor's default CUDA batch).
GPU_WINDOWS_PER_TASK = 128


def windows_per_block(grid: PatchGrid, spec: DetailSpec) -> int:
    """Model windows of a full block (at most: cloudy windows are skipped)."""
    side = grid.cells_per_chunk * grid.stride_px + 2 * grid.margin_px
    return (max(0, side - grid.window_px) // spec.window_stride_px + 1) ** 2


def gpu_group_size(windows_per_block: int) -> int:
    """Blocks per classification task on a GPU worker: enough windows for one full batch."""
    return max(1, -(-GPU_WINDOWS_PER_TASK // max(1, windows_per_block)))


# Blocks per side read and composited by one task: a 2 x 2 group decodes the COG tiles its
# inner edges cut once instead of twice (measured on the full demo tile: 18-30% less read time
# per block), while each block is still classified by its own task.
READ_GROUP = 2


def read_group(block: BlockSpec, side: int = READ_GROUP) -> tuple[int, int]:
    """The group of ``side`` x ``side`` blocks ``block`` is read with."""
    return block.index[0] // side, block.index[1] // side


def group_pixels(grid: PatchGrid, block: BlockSpec, side: int = READ_GROUP) -> tuple[slice, slice]:
    """The padded pixels ``block``'s read group spans: the rectangle around those of its blocks
    that have a cell in the mapped area.

    It depends on the grid and the area alone, never on which blocks a run still computes, so a
    resumed or incremental run reads every block exactly as a fresh run does: reprojected pixels
    depend (slightly) on the rectangle a warp fills.
    """
    gi, gj = read_group(block, side)
    ny, nx = grid.cell_geobox.shape
    step = grid.cells_per_chunk
    members = [block if (bi, bj) == block.index else _block(grid, bi, bj)
               for bi in range(gi * side, min((gi + 1) * side, -(-ny // step)))
               for bj in range(gj * side, min((gj + 1) * side, -(-nx // step)))]
    members = [b for b in members if b is block or b.inside.any()]
    return (slice(min(b.pixels[0].start for b in members), max(b.pixels[0].stop for b in members)),
            slice(min(b.pixels[1].start for b in members), max(b.pixels[1].stop for b in members)))


def classify_stream(
    client,
    works: Iterable,
    prepare: Callable[[list], list],
    model: ModelRef,
    spec: DetailSpec,
    *,
    gpu: bool,
    in_flight: int,
    group: int = 1,
    read_key: Callable[[object], object] = id,
    read_size: int = 1,
    before_first: Callable[[], None] = lambda: None,
) -> Iterator[tuple[object, np.ndarray, bool]]:
    """Run the blocks of ``works`` on the cluster and yield ``(work, values, computed)`` as each lands.

    ``works`` are planned lazily (``work.stored`` holds a result a store already had: it is
    yielded at once, uncomputed). Consecutive works with the same ``read_key`` (at most
    ``read_size`` of them) are read together: ``prepare(works)`` gives each its lazy composite
    planes (reads and composite, dask arrays that may share one task) and runs on any worker.
    Each block is classified by its own :func:`classify_blocks` task, or ``group`` blocks by one,
    which asks for the GPU resource when ``gpu`` (GPU workers only classify while every worker
    reads). At most ``in_flight`` classification tasks are on the cluster at once, so the client
    holds what is in flight, not the area. ``before_first`` runs before the first submission
    (loading the model on the workers only when something is computed).
    """
    from itertools import groupby

    from distributed import as_completed

    resources = {GPU_RESOURCE: 1} if gpu else None
    works = iter(works)
    running = as_completed()
    groups: dict[str, list] = {}
    waiting: list = []
    started = False
    exhausted = False

    def submit(batch: list) -> None:
        nonlocal started
        if not started:
            before_first()
            started = True
        planes = [p for _, unit in groupby(batch, key=read_key) for p in prepare(list(unit))]
        prepared = client.compute(planes)
        parts = [(batch[i:i + 1], prepared[i:i + 1]) for i in range(len(batch))] if group == 1 else [(batch, prepared)]
        for part, inputs in parts:
            key = (f"classify-{part[0].block.index[0]}-{part[0].block.index[1]}-"
                   f"{dask.base.tokenize([w.key for w in part], model)}")
            future = client.submit(classify_blocks, inputs, [w.block for w in part], model, spec, key=key,
                                   resources=resources)
            groups[future.key] = part
            running.add(future)

    def unit_complete() -> bool:
        last = read_key(waiting[-1])
        return sum(1 for w in waiting if read_key(w) == last) >= read_size

    def fill() -> Iterator[tuple[object, np.ndarray, bool]]:
        nonlocal exhausted
        while not exhausted and running.count() < in_flight:
            work = next(works, None)
            if work is None:
                exhausted = True
                if waiting:
                    submit(waiting[:])
                    waiting.clear()
            elif work.stored is not None:
                yield work, work.stored, False
            else:
                # A read group is never split between submissions when it can be helped.
                if len(waiting) >= group and read_key(work) != read_key(waiting[-1]):
                    submit(waiting[:])
                    waiting.clear()
                waiting.append(work)
                if len(waiting) >= group and unit_complete():
                    submit(waiting[:])
                    waiting.clear()

    yield from fill()
    while running.count():
        future = next(running)
        batch = groups.pop(future.key)
        for work, values in zip(batch, future.result(), strict=True):
            yield work, values, True
        future.release()
        yield from fill()
