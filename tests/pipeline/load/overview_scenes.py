"""Three noisy scenes whose COGs have 2x and 4x overviews, for reads coarser than the grid, and
their 20 m composite computed by hand."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pystac
import rasterio
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from rasterio.transform import from_origin

from pipeline.aoi import parse_aoi
from pipeline.load import composite_block
from pipeline.patches import PatchGrid, plan_grid

EPSG = 32632
X0, Y0 = 600_000.0, 5_100_000.0  # on the 40 m lattice, as Sentinel-2 tile corners are on the 20 m one
SIZE = 128  # 10 m pixels: COGs of 32 px blocks get 2x and 4x overviews; the SCL is 64 x 64 of 20 m
BANDS = ("red", "green", "blue")


def write_cog(path: Path, array: np.ndarray, resolution: float, overview_resampling: str) -> None:
    profile = dict(
        driver="COG", width=array.shape[1], height=array.shape[0], count=1, dtype=array.dtype, crs=f"EPSG:{EPSG}",
        transform=from_origin(X0, Y0, resolution, resolution), nodata=0, blocksize=32, compress="deflate",
        overview_resampling=overview_resampling,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def make_item(tmp_path: Path, item_id: str, rng: np.random.Generator) -> pystac.Item:
    """Noisy DN (so an AVERAGE overview differs from any other way of getting 20 m) and an SCL with clouds."""
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    xs, ys = to_lonlat.transform([X0, X0 + SIZE * 10, X0 + SIZE * 10, X0], [Y0, Y0, Y0 - SIZE * 10, Y0 - SIZE * 10])
    ring = [list(p) for p in zip(xs, ys, strict=True)]
    item = pystac.Item(item_id, {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
                       [min(xs), min(ys), max(xs), max(ys)], dt.datetime(2023, 6, 1, 10),
                       {"proj:epsg": EPSG, "s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True})
    scl = rng.choice(np.array([4, 4, 4, 5, 6, 9, 3], np.uint8), (SIZE // 2, SIZE // 2))
    assets = {band: (rng.integers(200, 4000, (SIZE, SIZE)).astype(np.uint16), 10, "average") for band in BANDS}
    assets["scl"] = (scl, 20, "nearest")
    for key, (array, res, ovr) in assets.items():
        path = tmp_path / f"{item_id}_{key}.tif"
        write_cog(path, array, res, ovr)
        n = SIZE * 10 // res
        item.add_asset(key, pystac.Asset(str(path), media_type=pystac.MediaType.COG, extra_fields={
            "proj:shape": [n, n], "proj:transform": list(from_origin(X0, Y0, res, res))[:6],
            "raster:bands": [{"data_type": str(array.dtype), "scale": 1e-4, "nodata": 0}],
        }))
    return item


def fine_geobox(row: int, col: int, height: int, width: int) -> GeoBox:
    """A 10 m geobox ``row``, ``col`` pixels into the scenes."""
    return GeoBox((height, width), from_origin(X0 + col * 10, Y0 - row * 10, 10, 10), f"EPSG:{EPSG}")


def overview_composite(items: list[pystac.Item]) -> np.ndarray:
    """The (4, 64, 64) composite of the scenes' 20 m overview level (SCL at its own 20 m), by hand."""
    stacks = []
    for key in (*BANDS, "scl"):
        level = {} if key == "scl" else {"overview_level": 0}
        frames = []
        for item in items:
            with rasterio.open(item.assets[key].href, **level) as src:
                frames.append(src.read(1))
        stacks.append(np.stack(frames))
    return composite_block(*stacks, offset_dn=np.zeros(len(items), np.float32),
                           scales=np.full((len(BANDS), len(items)), 1e-4, np.float32))


def cells_grid() -> PatchGrid:
    """6 x 6 cells of 80 m well inside the scenes, 2 x 2 cells per block."""
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    left, top = X0 + 200, Y0 - 200
    right, bottom = left + 480 - 20, top - 480 + 20
    ring = [to_lonlat.transform(x, y) for x, y in [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]]
    return plan_grid(parse_aoi({"type": "Polygon", "coordinates": [ring]}), crs=f"EPSG:{EPSG}", window_px=12,
                     stride_px=8, cells_per_chunk=2)
