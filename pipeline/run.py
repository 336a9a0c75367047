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

from distributed import as_completed
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from models.classes import NUM_CLASSES
from pipeline import __version__
from pipeline.aoi import AOI, read_aoi
from pipeline.cluster import GPU_RESOURCE, connect
from pipeline.config import MapConfig
from pipeline.errors import LandcoverError
from pipeline.export.staging import check_out_dir
from pipeline.infer import (
    ChunkStore,
    ModelRef,
    assemble,
    block_key,
    block_tasks,
    blocks_in_aoi,
    composite_planes,
    items_touching,
    load_model_here,
)
from pipeline.load import configure_gdal, item_offsets, load_composite
from pipeline.mosaic import mosaic
from pipeline.patches import PatchGrid, plan_grid
from pipeline.search import SearchParams, format_item_table, search_items

log = logging.getLogger(__name__)

DEMO_WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "weights" / "demo-compact-nosr.safetensors"


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
    if not DEMO_WEIGHTS.exists():
        raise LandcoverError(
            f"no --model given and the demo weights {DEMO_WEIGHTS} are missing; "
            "run `make weights` or pass --model PATH"
        )
    return DEMO_WEIGHTS


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

    with serve_world(generate_world()) as served:
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


def run_map(cfg: MapConfig, console: Console | None = None, *, chunks: ChunkStore | None = None) -> MapResult:
    """Map ``cfg.aoi`` into ``cfg.out``. With ``chunks``, finished block results are persisted
    as they complete and blocks whose inputs are unchanged are read back instead of recomputed."""
    from models.card import ModelCard
    from models.card import card_path, sha256_file
    from pipeline.export import Provenance, export_map

    console = console or Console(stderr=True)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now

    aoi: AOI = read_aoi(cfg.aoi)
    # Refused before any work; export checks again when it writes.
    check_out_dir(cfg.out, marker="landcover.tif", overwrite=cfg.overwrite)
    model_path = resolve_model(cfg.model)
    card = ModelCard.read(card_path(model_path)) if card_path(model_path).exists() else None
    if card is None:
        raise LandcoverError(f"model card {card_path(model_path)} not found beside the weights; a map needs the card's bands and patch size")
    model = ModelRef(str(model_path), sha256_file(model_path), cfg.device, cfg.batch_size)
    model_id = card.model_id
    console.print(
        f"AOI {cfg.aoi.name}: {aoi.area_km2:,.1f} km², UTM zones {', '.join(map(str, aoi.utm_epsgs))}; "
        f"model {model_id} ({'synthetic demo weights' if card.training_data.synthetic else 'weights'} sha256 {model.sha256[:12]})"
    )
    lap("aoi")

    with stac_endpoint(cfg) as stac_url:
        start, end = cfg.date_window()
        params = SearchParams(
            source=cfg.source,
            stac_url=stac_url,
            collection=cfg.collection,
            start=start,
            end=end,
            max_cloud=cfg.max_cloud,
            max_items_per_tile=cfg.max_items_per_tile,
        )
        items = search_items(params, aoi)
        console.print(format_item_table(items))
        lap("search")

        grid = plan_grid(
            aoi,
            crs=cfg.crs,
            resolution=cfg.resolution,
            window_px=card.window_px,
            stride_px=cfg.stride,
            cells_per_chunk=cfg.cells_per_chunk,
            min_blocks=MIN_BLOCKS,
        )
        ny, nx = grid.cell_geobox.shape
        console.print(
            f"grid {grid.cell_geobox.crs} cells {ny} x {nx} of {grid.stride_px * cfg.resolution:.0f} m, "
            f"windows {grid.window_px} px, {int(grid.inside_aoi.sum())} cells in the AOI"
        )

        with connect(cfg.scheduler, cfg.workers) as (client, info), _progress(console) as progress:
            where = "local cluster" if info.local else f"cluster {cfg.scheduler}"
            console.print(
                f"{where}: {info.n_workers} workers ({info.gpu_workers} with GPU)"
                + (f", dashboard {info.dashboard}" if info.dashboard else "")
            )
            configure_gdal(client)
            lap("cluster")
            offsets = item_offsets(items, bands=card.bands)  # every band the model needs is probed
            items = [it for it in items if it.id in offsets]
            lap("offsets")

            ds = load_composite(items, grid, offsets=offsets, bands=tuple(card.bands), resampling=card.resampling)
            planes = composite_planes(ds, card.bands)
            blocks = blocks_in_aoi(grid)
            keys = {b.index: block_key(b, grid, items_touching(b, grid, items), model, cfg.min_clear) for b in blocks}
            results = {}
            for block in blocks:
                stored = chunks.get(keys[block.index]) if chunks is not None else None
                if stored is not None:
                    results[block.index] = (block, stored)
            # Biggest blocks first (dask runs them roughly in submission order), so the run does not
            # end with one worker finishing a full block while the others idle.
            todo = sorted((b for b in blocks if b.index not in results), key=lambda b: -int(grid.inside_aoi[b.cells].sum()))
            tasks = list(block_tasks(planes, grid, model, todo, min_clear=cfg.min_clear))
            lap("graph")
            if tasks:  # a run whose blocks are all stored never needs the model
                load_model_on_workers(client, model)
            lap("model")

            bar = progress.add_task("classifying chunks", total=len(blocks), completed=len(results))
            if tasks:
                resources = {GPU_RESOURCE: 1} if info.gpu_workers else None
                futures = client.compute([t for _, t in tasks], resources=resources)
                by_key = {f.key: block for f, (block, _) in zip(futures, tasks)}
                for future in as_completed(futures):
                    block = by_key[future.key]
                    values = future.result()
                    if chunks is not None:
                        chunks.put(keys[block.index], values)  # persisted as it lands: resumable
                    results[block.index] = (block, values)
                    progress.advance(bar)
            lap("load+infer")

            cell_planes = assemble(grid, results)
            class_map = mosaic(
                cell_planes[:NUM_CLASSES], cell_planes[NUM_CLASSES], grid.inside_aoi,
                min_clear=cfg.min_clear, multi_label=card.task == "multi-label", threshold=card.threshold,
            )
            lap("mosaic")
            provenance = Provenance(
                input_items=[it.id for it in items],
                model_id=model_id,
                model_sha256=model.sha256,
                model_card=card.model_dump(mode="json"),
                software_version=__version__,
                parameters=cfg.model_dump(mode="json"),
                synthetic_model=bool(card.training_data.synthetic),
            )
            composite = None
            if cfg.save_composite:
                # Written while the cluster is up: the composite is computed again, block by block.
                from pipeline.export.composite import write_composite

                def composite(path: Path) -> None:
                    task = progress.add_task("writing composite.tif", total=None)
                    write_composite(
                        path, [ds[b].data for b in card.bands], card.bands, grid.pixel_geobox, client,
                        progress=lambda done, total: progress.update(task, completed=done, total=total),
                    )

            files = export_map(
                class_map, grid.cell_geobox, cfg.out, aoi=aoi.geometry, scenes=items,
                provenance=provenance, overwrite=cfg.overwrite, composite=composite,
            )
            lap("export")
    lap("shutdown")
    n_valid = int((class_map.classes > 0).sum())
    return MapResult(
        cfg.out, files, grid, len(items), int(grid.inside_aoi.sum()), n_valid,
        blocks_total=len(blocks), blocks_computed=len(tasks), items=items,
        model_sha256=model.sha256, timings=timings,
    )
