"""Composite kernels: DN of every date of a block -> median clear reflectance and clear count."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pystac

from pipeline.radiometry import NODATA_DN, REFLECTANCE_SCALE

# SCL: 0 nodata, 1 saturated/defective, 3 cloud shadow, 8 cloud medium, 9 cloud high, 10 cirrus.
MASK_SCL: tuple[int, ...] = (0, 1, 3, 8, 9, 10)
# Pixels :func:`composite_block` composites at once (128 rows of a 2,048 px block): the
# temporaries stay in cache, and a 2 x 2 block group composited whole cost ~200 MB more peak RSS
# per worker and ran slower (measured 146 vs 198 ms for two dates of 1,920 px).
_STRIP_PIXELS = 2**18
# Up to this many dates the median sorts with a min/max network (n*n/2 passes), beyond it np.sort.
_NETWORK_MAX_DATES = 8


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
    """:func:`composite_block` of a strip of rows: the same planes, the temporaries a strip's size."""
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

    raster:bands' ``offset`` is deliberately ignored: the BOA offset comes from
    :func:`~pipeline.load.offsets.item_offsets`.
    """
    bands_md = item.assets[band].extra_fields.get("raster:bands") or [{}]
    scale = bands_md[0].get("scale")
    return float(scale) if scale is not None else REFLECTANCE_SCALE


def dn_to_reflectance(items: Sequence[pystac.Item], offsets: Mapping[str, int],
                      bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`composite_block`'s ``offset_dn`` (T,) and ``scales`` (bands, T) for ``items`` in order."""
    offset_dn = np.array([offsets[item.id] for item in items], dtype=np.float32)
    scales = np.array([[band_scale(item, band) for item in items] for band in bands], dtype=np.float32)
    return offset_dn, scales


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
