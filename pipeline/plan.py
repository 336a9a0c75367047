"""A run, planned once: the AOI, the scenes, the model and its card, the grid, the detail recipe and
the blocks, made by :func:`make_plan` from the settings before any pixel is read.

    landcover map region.geojson --plan          # the plan as a table (pipeline.plan_summary)
    landcover map region.geojson --plan --json   # the whole plan as JSON
    landcover run lagoon --plan

:func:`pipeline.run.execute` runs a plan; a regional run (``workflows.runner``) makes the plan,
keys it and either reuses an earlier map or executes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import shapely

from models import __version__
from pipeline.aoi import AOI, parse_aoi, read_aoi
from pipeline.blocks import (
    BlockCount,
    BlockSpec,
    ItemIndex,
    block_footprint,
    block_key,
    count_blocks,
    group_pixels,
    iter_blocks,
    pixels_footprint,
    read_group,
    read_group_side,
)
from pipeline.detail import DetailPlan
from pipeline.errors import LandcoverError, SearchError
from pipeline.halo import HaloError, PixelPlan
from pipeline.infer import ModelRef
from pipeline.load import read_resolution_for
from pipeline.patches import PatchGrid, plan_grid
from pipeline.search import SearchParams, search_items
from pipeline.settings import MapConfig
from pipeline.store import ChunkStore

WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "weights"
# The seed-family demo weights (RGB, 32 px patches), and the default of a map: the multi-band
# demo weights in the reBEN layout, whose detailed maps agree best with the demo truth.
DEMO_WEIGHTS = WEIGHTS / "demo-compact-nosr.safetensors"
DEFAULT_WEIGHTS = WEIGHTS / "demo-multiband-mobilenetv3.safetensors"

# Blocks of about this much ground: big enough that the window margin around a block (1.2 km a
# side for detailed maps) adds little reading, small enough for a worker's memory.
BLOCK_M = 9600.0
# ... and for the block path (a backbone once per block and its halo, pipeline.detail): the halo
# (192 px a side) is computed, read and thrown away once per block, 1.96x the block's own pixels
# at 9.6 km, 1.44x at 19.2 km (FLOPs per km² of the reBEN ResNet50 on the full tile: 8.9x below
# windows instead of 6.4x). Its activations over 19.2 km and the halo (2304 px) take ~1.1 GiB; a
# worker mapping the full tile peaked at 3.4 GiB (python -m benchmarks.blocks --full-tile
# --whole-tile). Such blocks are read one per task (pipeline.blocks.READ_GROUP_PX).
BLOCK_PATH_M = 19200.0
# The output cell of classifiers when --cell-size is not given (per-pixel models: their own pixel).
DEFAULT_CELL_M = 100.0
# Small AOIs are cut into at least this many blocks (smaller ones), so every worker of a
# machine or small cluster has work until the end.
MIN_BLOCKS = 32
# Detailed maps pad every block by a window, so a small AOI is cut into fewer blocks than
# MIN_BLOCKS: each extra block re-reads its margins.
MIN_DETAIL_BLOCKS = 8

# Where the block lattice comes from: the AOI alone (a region's: its block keys survive a change
# of the scenes' coverage), or the part of the AOI the scenes cover (a one-off map's: no block is
# spent on ground no scene covers).
Lattice = Literal["aoi", "coverage"]


@dataclass(frozen=True, eq=False)
class RunPlan:
    """Everything a run needs, decided before any pixel is read."""

    config: MapConfig
    aoi: AOI
    window: tuple[date, date]  # the acquisition dates searched
    catalogue: str  # the STAC API searched
    items: list  # pystac.Item, the scenes the map is made from
    model: ModelRef  # weights path and sha256 (hashed once, here), device, batch size
    card: Any  # models.card.ModelCard: bands, window, task, classes, normalisation, ...
    grid: PatchGrid
    detail: DetailPlan | PixelPlan  # classifiers: windows placed, evaluated, blended; per-pixel: cells and halo
    read_resolution: float  # metres the COGs are read and composited at
    blocks: BlockCount
    coverage_note: str | None = None  # said when the scenes leave part of the AOI uncovered

    @property
    def min_clear(self) -> float:
        return self.config.min_clear

    @property
    def read_side(self) -> int:
        """Blocks per side of this run's read groups (:func:`pipeline.blocks.read_group_side`): 2 for
        9.6 km blocks, 1 for the block path's 19.2 km ones."""
        return read_group_side(self.grid, self.detail.read_factor if isinstance(self.detail, DetailPlan) else 1)

    @property
    def catalogue_name(self) -> str:
        """The catalogue as a map records it: its URL, or what it was when served on loopback for the
        run alone (the offline demo world), whose URL means nothing once the run has ended."""
        if self.config.source == "local" and not self.config.stac_url:
            return "the offline demo catalogue (--source local)"
        return self.catalogue

    def inputs_key(self) -> str:
        """Same scenes, same model, same result-deciding settings -> same key (a regional run
        reuses a map made from the same key). The date window and the STAC URL are left out on
        purpose: they decide which scenes, and the scenes are keyed themselves."""
        text = json.dumps({"items": sorted(it.id for it in self.items), "model": self.model.sha256,
                           "parameters": self.result_parameters(), "software": __version__},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def result_parameters(self) -> dict[str, Any]:
        """The settings that decide a map's pixels, given the scenes."""
        settings = self.config.settings.provenance()
        for name in ("stac_url", "model", "scheduler", "workers", "device", "batch_size", "save_composite"):
            settings.pop(name)  # where and how fast, or keyed otherwise (the model by its sha256)
        return {"aoi_wkb_sha256": hashlib.sha256(self.aoi.geometry.wkb).hexdigest(), **settings}

    def works(self, chunks: ChunkStore | None = None, *, lookahead: int = 256) -> Iterator[Work]:
        """The blocks of the map with their scenes and keys, planned as the run asks for them.

        Within each run of ``lookahead`` blocks the blocks of one read group (:func:`read_group`)
        come together, and the fullest groups go first (dask runs roughly in submission order), so a
        small map does not end with one worker finishing a full block while others idle.
        """
        index = ItemIndex(self.items)
        grid = self.grid
        side = self.read_side
        batch: list[BlockSpec] = []
        reads: dict[tuple[int, int], tuple[tuple[slice, slice], list]] = {}  # per read group, while its blocks come

        def flush() -> Iterator[Work]:
            fullness: dict[tuple[int, int], int] = {}
            for block in batch:
                fullness[read_group(block)] = fullness.get(read_group(block), 0) + block.n_inside
            for block in sorted(batch, key=lambda b: (-fullness[read_group(b)], read_group(b), b.index)):
                items = index.touching(block_footprint(block, grid))
                key = block_key(block, grid, [it.id for it in items], self.model.sha256, self.min_clear, self.detail)
                group = read_group(block)
                if group not in reads:
                    pixels = group_pixels(grid, block)
                    reads[group] = pixels, index.touching(pixels_footprint(pixels, grid))
                read, read_items = reads[group]
                yield Work(block, items, key, chunks.get(key) if chunks is not None else None, read, read_items)
            batch.clear()
            if len(reads) > 4 * lookahead:  # a group's blocks come at most one block row apart
                reads.clear()

        for block in iter_blocks(grid, side):
            batch.append(block)
            if len(batch) >= lookahead:
                yield from flush()
        yield from flush()

    def describe(self) -> str:
        """The grid line of the run's log."""
        return layout_line(self.config, self.grid, self.detail, self.read_resolution)


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


def make_plan(cfg: MapConfig, catalogue: str | None, *, lattice: Lattice = "coverage") -> RunPlan:
    """The plan of a run with ``cfg``, searching the STAC API at ``catalogue`` (None: the
    source's own URL). Reads catalogue metadata and the model card, never a pixel; the weights
    are hashed here, once."""
    aoi = read_aoi(cfg.aoi) if isinstance(cfg.aoi, Path) else parse_aoi(cfg.aoi)
    model, card = resolve_model(cfg)
    start, end = cfg.date_window()
    params = SearchParams(source=cfg.source, stac_url=catalogue, collection=cfg.collection, start=start, end=end,
                          max_cloud=cfg.max_cloud, max_items_per_tile=cfg.max_items_per_tile)
    try:
        items = search_items(params, aoi)
    except SearchError as err:
        if cfg.source == "local" and not cfg.stac_url:  # the offline demo catalogue, searched by default
            raise SearchError(demo_miss(cfg, aoi, str(err))) from None
        raise
    grid, detail, read_res = plan_layout(cfg, aoi, items, card, lattice=lattice)
    coverage = footprint_union(items)
    return RunPlan(
        config=cfg, aoi=aoi, window=(start, end), catalogue=params.url, items=items, model=model, card=card,
        grid=grid, detail=detail, read_resolution=read_res, blocks=count_blocks(grid),
        coverage_note=coverage_note(aoi, coverage),
    )


def plan_layout(cfg: MapConfig, aoi: AOI, items: list, card, *, lattice: Lattice = "coverage",
                ) -> tuple[PatchGrid, DetailPlan | PixelPlan, float]:
    """The run's grid over the AOI (its mapped area: the part the scenes cover), how its windows
    are placed, read and blended (a per-pixel model: its cells and halo), and the metres it reads at."""
    if card.per_pixel:
        return pixel_layout(cfg, aoi, items, card, lattice=lattice)
    read_res = read_resolution(cfg, card)
    detail = evaluation_path(detail_plan(cfg, card.window_px).reading(round(read_res / cfg.resolution)), card)
    block_m = BLOCK_PATH_M if detail.path == "block" else BLOCK_M
    grid = plan_grid(
        aoi,
        crs=cfg.crs,
        resolution=cfg.resolution,
        window_px=card.window_px,
        stride_px=detail.cell_px,
        margin_px=detail.margin_px,
        # Blocks classified from coarser planes cover as many of those pixels, i.e. more ground:
        # fewer reads per cell and fewer COG tiles decoded twice at block edges.
        cells_per_chunk=cfg.cells_per_chunk or max(1, round(block_m * detail.read_factor / cell_size_m(cfg, card))),
        min_blocks=MIN_BLOCKS if detail.margin_px == 0 else MIN_DETAIL_BLOCKS,
        coverage=footprint_union(items),
        lattice_from_coverage=lattice == "coverage",
    )
    return grid, detail, read_res


def windows_reason(detail: DetailPlan, card) -> str | None:
    """Why a classifier keeps per-window evaluation (None: its backbone can run once per block)."""
    from models.architectures import windows_reason as architecture_reason

    if detail.one_window_per_cell:
        return "one window per cell: no window overlaps another"
    if not detail.dense:
        return "--no-dense: one probability vector per window"
    if card.family != "timm" or card.architecture is None:
        return f"the {card.family} family resizes each window to its {card.patch_size} px patch"
    reason = architecture_reason(card.architecture.model_name)
    if reason:
        return reason
    if detail.window_px // detail.read_factor != card.patch_size:
        return (f"the card resizes each {detail.window_px // detail.read_factor} px window to {card.patch_size} px, "
                "which a block cannot share")
    return None


def evaluation_path(detail: DetailPlan, card) -> DetailPlan:
    """``detail`` with the path its model takes: the backbone once per block with a halo when the
    architecture has no global operation before its head (:func:`windows_reason`), else windows,
    the reason recorded for the plan's display."""
    from models.architectures import BLOCK_HALO_PX, NETWORK_STRIDE_PX

    reason = windows_reason(detail, card)
    if reason is not None:
        return replace(detail, path_reason=reason)
    # The network sees plane pixels one to one; its stride and halo are that many grid pixels.
    f = detail.read_factor
    return replace(detail.evaluated_per_block(BLOCK_HALO_PX * f, NETWORK_STRIDE_PX * f),
                   path_reason=f"{card.architecture.model_name} is fully convolutional")


def pixel_layout(cfg: MapConfig, aoi: AOI, items: list, card, *, lattice: Lattice = "coverage",
                 ) -> tuple[PatchGrid, PixelPlan, float]:
    """:func:`plan_layout` of a per-pixel model: cells of the model's resolution (or whole multiples
    of it), blocks padded by the card's halo, block sides and offsets multiples of the card's."""
    plan = pixel_plan(cfg, card)
    if cfg.cells_per_chunk and plan.cells_per_block(cfg.cells_per_chunk) != cfg.cells_per_chunk:
        raise HaloError(f"--cells-per-chunk {cfg.cells_per_chunk}: {card.model_id} needs block sides that are "
                        f"multiples of {plan.multiple} px; use {plan.cells_per_block(cfg.cells_per_chunk)}")
    grid = plan_grid(
        aoi, crs=cfg.crs, resolution=cfg.resolution, window_px=plan.cell_px, stride_px=plan.cell_px,
        margin_px=plan.halo_px, cells_per_chunk=cfg.cells_per_chunk or max(1, round(BLOCK_M / cell_size_m(cfg, card))),
        min_blocks=MIN_DETAIL_BLOCKS, coverage=footprint_union(items), lattice_from_coverage=lattice == "coverage",
    )
    # Blocks start every cells_per_chunk cells: a multiple of the card's in pixels keeps every
    # block on the lattice the network resamples on (no seams from a shifted phase).
    grid = replace(grid, cells_per_chunk=plan.cells_per_block(grid.cells_per_chunk))
    return grid, plan, float(cfg.read_resolution or cfg.resolution)


def pixel_plan(cfg: MapConfig, card) -> PixelPlan:
    """The per-pixel plan from the settings and the card, checked (one-line errors) before any work."""
    res = card.pixel.resolution_m
    if abs(cfg.resolution - res) > 1e-9:
        raise HaloError(f"--resolution {cfg.resolution:g}: {card.model_id} maps at its own {res:g} m pixels; "
                        f"leave --resolution out (or give {res:g}) and choose the output cell with --cell-size")
    if cfg.read_resolution is not None and abs(cfg.read_resolution - res) > 1e-9:
        raise HaloError(f"--read-resolution {cfg.read_resolution:g}: {card.model_id} reads its bands at {res:g} m; "
                        "leave --read-resolution out")
    cell = cell_size_m(cfg, card) / res
    if abs(cell - round(cell)) > 1e-9:
        raise HaloError(f"--cell-size {cell_size_m(cfg, card):g} is not a whole multiple of {card.model_id}'s "
                        f"{res:g} m pixels; write e.g. {res:g} or {10 * res:g}")
    return PixelPlan(cell_px=round(cell), halo_px=card.pixel.halo_px, multiple=card.pixel.size_multiple)


def level_note(card, collection: str) -> str | None:
    """A line saying the scenes are another product level than the model was trained on (Dynamic
    World: L1C top of atmosphere; the pipeline reads L2A surface reflectance), or None."""
    level = "L2A" if "l2a" in collection.lower() else "L1C" if "l1c" in collection.lower() else None
    if level is None or level == card.processing_level:
        return None
    return (f"{card.model_id} was trained on Sentinel-2 {card.processing_level} but the run feeds it {level} "
            f"({collection}): expect shifted class probabilities, most over water, haze and dark surfaces")


def cell_size_m(cfg: MapConfig, card) -> float:
    """The output cell: ``--cell-size``, else a per-pixel model's own resolution, else 100 m."""
    if cfg.cell_size is not None:
        return float(cfg.cell_size)
    return float(card.pixel.resolution_m) if card.per_pixel else DEFAULT_CELL_M


def layout_line(cfg: MapConfig, grid: PatchGrid, detail: DetailPlan | PixelPlan, read_res: float) -> str:
    """The grid line of the run's log: cells, windows, blending, blocks and reads."""
    ny, nx = grid.cell_geobox.shape
    d, res = detail, cfg.resolution
    cell_m = abs(grid.cell_geobox.resolution.x)
    if isinstance(d, PixelPlan):
        return (f"grid {grid.cell_geobox.crs} cells {ny} x {nx} of {cell_m:g} m; per-pixel model at {res:g} m"
                + (f", mean probability over {d.cell_px} x {d.cell_px} px per cell" if d.cell_px > 1 else "")
                + f"; blocks of {grid.cells_per_chunk} x {grid.cells_per_chunk} cells with a halo of {d.halo_px} px")
    if d.path == "block":
        evaluation = (f"backbone once per block with a halo of {d.halo_px} px, head every {d.feature_stride_px} px, "
                      f"each position blended over a {d.window_px} px window ({d.weight})")
    else:
        evaluation = (f"windows of {d.window_px} px every {d.stride_px} px{', evaluated densely' if d.dense else ''}, "
                      f"{d.weight} blending")
    return (
        f"grid {grid.cell_geobox.crs} cells {ny} x {nx} of {cell_m:g} m; {evaluation}; "
        f"blocks of {grid.cells_per_chunk} x {grid.cells_per_chunk} cells"
        + (f"; read and classified at {read_res:g} m" if d.read_factor > 1
           else f"; read at {read_res:g} m, upsampled to {res:g} m" if read_res > res else "")
    )


def demo_miss(cfg: MapConfig, aoi: AOI, message: str) -> str:
    """Why the offline demo catalogue has no scenes for ``aoi``, and how to name a real one."""
    from pipeline.demo import generate_world

    west, south, east, north = generate_world(layout=cfg.demo_layout).extent()
    if aoi.geometry.intersects(shapely.box(west, south, east, north)):
        return f"{message} (searched: the offline demo catalogue, --source local)"
    return (f"no scenes: the AOI lies outside the offline demo world, the default catalogue (--source local), which "
            f"covers lon {west:.2f}..{east:.2f}, lat {south:.2f}..{north:.2f}; for real scenes: --source earth-search")


def default_weights() -> Path:
    if not DEFAULT_WEIGHTS.exists():
        raise LandcoverError(
            f"no --model given and the demo weights {DEFAULT_WEIGHTS} are missing; "
            "run `make weights-multiband` or pass --model PATH"
        )
    return DEFAULT_WEIGHTS


def model_path(model: Path | None) -> Path:
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


def resolve_model(cfg: MapConfig):
    """The run's model (path, sha256: the one hash of the weights on the client) and its card."""
    from models.card import ModelCard, card_path
    from models.files import sha256_file

    path = model_path(cfg.model)
    if not card_path(path).exists():
        raise LandcoverError(f"model card {card_path(path)} not found beside the weights; a map needs the card's bands and patch size")
    card = ModelCard.read(card_path(path))
    return ModelRef(str(path), sha256_file(path), card, cfg.device, cfg.batch_size), card


def read_resolution(cfg: MapConfig, card) -> float:
    """Metres the run reads and composites the COGs at: ``--read-resolution``, else the overview
    level the card's input pixel allows (:func:`pipeline.load.read_resolution_for`)."""
    if cfg.read_resolution is not None:
        return float(cfg.read_resolution)
    return read_resolution_for(card.window_px, card.patch_size, cfg.resolution)


def detail_plan(cfg: MapConfig, window_px: int) -> DetailPlan:
    """The run's window placement and blending from the settings, checked (one-line errors)
    before any work."""
    cell_m = DEFAULT_CELL_M if cfg.cell_size is None else cfg.cell_size
    return DetailPlan.from_card(window_px, cell_m, cfg.resolution, stride_px=cfg.stride, weight=cfg.blend,
                                dense=cfg.dense)


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
