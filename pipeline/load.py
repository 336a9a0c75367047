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

import functools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask
import dask.array as da
import numpy as np
import odc.stac
import pystac
import rasterio
import rasterio.crs
import rasterio.transform
import rasterio.warp
import rasterio.windows
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
from rasterio.enums import Resampling
from distributed.diagnostics.plugin import WorkerPlugin
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
# GDAL over HTTP: retry transient failures, never list directories, only fetch .tif. Each chunk
# is read once, so a small block cache suffices (GDAL's default, 5% of RAM per process, lets every
# worker grow by a GiB over a tile).
GDAL_OPTIONS: dict[str, str | int] = {
    # Bytes: rasterio hands an integer GDAL_CACHEMAX to GDALSetCacheMax64, so the 128 this used to
    # say was a 128-byte cache (every upsampled read ~200x slower), not 128 MB.
    "GDAL_CACHEMAX": 128 * 2**20,
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
}
_CHECK_PX = 256  # side of the decimated read used by the pixel check
_PROBE_THREADS = 8
# Pixels :func:`composite_block` composites at once (128 rows of a 2,048 px block): the
# temporaries stay in cache, and a 2 x 2 block group composited whole cost ~200 MB more peak RSS
# per worker and ran slower (measured 146 vs 198 ms for two dates of 1,920 px).
_STRIP_PIXELS = 2**18
# Up to this many dates the median sorts with a min/max network (n*n/2 passes), beyond it np.sort.
_NETWORK_MAX_DATES = 8
# Resolutions a 10 m band of a Sentinel-2 COG (and of the demo world's) can be read at: full
# resolution and its 2x, 4x, 8x overviews.
OVERVIEW_LEVELS_M: tuple[float, ...] = (10.0, 20.0, 40.0, 80.0)


def configure_gdal(client: Any = None) -> dict[str, str | int]:
    """Apply :data:`GDAL_OPTIONS` and :func:`pin_warp_scale` here and, given a dask
    ``distributed.Client``, in every worker it has now or starts later (a worker plugin).

    odc-stac captures the rasterio environment when a graph is built and restores it inside each
    load task, so reads in :func:`load_composite` carry these options to any worker anyway; the
    worker-side setting covers other rasterio use in tasks.
    """
    _configure_here(GDAL_OPTIONS)
    if client is not None:
        client.register_plugin(_WorkerSetup(dict(GDAL_OPTIONS)), name="landcover-gdal")
    return dict(GDAL_OPTIONS)


def _configure_here(options: Mapping[str, str | int]) -> None:
    odc.stac.configure_rio(cloud_defaults=True, **options)
    pin_warp_scale()


class _WorkerSetup(WorkerPlugin):
    def __init__(self, options: dict[str, str | int]) -> None:
        self.options = options

    def setup(self, worker: Any) -> None:
        _configure_here(self.options)


def pin_warp_scale() -> None:
    """Make reprojected pixels independent of how the load is chunked.

    GDAL's warper sizes its resampling kernel from the source/destination pixel ratio it measures
    over each warped window, so a scene from the neighbouring UTM zone, reprojected chunk by chunk,
    came out different for every chunking (measured on the demo world: up to 0.05 reflectance on a
    third of the pixels, enough to flip cells). odc-geo's own reproject pins that ratio to 1
    (XSCALE/YSCALE) when the resolution does not change, but odc-loader's reads call
    ``rasterio.warp.reproject`` without it; this wraps that function so they do too. Idempotent;
    a resolution change keeps GDAL's own choice. A "reprojection" onto the source's own pixel grid
    (an overview read, see :func:`_paste_aligned`) is a plain windowed read instead, and a real
    one warps the source window it needs from memory (:func:`_warp_window`).
    """
    if getattr(rasterio.warp.reproject, "_landcover_pinned", False):
        return
    original = rasterio.warp.reproject

    @functools.wraps(original)
    def reproject(source, destination=None, *args, **kwargs):
        if not args and _paste_aligned(source, destination, kwargs):
            return destination, kwargs["dst_transform"]
        if "XSCALE" not in kwargs and "YSCALE" not in kwargs and _same_resolution(source, kwargs):
            kwargs.update(XSCALE=1, YSCALE=1)
        if not args and _warp_window(source, destination, kwargs, original):
            return destination, kwargs["dst_transform"]
        return original(source, destination, *args, **kwargs)

    reproject._landcover_pinned = True  # type: ignore[attr-defined]
    rasterio.warp.reproject = reproject


def _same_resolution(source: Any, kwargs: Mapping[str, Any]) -> bool:
    dst = kwargs.get("dst_transform")
    src_ds = getattr(source, "ds", None)  # a rasterio Band, as odc-loader passes
    if dst is None or src_ds is None:
        return False
    src = src_ds.transform
    return all(abs(abs(a) - abs(b)) <= 1e-6 * abs(b) for a, b in ((dst.a, src.a), (dst.e, src.e)))


# At a whole-pixel shift these kernels return the source pixel itself (cubic_spline smooths: not it).
_INTERPOLATING = frozenset({Resampling.nearest, Resampling.bilinear, Resampling.cubic, Resampling.lanczos,
                            Resampling.average, Resampling.mode})


def _paste_aligned(source: Any, destination: Any, kwargs: Mapping[str, Any]) -> bool:
    """Fill ``destination`` by a windowed read of ``source`` (a rasterio Band) when the two are one
    pixel grid up to a whole-pixel shift, and say whether it did.

    odc-loader reads an overview level through the warper even when that level's grid is the
    requested one (it measures the shift on the full-resolution grid), and GDAL's bilinear warp
    costs several times the windowed read of the same pixels. At a whole-pixel shift the copy is
    the warp's result; anything else (another CRS or resolution, a fraction of a pixel, nodata
    that changes value) is left to the warper.
    """
    src_ds, bidx = getattr(source, "ds", None), getattr(source, "bidx", None)
    dst_t, dst_crs = kwargs.get("dst_transform"), kwargs.get("dst_crs")
    src_nodata, dst_nodata = kwargs.get("src_nodata"), kwargs.get("dst_nodata")
    if (src_ds is None or not isinstance(bidx, int) or dst_t is None or dst_crs is None
            or not isinstance(destination, np.ndarray) or destination.ndim != 2
            or src_nodata is None or dst_nodata is None or src_nodata != dst_nodata
            or Resampling(kwargs.get("resampling", Resampling.nearest)) not in _INTERPOLATING):
        return False
    src_t = src_ds.transform
    if src_t.b or src_t.d or dst_t.b or dst_t.d or not (
            math.isclose(src_t.a, dst_t.a, rel_tol=1e-9) and math.isclose(src_t.e, dst_t.e, rel_tol=1e-9)):
        return False
    col, row = (dst_t.c - src_t.c) / src_t.a, (dst_t.f - src_t.f) / src_t.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return False
    if src_ds.crs != rasterio.crs.CRS.from_user_input(dst_crs):
        return False
    col, row = round(col), round(row)
    h, w = destination.shape
    r0, r1 = max(row, 0), min(row + h, src_ds.height)
    c0, c1 = max(col, 0), min(col + w, src_ds.width)
    destination[...] = dst_nodata
    if r1 > r0 and c1 > c0:
        window = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
        destination[r0 - row:r1 - row, c0 - col:c1 - col] = src_ds.read(bidx, window=window)
    return True


# Kernels whose result lies within the values they weigh: a warp of valid pixels never lands on nodata.
_CONVEX = frozenset({Resampling.nearest, Resampling.bilinear, Resampling.average, Resampling.mode,
                     Resampling.min, Resampling.max, Resampling.med, Resampling.q1, Resampling.q3})
# Source pixels read beyond the destination's footprint on each side, on top of the kernel's
# reach: covers GDAL's approximate transformer (0.125 px) many times over.
_WARP_MARGIN_PX = 3


def _warp_window(source: Any, destination: Any, kwargs: dict[str, Any], warp: Any) -> bool:
    """Warp ``source`` (a rasterio Band) into ``destination`` from the source window it covers,
    read into memory first, and say whether it did.

    GDAL's warper runs its fast kernels only when no source pixel can be invalid; given a
    nodata value it masks every pixel and takes the general path, ~3x slower for a bilinear warp
    of a scene from the neighbouring UTM zone (measured: 34 vs 14 ms for a 960 px block). A
    window without a nodata pixel is warped without one (the same values: with nothing masked the
    two kernels weigh the same samples); a window with some keeps GDAL's masked path, and so do
    kernels that overshoot (cubic, lanczos), whose valid results the masked path keeps off nodata.
    """
    src_ds, bidx = getattr(source, "ds", None), getattr(source, "bidx", None)
    dst_t, dst_crs = kwargs.get("dst_transform"), kwargs.get("dst_crs")
    if (src_ds is None or not isinstance(bidx, int) or dst_t is None or dst_crs is None
            or not isinstance(destination, np.ndarray) or destination.ndim != 2
            or kwargs.get("src_nodata") is None or {"gcps", "rpcs", "src_transform", "src_crs"} & kwargs.keys()):
        return False
    src_t, src_crs = src_ds.transform, src_ds.crs
    if src_t.b or src_t.d or src_crs is None:
        return False
    h, w = destination.shape
    bounds = rasterio.warp.transform_bounds(dst_crs, src_crs, *rasterio.transform.array_bounds(h, w, dst_t),
                                            densify_pts=21)
    # A coarser destination widens the kernel by the ratio of pixel sizes (unless pinned to 1).
    ratio = max(abs(dst_t.a) / abs(src_t.a), abs(dst_t.e) / abs(src_t.e), 1.0)
    margin = _WARP_MARGIN_PX + math.ceil(2 * ratio)
    window = rasterio.windows.from_bounds(*bounds, transform=src_t)
    c0 = max(math.floor(window.col_off) - margin, 0)
    r0 = max(math.floor(window.row_off) - margin, 0)
    c1 = min(math.ceil(window.col_off + window.width) + margin, src_ds.width)
    r1 = min(math.ceil(window.row_off + window.height) + margin, src_ds.height)
    if c1 <= c0 or r1 <= r0:
        return False  # no overlap: GDAL's own call fills the destination with nodata
    read = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
    pixels = src_ds.read(bidx, window=read)
    options = {**kwargs, "src_transform": src_ds.window_transform(read), "src_crs": src_crs}
    nodata = options["src_nodata"]
    convex = Resampling(kwargs.get("resampling", Resampling.nearest)) in _CONVEX
    if convex and not (np.isnan(pixels) if isinstance(nodata, float) and math.isnan(nodata) else pixels == nodata).any():
        del options["src_nodata"]
    warp(pixels, destination, **options)
    return True


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
    resampling: str = "bilinear",
    read_resolution: float | None = None,
) -> xr.Dataset:
    """Lazy median composite of clear reflectance on ``grid.pixel_geobox``.

    Returns float32 variables named as ``bands`` (reflectance, NaN where no clear observation)
    and ``clear_count`` (uint8, clear observations per pixel), chunked exactly as
    ``grid.pixel_chunks()``. Items without an entry in ``offsets`` (dropped by
    :func:`item_offsets`) are skipped. A clear observation is one the SCL does not mask whose
    DN is non-zero in every band.

    Every spatial chunk is read with all its dates in one task per band and composited by one
    task (:func:`composite_block`), so a chunk's dates never travel between workers and the
    graph stays a few tasks per chunk whatever the number of scenes. Call :func:`configure_gdal`
    (with the client, if any) before computing it, as ``run_map`` does: it makes reprojected
    pixels independent of the chunking.

    ``read_resolution`` (metres, a whole multiple of the grid's, e.g. 20.0): read and composite
    there instead (see :func:`load_block`); the result keeps the grid's shape and meaning.
    """
    usable = _usable(items, offsets)
    bands = _model_bands(bands)
    (ychunks, xchunks) = grid.pixel_chunks()
    # Load chunks cut at multiples of whole cells; the rechunk below adds the margins.
    load_chunk = grid.cells_per_chunk * grid.stride_px
    raw, planes = _composite(usable, grid.pixel_geobox, {"y": load_chunk, "x": load_chunk}, offsets=offsets,
                             bands=bands, mask_scl=mask_scl, resampling=resampling, read_resolution=read_resolution)
    planes = planes.rechunk({1: ychunks, 2: xchunks})

    if _read_factor(grid.pixel_geobox, read_resolution) == 1:
        coords = {"y": raw.y, "x": raw.x, "spatial_ref": raw.spatial_ref}
    else:  # ``raw`` is on the coarse read grid
        coords = xr_coords(grid.pixel_geobox, crs_coord_name="spatial_ref")
    out = {band: xr.DataArray(planes[i], dims=("y", "x"), coords=coords) for i, band in enumerate(bands)}
    out["clear_count"] = xr.DataArray(planes[len(bands)].astype(np.uint8), dims=("y", "x"), coords=coords)
    composite = xr.Dataset(out)
    composite.attrs.update(items=[item.id for item in usable], mask_scl=list(mask_scl))
    if read_resolution is not None:
        composite.attrs.update(read_resolution=float(read_resolution))
    for band in bands:
        composite[band].attrs.update(units="1", long_name=f"{band} surface reflectance, median of clear observations")
    composite["clear_count"].attrs.update(long_name="clear observations per pixel")
    return composite


def load_block(
    items: Iterable[pystac.Item],
    geobox: GeoBox,
    *,
    offsets: Mapping[str, int],
    bands: Sequence[str] = ("red", "green", "blue"),
    mask_scl: Sequence[int] = MASK_SCL,
    resampling: str = "bilinear",
    read_resolution: float | None = None,
    upsample: bool = True,
) -> da.Array:
    """The lazy (bands + 1, H, W) float32 composite planes of one block's ``geobox`` in one chunk:
    the bands' median clear reflectance, then the clear-observation count (as :func:`load_composite`).

    One task (:func:`read_block`) reads and composites it where it runs; a streamed run builds it
    for each block as it submits it, so the client never holds the graph of the whole area. The
    pixels equal those of :func:`load_composite` over any chunking (with the same ``read_resolution``).

    ``read_resolution`` (metres, a whole multiple of the geobox's; None or equal: full resolution):
    read, mask and composite on that coarser grid, so GDAL decodes the COGs' matching overview
    (odc-loader opens the overview level whenever the read shrinks by its factor), then upsample
    the planes to ``geobox``: the count by nearest, reflectance by ``resampling``
    (:func:`upsample_planes`). Worth it when the model sees the window coarser than that anyway
    (:func:`read_resolution_for`). The coarse grid is a lattice shared by every block of the same
    pixel grid and is read one coarse pixel wider than the block on each side, so a block whose
    side is no multiple of the coarse pixel is simply cropped, and block edges still interpolate
    between real neighbours.

    ``upsample=False`` returns the coarse planes themselves, (bands + 1, H / f, W / f) for a read
    ``f`` times coarser, for a consumer that works on them (a model that resizes its window to
    fewer pixels anyway); the block must then be whole coarse pixels of that lattice
    (:func:`exact_coarse_geobox`), and its pixels are those the upsampling starts from.
    """
    usable = _usable(items, offsets)
    bands = _model_bands(bands)
    factor = _read_factor(geobox, read_resolution)
    if not upsample and factor > 1:
        coarse = exact_coarse_geobox(geobox, factor)
        if coarse is None:
            raise LoadError(f"block {geobox.shape} at {tuple(geobox.affine)[:6]} is not whole {read_resolution:g} m pixels "
                            "of the read lattice; read it with upsample=True")
        shape = coarse.shape
    else:
        shape = geobox.shape
    args = (usable, geobox, {item.id: offsets[item.id] for item in usable}, tuple(bands), tuple(mask_scl), resampling,
            factor, upsample)
    # Named from what decides the pixels (items by id), so the key is cheap and stable.
    token = dask.base.tokenize([item.id for item in usable], tuple(geobox.affine), geobox.shape, str(geobox.crs), *args[2:])
    name = f"block-{token}"
    return da.Array({(name, 0, 0, 0): (read_block, *args)}, name, chunks=((len(bands) + 1,), (shape[0],), (shape[1],)),
                    dtype=np.float32)


def read_block(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    offsets: Mapping[str, int],
    bands: Sequence[str],
    mask_scl: Sequence[int],
    resampling: str,
    factor: int,
    upsample: bool,
) -> np.ndarray:
    """:func:`load_block`'s pixels, read here and now: every band of every item through odc-stac,
    composited (and upsampled, if asked) in this one call.

    One task per block: its reads never travel between workers to meet for the composite, and
    the scheduler handles two tasks per block (this and the classification) instead of a dozen.
    """
    if factor > 1:
        coarse, offset = coarse_geobox(geobox, factor, halo=1 if upsample else 0)
        planes = _read_and_composite(items, coarse, offsets, bands, mask_scl, resampling)
        if not upsample:
            return planes
        return upsample_planes(planes, factor=factor, offset=offset, shape=geobox.shape, resampling=resampling)
    return _read_and_composite(items, geobox, offsets, bands, mask_scl, resampling)


def _read_and_composite(items: Sequence[pystac.Item], geobox: GeoBox, offsets: Mapping[str, int],
                        bands: Sequence[str], mask_scl: Sequence[int], resampling: str) -> np.ndarray:
    with rasterio.Env(**GDAL_OPTIONS):
        raw = odc.stac.load(items, geobox=geobox, **_load_options(bands, resampling))
    offset_dn, scales = _dn_to_reflectance(items, offsets, bands)
    return composite_block(*(raw[band].values for band in bands), raw["scl"].values, offset_dn=offset_dn,
                           scales=scales, mask_scl=tuple(mask_scl))


def _dn_to_reflectance(items: Sequence[pystac.Item], offsets: Mapping[str, int],
                       bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`composite_block`'s ``offset_dn`` (T,) and ``scales`` (bands, T) for ``items`` in order."""
    offset_dn = np.array([offsets[item.id] for item in items], dtype=np.float32)
    scales = np.array([[band_scale(item, band) for item in items] for band in bands], dtype=np.float32)
    return offset_dn, scales


def _load_options(bands: Sequence[str], resampling: str) -> dict[str, Any]:
    """odc-stac's options for a composite's read: one time slice per item, in the order given (so
    slice k takes items[k]'s offset), every asset as uint16 DN."""
    return dict(
        bands=[*bands, "scl"],
        groupby=_own_slice,
        # The model card decides (reBEN upsamples 20 m bands with nearest); classes never blend.
        resampling={"scl": "nearest", "*": resampling},
        nodata=NODATA_DN,
        # One dtype for all: SCL fits in uint16, and odc-loader 0.5 mis-sizes chunks given a per-band dict.
        dtype="uint16",
        fail_on_error=True,
    )


def exact_coarse_geobox(geobox: GeoBox, factor: int) -> GeoBox | None:
    """``geobox`` as whole pixels ``factor`` times coarser on the lattice :func:`coarse_geobox`
    reads (fixed by the CRS origin), or None when its corner or size falls between them."""
    coarse, offset = coarse_geobox(geobox, factor, halo=0)
    ny, nx = geobox.shape
    if offset != (0, 0) or ny % factor or nx % factor:
        return None
    return GeoBox((ny // factor, nx // factor), coarse.affine, coarse.crs)


def read_resolution_for(
    card_window_px: int,
    card_patch_size: int,
    resolution: float = 10.0,
    levels: Sequence[float] = OVERVIEW_LEVELS_M,
) -> float:
    """The coarsest of ``levels`` still finer than or equal to the model's input pixel
    (``card_window_px`` px of ``resolution`` m resized to ``card_patch_size`` px), never finer than
    ``resolution`` itself: reading finer than the model looks decodes pixels the resize throws away.

    The seed/compact card (120 px at 10 m -> 32 px, 37.5 m) gives 20.0; a card whose patch is its
    window (reBEN, 120 -> 120 px) gives ``resolution``, i.e. no change.
    """
    if card_window_px < 1 or card_patch_size < 1 or resolution <= 0:
        raise ValueError(f"window {card_window_px} px, patch {card_patch_size} px and resolution {resolution} m must be positive")
    input_pixel = card_window_px * resolution / card_patch_size
    # The tolerance keeps a level equal to the input pixel (e.g. 120 px -> 30 px = 40 m) eligible.
    fits = [float(level) for level in levels if resolution <= level <= input_pixel * (1 + 1e-9)]
    return max(fits, default=float(resolution))


def _usable(items: Iterable[pystac.Item], offsets: Mapping[str, int]) -> list[pystac.Item]:
    usable = [item for item in items if item.id in offsets]
    if not usable:
        raise LoadError("no readable scenes left to load; widen the search or check the asset URLs")
    return usable


def _model_bands(bands: Sequence[str]) -> list[str]:
    if "scl" in bands:
        raise LoadError("'scl' is loaded for masking, not as a model band; remove it from the bands")
    return list(bands)


def _composite(
    usable: list[pystac.Item],
    geobox: GeoBox,
    chunks: Mapping[str, int],
    *,
    offsets: Mapping[str, int],
    bands: list[str],
    mask_scl: Sequence[int],
    resampling: str,
    read_resolution: float | None = None,
) -> tuple[xr.Dataset, da.Array]:
    """odc-stac's lazy per-item read of ``bands`` + SCL on ``geobox``, and the (bands + 1, y, x)
    composite of it, chunked as ``chunks`` (every date of a chunk in one task).

    With a ``read_resolution`` coarser than ``geobox``, the read and the composite run on
    :func:`coarse_geobox` (the returned dataset is that read) and the planes are upsampled to
    ``geobox``, chunked as ``chunks`` scaled to the coarse grid."""
    factor = _read_factor(geobox, read_resolution)
    if factor > 1:
        coarse, offset = coarse_geobox(geobox, factor)
        # A geobox read in one chunk (a block) stays one chunk, halo included: a sliver chunk of
        # halo would cost a read of every band of every date.
        whole = dict(zip(("y", "x"), geobox.shape, strict=True))
        coarse_whole = dict(zip(("y", "x"), coarse.shape, strict=True))
        coarse_chunks = {dim: coarse_whole[dim] if size >= whole[dim] else -(-size // factor) for dim, size in chunks.items()}
        raw, planes = _composite(usable, coarse, coarse_chunks, offsets=offsets, bands=bands, mask_scl=mask_scl,
                                 resampling=resampling)
        return raw, _upsampled(planes, factor, offset, geobox.shape, resampling)
    with rasterio.Env(**GDAL_OPTIONS):  # captured into the graph by odc-stac, restored in each task
        raw = odc.stac.load(usable, geobox=geobox, chunks={"time": len(usable), **chunks}, **_load_options(bands, resampling))
    offset_dn, scales = _dn_to_reflectance(usable, offsets, bands)
    planes = da.map_blocks(
        composite_block,
        *(raw[band].data for band in bands),
        raw["scl"].data,
        offset_dn=offset_dn,
        scales=scales,
        mask_scl=tuple(mask_scl),
        drop_axis=0,
        new_axis=0,
        chunks=((len(bands) + 1,), *raw["scl"].data.chunks[1:]),
        dtype=np.float32,
        name=f"composite-{dask.base.tokenize(*(raw[b].data.name for b in (*bands, 'scl')), offset_dn, scales, tuple(mask_scl))}",
    )
    return raw, planes


def _read_factor(geobox: GeoBox, read_resolution: float | None) -> int:
    """Geobox pixels per read pixel along each axis (1: read at the geobox's own resolution)."""
    if read_resolution is None:
        return 1
    res_x, res_y = abs(geobox.resolution.x), abs(geobox.resolution.y)
    factor = read_resolution / res_x
    whole = round(factor)
    if not math.isclose(res_x, res_y, rel_tol=1e-9) or whole < 1 or not math.isclose(factor, whole, rel_tol=1e-9):
        raise LoadError(
            f"read resolution {read_resolution:g} m must be a whole multiple of the grid's "
            f"{res_x:g} x {res_y:g} m square pixels (e.g. {2 * res_x:g})"
        )
    return whole


def coarse_geobox(geobox: GeoBox, factor: int, halo: int = 1) -> tuple[GeoBox, tuple[int, int]]:
    """The grid of ``factor`` x ``factor`` geobox pixels covering north-up ``geobox`` plus ``halo``
    coarse pixels on each side, and the (row, col) offset in geobox pixels of ``geobox``'s origin
    from that grid's.

    The coarse pixels sit on a lattice fixed by the CRS origin and the geobox's pixel phase, not
    by the geobox's corner: every block of one pixel grid (and the whole grid) then reads the same
    coarse pixels, and a 10 m grid on the Sentinel-2 lattice reads 20 m pixels that coincide with
    the tiles' own 20 m overview pixels (a plain copy, no resampling).
    """
    t = geobox.affine
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        raise LoadError(f"overview reads need a north-up grid, got {tuple(t)[:6]}")
    res = t.a
    # Global pixel indices of the geobox's top-left pixel (columns eastwards, rows southwards).
    col = math.floor(t.c / res + 1e-6)
    row = math.floor(-t.f / res + 1e-6)
    phase_x, phase_y = t.c - col * res, -t.f - row * res
    coarse_col, coarse_row = col // factor - halo, row // factor - halo
    off_row, off_col = row - coarse_row * factor, col - coarse_col * factor
    ny, nx = geobox.shape
    shape = (-(-(off_row + ny) // factor) + halo, -(-(off_col + nx) // factor) + halo)
    step = res * factor
    affine = Affine(step, 0.0, phase_x + coarse_col * step, 0.0, -step, -(phase_y + coarse_row * step))
    return GeoBox(shape, affine, geobox.crs), (off_row, off_col)


def _upsampled(planes: da.Array, factor: int, offset: tuple[int, int], shape: tuple[int, int], resampling: str) -> da.Array:
    """Coarse (bands + 1, h, w) planes -> (bands + 1, *shape) on the fine grid starting ``offset``
    fine pixels into them. Each chunk borrows one coarse pixel from its neighbours, so chunk edges
    interpolate as the interior does; the outer ring (the coarse grid's halo) only feeds pixels
    that the crop drops."""
    haloed = da.overlap.overlap(planes, depth={0: 0, 1: 1, 2: 1}, boundary={0: "none", 1: "nearest", 2: "nearest"})
    fine = haloed.map_blocks(
        _upsample_haloed_block,
        factor=factor,
        resampling=resampling,
        chunks=(planes.chunks[0], *(tuple(c * factor for c in axis) for axis in planes.chunks[1:])),
        dtype=np.float32,
    )
    (r0, c0), (ny, nx) = offset, shape
    return fine[:, r0:r0 + ny, c0:c0 + nx]


def _upsample_haloed_block(block: np.ndarray, *, factor: int, resampling: str) -> np.ndarray:
    # The block carries one borrowed coarse pixel on each side; its own pixels start at 1.
    h, w = block.shape[1] - 2, block.shape[2] - 2
    return upsample_planes(block, factor=factor, offset=(factor, factor), shape=(h * factor, w * factor),
                           resampling=resampling)


def upsample_planes(
    coarse: np.ndarray,
    *,
    factor: int,
    offset: tuple[int, int] = (0, 0),
    shape: tuple[int, int] | None = None,
    resampling: str = "bilinear",
) -> np.ndarray:
    """(bands + 1, h, w) composite planes (reflectance, then clear count) at ``factor`` x the
    pixel size -> the (bands + 1, *shape) fine planes whose origin is ``offset`` fine pixels into
    the coarse grid (default: all of it).

    The count is repeated (nearest): it stays a count. Reflectance follows ``resampling``:
    ``nearest`` repeats too; ``bilinear`` weighs the coarse pixel centres around each fine centre
    (edges clamp), renormalised over the neighbours that have a value, so a never-clear coarse
    pixel does not blank its clear neighbours. Fine pixels whose count is 0 are NaN either way,
    as in a full-resolution composite.
    """
    _, h, w = coarse.shape
    (r0, c0) = offset
    ny, nx = shape if shape is not None else (h * factor - r0, w * factor - c0)
    crop = (slice(None), slice(r0, r0 + ny), slice(c0, c0 + nx))
    if resampling == "nearest":
        out = _repeat(coarse, factor)[crop]
    elif resampling == "bilinear":
        out = np.empty((coarse.shape[0], ny, nx), dtype=np.float32)
        out[:-1] = _bilinear(coarse[:-1], factor)[crop]
        out[-1] = _repeat(coarse[-1:], factor)[crop][0]
    else:
        raise LoadError(f"overview reads upsample by 'nearest' or 'bilinear', not {resampling!r}")
    out = np.ascontiguousarray(out, dtype=np.float32)
    out[:-1][:, out[-1] == 0] = np.nan
    return out


def _repeat(planes: np.ndarray, factor: int) -> np.ndarray:
    return planes.repeat(factor, axis=1).repeat(factor, axis=2)


def _bilinear(values: np.ndarray, factor: int) -> np.ndarray:
    """(B, h, w) -> (B, h * factor, w * factor) by separable linear interpolation between pixel
    centres (edges clamp), NaN treated as missing: the weights are renormalised over the values present."""
    present = np.isfinite(values)
    if present.all():  # the usual block: no renormalisation needed
        return _linear_along(_linear_along(values.astype(np.float32), factor, 1), factor, 2)
    filled = np.where(present, values, np.float32(0)).astype(np.float32)
    num = _linear_along(_linear_along(filled, factor, 1), factor, 2)
    den = _linear_along(_linear_along(present.astype(np.float32), factor, 1), factor, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.float32(np.nan)).astype(np.float32)


def _linear_along(a: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Linear interpolation upsampling ``a`` by ``factor`` along ``axis``, one strided slice per phase.

    Fine pixel k * factor + p sits (p + 0.5) / factor - 0.5 coarse pixels from coarse centre k: it
    blends coarse pixel k with its neighbour on that side (the edge pixel itself beyond the edges).
    """
    n = a.shape[axis]
    padded = np.moveaxis(np.pad(np.moveaxis(a, axis, 0), [(1, 1)] + [(0, 0)] * (a.ndim - 1), mode="edge"), 0, axis)

    def take(start: int) -> np.ndarray:  # coarse pixels start - 1 .. start + n - 2 (padded index start..)
        index = [slice(None)] * a.ndim
        index[axis] = slice(start, start + n)
        return padded[tuple(index)]

    out_shape = list(a.shape)
    out_shape[axis] = n * factor
    out = np.empty(out_shape, dtype=np.float32)
    centre = take(1)
    for p in range(factor):
        shift = (p + 0.5) / factor - 0.5
        index = [slice(None)] * a.ndim
        index[axis] = slice(p, None, factor)
        side = take(0) if shift < 0 else take(2)
        weight = np.float32(abs(shift))
        out[tuple(index)] = centre * (1 - weight) + side * weight if weight else centre
    return out


def composite_block(
    *stacks: np.ndarray,
    offset_dn: np.ndarray,
    scales: np.ndarray,
    mask_scl: Sequence[int] = MASK_SCL,
) -> np.ndarray:
    """(T, H, W) uint16 DN per band, then the SCL -> (bands + 1, H, W) float32 composite.

    Planes: the median clear reflectance of each band (NaN where never clear), then the number of
    clear observations (capped at 255). ``offset_dn`` (T,) is each date's BOA offset and
    ``scales`` (bands, T) its DN -> reflectance scale. Every pixel is its own computation, done
    :data:`_STRIP_PIXELS` at a time, so the temporaries (several times the input) stay small
    whatever the block.
    """
    *dn, scl = stacks
    rows = max(1, _STRIP_PIXELS // max(1, scl.shape[2]))
    if scl.shape[1] <= rows:
        return _composite_strip(dn, scl, offset_dn, scales, mask_scl)
    out = np.empty((len(dn) + 1, *scl.shape[1:]), dtype=np.float32)
    for r in range(0, scl.shape[1], rows):
        out[:, r:r + rows] = _composite_strip([band[:, r:r + rows] for band in dn], scl[:, r:r + rows], offset_dn,
                                              scales, mask_scl)
    return out


def _composite_strip(dn: Sequence[np.ndarray], scl: np.ndarray, offset_dn: np.ndarray, scales: np.ndarray,
                     mask_scl: Sequence[int]) -> np.ndarray:
    masked = np.zeros(max([int(scl.max(initial=0)), *mask_scl]) + 1, dtype=bool)
    masked[list(mask_scl)] = True
    clear = ~masked[scl]
    for band in dn:
        clear &= band != NODATA_DN
    valid = clear.sum(axis=0, dtype=np.intp)
    picks = _median_picks(valid, clear.shape[0])
    # +inf where not clear, so those sort after every clear value: one addition per band (x + 0
    # is x exactly) instead of a masked assignment, which costs ~15x more.
    unclear = np.where(clear, np.float32(0), np.float32(np.inf))
    out = np.empty((len(dn) + 1, *scl.shape[1:]), dtype=np.float32)
    off = offset_dn[:, None, None]
    reflectance = np.empty(scl.shape, dtype=np.float32)  # one buffer for every band
    for i, band in enumerate(dn):
        np.subtract(band, off, out=reflectance, dtype=np.float32)
        reflectance *= scales[i][:, None, None]
        reflectance += unclear
        out[i] = _median_of_sorted_prefix(reflectance, valid, picks)
    out[-1] = np.minimum(valid, 255)
    return out


def band_scale(item: pystac.Item, band: str) -> float:
    """The DN -> reflectance scale from the asset's raster:bands (1e-4 when absent).

    raster:bands' ``offset`` is deliberately ignored: the BOA offset comes from :func:`item_offsets`.
    """
    bands_md = item.assets[band].extra_fields.get("raster:bands") or [{}]
    scale = bands_md[0].get("scale")
    return float(scale) if scale is not None else REFLECTANCE_SCALE


def median_composite(stack: np.ndarray, axis: int = -1) -> np.ndarray:
    """float32 NaN-median along ``axis``; all-NaN pixels (never clear) stay NaN quietly."""
    stack = np.moveaxis(np.asarray(stack, dtype=np.float32), axis, 0)
    missing = np.isnan(stack)
    valid = stack.shape[0] - np.count_nonzero(missing, axis=0)
    return _median_of_sorted_prefix(np.where(missing, np.float32(np.inf), stack), valid)


def _median_picks(valid: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the median of ``valid`` sorted values of ``n`` sits in a (n, H, W) stack: flat
    indices (H, W) of the lower and upper middle value, and the pixels with no value. The same for
    every band of a block; a flat ``take`` is ~5x faster than ``take_along_axis``."""
    plane = valid.size
    base = np.arange(plane, dtype=np.intp).reshape(valid.shape)
    # In place, and halved by a shift: numpy's integer // 2 measured ~3x slower on a 960 px block.
    lo = np.maximum(valid, 1)
    lo -= 1
    lo >>= 1
    hi = valid >> 1
    np.minimum(hi, n - 1, out=hi)
    lo *= plane
    lo += base
    hi *= plane
    hi += base
    return lo, hi, valid == 0


def _median_of_sorted_prefix(values: np.ndarray, valid: np.ndarray,
                             picks: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Median along axis 0 of the ``valid`` finite values of each pixel; missing ones are +inf.

    Sorted in place. A composite has a handful of dates, so up to :data:`_NETWORK_MAX_DATES`
    they are ordered by a sorting network of element-wise min/max, about twice as fast as
    ``np.sort``; the median of n values then sits at (n-1)//2 and n//2. NaN where ``valid`` is 0.
    ``picks`` (:func:`_median_picks` of ``valid``) saves recomputing them band after band.
    """
    n = values.shape[0]
    if n == 0:
        return np.full(values.shape[1:], np.nan, dtype=np.float32)
    if n <= _NETWORK_MAX_DATES:
        scratch = np.empty_like(values[0])
        for i in range(n):  # odd-even transposition: n rounds sort n values
            for j in range(i % 2, n - 1, 2):
                np.minimum(values[j], values[j + 1], out=scratch)
                np.maximum(values[j], values[j + 1], out=values[j + 1])
                values[j] = scratch
    else:
        values.sort(axis=0)
    lo_index, hi_index, empty = picks if picks is not None else _median_picks(valid, n)
    flat = values.reshape(-1)  # a view: ``values`` is one contiguous stack
    out = flat.take(lo_index)
    out += flat.take(hi_index)
    out *= np.float32(0.5)
    out[empty] = np.nan
    return out


def _own_slice(item: pystac.Item, parsed: Any, index: int) -> int:
    return index
