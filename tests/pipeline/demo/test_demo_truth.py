"""Judging a map against the demo world's truth."""

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox

from pipeline.demo.truth import dominant_truth, map_agreement


def _tile_cells(world, cell_px=120):
    tile = world.tiles[0]
    with rasterio.open(tile.truth_path) as src:
        fine = GeoBox((src.height, src.width), src.transform, src.crs)
        truth = src.read(1)
    assert src.height % cell_px == 0 and src.width % cell_px == 0
    return fine.zoom_to(shape=(src.height // cell_px, src.width // cell_px)), truth


def test_truth_itself_agrees_perfectly_and_a_shuffled_map_does_not(demo_world):
    cells, truth = _tile_cells(demo_world)
    major, share = dominant_truth(demo_world, cells, 120)
    # Cell majorities computed by hand from the tile's own truth raster.
    ny, nx = cells.shape
    blocks = truth.reshape(ny, 120, nx, 120).transpose(0, 2, 1, 3).reshape(ny, nx, -1)
    by_hand = np.array([[np.bincount(b[b > 0], minlength=20).argmax() for b in row] for row in blocks])
    np.testing.assert_array_equal(major, by_hand)
    perfect = map_agreement(major, cells, demo_world, cell_px=120)
    assert perfect.dominated > 0 and perfect.accuracy == 1.0
    wrong = map_agreement(np.where(major == 19, 18, 19).astype(np.uint8), cells, demo_world, cell_px=120)
    assert wrong.accuracy < 0.5


def test_nodata_cells_are_not_judged(demo_world):
    cells, _ = _tile_cells(demo_world)
    none = map_agreement(np.zeros(cells.shape, np.uint8), cells, demo_world, cell_px=120)
    assert none.dominated == 0 and np.isnan(none.accuracy)
