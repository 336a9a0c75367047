"""Procedural noise as pure functions of map coordinates (metres).

Everything in the demo world is a function of where a pixel lies on the ground, never of the
grid it is sampled on, so two tiles in different UTM zones render the same ground identically
and a tile can be generated block by block with no seams.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x165667B19E3779F9)
_S1 = np.uint64(0xBF58476D1CE4E5B9)
_S2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / float(1 << 53)


def hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """A uniform float64 in [0, 1) for each integer lattice point (splitmix64 finaliser)."""
    x = np.asarray(ix, dtype=np.int64).view(np.uint64)
    y = np.asarray(iy, dtype=np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        h = x * _M1 ^ y * _M2 ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _M3
        h ^= h >> np.uint64(30)
        h *= _S1
        h ^= h >> np.uint64(27)
        h *= _S2
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) * _TO_UNIT


def value_noise(u: np.ndarray, v: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1) with features about ``scale`` metres across."""
    x = np.asarray(u, dtype=np.float64) / scale
    y = np.asarray(v, dtype=np.float64) / scale
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = x - x0
    fy = y - y0
    sx = fx * fx * (3.0 - 2.0 * fx)
    sy = fy * fy * (3.0 - 2.0 * fy)
    ix = x0.astype(np.int64)
    iy = y0.astype(np.int64)
    a = hash01(ix, iy, seed)
    b = hash01(ix + 1, iy, seed)
    c = hash01(ix, iy + 1, seed)
    d = hash01(ix + 1, iy + 1, seed)
    top = a + (b - a) * sx
    bottom = c + (d - c) * sx
    return top + (bottom - top) * sy


def fbm(u: np.ndarray, v: np.ndarray, scale: float, seed: int, octaves: int = 4) -> np.ndarray:
    """Fractal sum of value noise, rescaled to about [0, 1] with mean 0.5."""
    total = np.zeros(np.shape(u), dtype=np.float64)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        total += amplitude * value_noise(u, v, scale / 2.0**octave, seed * 7919 + octave)
        norm += amplitude
        amplitude *= 0.5
    return total / norm


class Cells(NamedTuple):
    """Nearest jittered-lattice point per location: a Voronoi partition of the plane."""

    ix: np.ndarray  # lattice column of the owning point
    iy: np.ndarray  # lattice row of the owning point
    key: np.ndarray  # uniform [0, 1) per cell, stable for the cell wherever it is sampled
    edge: np.ndarray  # metres to the nearest cell boundary (F2 - F1, halved)


def voronoi(u: np.ndarray, v: np.ndarray, spacing: float, seed: int, jitter: float = 0.8) -> Cells:
    """Irregular cells about ``spacing`` metres across (fields, parcels, regions)."""
    x = np.asarray(u, dtype=np.float64) / spacing
    y = np.asarray(v, dtype=np.float64) / spacing
    cx = np.floor(x).astype(np.int64)
    cy = np.floor(y).astype(np.int64)
    best = np.full(x.shape, np.inf)
    second = np.full(x.shape, np.inf)
    best_ix = np.zeros_like(cx)
    best_iy = np.zeros_like(cy)
    lo = 0.5 - jitter / 2.0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ix = cx + dx
            iy = cy + dy
            px = ix + lo + jitter * hash01(ix, iy, seed)
            py = iy + lo + jitter * hash01(ix, iy, seed + 1)
            d = np.hypot(x - px, y - py)
            closer = d < best
            second = np.where(closer, best, np.minimum(second, d))
            best = np.where(closer, d, best)
            best_ix = np.where(closer, ix, best_ix)
            best_iy = np.where(closer, iy, best_iy)
    key = hash01(best_ix, best_iy, seed + 2)
    return Cells(best_ix, best_iy, key, (second - best) * spacing / 2.0)
