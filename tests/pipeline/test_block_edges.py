"""A classifier's backbone once per block with a halo: neighbouring blocks give the one-block map."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from benchmarks.blocks import block_plan, edge_agreement, enliven, map_in_blocks
from pipeline.detail import DetailError, DetailPlan, classify_pixels

CELLS = 32  # a 3.2 km square of 100 m cells, cut below into 2 x 2 blocks of 160 px (not whole strides)
BLOCK_CELLS = 16


def fields_scene(side: int, bands: int = 10, seed: int = 0) -> np.ndarray:
    """Reflectance of fields 60 px across with per-pixel noise, 0.02..0.45, like a farmed plain."""
    rng = np.random.default_rng(seed)
    n = side // 60 + 2
    field = np.kron(rng.random((bands, n, n)), np.ones((60, 60)))[:, :side, :side]
    return (0.02 + 0.43 * (0.8 * field + 0.2 * rng.random((bands, side, side)))).astype(np.float32)


@pytest.fixture(scope="module")
def live_reben():
    """The reBEN ResNet50 layout, random weights made live (whole receptive field, spread head), and a
    scene with the largest halo around the square."""
    import torch

    from benchmarks.models import reben_card
    from models.predictor import Predictor
    from models.architectures import BLOCK_HALO_PX
    from models.reben import TimmClassifier

    torch.set_num_threads(2)
    torch.manual_seed(0)
    card = reben_card()
    predictor = Predictor(TimmClassifier(card.architecture, len(card.classes)), card, device="cpu")
    scene = fields_scene(CELLS * 10 + 2 * BLOCK_HALO_PX)
    enliven(predictor, scene)
    return predictor, scene, predictor.feature_lattice()


def test_blocks_with_the_planned_halo_give_the_one_block_map(live_reben):
    from models.architectures import BLOCK_HALO_PX

    predictor, scene, (stride, centre) = live_reben
    clear = np.ones(scene.shape[1:], bool)
    n = len(predictor.card.classes)

    def mapped(halo: int, block_cells: int) -> np.ndarray:
        return map_in_blocks(scene, clear, block_plan(halo, stride, centre), predictor.predict_reflectance_block, n,
                             (CELLS, CELLS), block_cells, BLOCK_HALO_PX)

    whole = mapped(BLOCK_HALO_PX, CELLS)
    assert np.nanstd(whole[:n], axis=(1, 2)).mean() > 0.1, "the probe's probabilities must vary over the scene"
    agree, diff, cells = edge_agreement(whole, mapped(BLOCK_HALO_PX, BLOCK_CELLS))
    assert cells == CELLS * CELLS
    assert agree >= 0.995 and diff <= 0.02, f"halo {BLOCK_HALO_PX} px: {agree:.2%} of cells agree, max |dp| {diff:.3f}"
    # ... and a small halo shows the seam the measurement chose the halo against.
    agree_small, diff_small, _ = edge_agreement(whole, mapped(64, BLOCK_CELLS))
    assert agree_small < 0.995 and diff_small > 0.02


def test_a_constant_field_comes_back_unchanged_whatever_the_lattice_phase():
    p = np.linspace(0.1, 0.9, 5)
    plan = replace(DetailPlan(120, 40, 10, weight="gaussian").evaluated_per_block(64, 32), feature_centre_px=0.5)
    seen = []

    def predict_block(image):
        seen.append(image.shape)
        return np.broadcast_to(p[:, None, None], (5, image.shape[1] // 32, image.shape[2] // 32)).copy()

    side = 4 * 10 + 2 * 64
    for origin in ((0, 0), (10, 30)):
        out = classify_pixels(np.zeros((3, side, side), np.float32), np.ones((side, side), bool), np.ones((4, 4), bool),
                              plan, predict_block, n_classes=5, min_clear=0.5, origin_px=origin)
        np.testing.assert_allclose(out[:5], np.broadcast_to(p[:, None, None], (5, 4, 4)), rtol=1e-6)
        np.testing.assert_array_equal(out[5], 1.0)
    # Whole strides from the map-wide lattice: at origin (10, 30) the network starts 22 / 2 px in.
    assert seen == [(3, 192, 192), (3, 160, 192)]


def test_a_block_model_that_answers_on_another_lattice_is_refused():
    plan = DetailPlan(120, 40, 10, weight="gaussian").evaluated_per_block(64, 32)
    side = 40 + 128
    with pytest.raises(DetailError, match="one position every 32 px"):
        classify_pixels(np.zeros((3, side, side), np.float32), np.ones((side, side), bool), np.ones((4, 4), bool), plan,
                        lambda image: np.zeros((5, 3, 3)), n_classes=5, min_clear=0.5)


def test_a_block_plan_pads_by_its_halo_keys_its_path_and_coarsens_whole():
    windows = DetailPlan(120, 40, 10, weight="gaussian")
    block = windows.evaluated_per_block(192, 32)
    assert (windows.margin_px, block.margin_px) == (120, 192)
    assert windows.key() != block.key() and windows.key() == [40, 10, True, "gaussian"]  # windows keys unchanged
    coarse = block.coarsened(2)
    assert (coarse.halo_px, coarse.feature_stride_px, coarse.window_px) == (96, 16, 60)
    assert block.evaluated_per_block(190, 32).coarsened(4) is None
    with pytest.raises(DetailError, match="overlapping windows"):
        DetailPlan(120, 120, 120, weight="box").evaluated_per_block(64, 32)


@pytest.mark.parametrize(("model_name", "path", "why"), [
    ("resnet50", "block", "fully convolutional"),
    ("convnext_tiny", "block", "fully convolutional"),
    ("mobilenetv3_small_100", "windows", "squeeze-excitation"),
    ("efficientnet_b0", "windows", "squeeze-excitation"),
    ("vit_small_patch16_224", "windows", "position embeddings"),
])
def test_the_plan_chooses_the_path_by_architecture_and_says_why(model_name, path, why):
    from models.architectures import BLOCK_HALO_PX
    from models.reben import card_from_config
    from pipeline.plan import evaluation_path
    from pipeline.plan_summary import evaluation_json

    card = card_from_config({"timm_model_name": model_name, "channels": 10, "classes": 19},
                            repo_id="BIFOLD-BigEarthNetv2-0/resnet50-s2-v0.2.0")
    plan = evaluation_path(DetailPlan(120, 40, 10, weight="gaussian"), card)
    assert plan.path == path and why in plan.path_reason
    shown = evaluation_json(plan)
    assert shown["evaluation"] == path and shown["evaluation_reason"] == plan.path_reason
    assert (shown.get("halo_px"), plan.margin_px) == ((BLOCK_HALO_PX, BLOCK_HALO_PX) if path == "block" else (None, 120))


def test_the_demo_models_keep_their_windows():
    from models.card import ModelCard, card_path
    from pipeline.plan import DEFAULT_WEIGHTS, DEMO_WEIGHTS, evaluation_path

    for weights, why in ((DEFAULT_WEIGHTS, "squeeze-excitation"), (DEMO_WEIGHTS, "resizes each window")):
        plan = evaluation_path(DetailPlan(120, 40, 10, weight="gaussian"), ModelCard.read(card_path(weights)))
        assert plan.path == "windows" and why in plan.path_reason
    # one window per cell (the 1.2 km map) and --no-dense keep windows whatever the network
    from models.reben import card_from_config

    resnet = card_from_config({"timm_model_name": "resnet50", "channels": 10, "classes": 19},
                              repo_id="BIFOLD-BigEarthNetv2-0/resnet50-s2-v0.2.0")
    assert evaluation_path(DetailPlan(120, 120, 120, weight="box"), resnet).path == "windows"
    assert evaluation_path(DetailPlan(120, 40, 10, weight="gaussian", dense=False), resnet).path == "windows"
