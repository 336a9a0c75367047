"""What a plan still has to do, and how it is shown: the blocks a chunk store already holds count
as done, the windows left, a model-time estimate; the plan as a table (``--plan``) or JSON
(``--plan --json``). Reads catalogue metadata only, never a pixel."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.table import Table

from pipeline.aoi import AOI
from pipeline.blocks import ItemIndex, block_at, block_footprint, block_key, cells_of_block, meeting_blocks
from pipeline.detail import DetailPlan, window_origins
from pipeline.halo import PixelPlan
from pipeline.infer import ModelRef
from pipeline.patches import PatchGrid
from pipeline.plan import RunPlan
from pipeline.search import mgrs_tile
from pipeline.store import ChunkStore

# Scenes listed by the plan display (--json lists them all).
SCENES_SHOWN = 50

@dataclass(frozen=True)
class WorkCount:
    """What a plan still needs: blocks a store holds count as done."""

    aoi_km2: float
    scenes: int
    tiles: tuple[str, ...]
    zones: tuple[int, ...]  # UTM zones of the scenes' tiles
    grid_crs: str
    grid_shape: tuple[int, int]
    cell_m: float
    cells: int  # map cells: in the AOI and covered by scenes
    blocks: int
    blocks_done: int | None  # None: no chunk store to look in
    windows: int  # classifiers: model windows the blocks still to do need (per-pixel models: 0)
    workers: int
    gpu_workers: int
    patches_per_s: float | None  # model-only speed of one CPU worker, measured here (windows, or pixels)
    seconds: float  # planning time
    # Per-pixel models: the pixels the network answers for in the blocks still to do (their cores;
    # the halo is in the speed), and the speed is in those pixels per second.
    pixels: int = 0
    per_pixel: bool = False

    @property
    def work(self) -> int:
        """What the model still has to do: windows, or pixels for a per-pixel model."""
        return self.pixels if self.per_pixel else self.windows

    @property
    def estimate_s(self) -> float | None:
        if not self.patches_per_s:
            return None
        return self.work / (self.patches_per_s * max(1, self.workers - self.gpu_workers))


def count_work(
    aoi: AOI,
    items: list,
    grid: PatchGrid,
    *,
    model_sha256: str,
    min_clear: float,
    detail: DetailPlan | PixelPlan | None = None,
    chunks: ChunkStore | None = None,
    workers: int = 1,
    gpu_workers: int = 0,
    speed: Callable[[], float | None] = lambda: None,
    started: float | None = None,
) -> WorkCount:
    """Count what a run over ``grid`` would do. With ``chunks``, the blocks whose result is stored
    (same content key as the run would compute) count as done and need no windows.

    Without ``chunks`` the cells are counted by area (:meth:`PatchGrid.count_inside`): a block
    wholly inside the area never gets a per-cell array, so a 10 m map of a country is counted
    without one value per cell."""
    started = time.perf_counter() if started is None else started
    index = ItemIndex(items) if chunks is not None else None
    blocks = cells = done = windows = pixels = 0
    for bi, bj in meeting_blocks(grid):
        cell_slices = cells_of_block(grid, bi, bj)
        n_inside = grid.count_inside(cell_slices)
        if not n_inside:
            continue
        blocks += 1
        cells += n_inside
        # Per-cell arrays only where a key or the windows need them (never for a per-pixel count).
        block = block_at(grid, bi, bj) if index is not None or isinstance(detail, DetailPlan) else None
        if index is not None:
            ids = [it.id for it in index.touching(block_footprint(block, grid))]
            if block_key(block, grid, ids, model_sha256, min_clear, detail) in chunks:
                done += 1
                continue
        if isinstance(detail, PixelPlan):
            pixels += detail.pixels_per_block(tuple(c.stop - c.start for c in cell_slices))
        else:
            windows += n_inside if detail is None else block_windows(block, grid, detail)
    tiles = tuple(sorted({mgrs_tile(it) for it in items}))
    zones = tuple(sorted({z for z in map(utm_zone, tiles) if z is not None}))
    rate = speed() if windows or pixels else None
    return WorkCount(
        aoi_km2=aoi.area_km2, scenes=len(items), tiles=tiles, zones=zones, grid_crs=str(grid.crs),
        grid_shape=tuple(grid.shape), cell_m=float(abs(grid.cell_geobox.resolution.x)), cells=cells, blocks=blocks,
        blocks_done=done if chunks is not None else None, windows=windows, workers=workers, gpu_workers=gpu_workers,
        patches_per_s=rate, seconds=time.perf_counter() - started, pixels=pixels, per_pixel=isinstance(detail, PixelPlan),
    )


def plan_table(plan: RunPlan, count: WorkCount) -> Table:
    """The plan for the terminal: what will be read, made and computed, and the scenes."""
    table = Table(title="plan (no pixel read)", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    done = "no chunk store" if count.blocks_done is None else f"{count.blocks_done:,} done, {count.blocks - count.blocks_done:,} to do"
    changed = plan.config.settings.changed()
    rows = [
        ("AOI", f"{count.aoi_km2:,.0f} km²"),
        ("window", f"{plan.window[0]} .. {plan.window[1]} ({plan.catalogue})"),
        ("model", f"{plan.card.model_id} (sha256 {plan.model.sha256[:12]})"),
        ("settings", ", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults"),
        ("scenes", f"{count.scenes:,} on {len(count.tiles):,} MGRS tiles ({_few(count.tiles)})"),
        ("UTM zones", ", ".join(map(str, count.zones)) or "-"),
        ("grid", f"{count.grid_crs}, {count.grid_shape[0]:,} x {count.grid_shape[1]:,} cells of {count.cell_m:g} m"),
        ("detail", plan.describe().split("; ", 1)[1]),
        ("cells mapped", f"{count.cells:,}"),
        ("blocks", f"{count.blocks:,} ({done})"),
        ("pixels to classify", f"{count.pixels:,} (block cores; each tile adds its halo)") if count.per_pixel
        else ("patches to classify", f"{count.windows:,}"),
        ("workers", f"{count.workers} ({count.gpu_workers} with GPU)"),
        ("outputs", output_sizes(plan, count).describe()),
    ]
    if plan.coverage_note:
        rows.append(("coverage", plan.coverage_note))
    if count.estimate_s is not None:
        rate = (f"{count.patches_per_s / 1e6:,.3f} Mpx/s" if count.per_pixel else f"{count.patches_per_s:,.0f} patches/s")
        rows.append((
            "estimate",
            f"~{_duration(count.estimate_s)} of model time ({rate} per CPU worker, measured "
            "here; reading and compositing 10 m COGs add about as much again, see make bench)",
        ))
    rows.append(("planned in", f"{count.seconds:.1f} s"))
    for row in rows:
        table.add_row(*row)
    for item in plan.items[:SCENES_SHOWN]:
        when = item.datetime.date().isoformat() if item.datetime else "?"
        table.add_row("", f"{mgrs_tile(item)}  {when}  {item.id}")
    if len(plan.items) > SCENES_SHOWN:
        table.add_row("", f"... {len(plan.items) - SCENES_SHOWN} more scenes (--json lists them all)")
    return table


def plan_json(plan: RunPlan, count: WorkCount) -> dict[str, Any]:
    """The whole plan as JSON: settings, window, model, every scene, grid, detail and counts."""
    g = plan.grid
    return {
        "settings": plan.config.model_dump(mode="json"),
        "aoi": {"km2": plan.aoi.area_km2, "bounds": list(plan.aoi.bounds), "utm_epsgs": list(plan.aoi.utm_epsgs)},
        "window": {"start": plan.window[0].isoformat(), "end": plan.window[1].isoformat()},
        "catalogue": plan.catalogue,
        "model": {"path": plan.model.path, "sha256": plan.model.sha256, "id": plan.card.model_id},
        "scenes": [{"id": it.id, "tile": mgrs_tile(it), "datetime": it.datetime.isoformat() if it.datetime else None,
                    "cloud_cover": it.properties.get("eo:cloud_cover")} for it in plan.items],
        "grid": {"crs": str(g.crs), "shape": list(g.shape), "cell_m": count.cell_m,
                 "transform": list(g.cell_geobox.affine)[:6], "cells_per_block": g.cells_per_chunk},
        "detail": detail_json(plan.detail),
        "read_resolution": plan.read_resolution,
        "cells": count.cells, "blocks": count.blocks, "blocks_done": count.blocks_done, "windows": count.windows,
        "outputs": output_sizes(plan, count).__dict__,
        **({"pixels": count.pixels} if count.per_pixel else {}),
        "workers": count.workers, "gpu_workers": count.gpu_workers, "estimate_s": count.estimate_s,
        "coverage_note": plan.coverage_note,
    }


@dataclass(frozen=True)
class OutputSizes:
    """How large a map's outputs will be, before compression (COGs compress a few times)."""

    grid_cells: int  # cells of the grid: the rasters' size
    raster_mib: float  # landcover.tif + confidence.tif + probabilities.tif, uncompressed
    qa_squares: int  # features of the GeoPackage's `patches` layer (at most)
    qa_side_m: float

    def describe(self) -> str:
        return (f"rasters {self.grid_cells:,} cells, ~{self.raster_mib:,.0f} MiB before compression; `patches` layer "
                f"up to {self.qa_squares:,} squares of {self.qa_side_m:g} m (--qa-grid)")


def output_sizes(plan: RunPlan, count: WorkCount) -> OutputSizes:
    """The rasters' cells and bytes (uint8 classes, float32 confidence and one float32 band per
    class), and the QA layer's squares, from the grid alone."""
    from pipeline.export.qa import qa_factor

    ny, nx = plan.grid.cell_geobox.shape
    cell_m = count.cell_m
    k = qa_factor(cell_m, plan.config.qa_grid)
    classes = len(plan.card.legend.classes)
    squares = min(count.cells, -(-ny // k) * -(-nx // k))  # squares of the grid that can hold a mapped cell
    return OutputSizes(grid_cells=ny * nx, raster_mib=ny * nx * (1 + 4 + 4 * classes) / 2**20, qa_squares=squares,
                       qa_side_m=k * cell_m)


def utm_zone(tile: str) -> int | None:
    """The UTM zone of an MGRS tile name ('32TQR' -> 32)."""
    digits = tile[:2] if tile[:2].isdigit() else tile[:1]
    return int(digits) if digits.isdigit() else None


def detail_json(detail: DetailPlan | PixelPlan) -> dict[str, Any]:
    """How the plan turns pixels into cells, as JSON: a classifier's windows and blending, or a
    per-pixel model's cells and halo."""
    if isinstance(detail, PixelPlan):
        return {"per_pixel": True, "cell_px": detail.cell_px, "halo_px": detail.halo_px, "multiple": detail.multiple,
                "tile_px": detail.tile_px, "read_factor": detail.read_factor}
    return {"window_px": detail.window_px, "stride_px": detail.stride_px, "cell_px": detail.cell_px,
            "dense": detail.dense, "blend": detail.weight, "read_factor": detail.read_factor, **evaluation_json(detail)}


def evaluation_json(detail: DetailPlan) -> dict[str, Any]:
    """Which path a classifier takes (windows, or the backbone once per block with a halo) and why."""
    block = ({"halo_px": detail.halo_px, "feature_stride_px": detail.feature_stride_px}
             if detail.path == "block" else {})
    return {"evaluation": detail.path, **block, "evaluation_reason": detail.path_reason}


def block_windows(block, grid: PatchGrid, detail: DetailPlan) -> int:
    """Windows the model would see for ``block`` (at most: cloudy ones are skipped)."""
    ys, xs = block.pixels
    origin = (block.cells[0].start * detail.cell_px, block.cells[1].start * detail.cell_px)
    if detail.one_window_per_cell:
        return block.n_inside
    if detail.path == "block":  # one backbone pass over the padded block: its pixels in windows' worth
        return -(-(ys.stop - ys.start) * (xs.stop - xs.start) // detail.window_px**2)
    return len(window_origins(ys.stop - ys.start, detail, origin[0])) * len(window_origins(xs.stop - xs.start, detail, origin[1]))


def plan_speed(plan: RunPlan) -> float:
    """Model-only speed of one CPU worker for ``plan``: windows/s of a classifier, core pixels/s of
    a per-pixel model."""
    if isinstance(plan.detail, PixelPlan):
        return pixel_speed(plan.model, plan.detail, len(plan.card.bands))
    return model_speed(plan.model, plan.card.window_px, len(plan.card.bands))


def pixel_speed(model: ModelRef, detail: PixelPlan, bands: int, *, side: int = 128) -> float:
    """Model-only pixels/s of one CPU thread for a per-pixel model, in the core pixels a block's
    tiles answer for: the network over one ``side`` px image (random reflectance; no pixel read),
    scaled by the share of a tile its core is (a tile of ``tile_px`` also reads its halo)."""
    import torch

    from models.predictor import Predictor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a worker runs it
    try:
        predictor = Predictor.from_path(model.path, device="cpu", batch_size=1)
        side += -side % detail.multiple
        image = np.random.default_rng(0).random((1, bands, side, side), dtype=np.float32) * 0.3
        predictor.predict_pixels(image[:, :, :2 * detail.multiple, :2 * detail.multiple])  # warm-up
        start = time.perf_counter()
        predictor.predict_pixels(image)
        per_input_px = side * side / (time.perf_counter() - start)
        core = detail.tile_px / (detail.tile_px + 2 * detail.halo_px)
        return per_input_px * core * core
    finally:
        torch.set_num_threads(threads)


def model_speed(model: ModelRef, window_px: int, bands: int, *, n: int = 16) -> float:
    """Model-only patches/s of one CPU thread on this machine (random windows; no pixel read)."""
    import torch

    from models.predictor import Predictor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a worker runs it
    try:
        predictor = Predictor.from_path(model.path, device="cpu", batch_size=n)
        windows = np.random.default_rng(0).random((n, bands, window_px, window_px), dtype=np.float32) * 0.3
        predictor.predict_reflectance(windows[:1])  # warm-up
        start = time.perf_counter()
        predictor.predict_reflectance(windows)
        return n / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def _few(tiles: tuple[str, ...], n: int = 6) -> str:
    return ", ".join(tiles[:n]) + (f", ... {len(tiles) - n} more" if len(tiles) > n else "")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
