"""Classification on the workers: a block's composite planes in, class probabilities per cell out.

Each task gets the composite of one or more blocks (plus the window margin when windows overlap),
cuts the model's windows, applies the model card's preprocessing and runs the batched predictor;
on the block path (a fully convolutional backbone) it runs the backbone once over each block and
its halo instead (:mod:`pipeline.detail`).
The model is loaded once per worker process, its sha256 checked once there, and reused by every
task that lands there. The client side (which blocks, in what order, how many in flight) is
:mod:`pipeline.stream`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pipeline.blocks import BlockSpec
    from pipeline.detail import DetailPlan
    from pipeline.halo import PixelPlan


def n_planes(card) -> int:
    """Output planes of a block: the probabilities of the card's legend classes, then the clear
    fraction of each cell."""
    return len(card.legend) + 1


@dataclass(frozen=True, eq=False)
class ModelRef:
    """What a worker needs of the model: a path it can read (shared storage on a cluster), the
    sha256 the client saw (so a worker never runs different weights than the map records), the
    whole card as the client read it, the device and the batch size."""

    path: str
    sha256: str
    card: Any = None  # models.card.ModelCard; None: the worker reads the card beside the weights
    device: str = "auto"
    batch_size: int | None = None

    @property
    def key(self) -> tuple[str, str, str, int | None]:
        """What a worker's model cache is keyed by: the same file, hash and placement."""
        return self.path, self.sha256, self.device, self.batch_size


# A per-process cache is what makes "load once per worker" true: dask reuses the worker
# process for every task; keyed by ModelRef.key, so the sha256 the client recorded is part of it.
_LOADED: dict[tuple, Any] = {}


def _predictor(model: ModelRef):
    if model.key not in _LOADED:
        from models.files import sha256_file
        from models.predictor import Predictor

        actual = sha256_file(Path(model.path))  # once per worker: the file a worker loads is the one the map records
        if actual != model.sha256:
            raise RuntimeError(f"model file {model.path} changed during the run (sha256 {actual[:12]} != {model.sha256[:12]})")
        predictor = Predictor.from_path(Path(model.path), device=None if model.device == "auto" else model.device,
                                        batch_size=model.batch_size, card=model.card, sha256=actual)
        while len(_LOADED) >= 2:  # a worker keeps the two most recent models, as the lru cache did
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[model.key] = (predictor, {})
    return _LOADED[model.key][0]


def load_model_here(model: ModelRef) -> str:
    """Load the model into this worker's cache now (run on every worker before the first task),
    so importing torch and reading the weights is not paid inside the first block; returns the
    device it landed on."""
    return str(_predictor(model).device)


def _dense_grid(model: ModelRef) -> int:
    predictor = _predictor(model)
    memo = _LOADED[model.key][1]
    if "dense_grid" not in memo:
        memo["dense_grid"] = predictor.dense_grid()
    return memo["dense_grid"]


def _feature_lattice(model: ModelRef) -> tuple[int, float]:
    memo = _LOADED[model.key][1]
    if "feature_lattice" not in memo:
        memo["feature_lattice"] = _predictor(model).feature_lattice()
    return memo["feature_lattice"]


def worker_plan(model: ModelRef, plan: DetailPlan) -> DetailPlan:
    """The client's ``plan`` as this worker classifies it: with the model's dense grid (block path:
    where its feature positions sit, measured once per worker), in the pixels of the planes it gets."""
    from dataclasses import replace

    from pipeline.detail import DetailError

    if plan.path == "block":
        planes = plan.on_planes(1)
        stride, centre = _feature_lattice(model)
        if stride != planes.feature_stride_px:
            raise DetailError(f"the plan places feature positions every {planes.feature_stride_px} px but the network's "
                              f"stride is {stride} px; plan the map again with this model's card")
        return replace(planes, feature_centre_px=centre)
    g = _dense_grid(model) if plan.dense else 1
    return plan.on_planes(g)


def classify_blocks(planes: list[np.ndarray], blocks: list[BlockSpec], model: ModelRef,
                    detail: DetailPlan | PixelPlan, min_clear: float) -> list[np.ndarray]:
    """Composite planes of blocks -> one (legend classes + 1, cy, cx) float32 per block: class
    probabilities in legend order (NaN where not mapped), then each cell's clear fraction.

    ``planes[k]`` is block k's (bands + 1, H, W) composite (the card's bands' reflectance, then
    the clear-observation count) padded by the plan's margin, on pixels ``detail.read_factor``
    times the grid's. Several blocks per task keep a GPU fed when each has few windows; the
    windows are cut here, where the model runs, so the task's input is the composite rather
    than the (much larger) stack of overlapping windows.
    """
    from pipeline.detail import classify_pixels
    from pipeline.halo import PixelPlan, classify_pixel_block

    predictor = _predictor(model)
    if isinstance(detail, PixelPlan):  # a per-pixel network: each block's pixels with their halo
        def predict_image(image: np.ndarray) -> np.ndarray:
            return predictor.predict_pixels(image[None])[0]

        return [to_legend_planes(predictor.card, classify_pixel_block(
                    block_planes[:-1], block_planes[-1] > 0, block.inside, detail, predict_image,
                    n_classes=len(predictor.card.classes), min_clear=min_clear))
                for block_planes, block in zip(planes, blocks, strict=True)]
    plan = worker_plan(model, detail)
    if plan.path == "block":
        predict = predictor.predict_reflectance_block
    elif plan.dense_grid > 1:
        predict = functools.partial(predictor.predict_reflectance_dense, window_px=plan.window_px)
    else:
        def predict(windows: np.ndarray) -> np.ndarray:
            return predictor.predict_reflectance(windows).probs[:, :, None, None]

    out = []
    for block_planes, block in zip(planes, blocks, strict=True):
        origin = (block.cells[0].start * plan.cell_px, block.cells[1].start * plan.cell_px)
        cells = classify_pixels(
            block_planes[:-1], block_planes[-1] > 0, block.inside, plan, predict,
            n_classes=len(predictor.card.classes), min_clear=min_clear, origin_px=origin,
        )
        out.append(to_legend_planes(predictor.card, cells))
    return out


def to_legend_planes(card, cells: np.ndarray) -> np.ndarray:
    """(outputs + 1, cy, cx) in the card's output order, clear share last -> (legend + 1, cy, cx)
    in legend order (reBEN's alphabetical order, the seed's own, a per-pixel model's)."""
    _, cy, cx = cells.shape
    n = len(card.legend)
    values = np.empty((n + 1, cy, cx), dtype=np.float32)
    values[:n] = card.to_map_order(cells[:-1].reshape(-1, cy * cx).T).T.reshape(n, cy, cx)
    values[-1] = cells[-1]
    return values


