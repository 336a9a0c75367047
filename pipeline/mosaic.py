"""Mosaic stage: per-cell class probabilities -> a class map with confidence and a QA trail.

A cell gets a class only when the model saw it on enough clear ground and inside the AOI;
everything else is nodata (code 0), never a guessed class.  Pure numpy: the caller has
already put every tile/zone onto the one output grid, so there is nothing spatial left to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.classes import NODATA_CODE

TOP_K = 3

# Softmax outputs averaged over overlapping windows still sum to 1; anything further off
# means logits or sigmoid scores were passed as softmax probabilities.
_SOFTMAX_SUM_TOLERANCE = 1e-2
_PROB_RANGE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ClassMap:
    """A land-cover map on the output cell grid (row-major, north up).

    classes: uint8 (ny, nx) the legend's codes (1..19 for BigEarthNet), 0 = nodata.
    confidence: float32 (ny, nx) probability of the mapped class; NaN at nodata.
    top_codes: uint8 (3, ny, nx) the three most probable codes, best first; 0 at nodata.
    top_probs: float32 (3, ny, nx) their probabilities; NaN at nodata.
    clear_fraction: float32 (ny, nx) share of clear observations the cell was made from.
    valid: bool (ny, nx) cells that carry a class.
    multi_label: whether probabilities are independent sigmoid scores rather than a softmax.
    probs: float32 (C, ny, nx) every class's probability in legend order (plane k = code
    ``codes[k]``); NaN at nodata. None for maps made without them.
    threshold: multi-label: a class is present in a cell when its score is at least this.
    codes: the map code of each plane, in legend order; None = 1..C.
    """

    classes: np.ndarray
    confidence: np.ndarray
    top_codes: np.ndarray
    top_probs: np.ndarray
    clear_fraction: np.ndarray
    valid: np.ndarray
    multi_label: bool = False
    probs: np.ndarray | None = None
    threshold: float = 0.5
    codes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        shape = self.classes.shape
        if len(shape) != 2:
            raise ValueError(f"ClassMap.classes must be 2-D (ny, nx), got shape {shape}")
        for name in ("confidence", "clear_fraction", "valid"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"ClassMap.{name} has shape {getattr(self, name).shape}, expected {shape}")
        for name in ("top_codes", "top_probs", "probs"):
            value = getattr(self, name)
            if value is not None and value.shape[1:] != shape:
                raise ValueError(f"ClassMap.{name} has shape {value.shape}, expected (k, *{shape})")

    @property
    def plane_codes(self) -> np.ndarray:
        """int (C,): the map code of each probability plane."""
        if self.codes is not None:
            return np.asarray(self.codes, dtype=np.int64)
        return np.arange(1, len(self.probs) + 1) if self.probs is not None else np.arange(1, self.classes.max(initial=0) + 1)

    def labels(self) -> np.ndarray:
        """bool (C, ny, nx) in legend order: the classes present in each valid cell. Multi-label:
        every class scoring at least ``threshold`` (the mapped class always, so no valid cell is
        empty); single-label: the mapped class alone."""
        ny, nx = self.shape
        codes = self.plane_codes
        plane = np.full(256, -1, dtype=np.int64)
        plane[codes] = np.arange(len(codes))
        present = np.zeros((len(codes), ny, nx), dtype=bool)
        if self.multi_label and self.probs is not None:
            with np.errstate(invalid="ignore"):
                present |= self.probs >= self.threshold
        rows, cols = np.nonzero(self.valid)
        present[plane[self.classes[rows, cols].astype(int)], rows, cols] = True
        present[:, ~self.valid] = False
        return present

    @property
    def shape(self) -> tuple[int, int]:
        return self.classes.shape  # type: ignore[return-value]

    @property
    def valid_count(self) -> int:
        return int(self.valid.sum())


def mosaic(
    probs: np.ndarray,
    clear_fraction: np.ndarray,
    inside_aoi: np.ndarray,
    *,
    min_clear: float = 0.5,
    multi_label: bool = False,
    threshold: float = 0.5,
    codes: Sequence[int] | None = None,
) -> ClassMap:
    """Turn class probabilities per cell into a ClassMap.

    probs: (C, ny, nx) per-class probabilities in legend order (softmax, or sigmoid scores when
    ``multi_label``); NaN where a cell was never computed. ``codes``: the map code of each
    plane (the legend's; default 1..C, BigEarthNet's order).  A cell becomes nodata when
    its clear fraction is below ``min_clear`` (or NaN), it lies outside the AOI, or any of
    its probabilities is not finite.  Ties go to the lowest class index, as ``argmax`` does
    in training, so the same inputs always give the same map.
    """
    probs = np.asarray(probs, dtype=np.float32)
    clear_fraction = np.asarray(clear_fraction, dtype=np.float32)
    inside_aoi = np.asarray(inside_aoi, dtype=bool)
    _check_inputs(probs, clear_fraction, inside_aoi, min_clear)
    lut = np.arange(1, len(probs) + 1) if codes is None else np.asarray(codes, dtype=np.int64)
    if lut.shape != (len(probs),) or lut.min() < 1 or lut.max() > 255:
        raise ValueError(f"codes must give one code in 1..255 per plane: probs have shape {probs.shape}, codes {codes}")

    finite = np.isfinite(probs).all(axis=0)
    _check_probabilities(probs[:, finite], multi_label)
    valid = finite & inside_aoi & (clear_fraction >= min_clear)  # NaN compares False

    # A stable sort of the negated scores keeps equal scores in index order: lowest index wins.
    ranked = np.where(valid, probs, -np.inf)
    order = np.argsort(-ranked, axis=0, kind="stable")[:TOP_K]
    top_probs = np.take_along_axis(probs, order, axis=0)
    top_codes = lut[order].astype(np.uint8)

    top_codes[:, ~valid] = NODATA_CODE
    top_probs[:, ~valid] = np.nan
    all_probs = probs.copy()
    all_probs[:, ~valid] = np.nan
    return ClassMap(
        classes=top_codes[0].copy(),
        confidence=top_probs[0].copy(),
        top_codes=top_codes,
        top_probs=top_probs.astype(np.float32),
        clear_fraction=clear_fraction,
        valid=valid,
        multi_label=multi_label,
        probs=all_probs,
        threshold=threshold,
        codes=None if codes is None else tuple(int(c) for c in lut),
    )


def _check_inputs(probs: np.ndarray, clear_fraction: np.ndarray, inside_aoi: np.ndarray, min_clear: float) -> None:
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs must have shape (classes, ny, nx), got {probs.shape}")
    grid = probs.shape[1:]
    if clear_fraction.shape != grid:
        raise ValueError(f"clear_fraction has shape {clear_fraction.shape}, expected the grid {grid}")
    if inside_aoi.shape != grid:
        raise ValueError(f"inside_aoi has shape {inside_aoi.shape}, expected the grid {grid}")
    if not 0.0 <= min_clear <= 1.0:
        raise ValueError(f"min_clear must lie in [0, 1], got {min_clear}")


def _check_probabilities(finite_probs: np.ndarray, multi_label: bool) -> None:
    """Refuse scores that are not probabilities: a logit map would otherwise look plausible."""
    if finite_probs.size == 0:
        return
    if finite_probs.min() < -_PROB_RANGE_TOLERANCE or finite_probs.max() > 1 + _PROB_RANGE_TOLERANCE:
        raise ValueError("probs must lie in [0, 1]; pass probabilities (softmax or sigmoid), not logits")
    if not multi_label:
        sums = finite_probs.sum(axis=0)
        if np.abs(sums - 1).max() > _SOFTMAX_SUM_TOLERANCE:
            raise ValueError("softmax probs must sum to 1 per cell; pass multi_label=True for sigmoid scores")
