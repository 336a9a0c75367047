"""A whole map run: the stages in order, with progress, timings and provenance.

This module only wires stages together; each stage lives in its own module.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from models.classes import NUM_CLASSES
from pipeline import __version__
from pipeline.aoi import AOI, read_aoi
from pipeline.cluster import connect, gpu_count
from pipeline.config import MapConfig
from pipeline.errors import LandcoverError
from pipeline.export.staging import check_out_dir
from pipeline.infer import (
    READ_GROUP,
    BlockSpec,
    ChunkStore,
    ItemIndex,
    ModelRef,
    block_footprint,
    block_key,
    classify_stream,
    gpu_group_size,
    group_pixels,
    iter_blocks,
    load_model_here,
    pixels_footprint,
    read_group,
    DetailSpec,
    windows_per_block,
)
from pipeline.load import configure_gdal, item_offsets, load_block, load_composite, read_resolution_for
from pipeline.mosaic import mosaic
from pipeline.patches import PatchGrid, plan_grid
from pipeline.search import SearchParams, format_item_table, search_items

log = logging.getLogger(__name__)

WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "weights"
# The seed-family demo weights (RGB, 32 px patches), and the default of a map: the multi-band
# demo weights in the reBEN layout, whose detailed maps agree best with the demo truth.
DEMO_WEIGHTS = WEIGHTS / "demo-compact-nosr.safetensors"
DEFAULT_WEIGHTS = WEIGHTS / "demo-multiband-mobilenetv3.safetensors"


# Small AOIs are cut into at least this many blocks (smaller ones), so every worker of a
# machine or small cluster has work until the end.
MIN_BLOCKS = 32


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


def default_weights() -> Path:
    if not DEFAULT_WEIGHTS.exists():
        raise LandcoverError(
            f"no --model given and the demo weights {DEFAULT_WEIGHTS} are missing; "
            "run `make weights-multiband` or pass --model PATH"
        )
    return DEFAULT_WEIGHTS


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


def resolve_model(model: Path | None) -> Path:
    """The weights a run uses: a path, or the repo id of a model `landcover model fetch` installed
    (``BIFOLD-BigEarthNetv2-0/resnet50-s2-v0.2.0``, its ``main`` revision), or the demo weights."""
    if model is None:
        return default_weights().resolve()
    if model.exists():
        return model.resolve()
    from models.card import model_cache

    text = str(model)
    repo, _, revision = text.partition("@")
    cached = model_cache() / repo / (revision or "main") / "model.safetensors"
    if repo.count("/") == 1 and cached.is_file():
        return cached
    raise LandcoverError(
        f"model {text} not found: pass --model PATH to a .safetensors/.pt file with its card beside it, or the repo id "
        f"of a model installed by `landcover model fetch REPO_ID` / `landcover model import FOLDER`"
    )


@contextlib.contextmanager
def stac_endpoint(cfg: MapConfig) -> Iterator[str | None]:
    """The STAC URL to search; for the `local` source, the demo world served on loopback."""
    if cfg.source != "local" or cfg.stac_url:
        yield cfg.stac_url
        return
    from pipeline.demo import generate_world, serve_world

    with serve_world(generate_world(layout=cfg.demo_layout)) as served:
        yield served.stac_url


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


def footprint_union(items) -> shapely.Geometry:
    """The ground the scenes cover (lon/lat)."""
    return shapely.union_all([shapely.geometry.shape(it.geometry) for it in items])


def coverage_note(aoi: AOI, coverage: shapely.Geometry) -> str | None:
    """A line for the log when the scenes leave part of the AOI uncovered (the grid is clipped)."""
    covered = shapely.intersection(aoi.geometry, coverage).area / aoi.geometry.area
    if covered > 0.999:
        return None
    share = f"{covered:.1%}" if covered >= 0.001 else "less than 0.1%"
    return (f"the scenes cover {share} of the AOI (lon/lat area); the map grid is clipped to the covered part, "
            "the rest is not mapped")


@dataclass(frozen=True)
class Work:
    """One block of a run: its scenes, its content key and, when a store had it, its result; and
    the pixels and scenes of the rectangle it is read with (its read group's; None: its own)."""

    block: BlockSpec
    items: list
    key: str
    stored: np.ndarray | None = None
    read: tuple[slice, slice] | None = None
    read_items: list | None = None


def plan_work(grid: PatchGrid, index: ItemIndex, model: ModelRef, spec: DetailSpec,
              chunks: ChunkStore | None, *, lookahead: int = 256) -> Iterator[Work]:
    """The blocks of the map with their scenes and keys, planned as the run asks for them.

    Within each run of ``lookahead`` blocks the blocks of one read group (:func:`read_group`)
    come together, and the fullest groups go first (dask runs roughly in submission order), so a
    small map does not end with one worker finishing a full block while others idle.
    """
    batch: list[BlockSpec] = []
    reads: dict[tuple[int, int], tuple[tuple[slice, slice], list]] = {}  # per read group, while its blocks come

    def flush() -> Iterator[Work]:
        fullness: dict[tuple[int, int], int] = {}
        for block in batch:
            fullness[read_group(block)] = fullness.get(read_group(block), 0) + block.n_inside
        for block in sorted(batch, key=lambda b: (-fullness[read_group(b)], read_group(b), b.index)):
            items = index.touching(block_footprint(block, grid))
            key = block_key(block, grid, [it.id for it in items], model, spec.min_clear, spec)
            group = read_group(block)
            if group not in reads:
                pixels = group_pixels(grid, block)
                reads[group] = pixels, index.touching(pixels_footprint(pixels, grid))
            read, read_items = reads[group]
            yield Work(block, items, key, chunks.get(key) if chunks is not None else None, read, read_items)
        batch.clear()
        if len(reads) > 4 * lookahead:  # a group's blocks come at most one block row apart
            reads.clear()

    for block in iter_blocks(grid):
        batch.append(block)
        if len(batch) >= lookahead:
            yield from flush()
    yield from flush()


@dataclass(frozen=True)
class GridCount:
    blocks: int
    cells: int


def count_grid(grid: PatchGrid) -> GridCount:
    """Blocks and map cells of ``grid``, without building any graph (one pass over the blocks)."""
    blocks = cells = 0
    for block in iter_blocks(grid):
        blocks += 1
        cells += block.n_inside
    return GridCount(blocks, cells)


def run_map(cfg: MapConfig, console: Console | None = None, *, chunks: ChunkStore | None = None) -> MapResult:
    """Map ``cfg.aoi`` into ``cfg.out``, streamed: blocks are planned as they are submitted, a
    bounded number are in flight, and each is written into the output rasters as it lands, so the
    client holds what is in flight, never the whole area. With ``chunks``, finished block results
    are persisted as they complete and blocks whose inputs are unchanged are read back instead of
    recomputed."""
    from pipeline.lock import out_dir_lock

    aoi: AOI = read_aoi(cfg.aoi)
    # Refused before any work; export checks again when it writes.
    check_out_dir(cfg.out, marker="landcover.tif", overwrite=cfg.overwrite)
    with out_dir_lock(cfg.out):
        return _run_map(cfg, aoi, console or Console(stderr=True), chunks)


def plan_run(cfg: MapConfig, console: Console | None = None, *, chunks: ChunkStore | None = None):
    """What :func:`run_map` would do with ``cfg`` (a :class:`pipeline.plan.MapPlan`), from the
    catalogue's metadata alone: no pixel is read and nothing is written."""
    from pipeline.cluster import describe, local_worker_count
    from pipeline.plan import model_speed, plan_map

    started = time.perf_counter()
    console = console or Console(stderr=True)
    aoi = read_aoi(cfg.aoi)
    model, card = load_card(cfg)
    with stac_endpoint(cfg) as stac_url:
        items = search_items(search_params(cfg, stac_url), aoi)
    grid, spec = plan_map_grid(cfg, aoi, items, card, console)
    workers, gpus = local_worker_count(cfg.workers), 0
    if cfg.scheduler:
        with connect(cfg.scheduler) as (client, _):
            info = describe(client, local=False)
            workers, gpus = info.n_workers, info.gpu_workers
    return plan_map(
        aoi, items, grid, model=model, min_clear=cfg.min_clear, detail=spec, chunks=chunks, workers=workers, gpu_workers=gpus,
        speed=lambda: model_speed(model, card.window_px, len(card.bands)), started=started,
    )


def load_card(cfg: MapConfig):
    """The run's model (path, sha256) and its card."""
    from models.card import ModelCard, card_path, sha256_file

    model_path = resolve_model(cfg.model)
    card = ModelCard.read(card_path(model_path)) if card_path(model_path).exists() else None
    if card is None:
        raise LandcoverError(f"model card {card_path(model_path)} not found beside the weights; a map needs the card's bands and patch size")
    return ModelRef(str(model_path), sha256_file(model_path), cfg.device, cfg.batch_size), card


def _run_map(cfg: MapConfig, aoi: AOI, console: Console, chunks: ChunkStore | None) -> MapResult:
    from pipeline.export import Provenance, map_export

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - clock
        clock = now

    model, card = load_card(cfg)
    model_id = card.model_id
    console.print(
        f"AOI {cfg.aoi.name}: {aoi.area_km2:,.1f} km², UTM zones {', '.join(map(str, aoi.utm_epsgs))}; "
        f"model {model_id} ({'synthetic demo weights' if card.training_data.synthetic else 'weights'} sha256 {model.sha256[:12]})"
    )
    lap("aoi")

    with stac_endpoint(cfg) as stac_url:
        items = search_items(search_params(cfg, stac_url), aoi)
        console.print(format_item_table(items))
        lap("search")
        grid, spec = plan_map_grid(cfg, aoi, items, card, console)
        count = count_grid(grid)
        lap("plan")

        gpus = 0 if cfg.scheduler or cfg.device == "cpu" else gpu_count()
        with connect(cfg.scheduler, cfg.workers, gpus=gpus) as (client, info), _progress(console) as progress:
            where = "local cluster" if info.local else f"cluster {cfg.scheduler}"
            console.print(
                f"{where}: {info.n_workers} workers ({info.gpu_workers} with GPU)"
                + (f", dashboard {info.dashboard}" if info.dashboard else "")
            )
            configure_gdal(client)
            lap("cluster")
            offsets = item_offsets(items, bands=card.bands)  # every band the model needs is probed
            items = [it for it in items if it.id in offsets]
            index = ItemIndex(items)
            lap("offsets")

            provenance = Provenance(
                input_items=[it.id for it in items],
                model_id=model_id,
                model_sha256=model.sha256,
                model_card=card.model_dump(mode="json"),
                software_version=__version__,
                parameters=cfg.model_dump(mode="json"),
                synthetic_model=bool(card.training_data.synthetic),
            )
            composite = _composite_writer(cfg, card, grid, items, offsets, client, progress) if cfg.save_composite else None
            bar = progress.add_task("classifying chunks", total=count.blocks)
            computed = 0
            model_loaded = False

            def load_model_once() -> None:
                nonlocal model_loaded
                if not model_loaded:  # a run whose blocks are all stored never needs the model
                    lap("load+infer")
                    load_model_on_workers(client, model)
                    lap("model")  # start-up, like the cluster's: not part of the per-block rate
                    model_loaded = True

            read_res = read_resolution(cfg, card)

            def prepare(works: list[Work]) -> list:
                return group_planes(works, grid, offsets, card, read_res, spec.read_factor)

            with map_export(
                grid.cell_geobox, cfg.out, provenance=provenance, multi_label=card.task == "multi-label",
                threshold=card.threshold, aoi=aoi.geometry, scenes=items, overwrite=cfg.overwrite, composite=composite,
            ) as export:
                group = gpu_group_size(windows_per_block(grid, spec)) if info.gpu_workers else 1
                stream = classify_stream(
                    client, plan_work(grid, index, model, spec, chunks), prepare, model, spec,
                    gpu=info.gpu_workers > 0, group=group,
                    # Enough blocks in flight to keep every worker reading while others classify.
                    in_flight=max(2, 2 * info.n_workers) * (READ_GROUP**2 if group == 1 else 1),
                    read_key=lambda work: read_group(work.block), read_size=READ_GROUP**2,
                    before_first=load_model_once,
                )
                for work, values, fresh in stream:
                    if fresh:
                        computed += 1
                        if chunks is not None:
                            chunks.put(work.key, values)  # persisted as it lands: resumable
                    block_map = mosaic(
                        values[:NUM_CLASSES], values[NUM_CLASSES], work.block.inside, min_clear=cfg.min_clear,
                        multi_label=card.task == "multi-label", threshold=card.threshold,
                    )
                    export.write(work.block.cells, block_map)
                    progress.advance(bar)
                lap("load+infer")
            lap("export")
            files = export.files
            n_valid = export.stats.valid
    lap("shutdown")
    return MapResult(
        cfg.out, files, grid, len(items), count.cells, n_valid,
        blocks_total=count.blocks, blocks_computed=computed, items=items,
        model_sha256=model.sha256, timings=timings,
    )


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


def search_params(cfg: MapConfig, stac_url: str | None) -> SearchParams:
    start, end = cfg.date_window()
    return SearchParams(
        source=cfg.source,
        stac_url=stac_url,
        collection=cfg.collection,
        start=start,
        end=end,
        max_cloud=cfg.max_cloud,
        max_items_per_tile=cfg.max_items_per_tile,
    )


# Blocks of about this much ground: big enough that the window margin around a block (1.2 km a
# side for detailed maps) adds little reading, small enough for a worker's memory.
BLOCK_M = 9600.0
# Detailed maps pad every block by a window, so a small AOI is cut into fewer blocks than
# MIN_BLOCKS: each extra block re-reads its margins.
MIN_DETAIL_BLOCKS = 8


def read_resolution(cfg: MapConfig, card) -> float:
    """Metres the run reads and composites the COGs at: ``--read-resolution``, else the overview
    level the card's input pixel allows (:func:`pipeline.load.read_resolution_for`)."""
    if cfg.read_resolution is not None:
        return float(cfg.read_resolution)
    return read_resolution_for(card.window_px, card.patch_size, cfg.resolution)


def detail_spec(cfg: MapConfig, window_px: int, read_factor: int = 1) -> DetailSpec:
    """The run's window placement and blending, checked (one-line errors) before any work.

    With a ``read_factor`` > 1 (reads that many grid pixels coarser), blocks are classified from
    the coarse planes when every window, stride and cell is whole coarse pixels; otherwise the
    planes are upsampled to the grid first."""
    from pipeline.detail import DetailPlan

    stride = cfg.stride or max(1, window_px // 3)
    plan = DetailPlan.from_card(window_px, cfg.cell_size, cfg.resolution, stride_px=stride, weight=cfg.blend)
    coarse = read_factor if plan.coarsened(read_factor) is not None else 1
    return DetailSpec(window_stride_px=plan.stride_px, cell_px=plan.cell_px, dense=cfg.dense, weight=cfg.blend,
                      min_clear=cfg.min_clear, read_factor=coarse)


def plan_map_grid(cfg: MapConfig, aoi: AOI, items: list, card, console: Console) -> tuple[PatchGrid, DetailSpec]:
    """The run's grid over the part of the AOI the scenes cover (said in the log when that is
    less), and how its windows are placed, read and blended."""
    window_px = card.window_px
    read_res = read_resolution(cfg, card)
    spec = detail_spec(cfg, window_px, round(read_res / cfg.resolution))
    margin = spec.plan(window_px).margin_px
    coverage = footprint_union(items)
    note = coverage_note(aoi, coverage)
    if note:
        console.print(note)
    grid = plan_grid(
        aoi,
        crs=cfg.crs,
        resolution=cfg.resolution,
        window_px=window_px,
        stride_px=spec.cell_px,
        margin_px=margin,
        # Blocks classified from coarser planes cover as many of those pixels, i.e. more ground:
        # fewer reads per cell and fewer COG tiles decoded twice at block edges.
        cells_per_chunk=cfg.cells_per_chunk or max(1, round(BLOCK_M * spec.read_factor / cfg.cell_size)),
        min_blocks=MIN_BLOCKS if margin == 0 else MIN_DETAIL_BLOCKS,
        coverage=coverage,
    )
    ny, nx = grid.cell_geobox.shape
    console.print(
        f"grid {grid.cell_geobox.crs} cells {ny} x {nx} of {cfg.cell_size:g} m; windows of {window_px} px every "
        f"{spec.window_stride_px} px{', evaluated densely' if spec.dense else ''}, {spec.weight} blending; "
        f"blocks of {grid.cells_per_chunk} x {grid.cells_per_chunk} cells"
        + (f"; read and classified at {read_res:g} m" if spec.read_factor > 1
           else f"; read at {read_res:g} m, upsampled to {cfg.resolution:g} m" if read_res > cfg.resolution else "")
    )
    return grid, spec


def _composite_writer(cfg, card, grid, items, offsets, client, progress):
    """composite.tif, computed again block by block while the cluster is up (whole-grid graph:
    meant for maps small enough to look at in QGIS)."""
    from pipeline.export.composite import write_composite

    def composite(path: Path) -> None:
        ds = load_composite(items, grid, offsets=offsets, bands=tuple(card.bands), resampling=card.resampling)
        task = progress.add_task("writing composite.tif", total=None)
        write_composite(
            path, [ds[b].data for b in card.bands], card.bands, grid.pixel_geobox, client,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )

    return composite
