"""The image a map was classified from: the cloud-free composite as a reflectance COG.

``composite.tif`` (written with ``landcover map --save-composite``) is what an analyst puts under
the land-cover layers in QGIS, draws training polygons over, and hands to
``landcover active-learn --imagery``. Bands are the model card's, in its order, named by it, as
uint16 DN = reflectance x 10,000 with 0 = no clear observation, the scale recorded per band, on
the map's 10 m grid over its extent; a model classified from 20 m reads gets each 20 m pixel it saw
as 2 x 2 grid pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import rasterio.windows
from odc.geo.geobox import GeoBox
from rasterio.enums import ColorInterp

DN_SCALE = 1e-4  # reflectance per DN, as Sentinel-2 L2A stores it
NODATA = 0
_TILE = 512


def reflectance_to_dn(block: np.ndarray) -> np.ndarray:
    """float32 reflectance (any shape) -> uint16 DN; NaN -> 0 (nodata), clear pixels >= 1."""
    dn = np.rint(np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0) / DN_SCALE)
    out = np.clip(dn, 1, np.iinfo(np.uint16).max).astype(np.uint16)
    out[~np.isfinite(block)] = NODATA
    return out


def core_dn(planes: np.ndarray, margin: int, shape: tuple[int, int], factor: int = 1) -> np.ndarray:
    """A block's composite without its margin, as uint16 DN on the map's grid: the reflectance
    bands of ``planes`` (the last plane, the clear count, is dropped) inside ``margin`` pixels,
    ``shape`` big, each pixel repeated ``factor`` times a side when the planes are that much
    coarser than the grid (the values are those the model saw). Runs on a worker, so only the
    block's own pixels travel to the client."""
    h, w = shape
    dn = reflectance_to_dn(planes[:-1, margin:margin + h, margin:margin + w])
    return dn if factor == 1 else dn.repeat(factor, axis=1).repeat(factor, axis=2)


class CompositeRaster:
    """``composite.tif`` written block by block as a streamed run classifies them: each block's
    composite lands in its window of a tiled scratch GeoTIFF (the client holds one block at a
    time); :meth:`finish` copies it into the COG. Named like staged files, so a killed run leaves
    nothing the next export does not sweep away."""

    def __init__(self, out_dir: Path, geobox: GeoBox, names: Sequence[str]) -> None:
        from pipeline.export.writer import scratch_path

        self.geobox, self.names = geobox, list(names)
        self.path = scratch_path(out_dir, "composite-scratch")
        h, w = geobox.shape
        # Uncompressed: blocks fill tiles in any order (see pipeline.export.writer).
        self._dst = rasterio.open(
            self.path, "w", driver="GTiff", width=w, height=h, count=len(self.names), dtype="uint16", nodata=NODATA,
            crs=geobox.crs.to_wkt(), transform=geobox.affine, tiled=True, blockxsize=_TILE, blockysize=_TILE,
            BIGTIFF="IF_SAFER",
        )

    def write(self, row: int, col: int, dn: np.ndarray) -> None:
        """Write a block's (bands, h, w) DN with its top-left pixel at (``row``, ``col``)."""
        self._dst.write(dn, window=rasterio.windows.Window(col, row, dn.shape[2], dn.shape[1]))

    def finish(self, path: Path) -> None:
        """Describe the bands and copy the scratch raster into the COG at ``path``."""
        dst = self._dst
        for k, name in enumerate(self.names, start=1):
            dst.set_band_description(k, f"{name} surface reflectance x 10000 (median of clear observations)")
        dst.scales = (DN_SCALE,) * len(self.names)
        if len(self.names) == 3:
            dst.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        dst.update_tags(source="landcover map --save-composite", scale=str(DN_SCALE), nodata="0 = no clear observation")
        dst.close()
        rasterio.shutil.copy(
            self.path, path, driver="COG", compress="DEFLATE", predictor="2", blocksize=str(_TILE),
            overview_resampling="AVERAGE", bigtiff="IF_SAFER",
        )

    def discard(self) -> None:
        self._dst.close()
        self.path.unlink(missing_ok=True)
