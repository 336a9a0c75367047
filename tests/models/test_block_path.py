"""Which timm networks may run once over a whole block: the rule by name holds for built networks."""

from __future__ import annotations

import pytest
import torch

from models.predictor import Predictor
from models.architectures import FULLY_CONVOLUTIONAL, windows_reason
from models.reben import TimmClassifier, card_from_config

REPO = "BIFOLD-BigEarthNetv2-0/resnet50-s2-v0.2.0"


def predictor_for(model_name: str) -> Predictor:
    torch.manual_seed(0)
    card = card_from_config({"timm_model_name": model_name, "channels": 10, "classes": 19}, repo_id=REPO)
    return Predictor(TimmClassifier(card.architecture, len(card.classes)), card, device="cpu")


def far_change(net: torch.nn.Module) -> float:
    """How much feature position (0, 0) moves when pixels 320 px and more away change."""
    x = torch.randn(1, 10, 384, 384, generator=torch.Generator().manual_seed(1))
    y = x.clone()
    y[..., 320:, 320:] += 3.0
    with torch.inference_mode():
        return float((net.forward_features(x)[..., 0, 0] - net.forward_features(y)[..., 0, 0]).abs().max())


@pytest.mark.parametrize("model_name", ["resnet18", "convnext_atto", "regnetx_002", "mobilenetv3_small_050",
                                        "efficientnet_b0"])
def test_a_network_goes_per_block_exactly_when_no_far_pixel_reaches_a_position(model_name):
    local = far_change(predictor_for(model_name).model.net) == 0.0
    assert local == (windows_reason(model_name) is None), windows_reason(model_name)


def test_the_rule_reads_timm_names_with_their_pretrained_tags():
    assert FULLY_CONVOLUTIONAL.match("resnet50.a1_in1k") and FULLY_CONVOLUTIONAL.match("convnext_tiny.fb_in22k")
    for name in ("seresnet50", "resnetrs50", "convnextv2_tiny", "regnety_002", "ecaresnet50d"):
        assert "squeeze-excitation" in windows_reason(name)
    assert "not among" in windows_reason("inception_v3")


@pytest.mark.parametrize(("model_name", "centre"), [("resnet18", 0.5), ("convnext_atto", 16.0)])
def test_feature_positions_are_measured_where_the_network_centres_them(model_name, centre):
    # A ResNet's strided convolutions centre position k on pixel 32 k; ConvNeXt's patchify stem
    # on the middle of its 32 px.
    stride, measured = predictor_for(model_name).feature_lattice()
    assert stride == 32 and abs(measured - centre) <= 1.0
