"""SR + ResNet land-cover classifier with the seed's state_dict layout (``sr_model.*``, ``backbone.*``).

LR patch (N, 3, 32, 32) in [-1, 1] -> RFB-ESRGAN x8 -> bilinear resize to the profile's input size
-> torchvision ResNet whose ``fc`` is the seed's head::

    fc = Sequential(Dropout(0.4), Linear(F, hidden), ReLU, Dropout(0.3), Linear(hidden, n_classes))

The output of the ReLU (the penultimate, ``hidden``-wide layer) is the embedding active learning
works in. The SR image is fed to the backbone as it comes out of tanh, in [-1, 1], with no
ImageNet normalisation, as the seed did.

Profiles with ``super_resolution=False`` have no ``sr_model``: the LR patch is upsampled
bicubically straight to the input size, the baseline that measures what SR adds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock

from models.classes import NUM_CLASSES
from models.profiles import Profile, Variant
from models.sr import Generator


def half_width_resnet18() -> tvm.ResNet:
    """torchvision's ResNet18 with every stage at half width (32, 64, 128, 256 channels).

    Same module names as ``resnet18`` (conv1, bn1, layer1..4, fc), so checkpoints keep the
    torchvision layout; a quarter of the parameters.
    """
    model = tvm.resnet18(weights=None)
    widths = (32, 64, 128, 256)
    model.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(widths[0])
    inplanes = widths[0]
    for i, planes in enumerate(widths):
        stride = 1 if i == 0 else 2
        blocks = []
        for j in range(2):
            downsample = None
            if j == 0 and (stride != 1 or inplanes != planes):
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                )
            blocks.append(BasicBlock(inplanes, planes, stride=stride if j == 0 else 1, downsample=downsample))
            inplanes = planes
        setattr(model, f"layer{i + 1}", nn.Sequential(*blocks))
    model.fc = nn.Linear(widths[-1], 1000)
    for m in model.modules():  # torchvision's initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def build_backbone(profile: Profile, num_classes: int = NUM_CLASSES) -> tvm.ResNet:
    """A randomly initialised torchvision ResNet with the seed's two-layer head (never downloads)."""
    if profile.backbone == "resnet18-half":
        backbone = half_width_resnet18()
    else:
        backbone = getattr(tvm, profile.backbone)(weights=None)
    p1, p2 = profile.dropout
    backbone.fc = nn.Sequential(
        nn.Dropout(p1),
        nn.Linear(profile.backbone_features, profile.hidden),
        nn.ReLU(),
        nn.Dropout(p2),
        nn.Linear(profile.hidden, num_classes),
    )
    return backbone


class SRClassifier(nn.Module):
    """Super-resolution then classification; ``forward`` returns logits (N, num_classes)."""

    def __init__(self, profile: Profile, variant: Variant | None = None, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.profile = profile
        self.num_classes = num_classes
        self.sr_model: Generator | None = (
            Generator.from_profile(profile, variant) if profile.super_resolution else None
        )
        self.backbone = build_backbone(profile, num_classes)

    @property
    def variant(self) -> Variant | None:
        return self.sr_model.variant if self.sr_model is not None else None

    @variant.setter
    def variant(self, name: Variant) -> None:
        if self.sr_model is not None:
            self.sr_model.variant = name

    def freeze_sr(self) -> None:
        """Stop gradients into the generator (the seed trains the classifier with SR frozen)."""
        if self.sr_model is not None:
            self.sr_model.requires_grad_(False)

    def super_resolve(self, lr: Tensor) -> Tensor:
        """(N, 3, h, w) -> (N, 3, h*scale, w*scale) in [-1, 1] (bicubic for the no-SR baseline)."""
        if self.sr_model is not None:
            return self.sr_model(lr)
        size = (lr.shape[-2] * self.profile.scale, lr.shape[-1] * self.profile.scale)
        return F.interpolate(lr, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)

    def classifier_input(self, lr: Tensor) -> Tensor:
        """The image the backbone sees: (N, 3, input_size, input_size)."""
        size = (self.profile.input_size, self.profile.input_size)
        if self.sr_model is not None:
            return F.interpolate(self.sr_model(lr), size=size, mode="bilinear", align_corners=False)
        return F.interpolate(lr, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)

    def classify(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Backbone + head on a classifier-sized image: (logits, embedding)."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(image))))
        x = b.layer4(b.layer3(b.layer2(b.layer1(x))))
        x = torch.flatten(b.avgpool(x), 1)
        head = b.fc
        embedding = head[2](head[1](head[0](x)))
        return head[4](head[3](embedding)), embedding

    def forward_features(self, lr: Tensor) -> tuple[Tensor, Tensor]:
        """LR patches -> (logits (N, num_classes), embedding (N, hidden))."""
        return self.classify(self.classifier_input(lr))

    def forward(self, lr: Tensor) -> Tensor:
        return self.forward_features(lr)[0]


def count_parameters(model: SRClassifier) -> dict[str, int]:
    """Parameter counts per part: SR generator, backbone without its head, head, total."""
    def n(module: nn.Module | None) -> int:
        return sum(p.numel() for p in module.parameters()) if module is not None else 0

    head = n(model.backbone.fc)
    sr = n(model.sr_model)
    backbone = n(model.backbone) - head
    return {"sr": sr, "backbone": backbone, "head": head, "total": sr + backbone + head}
