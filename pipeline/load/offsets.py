"""Each scene's BOA offset, and a probe of every asset a run reads: eager, cheap I/O before any graph."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pystac
import rasterio
import rasterio.windows
from rasterio.enums import Resampling
from rasterio.errors import RasterioError

from pipeline.errors import LoadError
from pipeline.load.gdal import GDAL_OPTIONS
from pipeline.radiometry import DARK_SCL_CLASSES, NODATA_DN, metadata_offset_dn, pixel_checked_offset_dn

# The stage's logger, not this module's: the run log says "pipeline.load", as it always has.
log = logging.getLogger("pipeline.load")

_CHECK_PX = 256  # side of the decimated read used by the pixel check
_PROBE_THREADS = 8


def item_offsets(items: Iterable[pystac.Item], *, bands: Sequence[str] = ("red", "green", "blue"),
                 skipped: dict[str, str] | None = None) -> dict[str, int]:
    """BOA offset (DN) per readable item id; items with an unreadable asset are left out with a
    warning (and, with ``skipped``, recorded there: item id -> why).

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
            if skipped is not None:
                skipped[item.id] = problem
            continue
        offsets[item.id] = offset
    if not offsets:
        raise LoadError(f"none of the {len(items)} scenes could be read (see the warnings above); check the asset URLs/network")
    return offsets


def _probe_item(item: pystac.Item, assets: Sequence[str]) -> tuple[int, str | None]:
    """(offset DN, None) for a readable item, (0, why not) for one that is not."""
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
    """``red`` read at most :data:`_CHECK_PX` px a side, and the SCL over the same footprint and shape."""
    with rasterio.open(item.assets["red"].get_absolute_href()) as red_src:
        shape = (min(_CHECK_PX, red_src.height), min(_CHECK_PX, red_src.width))
        red = red_src.read(1, out_shape=shape, resampling=Resampling.nearest)
        bounds = red_src.bounds
    with rasterio.open(item.assets["scl"].get_absolute_href()) as scl_src:
        # Read the SCL over red's footprint so the two samples line up even if the rasters differ.
        window = rasterio.windows.from_bounds(*bounds, transform=scl_src.transform)
        scl = scl_src.read(1, window=window, out_shape=shape, boundless=True, fill_value=0, resampling=Resampling.nearest)
    return red, scl
