"""End-to-end map throughput: wall time per stage, patches/s vs the model alone, peak memory.

    python -m benchmarks.pipeline                 # the demo AOI (both UTM zones)
    python -m benchmarks.pipeline --full-tile     # also one full 10,980 px tile (generates a
                                                  # full-size demo world first: ~15 min, cached)
    python -m benchmarks.pipeline --full-tile --only-reads   # just the full-tile read study below

Each map runs with the given weights (default: the demo weights) and, on the demo AOI and (with
--full-tile) a 24 km square of the tile, also with the seed architecture (RFB-ESRGAN x8 +
ResNet50, random weights: speed does not depend on the values), so the overhead is shown both for
a light model, where reading and compositing the scenes dominate, and for the model the pipeline
is built around. The demo AOI is also mapped with the BigEarthNet v2 (reBEN) resnet50 layout
(random weights written as the published config.json + model.safetensors and installed as
`landcover model fetch` installs them; 10 bands at 120 px), whose model-only figure runs the
installed checkpoint through the predictor, standardisation included. "load+infer" excludes the
"model" stage in which every worker loads the model (start-up, like the cluster's).

Each map runs in a fresh child process, as `landcover map` would; peak memory is the sum over that
process and its children (dask workers, the forkserver they fork from, demo servers) of each one's
proportional set size (PSS: a page shared by n processes counts 1/n in each, so the torch the
workers share with their forkserver is counted once; plain RSS where the platform has no PSS),
sampled every 0.2 s, so the torch this benchmark loads for its model-only figures is not counted. Goals (DESIGN/issue 4): pipeline overhead <= 10 % of model-only time on CPU, and < 3 GiB
for a full tile. Figures are ratios measured in one run, so they travel between machines.

The full tile is mapped one window per 1.2 km cell (``--cell-size 1200 --stride 120 --no-dense``),
so its cells are the model's patches and patches/s compare with the model-only rate. It is
mapped three times (issue #12 item 4, "reads at the speed of the disk"): reading the COGs at full
resolution (``full_tile``, ``--read-resolution 10``); at the overview level the card's input pixel
allows, upsampled to the 10 m grid before classifying, in blocks of 9.6 km (``full_tile_ovr<m>_upsampled``,
the way before); and as the run reads by default (``full_tile_ovr<m>``): the same overview read,
classified from the coarse planes themselves (60 px windows resized by the card to 32 px), in blocks
of as many coarse pixels, i.e. twice the ground.
Beside each map, in the same run and on a LocalCluster of the same workers: the composite stage
alone (``pipeline.run.group_planes`` of every read group of blocks as the map reads it, no model)
and a plain rasterio windowed read of the same COGs at the same resolution over the same groups
(every band the card needs + SCL of every scene a group touches, no reprojection, no
compositing), the decoder's limit on this machine.
``composite_vs_read_limit`` = read-limit time / composite time (1.0: compositing costs nothing
beyond decoding); ``*_cpu`` figures are the same in CPU seconds of the workers (``cpu_s`` of a map:
its processes'), which a shared, busy machine disturbs far less than wall time. ``cells_changed``
counts full-tile cells whose class differs from the full-resolution map; ``demo_ovr<m>/...`` does
the same on the demo AOI from composites computed here (argmax of the compact model on 1.2 km
windows, classified as the run does and, ``_upsampled``, from 10 m planes), and the largest
reflectance difference.

The model alone (:func:`model_rates`), timed in a fresh process started with the dask workers'
malloc settings, as the workers run it (without them the model runs ~20% slower at first and
speeds up as glibc adapts, so in-process timings drifted upwards over a benchmark): the median of
three timings of 640 patches on torch's own threads (one per core), the figure every overhead here
is measured against; and one thread's rate times the workers, as the single-threaded workers run
it, a stricter reference (``overhead_vs_one_thread_x_workers``). Each full-tile map is bracketed
by these timings, taken right before and right after it (``<row>/model_only_patches_per_s``,
their mean).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.console import Console

from pipeline.settings import MapConfig
from pipeline.plan import DEMO_WEIGHTS
from pipeline.run import run_map


def proportional_bytes(proc: psutil.Process) -> int:
    """``proc``'s PSS (Linux), else its RSS."""
    try:
        return proc.memory_full_info().pss
    except (AttributeError, psutil.AccessDenied):
        return proc.memory_info().rss


class PeakMemory:
    """Largest memory (PSS summed, see the module's docstring) of this process's children (and, if
    asked, itself) while the block runs, and their CPU seconds as last sampled (``cpu_s``: on a
    shared machine, what the work cost whatever else ran beside it)."""

    def __init__(self, interval: float = 0.2, *, include_self: bool = True) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self.include_self = include_self
        self._cpu: dict[int, float] = {}

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu.values())

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me] * self.include_self + me.children(recursive=True):
                try:
                    total += proportional_bytes(proc)
                    if proc is not me:
                        self._cpu[proc.pid] = sum(proc.cpu_times()[:2])
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def full_tile_aoi(world, out: Path, side_m: float | None = None) -> Path:
    """The lon/lat footprint of the first tile, shrunk by one cell so it stays inside it; or,
    given ``side_m``, a square of that side at the tile's centre."""
    import shapely
    from odc.geo.geom import box

    tile = world.tiles[0]
    x0, y0, x1, y1 = tile.bounds
    if side_m is not None:
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, side_m / 2
        x0, y0, x1, y1 = cx - half - 1200, cy - half - 1200, cx + half + 1200, cy + half + 1200
    geom = box(x0 + 1200, y0 + 1200, x1 - 1200, y1 - 1200, f"EPSG:{tile.epsg}").to_crs("EPSG:4326").geom
    out.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(geom)}))
    return out


# One window per 1.2 km cell: cells are the model's patches (see the module docstring).
WINDOW_MAP = {"cell_size": 1200.0, "stride": 120, "dense": False}


def _force_upsampling() -> None:
    """Make this process's run_map upsample coarse reads to the 10 m grid before classifying (the
    way before blocks were classified from the coarse planes themselves), for the comparison row.

    There is no option for it: the run classifies from coarse planes whenever the windows are
    whole coarse pixels (:meth:`pipeline.detail.DetailPlan.reading`), so a benchmark child makes
    every plan keep the grid's pixels."""
    from pipeline.detail import DetailPlan

    DetailPlan.reading = lambda self, factor: self


def _map_in_child(cfg: MapConfig, upsample: bool = False,
                  keep_classes: bool = False) -> tuple[dict[str, float], int, np.ndarray | None]:
    if upsample:
        _force_upsampling()
    result = run_map(cfg, Console(quiet=True))
    classes = None
    if keep_classes:
        import rasterio

        from pipeline.export import LANDCOVER_TIF

        with rasterio.open(cfg.out / LANDCOVER_TIF) as src:
            classes = src.read(1)
    return result.timings, result.n_cells, classes


def bench_map(aoi: Path, model: Path, label: str, workers: int, stac_url: str | None = None, *,
              upsample: bool = False, classes_out: list | None = None, **config: Any) -> dict[str, float]:
    """Figures of one map in a fresh child process; ``config`` overrides MapConfig fields, and
    ``classes_out``, given, receives the map's class raster."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = MapConfig(aoi=aoi, out=Path(tmp) / "map", source="local", stac_url=stac_url, model=model, workers=workers,
                        **config)
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool, PeakMemory(include_self=False) as rss:
            timings, patches, classes = pool.submit(_map_in_child, cfg, upsample, classes_out is not None).result()
    if classes_out is not None:
        classes_out.append(classes)
    compute = timings["load+infer"]
    figures = {f"{label}/{k}_s": round(v, 2) for k, v in timings.items()}
    figures[f"{label}/cells"] = patches
    figures[f"{label}/patches_per_s_load+infer"] = round(patches / compute, 2)
    figures[f"{label}/patches_per_s_end_to_end"] = round(patches / sum(timings.values()), 2)
    figures[f"{label}/peak_memory_gib"] = round(rss.peak / 2**30, 2)
    figures[f"{label}/cpu_s"] = round(rss.cpu_s, 1)
    return figures


def random_seed_model(folder: Path) -> Path:
    """The seed architecture with random weights and a card saying so (throughput only)."""
    from models.card import ModelCard
    from models.checkpoint import save_model
    from models.classifier import SRClassifier
    from models.profiles import get_profile

    path = folder / "seed-random.safetensors"
    card = ModelCard.for_profile("seed", training_data={"description": "random init, benchmark only", "synthetic": True})
    save_model(SRClassifier(get_profile("seed"), card.variant), card, path)
    return path


def random_reben_model(folder: Path) -> Path:
    """The reBEN resnet50 layout with random weights: published-style files, installed with their card
    (throughput only)."""
    import timm
    import torch
    from safetensors.torch import save_file

    from benchmarks.models import REBEN_CONFIG, REBEN_REPO
    from models.reben import PREFIX, install_checkpoint

    download = folder / "reben-download"
    download.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = timm.create_model(REBEN_CONFIG["timm_model_name"], pretrained=False, num_classes=REBEN_CONFIG["classes"],
                            in_chans=REBEN_CONFIG["channels"])
    save_file({PREFIX + k: v.contiguous() for k, v in net.state_dict().items()}, download / "model.safetensors")
    (download / "config.json").write_text(json.dumps(REBEN_CONFIG))
    return install_checkpoint(download, repo_id=REBEN_REPO, cache=folder / "cache")


# ---------------------------------------------------------------------------- reads vs the disk


def _overview_index(overviews: Sequence[int], factor: float) -> int | None:
    """The overview level a read shrunk by ``factor`` decodes (the largest not coarser), as odc-loader picks it."""
    fits = [i for i, level in enumerate(overviews) if level <= factor + 1e-9]
    return fits[-1] if fits else None


def read_block_plainly(hrefs: Sequence[str], bounds: tuple[float, float, float, float], crs: str,
                       read_resolution: float) -> int:
    """Decode what the pipeline decodes for one block, with plain rasterio: each asset's window over
    ``bounds`` (in ``crs``) at the overview level for ``read_resolution``; no reprojection, no
    compositing. Returns the pixels decoded."""
    import rasterio
    import rasterio.warp
    from rasterio.windows import Window

    from pipeline.load import GDAL_OPTIONS

    pixels = 0
    with rasterio.Env(**GDAL_OPTIONS):
        for href in hrefs:
            with rasterio.open(href) as src:
                level = _overview_index(src.overviews(1), read_resolution / src.res[0])
                left, bottom, right, top = rasterio.warp.transform_bounds(crs, src.crs, *bounds)
            with rasterio.open(href, **({} if level is None else {"overview_level": level})) as src:
                inv = ~src.transform
                (c0, r0), (c1, r1) = inv * (left, top), inv * (right, bottom)
                col0, row0 = max(0, math.floor(c0)), max(0, math.floor(r0))
                col1, row1 = min(src.width, math.ceil(c1)), min(src.height, math.ceil(r1))
                if col1 > col0 and row1 > row0:
                    pixels += src.read(1, window=Window(col0, row0, col1 - col0, row1 - row0)).size
    return pixels


def _run_bounded(client, submissions, in_flight: int) -> list:
    """Results of lazily made futures, at most ``in_flight`` at a time (as run_map streams blocks)."""
    from distributed import as_completed

    pending = iter(submissions)
    running = as_completed(list(itertools.islice(pending, in_flight)))
    results = []
    for future in running:
        results.append(future.result())
        nxt = next(pending, None)
        if nxt is not None:
            running.add(nxt)
    return results


def _cpu_seconds() -> float:
    return sum(psutil.Process().cpu_times()[:2])


def _workers_cpu(client) -> float:
    return sum(client.run(_cpu_seconds).values())


def unit_hrefs(unit: list, assets: Sequence[str]) -> list[str]:
    """Every asset href of the items a read unit's blocks touch, once each."""
    items = {it.id: it for work in unit for it in work.items}
    return [items[i].assets[k].get_absolute_href() for i in sorted(items) for k in assets]


def unit_bounds(unit: list, grid) -> tuple[float, float, float, float]:
    """The bounding box of a read unit's blocks (their pixels, margins included)."""
    boxes = [grid.pixel_geobox[work.block.pixels].boundingbox for work in unit]
    return (min(b.left for b in boxes), min(b.bottom for b in boxes), max(b.right for b in boxes), max(b.top for b in boxes))


def read_study(cfg: MapConfig, upsample: bool = False) -> dict[str, float]:
    """Seconds of the plain read and of the composite stage of every block of ``cfg``'s map, read
    as the run reads them (``upsample``: as :func:`_force_upsampling` makes it), on a LocalCluster
    like run_map's (run it in a child process)."""
    from pipeline.cluster import connect
    import dask.array as da

    from pipeline.blocks import ItemIndex, block_footprint, iter_blocks, read_group
    from pipeline.load import configure_gdal, item_offsets
    from pipeline.plan import Work, make_plan
    from pipeline.run import group_planes

    if upsample:
        _force_upsampling()
    plan = make_plan(cfg, cfg.stac_url)
    items, card, grid, spec, read_res = plan.items, plan.card, plan.grid, plan.detail, plan.read_resolution
    with connect(None, cfg.workers) as (client, info):
        configure_gdal(client)
        offsets = item_offsets(items, bands=card.bands)
        index = ItemIndex([it for it in items if it.id in offsets])
        blocks = [(b, index.touching(block_footprint(b, grid))) for b in iter_blocks(grid)]
        units: dict[tuple[int, int], list[Work]] = {}  # read as the run reads: a group of blocks per read
        for b, its in blocks:
            units.setdefault(read_group(b), []).append(Work(b, its, ""))
        in_flight = max(2, 2 * info.n_workers)
        started, cpu = time.perf_counter(), _workers_cpu(client)
        pixels = _run_bounded(client, (
            client.submit(read_block_plainly, unit_hrefs(unit, (*card.bands, "scl")), unit_bounds(unit, grid),
                          str(grid.pixel_geobox.crs), read_res, pure=False)
            for unit in units.values()
        ), in_flight)
        read_s, read_cpu = time.perf_counter() - started, _workers_cpu(client) - cpu
        started, cpu = time.perf_counter(), _workers_cpu(client)
        _run_bounded(client, (
            client.compute(da.stack([p.sum(axis=(1, 2)) for p in
                                     group_planes(unit, grid, offsets, card, read_res, spec.read_factor)]))
            for unit in units.values()
        ), in_flight)
        composite_s, composite_cpu = time.perf_counter() - started, _workers_cpu(client) - cpu
    return {"read_limit_s": read_s, "pixels_decoded": float(sum(pixels)), "composite_s": composite_s,
            "read_limit_cpu_s": read_cpu, "composite_cpu_s": composite_cpu, "read_resolution": read_res,
            "cells": float(sum(int(b.inside.sum()) for b, _ in blocks)), "blocks": float(len(blocks)),
            "cells_per_block": float(grid.cells_per_chunk)}


def full_tile_reads(aoi: Path, model: Path, workers: int, stac_url: str, read_resolution: float) -> dict[str, float]:
    """Full-resolution vs overview reads of the full tile: the map, the composite stage alone and
    the plain-read limit for each (see the module docstring). The overview read runs as the map
    runs by default (classified from the coarse planes, blocks of twice the ground) and, for
    comparison, as it ran before that: upsampled to the 10 m grid, in blocks of 9.6 km."""
    variants: list[tuple[str, dict[str, Any], bool]] = [
        ("full_tile", {"read_resolution": 10.0}, False),
        (f"full_tile_ovr{read_resolution:g}_upsampled", {"cells_per_chunk": 8}, True),
        (f"full_tile_ovr{read_resolution:g}", {}, False),
    ]
    figures: dict[str, float] = {}
    classes: list = []
    spawn = multiprocessing.get_context("spawn")
    for label, extra, upsample in variants:
        # The model alone right before and right after the map: this machine's speed drifts by
        # +-10% over minutes, and the ratio should compare the two at the same time.
        before = model_rates(model, workers)
        figures |= bench_map(aoi, model, label, workers, stac_url=stac_url, upsample=upsample, classes_out=classes,
                             **WINDOW_MAP, **extra)
        after = model_rates(model, workers)
        model_only, one_thread_x_workers = ((a + b) / 2 for a, b in zip(before, after, strict=True))
        figures[f"{label}/model_only_patches_per_s"] = round(model_only, 2)
        figures[f"{label}/model_only_one_thread_x_workers_patches_per_s"] = round(one_thread_x_workers, 2)
        with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            cfg = MapConfig(aoi=aoi, out=Path(tmp) / "map", source="local", stac_url=stac_url, model=model,
                            workers=workers, **WINDOW_MAP, **extra)
            stages = pool.submit(read_study, cfg, upsample).result()
        read_s, composite_s = stages["read_limit_s"], stages["composite_s"]
        figures |= {
            f"{label}/read_resolution_m": stages["read_resolution"],
            f"{label}/blocks": int(stages["blocks"]),
            f"{label}/cells_per_block_side": int(stages["cells_per_block"]),
            f"{label}/overhead_vs_model_only": round(1 - figures[f"{label}/patches_per_s_load+infer"] / model_only, 3),
            f"{label}/overhead_vs_one_thread_x_workers": round(
                1 - figures[f"{label}/patches_per_s_load+infer"] / one_thread_x_workers, 3),
            f"{label}/read_limit_s": round(read_s, 2),
            f"{label}/read_limit_patches_per_s": round(stages["cells"] / read_s, 1),
            f"{label}/read_limit_mpx_read": round(stages["pixels_decoded"] / 1e6, 1),
            f"{label}/composite_s": round(composite_s, 2),
            f"{label}/composite_patches_per_s": round(stages["cells"] / composite_s, 1),
            f"{label}/composite_vs_read_limit": round(read_s / composite_s, 3),
            f"{label}/read_limit_worker_cpu_s": round(stages["read_limit_cpu_s"], 1),
            f"{label}/composite_worker_cpu_s": round(stages["composite_cpu_s"], 1),
            f"{label}/composite_vs_read_limit_cpu": round(stages["read_limit_cpu_s"] / stages["composite_cpu_s"], 3),
        }
    full = classes[0]
    for (label, _, _), other in zip(variants[1:], classes[1:], strict=True):
        mapped = (full != 0) & (other != 0)
        figures[f"{label}/cells_changed"] = int(np.count_nonzero(mapped & (full != other)))
        figures[f"{label}/cells_compared"] = int(np.count_nonzero(mapped))
    return figures


def demo_cell_changes(world, model: Path, read_resolution: float, min_clear: float = 0.5) -> dict[str, float]:
    """Classes of the demo AOI's 1.2 km windows from a full-resolution composite vs one read at
    ``read_resolution``, classified as the run does (the coarse window itself, resized by the
    card) and upsampled to 10 m first (the way before): how many windows change class, and how far
    reflectance moves."""
    import dask

    from models.card import ModelCard, card_path
    from models.predictor import Predictor
    from pipeline.aoi import read_aoi
    from pipeline.demo import serve_world
    from pipeline.load import configure_gdal, item_offsets, load_block, load_composite
    from pipeline.patches import plan_grid
    from pipeline.plan import footprint_union
    from pipeline.search import SearchParams, search_items

    card = ModelCard.read(card_path(model))
    aoi = read_aoi(world.aoi_path)
    with serve_world(world) as served:
        cfg = MapConfig(aoi=world.aoi_path, out=Path("unused"), source="local", stac_url=served.stac_url, model=model)
        start, end = cfg.date_window()
        items = search_items(SearchParams(source="local", stac_url=served.stac_url, collection=cfg.collection, start=start,
                                          end=end, max_cloud=cfg.max_cloud, max_items_per_tile=cfg.max_items_per_tile), aoi)
        grid = plan_grid(aoi, window_px=card.window_px, coverage=footprint_union(items))
        configure_gdal()
        offsets = item_offsets(items, bands=card.bands)
        planes = {}
        with dask.config.set(scheduler="threads"):
            for res in (None, read_resolution):
                ds = load_composite(items, grid, offsets=offsets, bands=tuple(card.bands), resampling=card.resampling,
                                    read_resolution=res).compute()
                planes[res] = np.stack([ds[b].values for b in card.bands] + [ds["clear_count"].values.astype(np.float32)])
            direct = load_block(items, grid.pixel_geobox, offsets=offsets, bands=tuple(card.bands),
                                resampling=card.resampling, read_resolution=read_resolution, upsample=False).compute()
    ny, nx = grid.cell_geobox.shape
    w = card.window_px
    inside = grid.inside_cells((slice(0, ny), slice(0, nx)))

    def windows(a: np.ndarray, w: int = w) -> np.ndarray:  # (C, ny*w, nx*w) -> (ny*nx, C, w, w), row by row
        return a[:, :ny * w, :nx * w].reshape(a.shape[0], ny, w, nx, w).transpose(1, 3, 0, 2, 4).reshape(ny * nx, a.shape[0], w, w)

    full, coarse = windows(planes[None]), windows(planes[read_resolution])
    coarse_direct = windows(direct, round(w * 10.0 / read_resolution))
    clear = (full[:, -1] > 0).mean(axis=(1, 2)) >= min_clear
    keep = inside.reshape(-1) & clear
    predictor = Predictor.from_path(model)
    a = predictor.predict_reflectance(full[keep, :-1]).probs.argmax(axis=1)
    b = predictor.predict_reflectance(coarse[keep, :-1]).probs.argmax(axis=1)
    c = predictor.predict_reflectance(coarse_direct[keep, :-1]).probs.argmax(axis=1)
    both = np.isfinite(planes[None][:-1]) & np.isfinite(planes[read_resolution][:-1])
    diff = np.abs(planes[None][:-1] - planes[read_resolution][:-1])[both]
    tag = f"demo_ovr{read_resolution:g}"
    return {
        f"{tag}/cells_compared": int(keep.sum()),
        f"{tag}/cells_changed": int(np.count_nonzero(a != c)),
        f"{tag}/cells_changed_upsampled": int(np.count_nonzero(a != b)),
        f"{tag}/max_reflectance_diff": round(float(diff.max()), 4),
        f"{tag}/mean_reflectance_diff": round(float(diff.mean()), 5),
        f"{tag}/p99_reflectance_diff": round(float(np.quantile(diff, 0.99)), 4),
        f"{tag}/pixels_clear_status_changed": int(np.count_nonzero((planes[None][-1] > 0) != (planes[read_resolution][-1] > 0))),
    }


def in_worker_like_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a fresh process started with the dask workers' malloc settings
    (:data:`pipeline.cluster.WORKER_MALLOC_ENV`), so the model alone runs as the workers run it.

    glibc reads them at start-up. Without them every large tensor of a batch is a fresh mmap,
    page-faulted in again: the model alone measured ~20% slower here, until glibc's dynamic mmap
    threshold rose after a while (which made in-process timings drift upwards over a benchmark)."""
    import os

    from pipeline.cluster import WORKER_MALLOC_ENV

    saved = {key: os.environ.get(key) for key in WORKER_MALLOC_ENV}
    os.environ.update(WORKER_MALLOC_ENV)
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(fn, *args).result()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _model_rates_here(model: Path, workers: int) -> tuple[float, float]:
    import torch

    from benchmarks.models import model_only_patches_per_second

    rate = float(np.median([model_only_patches_per_second(model, 32, batches=20) for _ in range(3)]))
    torch.set_num_threads(1)
    one = float(np.median([model_only_patches_per_second(model, 32, batches=10) for _ in range(3)]))
    return rate, one * workers


def model_rates(model: Path, workers: int) -> tuple[float, float]:
    """The model alone, as the workers run it (:func:`in_worker_like_process`): the median of three
    timings of 640 patches on torch's own threads (one per core), and one thread's rate (three
    timings of 320) times ``workers``, as the single-threaded workers run it: the stricter
    reference, since torch's threads in one process scale less than linearly."""
    return in_worker_like_process(_model_rates_here, model, workers)


def _model_rate_here(model: Path, batch: int, batches: int) -> float:
    from benchmarks.models import model_only_patches_per_second

    return model_only_patches_per_second(model, batch, batches=batches)


# Random-weight architectures mapped on the demo AOI besides the given weights: name -> (how to
# write the checkpoint, model-only batch size and timed batches on CPU). Rows "<name>_demo_aoi".
RANDOM_MODELS: dict[str, tuple[Callable[[Path], Path], int, int]] = {
    "seed": (random_seed_model, 8, 3),
    "reben": (random_reben_model, 16, 3),
}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-tile", action="store_true", help="also map one full 10,980 px tile")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--model", type=Path, default=DEMO_WEIGHTS)
    parser.add_argument("--no-seed", action="store_true", help="skip the seed-architecture runs")
    parser.add_argument("--no-reben", action="store_true", help="skip the reBEN resnet50 run on the demo AOI")
    parser.add_argument("--only-reads", action="store_true",
                        help="only the full-resolution vs overview read study (with --full-tile: on the full tile too)")
    args = parser.parse_args(argv)
    # Imported here, not at the top: each map runs in a spawned child that re-imports this
    # module, and torch there would add ~0.5 GiB to the peak memory a real `landcover map` never has.
    from pipeline.cluster import local_worker_count
    from pipeline.demo import generate_world, serve_world

    from models.card import ModelCard, card_path
    from pipeline.load import read_resolution_for

    console = Console()
    workers = local_worker_count(args.workers)
    card = ModelCard.read(card_path(args.model))
    read_resolution = read_resolution_for(card.window_px, card.patch_size)
    model_only, one_thread_x_workers = model_rates(args.model, workers)
    figures = {"model_only/patches_per_s": round(model_only, 2), "workers": workers,
               "load_average_1min_at_start": round(psutil.getloadavg()[0], 2),
               "model_only/patches_per_s_one_thread_x_workers": round(one_thread_x_workers, 2)}
    world = generate_world()
    if read_resolution > 10.0:
        figures |= demo_cell_changes(world, args.model, read_resolution)
    if not args.only_reads:
        figures |= bench_map(world.aoi_path, args.model, "demo_aoi", workers)
    for name, (write_model, batch, batches) in RANDOM_MODELS.items():
        if getattr(args, f"no_{name}") or args.only_reads:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = write_model(Path(tmp))
            rate = in_worker_like_process(_model_rate_here, path, batch, batches)
            figures[f"{name}_model_only/patches_per_s"] = round(rate, 2)
            figures |= bench_map(world.aoi_path, path, f"{name}_demo_aoi", workers)
    if args.full_tile:
        big = generate_world(size_px=10980, progress=True)
        with tempfile.TemporaryDirectory() as tmp, serve_world(big) as served:
            aoi = full_tile_aoi(big, Path(tmp) / "tile.geojson")
            if read_resolution > 10.0:
                figures |= full_tile_reads(aoi, args.model, workers, served.stac_url, read_resolution)
            else:
                figures |= bench_map(aoi, args.model, "full_tile", workers, stac_url=served.stac_url, **WINDOW_MAP)
            if not args.no_seed and not args.only_reads:  # 20 x 20 cells: enough blocks that start-up and the last block do not dominate
                square = full_tile_aoi(big, Path(tmp) / "square.geojson", side_m=24_000)
                figures |= bench_map(square, random_seed_model(Path(tmp)), "seed_24km", workers, stac_url=served.stac_url,
                                     **WINDOW_MAP)
    figures["load_average_1min_at_end"] = round(psutil.getloadavg()[0], 2)
    # Only maps of one window per cell have patches/s to set against the model's: the demo AOI
    # rows map 100 m cells from overlapping windows (cells/s there, not windows/s).
    for label, reference in (("full_tile", "model_only"), ("seed_24km", "seed_model_only")):
        rate = figures.get(f"{label}/patches_per_s_load+infer")
        if rate and f"{label}/overhead_vs_model_only" not in figures:  # full_tile_reads measured its own
            figures[f"{label}/overhead_vs_model_only"] = round(1 - rate / figures[f"{reference}/patches_per_s"], 3)
    console.print_json(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
