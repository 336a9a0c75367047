"""Small synthetic maps on a UTM grid for the export tests."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pystac
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from shapely.geometry import mapping

from models.classes import NUM_CLASSES
from pipeline.export import Provenance
from pipeline.mosaic import ClassMap, mosaic

CELL = 1200.0
ORIGIN = (500_000.0, 5_048_000.0)  # top-left corner, EPSG:32633
CRS = "EPSG:32633"


def utm_grid(ny: int, nx: int, cell: float = CELL) -> GeoBox:
    return GeoBox((ny, nx), Affine(cell, 0, ORIGIN[0], 0, -cell, ORIGIN[1]), CRS)


def class_map_from(winners: np.ndarray, clear=None, inside=None, winner_prob=0.7) -> ClassMap:
    """A ClassMap through the real mosaic: 0-based winner per cell (-1: never computed) with
    probability ``winner_prob`` (scalar or per cell), the rest spread evenly."""
    ny, nx = winners.shape
    winner_prob = np.broadcast_to(np.asarray(winner_prob, dtype=np.float32), (ny, nx))
    probs = np.broadcast_to((1 - winner_prob) / (NUM_CLASSES - 1), (NUM_CLASSES, ny, nx)).copy()
    np.put_along_axis(probs, np.clip(winners, 0, None)[None], winner_prob[None], axis=0)
    probs[:, winners < 0] = np.nan
    clear = np.ones((ny, nx), np.float32) if clear is None else clear
    inside = np.ones((ny, nx), bool) if inside is None else inside
    return mosaic(probs, clear, inside, min_clear=0.5)


def blocks_map(ny: int = 40, nx: int = 50) -> ClassMap:
    """Blocks of 10 x 10 cells cycling through the classes; the three west columns are outside
    the AOI and a speckle of cells is too cloudy, so the map has nodata in both ways."""
    rows, cols = np.mgrid[0:ny, 0:nx]
    winners = (cols // 10 + 3 * (rows // 10)) % NUM_CLASSES
    clear = np.where((rows * 7 + cols * 3) % 11 == 0, 0.2, 0.9).astype(np.float32)
    inside = cols >= 3
    return class_map_from(winners, clear, inside)


def scene_item(item_id: str, when: datetime, bbox: tuple[float, float, float, float], tile: str) -> pystac.Item:
    item = pystac.Item(
        item_id, mapping(shapely.box(*bbox)), list(bbox), when,
        {"eo:cloud_cover": 12.5, "s2:mgrs_tile": tile, "platform": "sentinel-2a"},
        collection="sentinel-2-l2a",
    )
    item.set_self_href(f"https://earth-search.aws.element84.com/v1/collections/sentinel-2-l2a/items/{item_id}")
    return item


def make_provenance(scenes, synthetic: bool = True) -> Provenance:
    return Provenance(
        input_items=[s.id for s in scenes],
        model_id="small/demo",
        model_sha256="ab" * 32,
        model_card={"profile": "small", "classes": NUM_CLASSES},
        software_version="0.1.0",
        parameters={"min_clear": 0.5, "stride": None, "source": "local"},
        synthetic_model=synthetic,
    )


AOI = shapely.box(15.02, 45.1, 15.6, 45.4)  # lon/lat, inside the grid


def two_scenes() -> list[pystac.Item]:
    return [
        scene_item("S2A_33TWL_20240601_0_L2A", datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc), (14.9, 45.0, 15.9, 45.5), "33TWL"),
        scene_item("S2B_33TWL_20240611_0_L2A", datetime(2024, 6, 11, 10, 0, tzinfo=timezone.utc), (14.9, 45.0, 15.9, 45.5), "33TWL"),
    ]
