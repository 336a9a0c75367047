"""Which timm architectures can be evaluated once per block instead of once per window: a rule on
the architecture's name alone, so the client plans a run without importing torch (~0.6 GiB
resident); the workers build the network."""

from __future__ import annotations

import re

# timm architectures whose forward_features has no operation over the whole feature map (no
# squeeze-excitation, global response normalisation or attention pooling, no fixed position
# embedding): a feature-map position depends only on the pixels around it, so the backbone can run
# once over a whole block and the head at every position. A name, not a build: the plan decides
# before any worker loads torch. tests/models/test_block_path.py checks the rule against built
# networks (a far-away perturbation leaves a position unchanged, or changes it).
FULLY_CONVOLUTIONAL = re.compile(r"^(resnet\d+[a-z]*|resnet\d+_gn|resnetv2_\d+[a-z]*|resnext\d+\w*|wide_resnet\d+\w*"
                                 r"|convnext_(atto|femto|pico|nano|tiny|small|base|large|xlarge)\w*|regnetx_\d+)(\.\w+)?$")
# Input pixels between feature-map positions of those networks (five stride-2 stages).
NETWORK_STRIDE_PX = 32
# Context around a block, in network-input pixels, for block evaluation, chosen by measurement
# (python -m benchmarks.blocks): a ResNet50 with its whole receptive field live (random weights,
# no zero-initialised residual branches, head scaled to spread its probabilities) mapped over
# blocks of 160 px agrees with the one-block map of the demo AOI on 86.2% / 97.3% / 99.57% /
# 100% of cells with a halo of 96 / 128 / 160 / 192 px, the largest probability difference
# 0.40 / 0.12 / 0.018 / 0.002. tests/pipeline/test_block_edges.py holds a map to it.
BLOCK_HALO_PX = 192


def windows_reason(model_name: str) -> str | None:
    """Why a timm architecture must keep per-window evaluation (None: it can be evaluated per block)."""
    if FULLY_CONVOLUTIONAL.match(model_name):
        return None
    lowered = model_name.lower()
    if any(tag in lowered for tag in ("mobilenetv3", "efficientnet", "seresne", "regnety", "ecaresnet", "resnetrs",
                                      "skresne", "convnextv2")):
        return f"{model_name} pools the whole feature map inside its blocks (squeeze-excitation or global norms)"
    if any(tag in lowered for tag in ("vit", "deit", "swin", "beit", "eva", "mixer")):
        return f"{model_name} is a transformer with position embeddings fixed to its window"
    return f"{model_name} is not among the architectures checked to be fully convolutional"
