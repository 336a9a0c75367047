"""ESRGAN's losses for the SR stage: VGG19 perceptual loss, a patch discriminator, relativistic GAN losses."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.tensors import load_state_dict


class PerceptualLoss(nn.Module):
    """ESRGAN perceptual loss: L1 between VGG19 conv5_4 features (before activation).

    Needs user-supplied torchvision VGG19 weights (nothing is downloaded here).
    """

    def __init__(self, weights: Path) -> None:
        super().__init__()
        from torchvision.models import vgg19

        vgg = vgg19(weights=None)
        vgg.load_state_dict(load_state_dict(Path(weights)))
        self.features = vgg.features[:35].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, sr: Tensor, ref: Tensor) -> Tensor:
        norm = lambda x: ((x + 1) / 2 - self.mean) / self.std
        return F.l1_loss(self.features(norm(sr)), self.features(norm(ref)))


class Discriminator(nn.Module):
    """VGG-style patch discriminator for the relativistic GAN loss (any input size)."""

    def __init__(self, nf: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, nf, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
        ch = nf
        for i in range(4):
            out = nf * 2 ** min(i + 1, 3)
            layers += [nn.Conv2d(ch, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, inplace=True)]
            ch = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def relativistic_losses(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """Relativistic average GAN (ESRGAN): (discriminator loss, generator loss)."""
    bce = F.binary_cross_entropy_with_logits
    real_rel = d_real - d_fake.mean()
    fake_rel = d_fake - d_real.mean()
    ones, zeros = torch.ones_like(d_real), torch.zeros_like(d_fake)
    d_loss = (bce(real_rel, ones) + bce(fake_rel, zeros)) / 2
    g_loss = (bce(real_rel, zeros) + bce(fake_rel, ones)) / 2
    return d_loss, g_loss
