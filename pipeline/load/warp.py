"""How odc-stac's reads reproject: the same pixels whatever the chunking, and cheaper, for the
duration of a read only (:func:`pinned_warp`).

odc-loader (odc-stac's reader) warps every source that is not a plain windowed read of the
destination grid with ``rasterio.warp.reproject``, and takes neither warp options nor a reproject
function of ours. It looks the function up on the ``rasterio.warp`` module at each call, so that
module attribute is the one place to reach it: :func:`pinned_warp` replaces it while a read runs
and puts GDAL's back after, so nothing else in the process (nor another thread that is not
reading) sees the change. Three things are changed in those calls:

* the resampling kernel's scale is pinned to 1 when the resolution does not change
  (:func:`_same_resolution`): GDAL's warper sizes its kernel from the source/destination pixel
  ratio it measures over each warped window, so a scene from the neighbouring UTM zone,
  reprojected chunk by chunk, came out different for every chunking (measured on the demo world:
  up to 0.05 reflectance on a third of the pixels, enough to flip cells). odc-geo's own reproject
  pins XSCALE/YSCALE that way; odc-loader's call does not;
* a "reprojection" onto the source's own pixel grid (an overview read) is a windowed read
  (:func:`_paste_aligned`);
* a real warp reads the source window it needs into memory first and, when that window has no
  nodata pixel, lets GDAL use its fast kernels (:func:`_warp_window`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import rasterio.crs
import rasterio.transform
import rasterio.warp
import rasterio.windows
from rasterio.enums import Resampling

# Reads in progress in this process (every thread), and the function they replaced: the wrapper
# is installed by the first read to start and the original put back by the last to end.
_lock = threading.Lock()
_reads = 0
_installed: tuple[Callable[..., Any], Callable[..., Any]] | None = None  # (wrapper, original)
# Reads in progress in this thread: the wrapper only changes the calls of a thread inside one.
_thread = threading.local()


@contextlib.contextmanager
def pinned_warp() -> Iterator[None]:
    """Within the block, calls of ``rasterio.warp.reproject`` made by this thread (odc-stac's, as
    its reads run in the calling thread) pin the kernel scale, paste aligned grids and warp from
    memory (the module docstring says why); on leaving it, the process has the original back
    once no other thread is inside one.

    Thread-safe and re-entrant: dask workers read blocks in several threads at once; the first
    read installs the wrapper, the last restores the original, and a thread that is not reading
    meanwhile gets the original's behaviour through it. A function someone else put in its place
    while reads ran is left in place.
    """
    global _reads, _installed
    with _lock:
        if _reads == 0:
            original = rasterio.warp.reproject
            wrapper = _wrap(original)
            rasterio.warp.reproject = wrapper
            _installed = (wrapper, original)
        _reads += 1
    _thread.depth = getattr(_thread, "depth", 0) + 1
    try:
        yield
    finally:
        _thread.depth -= 1
        with _lock:
            _reads -= 1
            if _reads == 0 and _installed is not None:
                wrapper, original = _installed
                if rasterio.warp.reproject is wrapper:
                    rasterio.warp.reproject = original
                _installed = None


def _wrap(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` (GDAL's reproject) with the read-time behaviour for threads inside :func:`pinned_warp`."""

    @functools.wraps(original)
    def reproject(source, destination=None, *args, **kwargs):
        if not getattr(_thread, "depth", 0):  # another thread's call, outside any read
            return original(source, destination, *args, **kwargs)
        if not args and _paste_aligned(source, destination, kwargs):
            return destination, kwargs["dst_transform"]
        if "XSCALE" not in kwargs and "YSCALE" not in kwargs and _same_resolution(source, kwargs):
            kwargs.update(XSCALE=1, YSCALE=1)
        if not args and _warp_window(source, destination, kwargs, original):
            return destination, kwargs["dst_transform"]
        return original(source, destination, *args, **kwargs)

    return reproject


def _same_resolution(source: Any, kwargs: Mapping[str, Any]) -> bool:
    """Whether the destination's pixel size is the source's (a rasterio Band, as odc-loader passes)."""
    dst = kwargs.get("dst_transform")
    src_ds = getattr(source, "ds", None)
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


def _warp_window(source: Any, destination: Any, kwargs: dict[str, Any], warp: Callable[..., Any]) -> bool:
    """Warp ``source`` (a rasterio Band) into ``destination`` with ``warp`` (GDAL's reproject) from
    the source window it covers, read into memory first, and say whether it did.

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
