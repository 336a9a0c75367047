"""Named architectures of the SR + classifier family.

A profile fixes every shape in the network, so a state_dict either fits a profile exactly or not
at all. ``seed`` is the published seed architecture; the others are the same family made small
enough to train and run on a laptop CPU (``small``; ``compact-nosr``, whose half-width ResNet18
keeps the demo weights a few MB; ``tiny`` for tests), plus ``*-nosr`` baselines that classify the
LR patch upsampled bicubically, to measure what SR buys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from models.errors import LandcoverError

Backbone = Literal["resnet18-half", "resnet18", "resnet34", "resnet50"]
Variant = Literal["esrgan", "seed-classifier"]
VARIANTS: tuple[Variant, ...] = ("esrgan", "seed-classifier")


class ProfileError(LandcoverError):
    """An unknown profile or variant was named."""


@dataclass(frozen=True)
class Profile:
    """Every hyper-parameter that shapes the weights (plus the classifier input size).

    ``nf``/``gc``: generator feature width and dense-block growth; ``n_rrdb``/``n_rrfdb``: trunk
    depths; ``scale``: SR factor (a power of two, one PixelShuffle(2) stage per factor 2);
    ``backbone``: torchvision ResNet; ``input_size``: side of the image the backbone sees;
    ``hidden``: width of the penultimate (embedding) layer of the head; ``super_resolution``:
    False for the no-SR baseline (no generator at all; LR is upsampled bicubically).
    """

    name: str
    nf: int = 64
    gc: int = 32
    n_rrdb: int = 12
    n_rrfdb: int = 6
    scale: int = 8
    backbone: Backbone = "resnet50"
    input_size: int = 224
    hidden: int = 512
    dropout: tuple[float, float] = (0.4, 0.3)
    super_resolution: bool = True
    default_variant: Variant = "seed-classifier"

    @property
    def upsample_stages(self) -> int:
        return self.scale.bit_length() - 1

    @property
    def backbone_features(self) -> int:
        return {"resnet50": 2048, "resnet18-half": 256}.get(self.backbone, 512)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("seed"),
        Profile("seed-nosr", super_resolution=False),
        # Sized for ~10 min of CPU training and tens of patches/s on 2 cores: the x8 upsampler
        # at 256 px dominates the SR cost, so width (nf) matters more than depth here.
        Profile("small", nf=16, gc=16, n_rrdb=1, n_rrfdb=1, backbone="resnet18", input_size=96, hidden=256),
        Profile("small-nosr", nf=16, gc=16, n_rrdb=1, n_rrfdb=1, backbone="resnet18", input_size=96,
                hidden=256, super_resolution=False),
        # The demo weights: small-nosr with every ResNet18 stage at half width (32..256 channels),
        # a quarter of the parameters: ~2.8 M, 5.6 MB in float16.
        Profile("compact-nosr", nf=16, gc=16, n_rrdb=1, n_rrfdb=1, backbone="resnet18-half", input_size=96,
                hidden=128, super_resolution=False),
        # For tests only: the smallest network that still has every kind of block.
        Profile("tiny", nf=8, gc=8, n_rrdb=1, n_rrfdb=1, backbone="resnet18", input_size=64, hidden=32),
    )
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileError(f"unknown model profile {name!r}; choose one of {', '.join(PROFILES)}") from None


def check_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ProfileError(f"unknown SR variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return name  # type: ignore[return-value]
