"""Detailed maps: output cells smaller than the model's window, from overlapping, densely evaluated windows.

Pure numpy geometry; the model is a callable. A block of the map is classified in four steps:

1. **Windows** of ``window_px`` start every ``stride_px`` pixels on a lattice shared by every
   block of the map (``origin_px`` says where the block lies on it), so neighbouring blocks place
   the same windows and blend them the same way: no seams at block edges. A window is sent to the
   model only if it has at least ``min_clear`` clear pixels and weight on some cell in the AOI.
2. **Dense evaluation**: the model returns a ``g x g`` grid of class probabilities per window
   (``g = 1``: one vector for the whole window); position ``(i, j)`` stands for the
   ``window_px / g`` square sub-block ``(i, j)`` of the window.
3. **Blending**: the probability field at a ground point is the weighted mean, over every window
   covering it, of the window's dense value there; the weight is a taper over the window
   (``hann``: sin^2, as in tiled segmentation inference; ``gaussian``: sigma = window / 4;
   ``box``: flat), so the centre of a window, which saw context on every side, counts most.
4. **Cells** of ``cell_px`` average the field over ``k x k`` sample points (``k = ceil(cell_px /
   10)``, about one per 100 m), so a cell reports the mean of what covers it, not one point.

**Block path** (``path="block"``, backbones with no global operation before the head: ResNet,
ConvNeXt, RegNetX; the plan chooses it by architecture, :func:`pipeline.plan.evaluation_path`):
steps 1-2 become one backbone pass over the whole block padded by a halo, with the head at every
feature-map position (every ``feature_stride_px``, e.g. 32 px, on a lattice shared by every block
of the map), so each pixel's features are computed once instead of once per window holding it.
Step 3 blends each position as the dense value of a window of ``window_px`` centred on it, with
the same taper. The halo is the context a position near a block's edge needs to give the
one-block answer (:data:`models.architectures.BLOCK_HALO_PX`, chosen by measurement).

Margin: a block's pixels are its cells padded by ``margin_px = window_px`` on every side, so every
window with weight on a cell of the block lies inside the padded block (a window starting more
than ``window_px`` before a cell cannot reach it); none when the windows are the cells; the halo
on the block path. Memory is bounded by ``max_batch_bytes`` for
the windows in flight plus a few arrays of (classes, samples) per block (~50 MB for a 8 x 8 km
block at 10 m, 19 classes); on the block path by one block's activations instead (a ResNet50 over
a 9.6 km block and its halo, 1344 px: ~0.4 GiB in fp32; over the 19.2 km blocks the block path
plans, 2304 px: ~1.1 GiB, measured).

Measured on the demo truth (``python -m benchmarks.detail``): dense evaluation, stride window / 3,
100 m cells and ``gaussian`` weights are the map's defaults (:mod:`pipeline.settings`). With
``g = 1``, ``box`` weights and ``stride_px == cell_px == window_px`` it is the 1.2 km map of one
window per cell, classified whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Literal

import numpy as np

from pipeline.errors import LandcoverError

WeightKind = Literal["hann", "gaussian", "box"]
WEIGHT_KINDS: tuple[WeightKind, ...] = ("hann", "gaussian", "box")
# How the model is evaluated: a forward pass per window, or the backbone once over the block.
EvalPath = Literal["windows", "block"]
# Sample points per cell side: one per this many pixels (100 m at 10 m), at least one.
SAMPLE_SPACING_PX = 10
MAX_BATCH_BYTES = 64 * 2**20

PredictDense = Callable[[np.ndarray], np.ndarray]


class DetailError(LandcoverError, ValueError):
    """Detail-map parameters or block shapes that do not fit together."""


@dataclass(frozen=True)
class DetailPlan:
    """How windows are placed, evaluated and blended into cells; sizes in pixels of the map grid.

    The client plans it from the settings and the model card (:meth:`from_card`); the worker
    completes it with the model's dense grid and takes it onto the pixels it classifies
    (:meth:`on_planes`)."""

    window_px: int  # side of a window handed to the model
    stride_px: int  # distance between window origins
    cell_px: int  # side of an output cell
    _: KW_ONLY
    weight: WeightKind  # taper of a window when blending (the default is the settings' `blend`)
    dense_grid: int = 1  # g: probability grid per window side the model returns
    # Whether the worker asks the model for its dense grid (dense evaluation); with False, g = 1.
    dense: bool = True
    # Grid pixels per pixel of the planes a block is classified from: 2 when a model that sees
    # its window coarser than 20 m gets the 20 m composite itself, never upsampled to the grid.
    read_factor: int = 1
    # Pixels between sample points (about 100 m); a plan on coarser pixels keeps the same ground spacing.
    sample_spacing_px: float = SAMPLE_SPACING_PX
    # "block": a fully convolutional backbone runs once over the block padded by ``halo_px``, the head
    # at every feature-map position (every ``feature_stride_px``); each position is blended as the
    # dense value of a window of ``window_px`` centred on it (``feature_centre_px``: where position
    # 0 sits, measured on the worker). "windows": every window its own forward pass.
    path: EvalPath = "windows"
    halo_px: int = 0
    feature_stride_px: int = 32
    feature_centre_px: float = 0.0
    # Why the plan chose this path (for the plan's display and the provenance); no part of the result.
    path_reason: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if min(self.window_px, self.stride_px, self.cell_px, self.dense_grid, self.read_factor) < 1 \
                or self.sample_spacing_px <= 0:
            raise DetailError(f"window, stride, cell, dense grid, read factor and sample spacing must be positive: {self}")
        if self.stride_px > self.window_px:
            raise DetailError(f"stride {self.stride_px} px exceeds the window {self.window_px} px and would leave gaps")
        if self.weight not in WEIGHT_KINDS:
            raise DetailError(f"unknown weight {self.weight!r}; use one of {', '.join(WEIGHT_KINDS)}")
        if self.path == "block" and (self.halo_px < 0 or self.feature_stride_px < 1 or self.one_window_per_cell):
            raise DetailError(f"block evaluation needs overlapping windows, a non-negative halo and a positive "
                              f"feature stride: {self}")

    def evaluated_per_block(self, halo_px: int, feature_stride_px: int) -> DetailPlan:
        """This plan with the backbone run once per block padded by ``halo_px`` (grid pixels), its
        feature positions every ``feature_stride_px``."""
        return replace(self, path="block", halo_px=halo_px, feature_stride_px=feature_stride_px)

    @classmethod
    def from_card(cls, window_px: int, cell_m: float, resolution: float = 10.0, *, weight: WeightKind,
                  dense_grid: int = 1, stride_px: int | None = None, dense: bool = True) -> DetailPlan:
        """A plan for a model window of ``window_px`` and cells of ``cell_m`` metres; the stride
        defaults to a third of the window (every point is seen by three windows a side)."""
        cell = cell_m / resolution
        if cell < 1 or abs(cell - round(cell)) > 1e-9:
            raise DetailError(f"cell size {cell_m} m is not a whole number of {resolution} m pixels")
        return cls(window_px=window_px, stride_px=stride_px or max(1, window_px // 3), cell_px=round(cell),
                   dense_grid=dense_grid, weight=weight, dense=dense)

    def reading(self, factor: int) -> DetailPlan:
        """This plan classified from planes ``factor`` grid pixels coarse when every window,
        stride and cell is whole pixels of them (:meth:`coarsened`), else from grid pixels."""
        return replace(self, read_factor=factor if self.coarsened(factor) is not None else 1)

    def on_planes(self, dense_grid: int = 1) -> DetailPlan:
        """The plan a worker classifies with: the model's ``dense_grid`` (when :attr:`dense`), in the
        pixels of the planes it gets (``read_factor`` times the grid's)."""
        plan = replace(self, dense_grid=dense_grid if self.dense else 1).coarsened(self.read_factor)
        if plan is None:
            raise DetailError(f"a window of {self.window_px} px every {self.stride_px} px into cells of {self.cell_px} px "
                              f"is no whole number of {self.read_factor}x coarser pixels")
        return replace(plan, read_factor=1)

    @property
    def one_window_per_cell(self) -> bool:
        """Windows that are the cells themselves (the 1.2 km map): no window reaches past its cell."""
        return self.window_px == self.stride_px == self.cell_px

    @property
    def margin_px(self) -> int:
        if self.path == "block":
            return self.halo_px
        return 0 if self.one_window_per_cell else self.window_px

    @property
    def samples_per_cell(self) -> int:
        # The tolerance keeps a coarsened plan's count equal to its fine plan's (60 / 5 = 120 / 10).
        return max(1, math.ceil(self.cell_px / self.sample_spacing_px - 1e-9))

    def coarsened(self, factor: int) -> DetailPlan | None:
        """The same plan on pixels ``factor`` times coarser (e.g. 20 m planes of a 10 m grid), or
        None when a window, stride or cell is not a whole number of them.

        Every length scales by 1 / factor (the sample points too), so the windows, the blending
        weights and the cells are those of this plan on the same ground; only what the model
        sees inside a window changes, from the coarse pixels themselves rather than an
        upsampling of them."""
        if factor < 1:
            raise DetailError(f"coarsening factor {factor} must be at least 1")
        if factor == 1:
            return self
        lengths = (self.window_px, self.stride_px, self.cell_px) + ((self.halo_px, self.feature_stride_px)
                                                                    if self.path == "block" else ())
        if any(n % factor for n in lengths):
            return None
        return replace(self, window_px=self.window_px // factor, stride_px=self.stride_px // factor,
                       cell_px=self.cell_px // factor, sample_spacing_px=self.sample_spacing_px / factor,
                       halo_px=self.halo_px // factor, feature_stride_px=max(1, self.feature_stride_px // factor),
                       feature_centre_px=self.feature_centre_px / factor)

    def block_px(self, cells: int) -> int:
        """Padded pixel side of a block ``cells`` cells wide."""
        return cells * self.cell_px + 2 * self.margin_px

    def key(self) -> list:
        """What decides a block's result besides its pixels (for content keys)."""
        block = ["block", self.halo_px, self.feature_stride_px] if self.path == "block" else []
        return [self.stride_px, self.cell_px, self.dense, self.weight, *block]


def window_weight(t: np.ndarray, window_px: int, kind: WeightKind) -> np.ndarray:
    """Weight of a point ``t`` pixels from a window's leading edge; zero outside (0, window_px)."""
    inside = (t > 0) & (t < window_px)
    if kind == "box":
        w = np.ones_like(t, dtype=np.float64)
    elif kind == "hann":
        w = np.sin(np.pi * t / window_px) ** 2
    else:
        w = np.exp(-0.5 * ((t - window_px / 2) / (window_px / 4)) ** 2)
    return np.where(inside, w, 0.0)


def window_origins(size_px: int, plan: DetailPlan, origin_px: int) -> np.ndarray:
    """Window starts along one axis of a padded block ``size_px`` long, on the map-wide lattice."""
    first = (plan.margin_px - origin_px) % plan.stride_px
    return np.arange(first, size_px - plan.window_px + 1, plan.stride_px)


def sample_positions(cells: int, plan: DetailPlan) -> np.ndarray:
    """Sample points along one axis (pixel coordinates of the padded block), ``k`` per cell."""
    k = plan.samples_per_cell
    offsets = (np.arange(k) + 0.5) * plan.cell_px / k
    return (plan.margin_px + np.arange(cells)[:, None] * plan.cell_px + offsets[None, :]).ravel()


def axis_weights(samples: np.ndarray, origins: np.ndarray, plan: DetailPlan) -> np.ndarray:
    """(samples, windows * g): the blending weight of dense position (window, i) at each sample.

    A sample draws only on the dense position whose sub-block holds it, weighted by the window's taper.
    """
    g = plan.dense_grid
    t = samples[:, None] - origins[None, :]  # (S, K)
    w = window_weight(t, plan.window_px, plan.weight)
    pos = np.clip(np.floor(t * g / plan.window_px).astype(np.int64), 0, g - 1)
    out = np.zeros((len(samples), len(origins), g))
    np.put_along_axis(out, pos[..., None], w[..., None], axis=2)
    return out.reshape(len(samples), len(origins) * g)


def window_clear_fraction(clear: np.ndarray, oy: np.ndarray, ox: np.ndarray, window_px: int) -> np.ndarray:
    """(len(oy), len(ox)) clear share of each window, from a summed-area table of ``clear``."""
    sat = np.zeros((clear.shape[0] + 1, clear.shape[1] + 1), dtype=np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(clear, axis=0, dtype=np.int64), axis=1)
    y0, y1, x0, x1 = oy[:, None], oy[:, None] + window_px, ox[None, :], ox[None, :] + window_px
    return (sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]) / float(window_px * window_px)


def classify_pixels(
    bands: np.ndarray,
    clear: np.ndarray,
    inside: np.ndarray,
    plan: DetailPlan,
    predict_dense: PredictDense,
    *,
    n_classes: int,
    min_clear: float,
    origin_px: tuple[int, int] = (0, 0),
    max_batch_bytes: int = MAX_BATCH_BYTES,
) -> np.ndarray:
    """Class probabilities per output cell of one block: (n_classes + 1, cy, cx) float32.

    ``bands`` (B, H, W) reflectance of the block padded by ``plan.margin_px`` on every side
    (``H == cy * cell_px + 2 * margin_px``), ``clear`` (H, W) pixels with a clear observation,
    ``inside`` (cy, cx) cells in the AOI. ``predict_dense`` maps windows (N, B, window, window)
    to probabilities (N, n_classes, g, g) in the model's class order, which the output keeps; on
    the block path it maps one image (B, H, W), H and W whole feature strides, to probabilities
    per feature position (n_classes, H / stride, W / stride).
    ``origin_px`` is the (row, col) of the block's first interior pixel on a pixel lattice shared
    by all blocks of the map (e.g. its offset in the map's pixel grid); windows start at multiples
    of ``stride_px`` there. The last plane is each cell's own clear share; probabilities are NaN
    for cells outside the AOI, with less than ``min_clear`` clear pixels, or covered by no
    classified window.
    """
    cy, cx = inside.shape
    expected = (plan.block_px(cy), plan.block_px(cx))
    if bands.ndim != 3 or bands.shape[1:] != expected or clear.shape != expected:
        raise DetailError(f"block of {tuple(bands.shape)} / clear {tuple(clear.shape)} does not hold {cy} x {cx} cells "
                          f"of {plan.cell_px} px padded by {plan.margin_px} px, i.e. (B, {expected[0]}, {expected[1]})")
    clear = np.asarray(clear, dtype=bool)
    m, c = plan.margin_px, plan.cell_px
    cell_clear = clear[m:m + cy * c, m:m + cx * c].reshape(cy, c, cx, c).mean(axis=(1, 3), dtype=np.float64)
    out = np.full((n_classes + 1, cy, cx), np.nan, dtype=np.float32)
    out[-1] = cell_clear
    wanted = inside & (cell_clear >= min_clear)
    if not wanted.any():
        return out

    k = plan.samples_per_cell
    if plan.path == "block":  # feature positions blended as windows centred on them (g = 1)
        probs, seen, oy, ox = _evaluate_block(bands, clear, plan, predict_dense, n_classes, min_clear, origin_px)
        ay = axis_weights(sample_positions(cy, plan), oy, replace(plan, dense_grid=1))
        ax = axis_weights(sample_positions(cx, plan), ox, replace(plan, dense_grid=1))
    else:
        oy = window_origins(expected[0], plan, origin_px[0])
        ox = window_origins(expected[1], plan, origin_px[1])
        ay = axis_weights(sample_positions(cy, plan), oy, plan)  # (Sy, Ky * g)
        ax = axis_weights(sample_positions(cx, plan), ox, plan)  # (Sx, Kx * g)
        g = plan.dense_grid
        wanted_samples = np.repeat(np.repeat(wanted, k, axis=0), k, axis=1).astype(np.float64)
        reach = _per_window(ay.T @ wanted_samples @ ax, g)  # (Ky, Kx): weight a window puts on wanted cells
        todo = (reach > 0) & (window_clear_fraction(clear, oy, ox, plan.window_px) >= min_clear)
        probs, seen = _evaluate(bands, oy, ox, todo, plan, predict_dense, n_classes, max_batch_bytes)
    num = ay[None] @ (probs @ ax.T)  # (C, Sy, Sx)
    den = ay @ seen @ ax.T  # (Sy, Sx)
    supported = den > 1e-12
    field = np.where(supported, num / np.where(supported, den, 1.0), 0.0)
    count = supported.reshape(cy, k, cx, k).sum(axis=(1, 3))
    cell_probs = field.reshape(n_classes, cy, k, cx, k).sum(axis=(2, 4)) / np.maximum(count, 1)
    valid = wanted & (count > 0)
    out[:n_classes] = np.where(valid, cell_probs, np.nan)
    return out


def feature_positions(size_px: int, plan: DetailPlan, origin_px: int) -> tuple[int, int]:
    """Block path, along one axis of a padded block ``size_px`` long: the pixel where the network's
    input starts (the first on the map-wide lattice of feature positions, every
    ``feature_stride_px`` from the map's origin, so neighbouring blocks place the same positions)
    and how many positions the input yields once padded to whole strides."""
    skip = (plan.margin_px - origin_px) % plan.feature_stride_px
    return skip, -(-(size_px - skip) // plan.feature_stride_px)


def clipped_clear_fraction(clear: np.ndarray, oy: np.ndarray, ox: np.ndarray, window_px: int) -> np.ndarray:
    """(len(oy), len(ox)) clear share of windows starting at (possibly fractional, possibly outside)
    ``oy``, ``ox``, over the part of each that lies in ``clear``; 0 for a window wholly outside."""
    sat = np.zeros((clear.shape[0] + 1, clear.shape[1] + 1), dtype=np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(clear, axis=0, dtype=np.int64), axis=1)
    y0 = np.clip(np.round(oy).astype(np.int64), 0, clear.shape[0])[:, None]
    x0 = np.clip(np.round(ox).astype(np.int64), 0, clear.shape[1])[None, :]
    y1 = np.clip(np.round(oy).astype(np.int64) + window_px, 0, clear.shape[0])[:, None]
    x1 = np.clip(np.round(ox).astype(np.int64) + window_px, 0, clear.shape[1])[None, :]
    area = (y1 - y0) * (x1 - x0)
    count = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    return np.where(area > 0, count / np.maximum(area, 1), 0.0)


def _evaluate_block(bands: np.ndarray, clear: np.ndarray, plan: DetailPlan, predict_block: PredictDense,
                    n_classes: int, min_clear: float, origin_px: tuple[int, int],
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The backbone once over the block (from its first lattice pixel, padded at the far edges to whole
    strides): probabilities per feature position (C, Ky, Kx), which positions count (a position
    whose window is less than ``min_clear`` clear does not, as a cloudy window is never sent), and
    the origins of the windows centred on the positions along each axis."""
    from pipeline.halo import pad_to_multiple

    s, w = plan.feature_stride_px, plan.window_px
    (sy, ny), (sx, nx) = (feature_positions(n, plan, o) for n, o in zip(bands.shape[1:], origin_px, strict=True))
    image, _ = pad_to_multiple(np.asarray(bands[:, sy:, sx:], dtype=np.float32), s)
    probs = np.asarray(predict_block(image), dtype=np.float64)
    if probs.shape != (n_classes, ny, nx):
        raise DetailError(f"the block model returned {probs.shape} for an image of {image.shape[1:]} px; "
                          f"the plan expects ({n_classes}, {ny}, {nx}): one position every {s} px")
    oy = sy + plan.feature_centre_px + s * np.arange(ny) - w / 2
    ox = sx + plan.feature_centre_px + s * np.arange(nx) - w / 2
    seen = (clipped_clear_fraction(clear, oy, ox, w) >= min_clear).astype(np.float64)
    return probs * seen, seen, oy, ox


def _per_window(dense: np.ndarray, g: int) -> np.ndarray:
    """(Ky * g, Kx * g) -> (Ky, Kx) sums over each window's dense positions."""
    ky, kx = dense.shape[0] // g, dense.shape[1] // g
    return dense.reshape(ky, g, kx, g).sum(axis=(1, 3))


def _evaluate(bands: np.ndarray, oy: np.ndarray, ox: np.ndarray, todo: np.ndarray, plan: DetailPlan,
              predict_dense: PredictDense, n_classes: int, max_batch_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Run the model on the ``todo`` windows in bounded batches; returns the dense probabilities laid
    out per window (C, Ky * g, Kx * g) and which dense positions were evaluated (Ky * g, Kx * g)."""
    g, w = plan.dense_grid, plan.window_px
    probs = np.zeros((n_classes, len(oy) * g, len(ox) * g))
    seen = np.zeros((len(oy) * g, len(ox) * g))
    jobs = np.argwhere(todo)
    per_batch = max(1, max_batch_bytes // (bands.shape[0] * w * w * 4))
    for start in range(0, len(jobs), per_batch):
        batch = jobs[start:start + per_batch]
        windows = np.stack([bands[:, oy[i]:oy[i] + w, ox[j]:ox[j] + w] for i, j in batch]).astype(np.float32, copy=False)
        result = np.asarray(predict_dense(windows))
        if result.shape != (len(batch), n_classes, g, g):
            raise DetailError(f"predict_dense returned {result.shape} for {len(batch)} windows; "
                              f"the plan expects (N, {n_classes}, {g}, {g})")
        for (i, j), p in zip(batch, result):
            probs[:, i * g:(i + 1) * g, j * g:(j + 1) * g] = p
            seen[i * g:(i + 1) * g, j * g:(j + 1) * g] = 1.0
    return probs, seen
