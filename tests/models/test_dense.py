"""Dense evaluation: the classifier's own head at every position of its last feature map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from models.card import TimmArchitecture
from models.classifier import SRClassifier
from models.dense import dense_logits
from models.predictor import Predictor
from models.preprocess import PatchError
from models.profiles import get_profile
from models.reben import TimmClassifier

MULTIBAND = Path(__file__).resolve().parents[2] / "models" / "weights" / "demo-multiband-mobilenetv3.safetensors"


@pytest.fixture(scope="module")
def tiny_seed() -> SRClassifier:
    torch.manual_seed(0)
    return SRClassifier(get_profile("tiny")).eval()


def test_seed_family_on_a_one_position_map_equals_the_ordinary_classifier(tiny_seed):
    # tiny: LR patch 32 -> SR -> 64 px image -> 2 x 2 map, so a 16 px LR input gives a 32 px image and a 1 x 1 map.
    lr = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.inference_mode():
        image = F.interpolate(tiny_seed.super_resolve(lr), size=(32, 32), mode="bilinear", align_corners=False)
        dense = dense_logits(tiny_seed, lr, patch_size=32)
        ordinary, _ = tiny_seed.classify(image)
    assert dense.shape == (3, 19, 1, 1)
    torch.testing.assert_close(dense[:, :, 0, 0], ordinary, rtol=1e-4, atol=1e-5)


def test_seed_family_grid_is_one_position_per_32_backbone_pixels(tiny_seed):
    with torch.inference_mode():
        assert dense_logits(tiny_seed, torch.zeros(2, 3, 32, 32), patch_size=32).shape == (2, 19, 2, 2)
        # An LR input twice the trained patch is seen at the trained scale: twice the grid.
        assert dense_logits(tiny_seed, torch.zeros(1, 3, 64, 64), patch_size=32).shape == (1, 19, 4, 4)


@pytest.mark.parametrize("name", ["mobilenetv3_small_100", "resnet18", "convnextv2_atto"])
def test_timm_heads_on_a_one_position_map_equal_the_ordinary_forward(name):
    # Global pooling of a 1 x 1 map is the identity, so the model's own head (pool + conv_head for
    # MobileNetV3, norm + fc for ConvNeXt) gives the ordinary logits exactly.
    torch.manual_seed(0)
    model = TimmClassifier(TimmArchitecture(model_name=name, channels=4, image_size=32), num_classes=7).eval()
    x = torch.randn(2, 4, 32, 32)
    with torch.inference_mode():
        dense = dense_logits(model, x)
        ordinary = model(x)
        grid = dense_logits(model, torch.randn(2, 4, 96, 96))
    assert dense.shape == (2, 7, 1, 1)
    torch.testing.assert_close(dense[:, :, 0, 0], ordinary, rtol=1e-4, atol=1e-5)
    assert grid.shape == (2, 7, 3, 3)


def test_seed_predictor_gives_softmax_grids_in_the_card_order(tiny_weights):
    predictor = Predictor.from_path(tiny_weights, device="cpu", batch_size=2)
    windows = np.random.default_rng(0).uniform(0, 0.4, (5, 3, 120, 120)).astype(np.float32)
    probs = predictor.predict_reflectance_dense(windows)
    assert probs.shape == (5, 19, 2, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert predictor.predict_reflectance_dense(np.tile(windows, (1, 1, 2, 2))).shape == (5, 19, 4, 4)
    assert predictor.predict_reflectance_dense(windows[:0]).shape == (0, 19, 0, 0)


def test_windows_of_coarser_pixels_are_seen_over_the_same_ground_with_the_same_grid(tiny_weights):
    """A 1.2 km window read at 20 m is 60 px: told so, the predictor resizes it to the card's patch
    as it would the 120 px window, so the grid is the card's and a uniform window answers the same."""
    predictor = Predictor.from_path(tiny_weights, device="cpu")
    levels = np.array([0.05, 0.2, 0.35], np.float32)[:, None, None, None]  # one uniform window per reflectance
    at_20m = np.broadcast_to(levels, (3, 3, 60, 60)).copy()
    at_10m = np.broadcast_to(levels, (3, 3, 120, 120)).copy()
    coarse = predictor.predict_reflectance_dense(at_20m, window_px=60)
    assert coarse.shape == (3, 19, 2, 2)
    np.testing.assert_allclose(coarse, predictor.predict_reflectance_dense(at_10m), atol=1e-6)
    with pytest.raises(PatchError, match="k x 60"):
        predictor.predict_reflectance_dense(at_20m[:, :, :50, :50], window_px=60)


def test_windows_that_are_not_a_multiple_of_the_card_window_are_refused(tiny_weights):
    predictor = Predictor.from_path(tiny_weights, device="cpu")
    with pytest.raises(PatchError, match="k x 120"):
        predictor.predict_reflectance_dense(np.zeros((1, 3, 100, 100), np.float32))


@pytest.mark.skipif(not MULTIBAND.exists(), reason="multi-band demo weights not present")
def test_multiband_demo_model_gives_sigmoid_grids_and_its_head_is_exact_on_one_position():
    predictor = Predictor.from_path(MULTIBAND, device="cpu")
    windows = np.random.default_rng(1).uniform(0, 0.4, (3, 10, 120, 120)).astype(np.float32)
    probs = predictor.predict_reflectance_dense(windows)
    assert probs.shape == (3, 19, 4, 4)
    assert probs.min() >= 0 and probs.max() <= 1 and not np.allclose(probs.sum(axis=1), 1.0)
    x = torch.randn(2, 10, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(dense_logits(predictor.model, x)[:, :, 0, 0], predictor.model(x), rtol=1e-4, atol=1e-5)
