"""Reads coarser than the grid: the overview level a model's window allows, the coarse lattice
a block reads, and the upsampling of its composite back to the grid."""

from __future__ import annotations

import math
from collections.abc import Sequence

import dask.array as da
import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox

from pipeline.errors import LoadError

# Resolutions a 10 m band of a Sentinel-2 COG (and of the demo world's) can be read at: full
# resolution and its 2x, 4x, 8x overviews.
OVERVIEW_LEVELS_M: tuple[float, ...] = (10.0, 20.0, 40.0, 80.0)


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


def read_factor(geobox: GeoBox, read_resolution: float | None) -> int:
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


def exact_coarse_geobox(geobox: GeoBox, factor: int) -> GeoBox | None:
    """``geobox`` as whole pixels ``factor`` times coarser on the lattice :func:`coarse_geobox`
    reads (fixed by the CRS origin), or None when its corner or size falls between them."""
    coarse, offset = coarse_geobox(geobox, factor, halo=0)
    ny, nx = geobox.shape
    if offset != (0, 0) or ny % factor or nx % factor:
        return None
    return GeoBox((ny // factor, nx // factor), coarse.affine, coarse.crs)


def upsampled_chunks(planes: da.Array, factor: int, offset: tuple[int, int], shape: tuple[int, int],
                     resampling: str) -> da.Array:
    """Lazy coarse (bands + 1, h, w) planes -> (bands + 1, *shape) on the fine grid starting
    ``offset`` fine pixels into them (:func:`upsample_planes` chunk by chunk). Each chunk borrows
    one coarse pixel from its neighbours, so chunk edges interpolate as the interior does; the
    outer ring (the coarse grid's halo) only feeds pixels that the crop drops."""
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
