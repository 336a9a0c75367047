"""How well a map agrees with the demo world's ground truth, on cells the truth makes unambiguous.

A cell counts when one truth class covers at least ``dominance`` of its window; the map is right
there when its code is that class. Truth rasters are warped onto the map's own grid (nearest), so
cells of either UTM zone are judged the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

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
