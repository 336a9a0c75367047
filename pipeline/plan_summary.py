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
from pipeline.blocks import ItemIndex, block_footprint, block_key, iter_blocks
from pipeline.detail import DetailPlan, window_origins
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
    windows: int  # model inputs the blocks still to do need
    workers: int
    gpu_workers: int
    patches_per_s: float | None  # model-only speed of one CPU worker, measured here
    seconds: float  # planning time

    @property
    def estimate_s(self) -> float | None:
        if not self.patches_per_s:
            return None
        return self.windows / (self.patches_per_s * max(1, self.workers - self.gpu_workers))


def count_work(
    aoi: AOI,
    items: list,
    grid: PatchGrid,
    *,
    model_sha256: str,
    min_clear: float,
    detail: DetailPlan | None = None,
    chunks: ChunkStore | None = None,
    workers: int = 1,
    gpu_workers: int = 0,
    speed: Callable[[], float | None] = lambda: None,
    started: float | None = None,
) -> WorkCount:
    """Count what a run over ``grid`` would do. With ``chunks``, the blocks whose result is stored
    (same content key as the run would compute) count as done and need no windows."""
    started = time.perf_counter() if started is None else started
    index = ItemIndex(items) if chunks is not None else None
    blocks = cells = done = windows = 0
    for block in iter_blocks(grid):
        blocks += 1
        cells += block.n_inside
        if index is not None:
            ids = [it.id for it in index.touching(block_footprint(block, grid))]
            if block_key(block, grid, ids, model_sha256, min_clear, detail) in chunks:
                done += 1
                continue
        windows += block.n_inside if detail is None else block_windows(block, grid, detail)
    tiles = tuple(sorted({mgrs_tile(it) for it in items}))
    zones = tuple(sorted({z for z in map(utm_zone, tiles) if z is not None}))
    rate = speed() if windows else None
    return WorkCount(
        aoi_km2=aoi.area_km2, scenes=len(items), tiles=tiles, zones=zones, grid_crs=str(grid.crs),
        grid_shape=tuple(grid.shape), cell_m=float(abs(grid.cell_geobox.resolution.x)), cells=cells, blocks=blocks,
        blocks_done=done if chunks is not None else None, windows=windows, workers=workers, gpu_workers=gpu_workers,
        patches_per_s=rate, seconds=time.perf_counter() - started,
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
        ("patches to classify", f"{count.windows:,}"),
        ("workers", f"{count.workers} ({count.gpu_workers} with GPU)"),
    ]
    if plan.coverage_note:
        rows.append(("coverage", plan.coverage_note))
    if count.estimate_s is not None:
        rows.append((
            "estimate",
            f"~{_duration(count.estimate_s)} of model time ({count.patches_per_s:,.0f} patches/s per CPU worker, measured "
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
        "detail": {"window_px": plan.detail.window_px, "stride_px": plan.detail.stride_px, "cell_px": plan.detail.cell_px,
                   "dense": plan.detail.dense, "blend": plan.detail.weight, "read_factor": plan.detail.read_factor},
        "read_resolution": plan.read_resolution,
        "cells": count.cells, "blocks": count.blocks, "blocks_done": count.blocks_done, "windows": count.windows,
        "workers": count.workers, "gpu_workers": count.gpu_workers, "estimate_s": count.estimate_s,
        "coverage_note": plan.coverage_note,
    }


def utm_zone(tile: str) -> int | None:
    """The UTM zone of an MGRS tile name ('32TQR' -> 32)."""
    digits = tile[:2] if tile[:2].isdigit() else tile[:1]
    return int(digits) if digits.isdigit() else None


def block_windows(block, grid: PatchGrid, detail: DetailPlan) -> int:
    """Windows the model would see for ``block`` (at most: cloudy ones are skipped)."""
    ys, xs = block.pixels
    origin = (block.cells[0].start * detail.cell_px, block.cells[1].start * detail.cell_px)
    if detail.one_window_per_cell:
        return block.n_inside
    return len(window_origins(ys.stop - ys.start, detail, origin[0])) * len(window_origins(xs.stop - xs.start, detail, origin[1]))


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
