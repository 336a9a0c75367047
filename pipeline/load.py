"""Scenes -> one lazy, dask-chunked, cloud-free median composite of surface reflectance on the pixel grid.

Two steps, split so the cheap eager I/O happens before the graph is built:

* :func:`item_offsets` decides each item's BOA offset (metadata, then a pixel check on a decimated
  read of ``red`` + ``scl``) and probes every asset a run needs; an item whose asset 404s or is
  truncated is dropped with a warning.
* :func:`load_composite` builds the graph: odc-stac reads every item as its own time slice (items
  of different tiles or baselines carry different offsets), DN become reflectance per item, pixels
  the SCL calls nodata/saturated/shadow/cloud/cirrus are masked, and a NaN-median over time gives
  the composite. Nothing is read until the result is computed; memory is bounded by chunk size.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import odc.stac
import pystac
import rasterio
import rasterio.windows
import xarray as xr
from rasterio.enums import Resampling
from rasterio.errors import RasterioError

from pipeline.errors import LoadError
from pipeline.patches import PatchGrid
from pipeline.radiometry import (
    DARK_SCL_CLASSES,
    NODATA_DN,
    REFLECTANCE_SCALE,
    metadata_offset_dn,
    pixel_checked_offset_dn,
)

log = logging.getLogger(__name__)

# SCL: 0 nodata, 1 saturated/defective, 3 cloud shadow, 8 cloud medium, 9 cloud high, 10 cirrus.
MASK_SCL: tuple[int, ...] = (0, 1, 3, 8, 9, 10)
# GDAL over HTTP: retry transient failures, never list directories, only fetch .tif.
GDAL_OPTIONS: dict[str, str] = {
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
}
_CHECK_PX = 256  # side of the decimated read used by the pixel check
_PROBE_THREADS = 8


def configure_gdal(client: Any = None) -> dict[str, str]:
    """Apply :data:`GDAL_OPTIONS` here and, given a dask ``distributed.Client``, in every worker.

    odc-stac captures the rasterio environment when a graph is built and restores it inside each
    load task, so reads in :func:`load_composite` carry these options to any worker anyway; the
    worker-side setting covers other rasterio use in tasks.
    """
    odc.stac.configure_rio(cloud_defaults=True, **GDAL_OPTIONS)
    if client is not None:
        client.run(_configure_here, GDAL_OPTIONS)
    return dict(GDAL_OPTIONS)


def _configure_here(options: Mapping[str, str]) -> None:
    odc.stac.configure_rio(cloud_defaults=True, **options)


# --------------------------------------------------------------------------------------------
# Offsets: eager, cheap I/O


def item_offsets(items: Iterable[pystac.Item], *, bands: Sequence[str] = ("red", "green", "blue")) -> dict[str, int]:
    """BOA offset (DN) per readable item id; items with an unreadable asset are left out with a warning.

    The metadata decides first (:func:`~pipeline.radiometry.metadata_offset_dn`); a decimated read
    of ``red`` where the SCL says vegetation or water then confirms or overrules it. Each asset in
    ``bands`` and ``scl`` is opened and its last block read, so a 404 or a truncated file shows here
    rather than half-way through the run.
    """
    items = list(items)
    if not items:
        raise LoadError("no scenes to load; the search returned none")
    assets = tuple(dict.fromkeys(("red", "scl", *bands)))
    with ThreadPoolExecutor(max_workers=min(_PROBE_THREADS, len(items))) as pool:
        results = list(pool.map(lambda item: _probe_item(item, assets), items))
    offsets: dict[str, int] = {}
    for item, (offset, problem) in zip(items, results, strict=True):
        if problem is not None:
            log.warning("skipping scene %s: %s", item.id, problem)
            continue
        offsets[item.id] = offset
    if not offsets:
        raise LoadError(f"none of the {len(items)} scenes could be read (see the warnings above); check the asset URLs/network")
    return offsets


def _probe_item(item: pystac.Item, assets: Sequence[str]) -> tuple[int, str | None]:
    missing = [key for key in assets if key not in item.assets]
    if missing:
        return 0, f"it has no {', '.join(missing)} asset"
    try:
        with rasterio.Env(**GDAL_OPTIONS):
            for key in assets:
                _check_readable(item.assets[key].get_absolute_href())
            red, scl = _decimated_red_and_scl(item)
    except RasterioError as err:
        return 0, f"asset unreadable ({' '.join(str(err).split())}); it may be missing (404) or truncated"
    metadata = metadata_offset_dn(item.properties)
    dark = red[np.isin(scl, DARK_SCL_CLASSES) & (red != NODATA_DN)]
    checked = pixel_checked_offset_dn(metadata, dark)
    if checked != metadata:
        log.warning(
            "scene %s: metadata says the pixels carry a %d DN offset but dark vegetation/water says %d; using %d",
            item.id, metadata, checked, checked,
        )
    return checked, None


def _check_readable(href: str) -> None:
    """Open the asset and read its last full-resolution block.

    A COG stores overviews first and full-resolution tiles last, so a truncated download fails
    exactly here while overview reads would still succeed.
    """
    with rasterio.open(href) as src:
        *_, (_, last) = src.block_windows(1)
        src.read(1, window=last)


def _decimated_red_and_scl(item: pystac.Item) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(item.assets["red"].get_absolute_href()) as red_src:
        shape = (min(_CHECK_PX, red_src.height), min(_CHECK_PX, red_src.width))
        red = red_src.read(1, out_shape=shape, resampling=Resampling.nearest)
        bounds = red_src.bounds
    with rasterio.open(item.assets["scl"].get_absolute_href()) as scl_src:
        # Read the SCL over red's footprint so the two samples line up even if the rasters differ.
        window = rasterio.windows.from_bounds(*bounds, transform=scl_src.transform)
        scl = scl_src.read(1, window=window, out_shape=shape, boundless=True, fill_value=0, resampling=Resampling.nearest)
    return red, scl


# --------------------------------------------------------------------------------------------
# Composite: lazy


def load_composite(
    items: Iterable[pystac.Item],
    grid: PatchGrid,
    *,
    offsets: Mapping[str, int],
    bands: Sequence[str] = ("red", "green", "blue"),
    mask_scl: Sequence[int] = MASK_SCL,
) -> xr.Dataset:
    """Lazy median composite of clear reflectance on ``grid.pixel_geobox``.

    Returns float32 variables named as ``bands`` (reflectance, NaN where no clear observation)
    and ``clear_count`` (uint8, clear observations per pixel), chunked exactly as
    ``grid.pixel_chunks()``. Items without an entry in ``offsets`` (dropped by
    :func:`item_offsets`) are skipped. A clear observation is one the SCL does not mask whose
    DN is non-zero in every band.
    """
    usable = [item for item in items if item.id in offsets]
    if not usable:
        raise LoadError("no readable scenes left to load; widen the search or check the asset URLs")
    bands = list(bands)
    if "scl" in bands:
        raise LoadError("'scl' is loaded for masking, not as a model band; remove it from the bands")
    (ychunks, xchunks) = grid.pixel_chunks()
    # Load chunks cut at multiples of whole cells; the rechunk below adds the margins.
    load_chunk = grid.cells_per_chunk * grid.stride_px
    with rasterio.Env(**GDAL_OPTIONS):  # captured into the graph by odc-stac, restored in each task
        raw = odc.stac.load(
            usable,
            bands=[*bands, "scl"],
            geobox=grid.pixel_geobox,
            chunks={"time": 1, "y": load_chunk, "x": load_chunk},
            # One time slice per item, in the order given, so slice k takes items[k]'s offset.
            groupby=_own_slice,
            resampling={"scl": "nearest", "*": "bilinear"},
            nodata=NODATA_DN,
            # One dtype for all: SCL fits in uint16, and odc-loader 0.5 mis-sizes chunks given a per-band dict.
            dtype="uint16",
            fail_on_error=True,
        )
    raw = raw.assign_coords(item_id=("time", [item.id for item in usable]))

    offset_dn = xr.DataArray(np.array([offsets[item.id] for item in usable], dtype=np.float32), dims="time")
    clear = ~raw.scl.isin(list(mask_scl))
    for band in bands:
        clear = clear & (raw[band] != NODATA_DN)

    out = {}
    for band in bands:
        scale = xr.DataArray(np.array([band_scale(item, band) for item in usable], dtype=np.float32), dims="time")
        reflectance = ((raw[band].astype(np.float32) - offset_dn) * scale).where(clear)
        out[band] = _nanmedian_over_time(reflectance)
    out["clear_count"] = clear.sum("time").clip(max=255).astype(np.uint8)

    composite = xr.Dataset(out).chunk({"y": ychunks, "x": xchunks})
    composite.attrs.update(items=[item.id for item in usable], mask_scl=list(mask_scl))
    for band in bands:
        composite[band].attrs.update(units="1", long_name=f"{band} surface reflectance, median of clear observations")
    composite["clear_count"].attrs.update(long_name="clear observations per pixel")
    return composite


def band_scale(item: pystac.Item, band: str) -> float:
    """The DN -> reflectance scale from the asset's raster:bands (1e-4 when absent).

    raster:bands' ``offset`` is deliberately ignored: the BOA offset comes from :func:`item_offsets`.
    """
    bands_md = item.assets[band].extra_fields.get("raster:bands") or [{}]
    scale = bands_md[0].get("scale")
    return float(scale) if scale is not None else REFLECTANCE_SCALE


def median_composite(stack: np.ndarray, axis: int = -1) -> np.ndarray:
    """float32 NaN-median along ``axis``; all-NaN pixels (never clear) stay NaN quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(stack, axis=axis).astype(np.float32)


def _nanmedian_over_time(reflectance: xr.DataArray) -> xr.DataArray:
    return xr.apply_ufunc(
        median_composite,
        reflectance.chunk({"time": -1}),
        input_core_dims=[["time"]],
        dask="parallelized",
        output_dtypes=[np.float32],
    )


def _own_slice(item: pystac.Item, parsed: Any, index: int) -> int:
    return index
