"""The map as strata: how many cells each class holds, and where its k-th cell is.

The class raster is read in strips of whole rows, so a map of any size is counted and searched
with memory bounded by the strip, never by the map. Cells of a class are numbered in raster order
(row by row), the same order in both passes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from pipeline.errors import LandcoverError

_STRIP_CELLS = 1 << 22  # cells read at a time (4 MiB of uint8 codes)


class MapReadError(LandcoverError):
    """The map's class raster cannot be used as strata."""


@dataclass(frozen=True)
class MapGrid:
    """The class raster's grid: CRS (WKT), transform, shape and square cell size in metres."""

    crs: str
    transform: Affine
    shape: tuple[int, int]
    nodata: int

    @property
    def cell_m(self) -> float:
        return abs(self.transform.a)

    @property
    def cell_ha(self) -> float:
        return abs(self.transform.a * self.transform.e) / 10_000.0


def map_grid(tif: Path) -> MapGrid:
    """The grid of ``tif``; refuses rotated, non-square or geographic grids (areas need metres)."""
    try:
        with rasterio.open(tif) as src:
            crs, transform, shape = src.crs, src.transform, (src.height, src.width)
            nodata = 0 if src.nodata is None else int(src.nodata)
    except rasterio.errors.RasterioIOError as exc:
        raise MapReadError(f"cannot read {tif} ({exc}); give the folder of a map made by `landcover map`") from None
    if crs is None or crs.is_geographic or transform.b or transform.d or abs(transform.a) != abs(transform.e):
        raise MapReadError(f"{tif} is not on a north-up grid of square cells in metres; areas and points need one")
    return MapGrid(crs.to_wkt(), transform, shape, nodata)


def _strips(tif: Path) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, codes) of consecutive strips of whole rows."""
    with rasterio.open(tif) as src:
        rows = max(1, _STRIP_CELLS // max(src.width, 1))
        for top in range(0, src.height, rows):
            height = min(rows, src.height - top)
            yield top, src.read(1, window=Window(0, top, src.width, height))


def count_cells(tif: Path) -> np.ndarray:
    """(256,) cells of each code 0..255 (uint8 class codes; nodata included at its code)."""
    counts = np.zeros(256, dtype=np.int64)
    for _, codes in _strips(tif):
        counts += np.bincount(codes.ravel().astype(np.int64), minlength=256)[:256]
    return counts


def locate_cells(tif: Path, ranks: Mapping[int, np.ndarray]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """(rows, cols) of the cells of each code at the given ranks (0-based, raster order).

    ranks: code -> ranks among that code's cells, in any order; the result keeps that order.
    """
    wanted = {code: np.asarray(r, dtype=np.int64) for code, r in ranks.items()}
    order = {code: np.argsort(r, kind="stable") for code, r in wanted.items()}
    found = {code: (np.empty(len(r), np.int64), np.empty(len(r), np.int64)) for code, r in wanted.items()}
    seen = dict.fromkeys(wanted, 0)  # cells of each code in the strips before this one
    for top, codes in _strips(tif):
        flat = codes.ravel()
        for code, r in wanted.items():
            where = np.flatnonzero(flat == code)
            sorted_ranks = r[order[code]]
            lo, hi = np.searchsorted(sorted_ranks, [seen[code], seen[code] + len(where)])
            if hi > lo:
                picks = where[sorted_ranks[lo:hi] - seen[code]]
                slots = order[code][lo:hi]
                found[code][0][slots] = top + picks // codes.shape[1]
                found[code][1][slots] = picks % codes.shape[1]
            seen[code] += len(where)
    short = [code for code, r in wanted.items() if len(r) and r.max() >= seen[code]]
    if short:
        raise MapReadError(f"{tif} changed while it was read (class {short[0]} has fewer cells); run the command again")
    return found
