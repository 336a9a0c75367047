"""A map run: a :class:`pipeline.plan.RunPlan` made once, then executed block by block.

:func:`run_map` is the one-off map (``landcover map``): it plans, prints the plan and executes it
into an output folder. :func:`execute` runs any plan (a regional run calls it with its chunk
store): the cluster, the scenes' offsets, the blocks streamed through reading, classification
and the mosaic into the export, with progress and timings. Each stage is its own module.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from affine import Affine
from odc.geo.geobox import GeoBox
import rasterio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pipeline import __version__
from pipeline.blocks import read_group
from pipeline.cluster import connect, gpu_count
from pipeline.detail import DetailPlan
from pipeline.errors import LandcoverError
from pipeline.export.composite import CompositeRaster, core_dn
from pipeline.export.qa import qa_factor
from pipeline.export.staging import check_out_dir
from pipeline.infer import ModelRef, load_model_here
from pipeline.load import configure_gdal, item_offsets, load_block
from pipeline.mosaic import mosaic
from pipeline.patches import PatchGrid
from pipeline.plan import Lattice, RunPlan, Work, level_note, make_plan
from pipeline.plan_summary import WorkCount, count_work, evaluation_json, plan_speed
from pipeline.search import format_item_table
from pipeline.settings import MapConfig
from pipeline.store import ChunkStore
from pipeline.stream import classify_stream, gpu_group_size, windows_per_block

log = logging.getLogger(__name__)

# GDAL's block cache while the client writes the outputs. Its default (5% of RAM) keeps every tile
# of the scratch rasters and the COG copies until it fills, so the client would grow with the area
# (by ~100 MiB from 36 to 144 km² with --save-composite); a few tiles' worth is all writing needs.
# composite.tif is written under a smaller one of its own (pipeline.export.composite).
EXPORT_CACHE_BYTES = 32 * 2**20


@dataclass
class MapResult:
    out: Path
    files: object
    grid: PatchGrid
    n_items: int
    n_cells: int
    n_valid: int
    blocks_total: int = 0
    blocks_computed: int = 0
    items: list = field(default_factory=list)
    model_sha256: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # scenes the plan had but the run could not read: why

    @property
    def n_planned(self) -> int:
        return self.n_items + len(self.skipped)


@contextlib.contextmanager
def stac_endpoint(cfg: MapConfig) -> Iterator[str | None]:
    """The STAC URL to search; for the `local` source, the demo world served on loopback for as
    long as the run reads from it."""
    if cfg.source != "local" or cfg.stac_url:
        yield cfg.stac_url
        return
    from pipeline.demo import generate_world, serve_world

    with serve_world(generate_world(layout=cfg.demo_layout)) as served:
        yield served.stac_url


def run_map(cfg: MapConfig, console: Console | None = None, *, chunks: ChunkStore | None = None) -> MapResult:
    """Map ``cfg.aoi`` into ``cfg.out``: plan the run, print the plan, execute it. Streamed: the
    client holds the blocks in flight, never the whole area. With ``chunks``, finished block
    results are persisted as they complete and blocks whose inputs are unchanged are read back
    instead of recomputed."""
    from pipeline.lock import out_dir_lock

    console = console or Console(stderr=True)
    # Refused before any work; export checks again when it writes.
    check_out_dir(cfg.out, marker="landcover.tif", overwrite=cfg.overwrite)
    with out_dir_lock(cfg.out):
        clock = time.perf_counter()
        with stac_endpoint(cfg) as catalogue:
            plan = make_plan(cfg, catalogue)
            timings = {"plan": time.perf_counter() - clock}
            announce(plan, console)
            return execute(plan, console, chunks=chunks, timings=timings)


def plan_run(cfg: MapConfig, console: Console | None = None, *, chunks: ChunkStore | None = None,
             lattice: Lattice = "coverage") -> tuple[RunPlan, WorkCount]:
    """What :func:`run_map` would do with ``cfg``: its plan, and what of it remains to compute
    (blocks ``chunks`` holds count as done), from the catalogue's metadata alone: no pixel is read
    and nothing is written."""
    from pipeline.cluster import describe, local_worker_count

    started = time.perf_counter()
    with stac_endpoint(cfg) as catalogue:
        plan = make_plan(cfg, catalogue, lattice=lattice)
    workers, gpus = local_worker_count(cfg.workers), 0
    if cfg.scheduler:
        with connect(cfg.scheduler) as (client, _):
            info = describe(client, local=False)
            workers, gpus = info.n_workers, info.gpu_workers
    count = count_work(
        plan.aoi, plan.items, plan.grid, model_sha256=plan.model.sha256, min_clear=cfg.min_clear, detail=plan.detail,
        chunks=chunks, workers=workers, gpu_workers=gpus, started=started,
        speed=lambda: plan_speed(plan),
    )
    return plan, count


def announce(plan: RunPlan, console: Console) -> None:
    """The plan, as a run prints it before it starts: AOI and model, scenes, grid."""
    cfg, card = plan.config, plan.card
    console.print(
        f"AOI {cfg.aoi_name}: {plan.aoi.area_km2:,.1f} km², UTM zones {', '.join(map(str, plan.aoi.utm_epsgs))}; "
        f"model {card.model_id} ({'synthetic demo weights' if card.training_data.synthetic else 'weights'} "
        f"sha256 {plan.model.sha256[:12]})"
    )
    console.print(format_item_table(plan.items))
    if plan.coverage_note:
        console.print(plan.coverage_note)
    console.print(plan.describe())


def load_model_on_workers(client, model: ModelRef) -> None:
    """Every worker loads the model now, so the first block does not pay for torch and the weights."""
    try:
        client.run(load_model_here, model)
    except Exception as exc:  # raised in a worker: any kind, one line for the user
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise LandcoverError(
            f"a dask worker could not load the model {model.path} ({reason}); "
            "workers must be able to read the model path (shared storage)"
        ) from None


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<26}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def execute(plan: RunPlan, console: Console, *, chunks: ChunkStore | None = None,
            timings: dict[str, float] | None = None) -> MapResult:
    """Execute ``plan`` into ``plan.config.out`` (the catalogue's assets must stay readable while
    it runs: for the demo world, inside :func:`stac_endpoint`)."""
    from pipeline.export import Provenance, map_export

    cfg, card, grid = plan.config, plan.card, plan.grid
    timings = dict(timings or {})
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - clock
        clock = now

    gpus = 0 if cfg.scheduler or cfg.device == "cpu" else gpu_count()
    with connect(cfg.scheduler, cfg.workers, gpus=gpus) as (client, info), _progress(console) as progress:
        where = "local cluster" if info.local else f"cluster {cfg.scheduler}"
        console.print(
            f"{where}: {info.n_workers} workers ({info.gpu_workers} with GPU)"
            + (f", dashboard {info.dashboard}" if info.dashboard else "")
        )
        configure_gdal(client)
        lap("cluster")
        skipped: dict[str, str] = {}
        offsets = item_offsets(plan.items, bands=card.bands, skipped=skipped)  # every band the model needs is probed
        items = [it for it in plan.items if it.id in offsets]
        if len(items) != len(plan.items):
            plan = _with_items(plan, items)
        lap("offsets")

        note = level_note(card, cfg.collection)
        if note:
            log.warning(note)
        provenance = Provenance(
            notes=[note] if note else [],
            input_items=[it.id for it in items],
            model_id=card.model_id,
            model_sha256=plan.model.sha256,
            model_card=card.model_dump(mode="json"),
            software_version=__version__,
            parameters=cfg.model_dump(mode="json"),
            synthetic_model=bool(card.training_data.synthetic),
            window=(plan.window[0].isoformat(), plan.window[1].isoformat()),
            aoi_km2=plan.aoi.area_km2,
            catalogue=plan.catalogue_name,
            model_source=card.source.repo_id if card.source is not None else Path(plan.model.path).name,
            skipped_items=skipped,
            evaluation=evaluation_json(plan.detail) if isinstance(plan.detail, DetailPlan) else {},
        )
        composite: CompositeRaster | None = None  # made in the output folder once the export has prepared it
        bar = progress.add_task("classifying chunks", total=plan.blocks.blocks)
        computed = 0
        model_loaded = False

        def load_model_once() -> None:
            nonlocal model_loaded
            if not model_loaded:  # a run whose blocks are all stored never needs the model
                lap("load+infer")
                load_model_on_workers(client, plan.model)
                lap("model")  # start-up, like the cluster's: not part of the per-block rate
                model_loaded = True

        def prepare(works: list[Work]) -> list:
            return group_planes(works, grid, offsets, card, plan.read_resolution, plan.detail.read_factor)

        multi_label = card.task == "multi-label"
        n_classes = len(card.legend)
        f = plan.detail.read_factor
        margin = grid.margin_px // f

        def tap(work: Work, planes):  # composite.tif: each computed block's own pixels, as it lands
            ys, xs = work.block.cells
            shape = ((ys.stop - ys.start) * grid.stride_px // f, (xs.stop - xs.start) * grid.stride_px // f)
            return client.submit(core_dn, planes, margin, shape, f, pure=False)

        with contextlib.ExitStack() as cleanup, rasterio.Env(GDAL_CACHEMAX=EXPORT_CACHE_BYTES), map_export(
            grid.cell_geobox, cfg.out, provenance=provenance, multi_label=multi_label,
            threshold=card.threshold, aoi=plan.aoi.geometry, scenes=items, overwrite=cfg.overwrite, legend=card.legend,
            composite=(lambda path: composite.finish(path)) if cfg.save_composite else None,
            qa_cells=qa_factor(abs(grid.cell_geobox.resolution.x), cfg.qa_grid), mmu_ha=cfg.mmu,
        ) as export:
            if cfg.save_composite:
                composite = CompositeRaster(cfg.out, composite_geobox(plan), card.bands)
                cleanup.callback(composite.discard)
            group = gpu_group_size(windows_per_block(grid, plan.detail)) if info.gpu_workers else 1
            stream = classify_stream(
                # composite.tif needs every block's planes: with it, stored results are recomputed.
                client, plan.works(None if cfg.save_composite else chunks), prepare, plan.model, plan.detail, cfg.min_clear,
                gpu=info.gpu_workers > 0, group=group,
                # Enough blocks in flight to keep every worker reading while others classify.
                in_flight=max(2, 2 * info.n_workers) * (plan.read_side**2 if group == 1 else 1),
                read_key=lambda work: read_group(work.block), read_size=plan.read_side**2,
                before_first=load_model_once, tap=tap if cfg.save_composite else None,
            )
            for work, values, fresh, dn in stream:
                if fresh:
                    computed += 1
                    if chunks is not None:
                        chunks.put(work.key, values)  # persisted as it lands: resumable
                block_map = mosaic(
                    values[:n_classes], values[n_classes], work.block.inside, min_clear=cfg.min_clear,
                    multi_label=multi_label, threshold=card.threshold, codes=card.legend.codes,
                )
                export.write(work.block.cells, block_map)
                if dn is not None:
                    composite.write(work.block.cells[0].start * grid.stride_px, work.block.cells[1].start * grid.stride_px, dn)
                progress.advance(bar)
            lap("load+infer")
        lap("export")
        files = export.files
        n_valid = export.stats.valid
    lap("shutdown")
    return MapResult(
        cfg.out, files, grid, len(items), plan.blocks.cells, n_valid,
        blocks_total=plan.blocks.blocks, blocks_computed=computed, items=items,
        model_sha256=plan.model.sha256, timings=timings, skipped=skipped,
    )


def _with_items(plan: RunPlan, items: list) -> RunPlan:
    """``plan`` without the scenes whose assets could not be read (their blocks' keys change)."""
    from dataclasses import replace

    return replace(plan, items=items)


def group_planes(works: list[Work], grid: PatchGrid, offsets: dict[str, int], card, read_res: float,
                 read_factor: int) -> list:
    """The lazy composite planes of each of ``works``, read and composited as one block over the
    rectangle they span (one task): each work's planes are its window of them.

    The rectangle and its scenes are the works' read group's (:attr:`Work.read`), else those the
    works span. Scenes that miss a block only add never-clear dates there, so a block's planes
    are those it gets read alone, except that reprojected pixels depend slightly on the rectangle
    a warp fills (hence a rectangle fixed per group). A model that sees its window coarser than
    10 m reads the COG overview just finer, and is handed those pixels themselves
    (``read_factor`` > 1) when the windows are whole pixels of it.
    """
    if works[0].read is not None:  # the read group's rectangle, as planned
        if any(w.read != works[0].read for w in works):
            raise ValueError("works read together must share their read rectangle")
        (y0, y1), (x0, x1) = ((s.start, s.stop) for s in works[0].read)
        items = works[0].read_items
    else:  # the rectangle the works span
        y0 = min(w.block.pixels[0].start for w in works)
        y1 = max(w.block.pixels[0].stop for w in works)
        x0 = min(w.block.pixels[1].start for w in works)
        x1 = max(w.block.pixels[1].stop for w in works)
        items = sorted({it.id: it for w in works for it in w.items}.values(), key=lambda it: it.id)
    planes = load_block(items, grid.pixel_geobox[y0:y1, x0:x1], offsets=offsets, bands=tuple(card.bands),
                        resampling=card.resampling, read_resolution=read_res, upsample=read_factor == 1)
    f = read_factor
    return [planes[:, (ys.start - y0) // f:(ys.stop - y0) // f, (xs.start - x0) // f:(xs.stop - x0) // f]
            for ys, xs in (w.block.pixels for w in works)]


def composite_geobox(plan: RunPlan) -> GeoBox:
    """composite.tif's grid: the map's pixel grid over the map's extent (its cells, no margin)."""
    grid = plan.grid
    ny, nx = grid.cell_geobox.shape
    t = grid.cell_geobox.affine
    res = plan.config.resolution
    return GeoBox((ny * grid.stride_px, nx * grid.stride_px), Affine(res, 0.0, t.c, 0.0, -res, t.f), grid.cell_geobox.crs)
