"""Blocks with a halo: a fully convolutional network run over a large raster piece by piece, each
output pixel computed once, with no seam where the pieces meet.

Pure numpy geometry; the network is a callable ``predict(image (B, H, W)) -> (C, H, W)``.

A piece is its **core** (the pixels it answers for) padded by a **halo** of context on every side.
A pixel's output depends on the input within the network's receptive field, so pieces whose halo
covers that field give the one-piece answer at their core (within float tolerance: the field of a
network with normalisations and resizes is wide but decays fast; the halo is where that decay is
below tolerance, measured per model). A network that resamples inside (Dynamic World halves its
grid once) also needs every piece to start on the same lattice and to have sizes it resamples the
same way: core, halo and offsets are **multiples** of the card's ``size_multiple``.

Two levels use it: the map's blocks (a block's planes arrive padded by the halo, the margin of
its grid: :func:`classify_pixel_block`) and, inside a block, tiles of ``tile_px`` that bound the
activations a network holds at once (:func:`predict_tiled`). The "compute each pixel once"
inference of classifiers is the same pattern at the block level: a block padded by its halo, the
backbone once over it, a dense head at every feature position, the input started on the map-wide
lattice of those positions and padded at its far edges with :func:`pad_to_multiple`
(:mod:`pipeline.detail`, path ``"block"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.errors import LandcoverError

PredictImage = Callable[[np.ndarray], np.ndarray]
# Core side of the tiles a block is run in: the activations of a 9-band, 144-channel network over
# 576 x 576 px stay well under 1 GiB, and the halo adds (576 / 512)^2 - 1 = 27% of work.
TILE_PX = 512


class HaloError(LandcoverError, ValueError):
    """Block, halo or tile sizes that do not fit a per-pixel model's rules."""


@dataclass(frozen=True)
class PixelPlan:
    """How a per-pixel map is made: output cells of ``cell_px`` pixels (1: the model's own
    resolution; k: the mean probability over k x k pixels), ``halo_px`` pixels of context around
    every block, sizes and offsets multiples of ``multiple``. The planes a block gets are its
    cells' pixels padded by the halo (the grid's margin)."""

    cell_px: int
    halo_px: int
    multiple: int = 1
    tile_px: int = TILE_PX
    # Pixels of the grid per pixel of the planes: always 1 (a per-pixel model reads at its resolution).
    read_factor: int = 1

    def __post_init__(self) -> None:
        if min(self.cell_px, self.multiple, self.tile_px) < 1 or self.halo_px < 0:
            raise HaloError(f"cell, multiple and tile must be positive and the halo non-negative: {self}")
        for name in ("halo_px", "tile_px"):
            if getattr(self, name) % self.multiple:
                raise HaloError(f"{name.removesuffix('_px')} {getattr(self, name)} px is not a multiple of "
                                f"{self.multiple}, which the model requires")

    @property
    def margin_px(self) -> int:
        return self.halo_px

    def pixels_per_block(self, cells: tuple[int, int]) -> int:
        """Pixels the network answers for in a block of ``cells`` (rows, cols) cells: its core,
        the halo left out (what a plan counts as the model's work)."""
        return cells[0] * cells[1] * self.cell_px**2

    def block_px(self, cells: int) -> int:
        """Padded pixel side of a block ``cells`` cells wide."""
        return cells * self.cell_px + 2 * self.halo_px

    def cells_per_block(self, cells: int) -> int:
        """``cells``, rounded up so that a block's side in pixels (and so every block's offset) is
        a multiple of :attr:`multiple`."""
        step = self.multiple // math.gcd(self.multiple, self.cell_px)
        return -(-cells // step) * step

    def key(self) -> list:
        """What decides a block's result besides its pixels (for content keys)."""
        return ["per-pixel", self.cell_px, self.halo_px, self.multiple]


def pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``image`` (..., H, W) extended at its far edges by repeating the last row/column until H and W
    are multiples of ``multiple``; also the rows and columns added. Only the far edge changes, so
    pixels more than a halo away from it keep their values."""
    h, w = image.shape[-2:]
    pad = (-h % multiple, -w % multiple)
    if pad == (0, 0):
        return image, pad
    widths = [(0, 0)] * (image.ndim - 2) + [(0, pad[0]), (0, pad[1])]
    return np.pad(image, widths, mode="edge"), pad


def tile_starts(core: int, tile_px: int) -> list[int]:
    """Core starts of the tiles along an axis ``core`` pixels long: every ``tile_px``; the last tile
    may be shorter."""
    return list(range(0, max(core, 1), tile_px))


def predict_tiled(image: np.ndarray, predict: PredictImage, *, halo_px: int, multiple: int = 1,
                  tile_px: int = TILE_PX) -> np.ndarray:
    """``predict`` over ``image`` (B, H, W), already padded by ``halo_px`` on every side, tile by tile:
    returns (C, H - 2 halo, W - 2 halo), each pixel computed once, by the tile whose core holds it.

    Each tile is its core plus the halo, cut from ``image`` (tile starts are multiples of
    ``tile_px``, itself a multiple of ``multiple``, so every tile sits on the lattice of the
    whole image); a short last tile is padded at its far edge to a multiple (:func:`pad_to_multiple`).
    """
    if tile_px % multiple or halo_px % multiple:
        raise HaloError(f"tile {tile_px} px and halo {halo_px} px must be multiples of {multiple}")
    _, height, width = image.shape
    core_h, core_w = height - 2 * halo_px, width - 2 * halo_px
    if core_h < 1 or core_w < 1:
        raise HaloError(f"an image of {height} x {width} px has no core inside a halo of {halo_px} px")
    out: np.ndarray | None = None
    for y in tile_starts(core_h, tile_px):
        for x in tile_starts(core_w, tile_px):
            th, tw = min(tile_px, core_h - y), min(tile_px, core_w - x)
            tile, _ = pad_to_multiple(image[:, y:y + th + 2 * halo_px, x:x + tw + 2 * halo_px], multiple)
            result = np.asarray(predict(tile))
            if out is None:
                out = np.empty((result.shape[0], core_h, core_w), dtype=np.float32)
            out[:, y:y + th, x:x + tw] = result[:, halo_px:halo_px + th, halo_px:halo_px + tw]
    assert out is not None
    return out


def cell_means(values: np.ndarray, cell_px: int) -> np.ndarray:
    """(C, cy * cell_px, cx * cell_px) -> (C, cy, cx): the mean over each cell's pixels, NaN pixels
    left out (a cell with none is NaN). ``cell_px`` 1 is the identity."""
    if cell_px == 1:
        return values
    c, h, w = values.shape
    blocks = values.reshape(c, h // cell_px, cell_px, w // cell_px, cell_px)
    count = np.isfinite(blocks).sum(axis=(2, 4))
    total = np.nansum(blocks, axis=(2, 4), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def classify_pixel_block(bands: np.ndarray, clear: np.ndarray, inside: np.ndarray, plan: PixelPlan,
                         predict: PredictImage, *, n_classes: int, min_clear: float) -> np.ndarray:
    """Class probabilities per output cell of one block: (n_classes + 1, cy, cx) float32, in the
    model's class order, then each cell's clear share.

    ``bands`` (B, H, W) reflectance of the block's pixels padded by ``plan.halo_px`` on every side
    (``H == cy * cell_px + 2 * halo``), ``clear`` (H, W) pixels with a clear observation, ``inside``
    (cy, cx) cells in the mapped area. A cell's probabilities are the mean over its clear pixels
    (then the map takes the argmax); NaN for cells outside the area or with less than
    ``min_clear`` clear pixels. Blocks with no such cell never run the model.
    """
    cy, cx = inside.shape
    expected = (plan.block_px(cy), plan.block_px(cx))
    if bands.ndim != 3 or bands.shape[1:] != expected or clear.shape != expected:
        raise HaloError(f"block of {tuple(bands.shape)} / clear {tuple(clear.shape)} does not hold {cy} x {cx} cells "
                        f"of {plan.cell_px} px padded by {plan.halo_px} px, i.e. (B, {expected[0]}, {expected[1]})")
    h, c = plan.halo_px, plan.cell_px
    core_clear = np.asarray(clear, dtype=bool)[h:h + cy * c, h:h + cx * c]
    out = np.full((n_classes + 1, cy, cx), np.nan, dtype=np.float32)
    out[-1] = cell_means(core_clear[None].astype(np.float32), c)[0]
    wanted = inside & (out[-1] >= min_clear)
    if not wanted.any():
        return out
    probs = predict_tiled(bands, predict, halo_px=h, multiple=plan.multiple, tile_px=plan.tile_px)
    probs[:, ~core_clear] = np.nan  # a pixel never seen clear says nothing about its cell
    out[:n_classes] = np.where(wanted, cell_means(probs, c), np.nan)
    return out
