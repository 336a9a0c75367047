"""How well a map agrees with the demo world's ground truth, on cells the truth makes unambiguous.

A cell counts when one truth class covers at least ``dominance`` of its window; the map is right
there when its code is that class. Truth rasters are warped onto the map's own grid (nearest), so
cells of either UTM zone are judged the same way.

:func:`pixel_agreement` judges a written map on every 10 m truth pixel instead, so maps of any
cell size are compared on the same ground.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from models.classes import NUM_CLASSES
from pipeline.demo.world import DemoWorld


@dataclass(frozen=True)
class Agreement:
    dominated: int  # valid map cells whose truth is dominated by one class
    agree: int
    accuracy: float  # agree / dominated (NaN when no cell qualifies)
    dominance: float


def truth_on_grid(world: DemoWorld, geobox: GeoBox) -> np.ndarray:
    """The world's truth codes on ``geobox`` (0 where no tile covers it)."""
    out = np.zeros(geobox.shape, dtype=np.uint8)
    ny, nx = geobox.shape
    for tile in world.tiles:
        with rasterio.open(tile.truth_path) as src, WarpedVRT(
            src, crs=geobox.crs.to_wkt(), transform=geobox.affine, width=nx, height=ny,
            resampling=Resampling.nearest, nodata=0,
        ) as vrt:
            codes = vrt.read(1)
        out = np.where(out == 0, codes, out)
    return out


def dominant_truth(world: DemoWorld, cell_geobox: GeoBox, cell_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: the majority truth code and its share of the cell (10 m truth, ``cell_px`` a side)."""
    fine = cell_geobox.zoom_to(shape=(cell_geobox.shape[0] * cell_px, cell_geobox.shape[1] * cell_px))
    codes = truth_on_grid(world, fine)
    ny, nx = cell_geobox.shape
    blocks = codes.reshape(ny, cell_px, nx, cell_px).transpose(0, 2, 1, 3).reshape(ny, nx, -1)
    counts = np.stack([(blocks == c).sum(-1) for c in range(NUM_CLASSES + 1)], axis=-1)
    counts[..., 0] = 0  # no truth is never the answer
    major = counts.argmax(-1).astype(np.uint8)
    share = counts.max(-1) / blocks.shape[-1]
    return major, share


def map_agreement(classes: np.ndarray, cell_geobox: GeoBox, world: DemoWorld, *, cell_px: int,
                  dominance: float = 0.7) -> Agreement:
    major, share = dominant_truth(world, cell_geobox, cell_px)
    judged = (classes > 0) & (share >= dominance)
    agree = int((classes[judged] == major[judged]).sum())
    n = int(judged.sum())
    return Agreement(n, agree, agree / n if n else float("nan"), dominance)


@dataclass(frozen=True)
class PixelAgreement:
    pixels: int  # truth pixels (or samples of them) judged: truth known and the map has a class there
    agree: int
    fraction: float  # agree / pixels (NaN when none is judged)


def pixel_agreement(world: DemoWorld, landcover_tif: Path, *, step: int = 1) -> PixelAgreement:
    """Share of the world's 10 m truth pixels whose class the written map gives at their centre.

    Every ``step``-th truth pixel of each tile (row and column) is looked up in the map after
    transforming its centre to the map's CRS; map nodata (0) and truth 0 are not judged. Ground
    held by both UTM tiles is judged once, from the first tile that holds it, so the overlap
    does not count double.
    """
    from pyproj import Transformer

    with rasterio.open(landcover_tif) as src:
        codes = src.read(1)
        to_map_px = ~src.transform
        map_crs = src.crs.to_wkt()
        nodata = 0 if src.nodata is None else int(src.nodata)
    judged = agree = 0
    for k, tile in enumerate(world.tiles):
        with rasterio.open(tile.truth_path) as src:
            truth = src.read(1)[::step, ::step]
            transform, crs = src.transform, src.crs.to_wkt()
        rows, cols = np.mgrid[0:truth.shape[0], 0:truth.shape[1]]
        x, y = transform * ((cols * step + 0.5).ravel(), (rows * step + 0.5).ravel())
        keep = truth.ravel() > 0
        for earlier in world.tiles[:k]:
            keep &= ~_inside_tile(earlier, crs, x, y)
        mx, my = Transformer.from_crs(crs, map_crs, always_xy=True).transform(x[keep], y[keep])
        col, row = to_map_px * (np.asarray(mx), np.asarray(my))
        col, row = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
        on_map = (row >= 0) & (row < codes.shape[0]) & (col >= 0) & (col < codes.shape[1])
        mapped = np.zeros(len(row), dtype=codes.dtype)
        mapped[on_map] = codes[row[on_map], col[on_map]]
        valid = on_map & (mapped != nodata) & (mapped != 0)
        judged += int(valid.sum())
        agree += int((mapped[valid] == truth.ravel()[keep][valid]).sum())
    return PixelAgreement(judged, agree, agree / judged if judged else float("nan"))


def _inside_tile(tile, crs: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """bool: which points (in ``crs``) fall inside ``tile``'s footprint."""
    from pyproj import Transformer

    tx, ty = Transformer.from_crs(crs, tile.crs, always_xy=True).transform(x, y)
    west, south, east, north = tile.bounds
    return (tx >= west) & (tx < east) & (ty > south) & (ty <= north)


def write_truth_mosaic(world: DemoWorld, path: Path, *, resolution: float = 10.0) -> Path:
    """The world's truth with every tile on one grid, as a GeoTIFF of class codes (0 = no truth).

    The grid is the first tile's UTM zone at ``resolution`` metres over the union of the tiles;
    the other zones' truth is warped onto it (nearest). The result serves as the reference raster
    of ``landcover assess label`` over a map of the demo world, whichever zones the map spans.
    """
    from odc.geo.geobox import GeoBox
    from rasterio.warp import transform_bounds

    from models.files import atomic_write

    crs = world.tiles[0].crs
    boxes = [transform_bounds(tile.crs, crs, *tile.bounds, densify_pts=21) for tile in world.tiles]
    bbox = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    geobox = GeoBox.from_bbox(bbox, crs, resolution=resolution)
    codes = truth_on_grid(world, geobox)
    profile = {
        "driver": "GTiff", "width": geobox.shape.x, "height": geobox.shape.y, "count": 1, "dtype": "uint8",
        "crs": geobox.crs.to_wkt(), "transform": geobox.affine, "nodata": 0, "compress": "deflate",
        "tiled": True, "blockxsize": 256, "blockysize": 256,
    }

    def write(tmp: Path) -> None:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(codes, 1)
            dst.set_band_description(1, "demo world truth: land-cover class code (0 = no truth)")

    atomic_write(path, write)
    return path
