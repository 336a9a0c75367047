"""What a map run would do, before it does it: scenes, tiles, zones, cells, blocks, what is already
done, and about how long it would take. Reads catalogue metadata only, never a pixel.

    landcover map region.geojson --plan
    landcover run lagoon --plan
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rich.table import Table

from pipeline.aoi import AOI
from pipeline.detail import window_origins
from pipeline.infer import ChunkStore, DetailSpec, ItemIndex, ModelRef, block_footprint, block_key, iter_blocks
from pipeline.patches import PatchGrid
from pipeline.search import mgrs_tile


@dataclass(frozen=True)
class MapPlan:
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

    def table(self) -> Table:
        table = Table(title="plan (no pixel read)", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        done = "no chunk store" if self.blocks_done is None else f"{self.blocks_done:,} done, {self.blocks - self.blocks_done:,} to do"
        rows = [
            ("AOI", f"{self.aoi_km2:,.0f} km²"),
            ("scenes", f"{self.scenes:,} on {len(self.tiles):,} MGRS tiles ({_few(self.tiles)})"),
            ("UTM zones", ", ".join(map(str, self.zones)) or "-"),
            ("grid", f"{self.grid_crs}, {self.grid_shape[0]:,} x {self.grid_shape[1]:,} cells of {self.cell_m:g} m"),
            ("cells mapped", f"{self.cells:,}"),
            ("blocks", f"{self.blocks:,} ({done})"),
            ("patches to classify", f"{self.windows:,}"),
            ("workers", f"{self.workers} ({self.gpu_workers} with GPU)"),
        ]
        if self.estimate_s is not None:
            rows.append((
                "estimate",
                f"~{_duration(self.estimate_s)} of model time ({self.patches_per_s:,.0f} patches/s per CPU worker, measured "
                "here; reading and compositing 10 m COGs add about as much again, see make bench)",
            ))
        rows.append(("planned in", f"{self.seconds:.1f} s"))
        for row in rows:
            table.add_row(*row)
        return table


def utm_zone(tile: str) -> int | None:
    """The UTM zone of an MGRS tile name ('32TQR' -> 32)."""
    digits = tile[:2] if tile[:2].isdigit() else tile[:1]
    return int(digits) if digits.isdigit() else None


def plan_map(
    aoi: AOI,
    items: list,
    grid: PatchGrid,
    *,
    model: ModelRef,
    min_clear: float,
    detail: DetailSpec | None = None,
    chunks: ChunkStore | None = None,
    workers: int = 1,
    gpu_workers: int = 0,
    speed: Callable[[], float | None] = lambda: None,
    started: float | None = None,
) -> MapPlan:
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
            if _has(chunks, block_key(block, grid, ids, model, min_clear, detail)):
                done += 1
                continue
        windows += block.n_inside if detail is None else block_windows(block, grid, detail)
    tiles = tuple(sorted({mgrs_tile(it) for it in items}))
    zones = tuple(sorted({z for z in map(utm_zone, tiles) if z is not None}))
    rate = speed() if windows else None
    return MapPlan(
        aoi_km2=aoi.area_km2, scenes=len(items), tiles=tiles, zones=zones, grid_crs=str(grid.crs),
        grid_shape=tuple(grid.shape), cell_m=float(abs(grid.cell_geobox.resolution.x)), cells=cells, blocks=blocks,
        blocks_done=done if chunks is not None else None, windows=windows, workers=workers, gpu_workers=gpu_workers,
        patches_per_s=rate, seconds=time.perf_counter() - started,
    )


def block_windows(block, grid: PatchGrid, detail: DetailSpec) -> int:
    """Windows the model would see for ``block`` (at most: cloudy ones are skipped)."""
    ys, xs = block.pixels
    origin = (block.cells[0].start * detail.cell_px, block.cells[1].start * detail.cell_px)
    plan = detail.plan(grid.window_px)
    if plan.one_window_per_cell:
        return block.n_inside
    return len(window_origins(ys.stop - ys.start, plan, origin[0])) * len(window_origins(xs.stop - xs.start, plan, origin[1]))


def _has(chunks: ChunkStore, key: str) -> bool:
    contains = getattr(chunks, "__contains__", None)
    return bool(contains(key)) if contains is not None else chunks.get(key) is not None


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
