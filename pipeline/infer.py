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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import shapely

import dask
import numpy as np

from models.classes import NUM_CLASSES
from pipeline.patches import PatchGrid, clear_fraction, cut_windows

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


@dataclass(frozen=True)
class BlockSpec:
    """One task: cells [cy0:cy1, cx0:cx1] of the cell grid and the pixel rows/cols they need."""

    index: tuple[int, int]
    cells: tuple[slice, slice]
    pixels: tuple[slice, slice]


def plan_blocks(grid: PatchGrid) -> list[BlockSpec]:
    """Blocks of ``cells_per_chunk`` x ``cells_per_chunk`` cells covering the cell grid."""
    ny, nx = grid.cell_geobox.shape
    step = grid.cells_per_chunk
    s, m = grid.stride_px, grid.margin_px
    blocks = []
    for bi, cy0 in enumerate(range(0, ny, step)):
        for bj, cx0 in enumerate(range(0, nx, step)):
            cy1, cx1 = min(cy0 + step, ny), min(cx0 + step, nx)
            blocks.append(
                BlockSpec(
                    index=(bi, bj),
                    cells=(slice(cy0, cy1), slice(cx0, cx1)),
                    # Padded pixel grid: cell (i, j)'s window starts at pixel (i*s, j*s).
                    pixels=(slice(cy0 * s, cy1 * s + 2 * m), slice(cx0 * s, cx1 * s + 2 * m)),
                )
            )
    return blocks


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


def classify_block(
    planes: np.ndarray,
    inside: np.ndarray,
    *,
    window_px: int,
    stride_px: int,
    margin_px: int,
    min_clear: float,
    model: ModelRef,
) -> np.ndarray:
    """(bands + 1, H, W) composite planes + (cy, cx) AOI mask -> (20, cy, cx) float32.

    ``planes`` holds the reflectance of the model card's bands, then the clear-observation count
    (pixels with none are not clear). Cells outside the AOI or with too little clear data are
    not sent to the model (NaN probs).
    """
    bands, clear = planes[:-1], planes[-1] > 0
    cy, cx = inside.shape
    frac = clear_fraction(clear, window_px, stride_px, margin_px)
    out = np.full((N_PLANES, cy, cx), np.nan, dtype=np.float32)
    out[-1] = frac
    todo = (inside & (frac >= min_clear)).ravel()
    if not todo.any():
        return out
    windows = cut_windows(bands, window_px, stride_px, margin_px)[todo]
    predictor = _predictor(model.path, model.sha256, model.device, model.batch_size)
    # The card's preprocessing (seed RGB or per-band standardisation), then its class order -> map codes.
    probs = predictor.card.to_map_order(predictor.predict_reflectance(windows).probs)
    planes = np.full((cy * cx, NUM_CLASSES), np.nan, dtype=np.float32)
    planes[todo] = probs
    out[:NUM_CLASSES] = planes.T.reshape(NUM_CLASSES, cy, cx)
    return out


def items_touching(block: BlockSpec, grid: PatchGrid, items: Iterable) -> list[str]:
    """Ids of the items whose footprint meets the ground the block's windows cover."""
    ys, xs = block.pixels
    footprint = grid.pixel_geobox[ys, xs].extent.to_crs("EPSG:4326").geom
    return sorted(it.id for it in items if shapely.geometry.shape(it.geometry).intersects(footprint))


def block_key(block: BlockSpec, grid: PatchGrid, item_ids: list[str], model: ModelRef, min_clear: float) -> str:
    """Content key of a block result: same ground, same scenes, same model and rules -> same key.

    A run with one new scene changes the keys of only the blocks that scene touches.
    """
    ys, xs = block.pixels
    recipe = {
        "pixels": [str(grid.pixel_geobox[ys, xs].crs), list(grid.pixel_geobox[ys, xs].affine)[:6],
                   list(grid.pixel_geobox[ys, xs].shape)],
        "cells": [block.cells[0].start, block.cells[0].stop, block.cells[1].start, block.cells[1].stop],
        "windows": [grid.window_px, grid.stride_px, grid.margin_px],
        "inside": hashlib.sha256(grid.inside_aoi[block.cells].tobytes()).hexdigest(),
        "items": item_ids,
        "model": model.sha256,
        "min_clear": min_clear,
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


def blocks_in_aoi(grid: PatchGrid) -> list[BlockSpec]:
    """Blocks with at least one cell in the AOI; the others never get a task."""
    return [b for b in plan_blocks(grid) if grid.inside_aoi[b.cells].any()]


def composite_planes(composite, bands: Iterable[str]):
    """The lazy (bands + 1, H, W) float32 array :func:`block_tasks` takes: the composite's
    ``bands`` in order, then its ``clear_count``."""
    import dask.array as da

    return da.stack([*(composite[b].data for b in bands), composite["clear_count"].data.astype(np.float32)])


def block_tasks(
    planes, grid: PatchGrid, model: ModelRef, blocks: Iterable[BlockSpec], *, min_clear: float
) -> Iterator[tuple[BlockSpec, object]]:
    """(block, dask.delayed) for each of ``blocks``.

    ``planes`` is the lazy (bands + 1, H, W) composite on ``grid.pixel_geobox``: the model's
    bands, then the clear-observation count. One array, not two: each delayed argument is
    optimised into its own graph, so a second array derived from the same composite would read
    and composite every chunk twice.
    """
    classify = dask.delayed(classify_block, pure=True)
    for block in blocks:
        inside = grid.inside_aoi[block.cells]
        ys, xs = block.pixels
        task = classify(
            planes[:, ys, xs],
            inside,
            window_px=grid.window_px,
            stride_px=grid.stride_px,
            margin_px=grid.margin_px,
            min_clear=min_clear,
            model=model,
            dask_key_name=f"classify-{block.index[0]}-{block.index[1]}-{dask.base.tokenize(model, block.pixels, str(grid.pixel_geobox))}",
        )
        yield block, task


def assemble(grid: PatchGrid, results: dict[tuple[int, int], tuple[BlockSpec, np.ndarray]]) -> np.ndarray:
    """Place block results on the cell grid: (20, ny, nx), NaN where no block ran."""
    ny, nx = grid.cell_geobox.shape
    planes = np.full((N_PLANES, ny, nx), np.nan, dtype=np.float32)
    planes[-1] = 0.0
    for block, values in results.values():
        planes[(slice(None), *block.cells)] = values
    return planes
