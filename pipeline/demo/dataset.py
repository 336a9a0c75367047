"""Labelled training windows cut out of the demo world: the loader of the ``demo-world`` source.

models/ trains on the demo world without importing pipeline/: the command line
(``cli.main``) hands :func:`demo_world_source` to ``cli.train.register`` as the loader
of the ``demo-world`` source named in training configs. The composite follows the mapper's own
rules (:mod:`pipeline.load`), so the training data look like what the mapper feeds the model.

torch (via :mod:`models.datasets`) and dask/odc-stac (via :mod:`pipeline.load`) are imported when
data are loaded, not when the CLI mounts this loader.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

from pipeline.demo.world import DemoWorld, generate_world

if TYPE_CHECKING:
    from models.datasets import PatchSet
    from models.training.config import DataSpec
    from models.training.timm import WindowSet

RGB_ASSETS: tuple[str, ...] = ("red", "green", "blue")  # B04, B03, B02: the seed's input, in its order


def tile_composite(
    items: Sequence[Any], truth_path: Path, bands: Sequence[str] = RGB_ASSETS
) -> tuple[np.ndarray, Any, Any]:
    """(bands, H, W) float32 median of the clear reflectance of a tile's items on its truth grid,
    with the truth raster's transform and CRS.

    ``bands`` are Earth Search v1 asset keys, returned in that order (the demo world has blue,
    green, red, rededge1..3, nir, nir08, swir16, swir22). Uses the pipeline's own rules: per-item
    BOA offset (metadata, then the dark-pixel check), raster:bands scale per asset, the SCL mask
    and a NaN-median over time. A pixel of a date counts as clear where the SCL does not mask it
    and no asked band is nodata (DN 0); never-clear pixels are NaN. Every raster is read whole
    onto the truth grid (the demo world's assets share its extent): a band at the grid's
    resolution with bilinear resampling (a plain read), a coarser one (the 20 m bands, the SCL)
    with NEAREST, so each 20 m pixel fills its 2 x 2 10 m pixels unblended.
    """
    from models.datasets import DatasetError
    from pipeline.load import MASK_SCL, band_scale, item_offsets, median_composite

    items, bands = list(items), tuple(bands)
    if not bands:
        raise DatasetError("tile_composite needs at least one band (an Earth Search asset key such as 'red')")
    with rasterio.open(truth_path) as src:
        shape, transform, crs = (src.height, src.width), src.transform, src.crs
    offsets = item_offsets(items, bands=bands)
    stack = []
    for item in items:
        if item.id not in offsets:  # unreadable or lacking an asset: item_offsets warned
            continue
        assets = item.assets
        with rasterio.open(assets["scl"].href) as src:
            scl = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        clear = ~np.isin(scl, list(MASK_SCL))
        planes = []
        for band in bands:
            with rasterio.open(assets[band].href) as src:
                coarser = src.height < shape[0] or src.width < shape[1]
                resampling = Resampling.nearest if coarser else Resampling.bilinear
                dn = src.read(1, out_shape=shape, resampling=resampling)
            clear &= dn != 0
            planes.append((dn.astype(np.float32) - offsets[item.id]) * np.float32(band_scale(item, band)))
        stack.append(np.where(clear, np.stack(planes), np.nan))
    if not stack:
        raise DatasetError(f"no readable scene for the tile of {truth_path}: regenerate the demo world")
    return median_composite(np.stack(stack), axis=0), transform, crs


def demo_world_patches(
    world: DemoWorld,
    *,
    window: int | None = None,
    stride: int | None = None,
    min_share: float = 0.1,
    keep_windows: bool = False,
    block_m: float | None = None,
) -> PatchSet:
    """Labelled windows (seed RGB input) of every tile of a generated demo world.

    ``window`` and ``stride`` default to the seed's 120 px (``models.datasets.WINDOW_PX``).
    Patch ids and groups carry the world (seed and size) and tile, so worlds of different
    seeds - different landscapes on the same coordinates - never mix in a split.
    """
    import pystac

    from models.datasets import WINDOW_PX, PatchSet, patches_from_raster

    window = WINDOW_PX if window is None else window
    stride = WINDOW_PX if stride is None else stride
    world_tag = f"world-s{world.seed}-{world.size_px}"
    items = [pystac.Item.from_dict(d) for d in world.items()]
    sets = []
    for tile in world.tiles:
        tile_items = [it for it in items if it.properties.get("s2:mgrs_tile") == tile.mgrs]
        refl, transform, crs = tile_composite(tile_items, tile.truth_path)
        with rasterio.open(tile.truth_path) as src:
            truth = src.read(1)
        dates = sorted(it.datetime.strftime("%Y%m%d") for it in tile_items if it.datetime)
        source = f"{world_tag}/{tile.mgrs}"
        ps = patches_from_raster(refl, truth, source=source, transform=transform, crs=crs, window=window,
                                 stride=stride, block_m=block_m, min_share=min_share, keep_windows=keep_windows)
        if block_m:
            ps.groups = [f"{world_tag}/{g}" for g in ps.groups]
        ps.ids = [f"{i}@{dates[0]}-{dates[-1]}" for i in ps.ids] if dates else ps.ids
        sets.append(ps)
    return PatchSet.concat(sets)


def demo_world_source(spec: DataSpec, keep_windows: bool = False) -> PatchSet:
    """The ``demo-world`` training source: the world the spec names (``path``: its cache folder,
    ``world_seed``, ``world_size_px``; generated when missing) cut into labelled windows.

    A ``models.training.sources.SourceLoader``: the CLI passes it to ``cli.train.register``; group
    selection and the empty-result check stay with ``models.training.sources.load_source``.
    """
    world = generate_world(spec.path, size_px=spec.world_size_px, seed=spec.world_seed)
    return demo_world_patches(world, window=spec.window, stride=spec.stride, min_share=spec.min_share,
                              keep_windows=keep_windows, block_m=spec.block_m)


def demo_world_windows(
    world: DemoWorld,
    bands: Sequence[str],
    *,
    window: int = 120,
    stride: int = 120,
    min_share: float = 0.1,
    min_valid: float = 0.9,
) -> WindowSet:
    """Multi-band reflectance windows of every tile, multi-label: every class covering at least
    ``min_share`` of a window (and its majority class) is present. For the timm family
    (``models.training.timm``); ids and groups name the world and tile as :func:`demo_world_patches` does.
    """
    import pystac

    from models.datasets import window_label, window_origins
    from models.training.timm import WindowSet

    world_tag = f"world-s{world.seed}-{world.size_px}"
    items = [pystac.Item.from_dict(d) for d in world.items()]
    windows, targets, ids, groups = [], [], [], []
    for tile in world.tiles:
        tile_items = [it for it in items if it.properties.get("s2:mgrs_tile") == tile.mgrs]
        refl, _, _ = tile_composite(tile_items, tile.truth_path, bands=bands)
        with rasterio.open(tile.truth_path) as src:
            truth = src.read(1)
        finite = np.isfinite(refl).all(axis=0)
        source = f"{world_tag}/{tile.mgrs}"
        for r, c in window_origins(truth.shape, window, stride):
            codes = truth[r:r + window, c:c + window]
            label = window_label(codes, min_share)
            usable = (codes > 0) & finite[r:r + window, c:c + window]
            if label.majority < 0 or usable.mean() < min_valid:
                continue  # a nodata-heavy window is no evidence of any class
            windows.append(refl[:, r:r + window, c:c + window])
            targets.append(label.multi_hot)
            ids.append(f"{source}/r{r}_c{c}")
            groups.append(source)
    if not windows:
        from models.datasets import DatasetError

        raise DatasetError(f"the demo world {world_tag} yields no {window} px window with labels; generate a larger world")
    return WindowSet(np.stack(windows).astype(np.float32), np.stack(targets).astype(np.float32), ids, groups)


def demo_world_window_source(spec: DataSpec, bands: Sequence[str]) -> WindowSet:
    """The ``demo-world`` source of timm-family training configs (``models.training.timm``)."""
    world = generate_world(spec.path, size_px=spec.world_size_px, seed=spec.world_seed)
    windows = demo_world_windows(world, bands, window=spec.window, stride=spec.stride, min_share=spec.min_share)
    if spec.groups is not None or spec.exclude_groups:
        from models.training.timm import select_groups

        windows = select_groups(windows, spec.groups, spec.exclude_groups)
    return windows
