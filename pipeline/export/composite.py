"""The image a map was classified from: the cloud-free composite as a reflectance COG.

``composite.tif`` (written with ``landcover map --save-composite``) is what an analyst puts under
the land-cover layers in QGIS, draws training polygons over, and hands to
``landcover active-learn --imagery``. Bands are the model's (B04, B03, B02 by default) as uint16
DN = reflectance x 10,000 with 0 = no clear observation, the scale recorded per band, on the
10 m pixel grid the map's windows were cut from.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rasterio
import rasterio.shutil
import rasterio.windows
from distributed import as_completed
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


def write_composite(
    path: Path,
    bands: Sequence[Any],
    names: Sequence[str],
    geobox: GeoBox,
    client: Any,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Compute the lazy 2-D reflectance ``bands`` block by block on ``client`` and write them as a
    COG at ``path``. The client holds one block at a time: memory follows the chunk size."""
    stack = da.stack(list(bands)).map_blocks(reflectance_to_dn, dtype=np.uint16)
    ny, nx = stack.numblocks[1:]
    offsets = [np.cumsum((0, *c[:-1])) for c in stack.chunks[1:]]
    futures = {}
    for i in range(ny):
        for j in range(nx):
            futures[client.compute(stack.blocks[:, i, j])] = (int(offsets[0][i]), int(offsets[1][j]))
    h, w = geobox.shape
    with tempfile.TemporaryDirectory(prefix="landcover-composite-") as tmp:
        tiled = Path(tmp) / "tiled.tif"
        profile = dict(
            driver="GTiff", width=w, height=h, count=len(names), dtype="uint16", nodata=NODATA,
            crs=geobox.crs.to_wkt(), transform=geobox.affine, tiled=True, blockxsize=_TILE, blockysize=_TILE,
            compress="deflate", predictor=2, bigtiff="if_safer",
        )
        done = 0
        with rasterio.open(tiled, "w", **profile) as dst:
            for future in as_completed(futures):
                row, col = futures.pop(future)
                block = future.result()
                dst.write(block, window=rasterio.windows.Window(col, row, block.shape[2], block.shape[1]))
                done += 1
                if progress:
                    progress(done, ny * nx)
            for k, name in enumerate(names, start=1):
                dst.set_band_description(k, f"{name} surface reflectance x 10000 (median of clear observations)")
            dst.scales = (DN_SCALE,) * len(names)
            if len(names) == 3:
                dst.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
            dst.update_tags(source="landcover map --save-composite", scale=str(DN_SCALE), nodata="0 = no clear observation")
        rasterio.shutil.copy(
            tiled, path, driver="COG", compress="DEFLATE", predictor="2", blocksize=str(_TILE),
            overview_resampling="AVERAGE", bigtiff="IF_SAFER",
        )
