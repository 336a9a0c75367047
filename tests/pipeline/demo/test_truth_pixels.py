"""Judging a written map on every 10 m truth pixel of the demo world."""

from __future__ import annotations

import numpy as np
import rasterio
from affine import Affine

from pipeline.demo.truth import pixel_agreement


def write_like_truth(path, world, *, shift_px: int = 0, codes=None):
    """The first tile's truth raster rewritten as a landcover.tif, optionally shifted east by ``shift_px``."""
    with rasterio.open(world.tiles[0].truth_path) as src:
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8", crs=src.crs,
                       transform=src.transform * Affine.translation(shift_px, 0), nodata=0)
        data = src.read(1) if codes is None else codes(src.read(1))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def test_the_truth_itself_agrees_on_every_pixel_and_a_shifted_copy_does_not(demo_world, tmp_path):
    same = pixel_agreement(demo_world, write_like_truth(tmp_path / "same.tif", demo_world), step=2)
    assert same.pixels > 0 and same.fraction == 1.0
    shifted = pixel_agreement(demo_world, write_like_truth(tmp_path / "shifted.tif", demo_world, shift_px=30), step=2)
    assert shifted.fraction < 0.97


def test_map_nodata_is_not_judged(demo_world, tmp_path):
    empty = write_like_truth(tmp_path / "empty.tif", demo_world, codes=np.zeros_like)
    result = pixel_agreement(demo_world, empty, step=4)
    assert result.pixels == 0 and np.isnan(result.fraction)


def test_ground_held_by_both_tiles_is_judged_once(demo_world, tmp_path):
    # A map in the first tile's CRS over both tiles: every truth pixel of the first tile is judged,
    # and of the second only those outside the first tile's footprint (the tiles overlap by ~30%).
    import shapely
    from pyproj import Transformer

    first, second = demo_world.tiles
    with rasterio.open(first.truth_path) as src:
        t, w, h = src.transform, src.width, src.height
        first_pixels = int((src.read(1)[::4, ::4] > 0).sum())
    wide = tmp_path / "wide.tif"
    with rasterio.open(wide, "w", driver="GTiff", width=3 * w, height=3 * h, count=1, dtype="uint8", crs=first.crs,
                       transform=t * Affine.translation(0, -h), nodata=0) as dst:
        dst.write(np.full((3 * h, 3 * w), 19, np.uint8), 1)
    # The second tile's pixels outside the first tile's footprint, by a polygon test in its own CRS.
    to_second = Transformer.from_crs(first.crs, second.crs, always_xy=True)
    footprint = shapely.transform(shapely.segmentize(shapely.box(*first.bounds), 100.0),
                                  lambda xy: np.column_stack(to_second.transform(xy[:, 0], xy[:, 1])))
    with rasterio.open(second.truth_path) as src:
        truth = src.read(1)[::4, ::4]
        rows, cols = np.nonzero(truth > 0)
        x, y = src.transform * (cols * 4 + 0.5, rows * 4 + 0.5)
    outside = int((~shapely.contains_xy(footprint, x, y)).sum())
    assert 0 < outside < len(rows)  # the tiles do overlap
    result = pixel_agreement(demo_world, wide, step=4)
    assert abs(result.pixels - (first_pixels + outside)) <= 0.002 * result.pixels
