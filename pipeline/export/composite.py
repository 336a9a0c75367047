"""The image a map was classified from: the cloud-free composite as a reflectance COG.

``composite.tif`` (written with ``landcover map --save-composite``) is what an analyst puts under
the land-cover layers in QGIS, draws training polygons over, and hands to
``landcover active-learn --imagery``. Bands are the model card's, in its order, named by it, as
uint16 DN = reflectance x 10,000 with 0 = no clear observation, the scale recorded per band, on
the map's 10 m grid over its extent; a model classified from 20 m reads gets each 20 m pixel it saw
as 2 x 2 grid pixels.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import rasterio.windows
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.enums import ColorInterp
from rasterio.io import MemoryFile

from pipeline.export.writer import scratch_path

DN_SCALE = 1e-4  # reflectance per DN, as Sentinel-2 L2A stores it
NODATA = 0
_TILE = 512
# GDAL's block cache while composite.tif is written (blocks, overviews, the COG copy): each pixel
# is taken about once, so a cache over a few band tiles buys nothing, and the client's peak grows
# with whatever the cache fills to. Under the export's 32 MiB a block of 350 px a side (a 144 km²
# AOI) filled 20 MiB of tiles; a 10-band copy of 1200 px a side peaked 8 MiB higher with 8 MiB.
COMPOSITE_CACHE_BYTES = 4 * 2**20


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


def overview_sizes(width: int, height: int, block: int = _TILE) -> list[tuple[int, int]]:
    """The (width, height) of each overview level GDAL's COG driver gives a ``width`` x ``height``
    raster of ``block`` px tiles: halved (rounding down) until both sides fit one tile."""
    sizes, factor = [], 1
    while max(width // factor, height // factor) > block:
        factor *= 2
        sizes.append((width // factor, height // factor))
    return sizes


def average_vrt(source: Path, source_size: tuple[int, int], size: tuple[int, int], bands: int,
                transform: Affine) -> str:
    """A VRT of ``source`` (uint16, ``source_size``) averaged down to ``size`` (its pixels on
    ``transform``), nodata (0) left out of each average: GDAL's AVERAGE overview of it, value for
    value (a ``ComplexSource`` with ``NODATA``: a plain ``SimpleSource`` averages the zeros in),
    readable a window at a time."""
    (sw, sh), (w, h) = source_size, size
    vrt = ET.Element("VRTDataset", rasterXSize=str(w), rasterYSize=str(h))
    ET.SubElement(vrt, "GeoTransform").text = ", ".join(repr(v) for v in transform.to_gdal())
    for b in range(1, bands + 1):
        band = ET.SubElement(vrt, "VRTRasterBand", dataType="UInt16", band=str(b))
        ET.SubElement(band, "NoDataValue").text = str(NODATA)
        src = ET.SubElement(band, "ComplexSource", resampling="average")
        ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = str(source)
        ET.SubElement(src, "SourceBand").text = str(b)
        ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(sw), ySize=str(sh))
        ET.SubElement(src, "DstRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
        ET.SubElement(src, "NODATA").text = str(NODATA)
    return ET.tostring(vrt, encoding="unicode")


def tiles(width: int, height: int, tile: int = _TILE) -> Iterator[rasterio.windows.Window]:
    """The ``tile`` px windows covering a ``width`` x ``height`` raster, row by row."""
    for row in range(0, height, tile):
        for col in range(0, width, tile):
            yield rasterio.windows.Window(col, row, min(tile, width - col), min(tile, height - row))


def write_average_level(source: Path, path: Path, size: tuple[int, int], bands: int) -> None:
    """Write the overview of ``source`` at ``size`` (see :func:`average_vrt`) to an uncompressed
    tiled scratch GeoTIFF at ``path``, a tile at a time, each tile read in pieces that span about
    one tile of ``source``: the memory it takes does not depend on the raster's size or the level."""
    w, h = size
    with rasterio.open(source) as src:
        source_size, crs = (src.width, src.height), src.crs
        transform = src.transform * Affine.scale(src.width / w, src.height / h)
    piece = max(1, _TILE * w // source_size[0])  # output pixels a side whose source is about one tile
    # One band per plane: the COG copy keeps a tile buffer per overview it reads, all bands' for a
    # pixel-interleaved level (measured: ~13 MiB a level for 10 bands; ~4 MiB band-interleaved).
    with rasterio.open(average_vrt(source, source_size, size, bands, transform)) as vrt, rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=bands, dtype="uint16", nodata=NODATA, crs=crs,
        transform=transform, tiled=True, blockxsize=_TILE, blockysize=_TILE, interleave="band", BIGTIFF="IF_SAFER",
    ) as dst:
        for window in tiles(w, h):
            out = np.empty((bands, window.height, window.width), np.uint16)
            for part in tiles(window.width, window.height, piece):
                out[:, part.row_off:part.row_off + part.height, part.col_off:part.col_off + part.width] = vrt.read(
                    window=rasterio.windows.Window(window.col_off + part.col_off, window.row_off + part.row_off,
                                                   part.width, part.height))
            dst.write(out, window=window)


def with_overviews(vrt_xml: str, levels: Sequence[Path]) -> str:
    """``vrt_xml`` with each band given ``levels`` (rasters of the same bands, largest first) as
    its overviews."""
    vrt = ET.fromstring(vrt_xml)
    for band in vrt.iter("VRTRasterBand"):
        for level in levels:
            overview = ET.SubElement(band, "Overview")
            ET.SubElement(overview, "SourceFilename", relativeToVRT="0").text = str(level)
            ET.SubElement(overview, "SourceBand").text = band.get("band")
    return ET.tostring(vrt, encoding="unicode")


def _vrt_of(path: Path) -> str:
    """GDAL's VRT of the raster at ``path`` (its georeferencing, nodata, band descriptions, scales,
    colour interpretation and tags), made in memory."""
    with MemoryFile(ext=".vrt") as mem:
        rasterio.shutil.copy(path, mem.name, driver="VRT")
        return mem.read().decode()


class CompositeRaster:
    """``composite.tif`` written block by block as a streamed run classifies them: each block's
    composite lands in its window of a tiled scratch GeoTIFF (the client holds one block at a
    time); :meth:`finish` writes its overview levels a tile at a time and copies it, with them,
    into the COG. Scratch rasters are named like staged files, so a killed run leaves nothing the
    next export does not sweep away."""

    def __init__(self, out_dir: Path, geobox: GeoBox, names: Sequence[str]) -> None:
        self.geobox, self.names = geobox, list(names)
        self.path = scratch_path(out_dir, "composite-scratch")
        self._levels: list[Path] = []  # the overview scratch rasters, largest first, once finish writes them
        h, w = geobox.shape
        # Uncompressed: blocks fill tiles in any order (see pipeline.export.writer). One band per
        # plane: reading a band for an overview then reads that band's tiles only.
        rasterio.open(
            self.path, "w", driver="GTiff", width=w, height=h, count=len(self.names), dtype="uint16", nodata=NODATA,
            crs=geobox.crs.to_wkt(), transform=geobox.affine, tiled=True, blockxsize=_TILE, blockysize=_TILE,
            interleave="band", BIGTIFF="IF_SAFER",
        ).close()

    def write(self, row: int, col: int, dn: np.ndarray) -> None:
        """Write a block's (bands, h, w) DN with its top-left pixel at (``row``, ``col``)."""
        # Opened per block under a small cache: closing hands the block's tiles to the file. Held
        # open, the scratch's dirty tiles stayed in GDAL's block cache until it filled (32 MiB
        # under the export's cap), so the client grew with the composite up to that size.
        with rasterio.Env(GDAL_CACHEMAX=COMPOSITE_CACHE_BYTES), rasterio.open(self.path, "r+") as dst:
            dst.write(dn, window=rasterio.windows.Window(col, row, dn.shape[2], dn.shape[1]))

    def finish(self, path: Path) -> None:
        """Describe the bands, write the overviews, and copy the scratch raster into the COG at ``path``."""
        with rasterio.open(self.path, "r+") as dst:
            for k, name in enumerate(self.names, start=1):
                dst.set_band_description(k, f"{name} surface reflectance x 10000 (median of clear observations)")
            dst.scales = (DN_SCALE,) * len(self.names)
            if len(self.names) == 3:
                dst.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
            dst.update_tags(source="landcover map --save-composite", scale=str(DN_SCALE), nodata="0 = no clear observation")
        # The COG driver's own overviews take memory that grows with the raster (a 10-band copy:
        # +35 MiB from 600 to 2100 px a side with a 4 MiB block cache; none without overviews),
        # so the same levels are written here a tile at a time and the copy only takes them over.
        # Each level averages the full-resolution pixels it covers: GDAL's choice for a 10-band
        # composite from about 1,000 px a side (it averages the level above instead for smaller
        # or fewer-band rasters, by a size rule of its own; the first level is the same either way).
        with rasterio.Env(GDAL_CACHEMAX=COMPOSITE_CACHE_BYTES):
            for k, size in enumerate(overview_sizes(*self.geobox.shape[::-1]), start=1):
                level = scratch_path(self.path.parent, f"composite-scratch-ovr{k}").resolve()
                self._levels.append(level)
                write_average_level(self.path.resolve(), level, size, len(self.names))
            rasterio.shutil.copy(
                with_overviews(_vrt_of(self.path.resolve()), self._levels), path, driver="COG", compress="DEFLATE",
                predictor="2", blocksize=str(_TILE), overview_resampling="AVERAGE", overviews="FORCE_USE_EXISTING",
                bigtiff="IF_SAFER",
            )

    def discard(self) -> None:
        for scratch in (self.path, *self._levels):
            scratch.unlink(missing_ok=True)
