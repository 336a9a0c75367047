"""Blocks with a halo: a per-pixel network over blocks gives the one-block map (no seam)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.halo import (
    HaloError,
    PixelPlan,
    cell_means,
    classify_pixel_block,
    pad_to_multiple,
    predict_tiled,
)

CORE = (192, 160)  # pixels of the whole map: cut below into 2 x 2 blocks of 96 x 80


def smooth_scene(shape: tuple[int, int], bands: int = 9, seed: int = 0) -> np.ndarray:
    """Reflectance with structure at several scales (fields, edges), 0.02..0.45."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((bands, shape[0] // 16 + 2, shape[1] // 16 + 2))
    field = np.kron(coarse, np.ones((16, 16)))[:, : shape[0], : shape[1]]
    return (0.02 + 0.4 * (0.8 * field + 0.2 * rng.random((bands, *shape)))).astype(np.float32)


def blocked(image: np.ndarray, clear: np.ndarray, plan: PixelPlan, predict, block: tuple[int, int]) -> np.ndarray:
    """The map made block by block: each block's cells read with the halo around them."""
    h = plan.halo_px
    ny, nx = (image.shape[1] - 2 * h) // plan.cell_px, (image.shape[2] - 2 * h) // plan.cell_px
    out = np.full((10, ny, nx), np.nan, np.float32)
    for y in range(0, ny, block[0]):
        for x in range(0, nx, block[1]):
            cy, cx = min(block[0], ny - y), min(block[1], nx - x)
            py, px = y * plan.cell_px, x * plan.cell_px
            ys, xs = slice(py, py + cy * plan.cell_px + 2 * h), slice(px, px + cx * plan.cell_px + 2 * h)
            out[:, y:y + cy, x:x + cx] = classify_pixel_block(
                image[:, ys, xs], clear[ys, xs], np.ones((cy, cx), bool), plan, predict, n_classes=9, min_clear=0.5)
    return out


@pytest.fixture(scope="module")
def dynamic_world(realdata, tmp_path_factory):
    """The imported Dynamic World network as the pipeline runs it (softmax of the logits)."""
    import torch

    from models.dynamicworld import HALO_PX, import_dynamicworld
    from models.predictor import Predictor

    weights = import_dynamicworld(realdata / "models" / "dynamicworld", tmp_path_factory.mktemp("dw"))
    torch.set_num_threads(2)
    predictor = Predictor.from_path(weights, device="cpu")
    return (lambda image: predictor.predict_pixels(image[None])[0]), HALO_PX


@pytest.mark.parametrize(("cell_px", "block"), [(1, (96, 80)), (2, (48, 40))])
def test_blocks_with_the_cards_halo_give_the_one_block_map(dynamic_world, cell_px, block):
    predict, halo = dynamic_world
    plan = PixelPlan(cell_px=cell_px, halo_px=halo, multiple=2, tile_px=512)
    image = smooth_scene((CORE[0] + 2 * halo, CORE[1] + 2 * halo))
    clear = np.ones(image.shape[1:], bool)
    whole = blocked(image, clear, plan, predict, (CORE[0] // cell_px, CORE[1] // cell_px))
    pieces = blocked(image, clear, plan, predict, block)
    assert np.isfinite(whole).all()
    seam = np.abs(pieces - whole).max()
    assert seam < 1e-4, f"largest difference at block edges: {seam:.2e}"
    # ... while a block without a halo is visibly different at its edges.
    bare = blocked(image[:, halo:-halo, halo:-halo], clear[halo:-halo, halo:-halo],
                   PixelPlan(cell_px=cell_px, halo_px=0, multiple=2), predict, block)
    assert np.abs(bare - whole).max() > 1e-2


def test_tiles_inside_a_block_compute_each_pixel_once_and_agree(dynamic_world):
    predict, halo = dynamic_world
    image = smooth_scene((130 + 2 * halo, 98 + 2 * halo), seed=1)  # a short last tile, padded to a multiple
    calls = []

    def counted(tile):
        calls.append(tile.shape[1:])
        return predict(tile)

    tiled = predict_tiled(image, counted, halo_px=halo, multiple=2, tile_px=64)
    assert calls == [(128, 128), (128, 98), (128, 128), (128, 98), (66, 128), (66, 98)]
    whole = predict_tiled(image, predict, halo_px=halo, multiple=2, tile_px=256)
    assert tiled.shape == (9, 130, 98) and np.abs(tiled - whole).max() < 1e-4


def test_cells_take_the_mean_probability_of_their_clear_pixels():
    values = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    values[0, 0, 0] = np.nan  # a pixel never seen clear
    means = cell_means(values, 2)
    assert means.shape == (2, 2, 2)
    assert means[0, 0, 0] == pytest.approx((1 + 4 + 5) / 3) and means[1, 1, 1] == pytest.approx((26 + 27 + 30 + 31) / 4)


def test_far_edges_are_padded_to_the_multiple_and_sizes_are_checked():
    padded, added = pad_to_multiple(np.arange(15, dtype=np.float32).reshape(1, 3, 5), 2)
    assert padded.shape == (1, 4, 6) and added == (1, 1)
    assert padded[0, 3].tolist() == padded[0, 2].tolist()  # the last row repeated
    with pytest.raises(HaloError, match="halo 31 px is not a multiple of 2"):
        PixelPlan(cell_px=1, halo_px=31, multiple=2)
    assert PixelPlan(cell_px=1, halo_px=32, multiple=2).cells_per_block(361) == 362
    assert PixelPlan(cell_px=2, halo_px=32, multiple=2).cells_per_block(361) == 361
