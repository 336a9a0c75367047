"""Three tiny scenes of one tile as real COGs (one harmonised, one carrying +1000 DN, one whose
flag lies), the grids the load tests read them onto, and their composite computed by hand."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pystac
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from pipeline.aoi import parse_aoi
from pipeline.load import median_composite
from pipeline.patches import PatchGrid, plan_grid
from pipeline.radiometry import BOA_OFFSET_DN

EPSG = 32632
X0, Y0 = 599_900.0, 5_100_100.0  # upper-left of every scene raster (on the 20 m SCL grid too)
SIZE = 64  # 10 m pixels; SCL has 32 x 32 of 20 m
BASE_DN = {"red": 500, "green": 600, "blue": 700}  # reflectance x 1e4 before each scene's delta


def write_cog(path: Path, array: np.ndarray, resolution: float) -> None:
    profile = dict(
        driver="COG", width=array.shape[1], height=array.shape[0], count=1, dtype=array.dtype, crs=f"EPSG:{EPSG}",
        transform=from_origin(X0, Y0, resolution, resolution), nodata=0, blocksize=32, compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def footprint() -> tuple[dict, list[float]]:
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    xs, ys = to_lonlat.transform([X0, X0 + SIZE * 10, X0 + SIZE * 10, X0], [Y0, Y0, Y0 - SIZE * 10, Y0 - SIZE * 10])
    ring = [list(p) for p in zip(xs, ys, strict=True)]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}, [min(xs), min(ys), max(xs), max(ys)]


def make_scene(tmp_path: Path, item_id: str, *, delta: int, pixel_offset: int, properties: dict, scl20: np.ndarray,
               zero_bands: dict | None = None) -> tuple[pystac.Item, np.ndarray]:
    """A scene whose band DN are BASE_DN + delta + pixel_offset (0 where scl is 0 or zero_bands says)."""
    geometry, bbox = footprint()
    item = pystac.Item(item_id, geometry, bbox, dt.datetime(2023, 6, 1, 10), {"proj:epsg": EPSG, **properties})
    scl10 = np.kron(scl20, np.ones((2, 2), dtype=np.uint8))
    for band, base in BASE_DN.items():
        dn = np.full((SIZE, SIZE), base + delta + pixel_offset, dtype=np.uint16)
        dn[scl10 == 0] = 0
        if zero_bands is not None and band in zero_bands:
            dn[zero_bands[band]] = 0
        write_cog(tmp_path / f"{item_id}_{band}.tif", dn, 10)
        add_asset(item, band, tmp_path / f"{item_id}_{band}.tif", 10, {"scale": 1e-4, "offset": -0.1, "nodata": 0})
    write_cog(tmp_path / f"{item_id}_scl.tif", scl20, 20)
    add_asset(item, "scl", tmp_path / f"{item_id}_scl.tif", 20, {"nodata": 0})
    return item, scl10


def add_asset(item: pystac.Item, key: str, path: Path, resolution: int, raster_band: dict) -> None:
    n = SIZE * 10 // resolution
    item.add_asset(key, pystac.Asset(str(path), media_type=pystac.MediaType.COG, extra_fields={
        "proj:shape": [n, n],
        "proj:transform": list(from_origin(X0, Y0, resolution, resolution))[:6],
        "raster:bands": [{"data_type": "uint16" if key != "scl" else "uint8", **raster_band}],
    }))


def three_scenes(tmp_path: Path) -> dict:
    """Three scenes of one tile: one harmonised, one carrying +1000 DN, one whose flag lies."""
    new_baseline = {"s2:processing_baseline": "05.09"}
    scl_a = np.full((32, 32), 4, np.uint8)
    scl_a[0:10, 0:16] = 9  # cloud high
    scl_b = np.full((32, 32), 6, np.uint8)
    scl_b[0:10, 5:20] = 3  # cloud shadow
    scl_c = np.full((32, 32), 4, np.uint8)
    scl_c[5:7, 10:15] = 8  # cloud medium: with a and b, 10 m rows 10-13 / cols 20-29 are never clear
    rows, cols = np.mgrid[0:32, 0:32]
    scl_c[cols < rows - 20] = 0  # a swath-edge nodata wedge
    blue_gap = np.zeros((SIZE, SIZE), dtype=bool)
    blue_gap[30:34, 50:54] = True  # blue DN 0 although the SCL calls it clear
    a, scl10_a = make_scene(tmp_path, "a_harmonised", delta=0, pixel_offset=0, scl20=scl_a,
                            properties={**new_baseline, "earthsearch:boa_offset_applied": True})
    b, scl10_b = make_scene(tmp_path, "b_offset", delta=200, pixel_offset=BOA_OFFSET_DN, scl20=scl_b, properties=new_baseline)
    c, scl10_c = make_scene(tmp_path, "c_wrong_flag", delta=100, pixel_offset=BOA_OFFSET_DN, scl20=scl_c,
                            properties={**new_baseline, "earthsearch:boa_offset_applied": True}, zero_bands={"blue": blue_gap})
    return {"items": [a, b, c], "scl10": [scl10_a, scl10_b, scl10_c], "deltas": [0, 200, 100], "blue_gap": blue_gap}


def small_grid(window_px: int = 12, stride_px: int = 8) -> PatchGrid:
    """6 x 6 cells of stride_px x 10 m inside the scenes, in the scenes' own CRS."""
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    # Inset by 20 m so the bowed lon/lat edges stay inside the 6 x 6 cells.
    left, top = 600_000.0 + 20, 5_100_000.0 - 20
    right, bottom = left + 6 * stride_px * 10 - 40, top - 6 * stride_px * 10 + 40
    ring = [to_lonlat.transform(x, y) for x, y in [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]]
    aoi = parse_aoi({"type": "Polygon", "coordinates": [ring]})
    return plan_grid(aoi, crs=f"EPSG:{EPSG}", window_px=window_px, stride_px=stride_px, cells_per_chunk=2)


def expected_composite(scenes: dict, window: tuple[slice, slice]) -> dict[str, np.ndarray]:
    """The composite computed directly from how the scenes were built, on the loaded window."""
    reflectance = {band: [] for band in BASE_DN}
    clear_all = []
    for item, scl10, delta in zip(scenes["items"], scenes["scl10"], scenes["deltas"], strict=True):
        clear = ~np.isin(scl10, (0, 1, 3, 8, 9, 10))
        if item.id == "c_wrong_flag":
            clear &= ~scenes["blue_gap"]
        clear_all.append(clear)
        for band, base in BASE_DN.items():
            reflectance[band].append(np.where(clear, (base + delta) * 1e-4, np.nan))
    rows, cols = window
    out = {band: median_composite(np.stack(stack), axis=0)[rows, cols] for band, stack in reflectance.items()}
    out["clear_count"] = np.sum(clear_all, axis=0)[rows, cols]
    return out
