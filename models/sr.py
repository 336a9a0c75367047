"""RFB-ESRGAN x8 generator with the seed checkpoint's exact parameter layout.

Key layout (``nf`` features, ``gc`` growth; seed: nf 64, gc 32, 12 RRDB, 6 RRFDB)::

    conv_first                          Conv 3->nf 3x3
    trunk_a.{i}.db{1,2,3}.conv{1..5}    RRDB i: three ESRGAN dense blocks
                                        conv1..4: nf+k*gc -> gc (3x3), conv5: nf+4*gc -> nf (3x3)
    trunk_rfb.{j}.rfb{1..5}             RRFDB j: five receptive-field blocks (RFB)
    <rfb>.branch{1,2,3}                 Sequential(AvgPool(3|5|7, stride 1),   # .0 no weights
                                                   Conv 1x1 nf -> c_k,        # .1
                                                   ReLU,                      # .2
                                                   Conv 3x3 c_k -> c_k,       # .3 dilation 1|2|3
                                                   ReLU)                      # .4
                                        c = (nf/4, 3nf/8, 3nf/8) = (16, 24, 24) for the seed
    <rfb>.conv_concat.0                 Conv 1x1 nf -> nf over the concatenated branches
    rfb_up                              one more RFB after the trunks
    upsample.{0,3,6}                    Sequential(Conv nf->4nf 3x3, PixelShuffle(2), act) x3
                                        (activation at .2/.5/.8 holds no weights)
    conv_final.{0,2}                    Sequential(Conv nf->nf 3x3, LeakyReLU(0.2), Conv nf->3 3x3,
                                                   Tanh)   # Tanh at .3: output in [-1, 1]

Residuals shared by both variants: dense block ``conv5(...) * 0.2 + x``; RRDB
``db3(db2(db1(x))) * 0.2 + x``; RRFDB ``rfb5(...rfb1(x)) * 0.2 + x``. No activation after
``conv_first``.

Two forward variants run over this same layout (same weights, different numbers):

``esrgan``
    how the SR model was trained and how the seed's published SR demo runs it: LeakyReLU(0.2) in
    dense blocks and upsampler, RFB output ``LeakyReLU(conv_concat(cat))`` with no residual, and
    no global skip (``upsample(rfb_up(trunk))``).
``seed-classifier``
    how the seed's classifier was trained on top of it: ReLU in dense blocks and upsampler, RFB
    output ``conv_concat(cat) * 0.2 + x``, and a global skip ``upsample(rfb_up(trunk) + feat)``.

Inside the RFB branches both variants use ReLU, as both seed sources do (the seed's published SR
demo and its classifier notebook); the activation between the two ``conv_final`` convolutions is
LeakyReLU(0.2) in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.profiles import Profile, Variant, check_variant

ActKind = Literal["relu", "lrelu"]
Role = Literal["dense", "upsample"]


@dataclass(frozen=True)
class VariantSpec:
    """What a forward variant changes: activations by role, the RFB output, the global skip."""

    dense_act: ActKind
    upsample_act: ActKind
    rfb_residual: bool
    global_skip: bool

    def act(self, role: Role) -> ActKind:
        return self.dense_act if role == "dense" else self.upsample_act


VARIANT_SPECS: dict[Variant, VariantSpec] = {
    "esrgan": VariantSpec(dense_act="lrelu", upsample_act="lrelu", rfb_residual=False, global_skip=False),
    "seed-classifier": VariantSpec(dense_act="relu", upsample_act="relu", rfb_residual=True, global_skip=True),
}


class Act(nn.Module):
    """A weight-free activation whose kind follows the generator's variant (set by role)."""

    def __init__(self, role: Role, kind: ActKind = "lrelu") -> None:
        super().__init__()
        self.role = role
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x) if self.kind == "relu" else F.leaky_relu(x, 0.2)

    def extra_repr(self) -> str:
        return f"role={self.role}, kind={self.kind}"


class DenseBlock(nn.Module):
    """ESRGAN dense block: five 3x3 convs, each seeing the input and all earlier outputs."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)
        self.act = Act("dense")

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.act(self.conv1(x))
        x2 = self.act(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.act(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.act(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.db1 = DenseBlock(nf, gc)
        self.db2 = DenseBlock(nf, gc)
        self.db3 = DenseBlock(nf, gc)

    def forward(self, x: Tensor) -> Tensor:
        return self.db3(self.db2(self.db1(x))) * 0.2 + x


def rfb_branch_channels(nf: int) -> tuple[int, int, int]:
    """Branch widths that sum to ``nf``: (16, 24, 24) for the seed's nf 64."""
    c1 = nf // 4
    c2 = (nf - c1) // 2
    return c1, c2, nf - c1 - c2


def _rfb_branch(nf: int, c: int, pool: int, dilation: int) -> nn.Sequential:
    return nn.Sequential(
        nn.AvgPool2d(pool, stride=1, padding=pool // 2),
        nn.Conv2d(nf, c, 1, 1, 0),
        nn.ReLU(),
        nn.Conv2d(c, c, 3, 1, padding=dilation, dilation=dilation),
        nn.ReLU(),
    )


class RFB(nn.Module):
    """Receptive field block: three pooled, dilated branches fused by a 1x1 conv."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        c1, c2, c3 = rfb_branch_channels(nf)
        self.branch1 = _rfb_branch(nf, c1, pool=3, dilation=1)
        self.branch2 = _rfb_branch(nf, c2, pool=5, dilation=2)
        self.branch3 = _rfb_branch(nf, c3, pool=7, dilation=3)
        self.conv_concat = nn.Sequential(nn.Conv2d(nf, nf, 1, 1, 0))
        self.residual = True

    def forward(self, x: Tensor) -> Tensor:
        fused = self.conv_concat(torch.cat((self.branch1(x), self.branch2(x), self.branch3(x)), 1))
        if self.residual:
            return fused * 0.2 + x
        return F.leaky_relu(fused, 0.2)


class RRFDB(nn.Module):
    """Residual block of five RFBs."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.rfb1 = RFB(nf)
        self.rfb2 = RFB(nf)
        self.rfb3 = RFB(nf)
        self.rfb4 = RFB(nf)
        self.rfb5 = RFB(nf)

    def forward(self, x: Tensor) -> Tensor:
        return self.rfb5(self.rfb4(self.rfb3(self.rfb2(self.rfb1(x))))) * 0.2 + x


class Generator(nn.Module):
    """RFB-ESRGAN generator: (N, 3, h, w) in [-1, 1] -> (N, 3, h*scale, w*scale) in [-1, 1]."""

    def __init__(self, nf: int = 64, gc: int = 32, n_rrdb: int = 12, n_rrfdb: int = 6, scale: int = 8,
                 variant: Variant = "esrgan") -> None:
        super().__init__()
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"scale must be a power of two >= 2, got {scale}")
        self.scale = scale
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.trunk_a = nn.Sequential(*(RRDB(nf, gc) for _ in range(n_rrdb)))
        self.trunk_rfb = nn.Sequential(*(RRFDB(nf) for _ in range(n_rrfdb)))
        self.rfb_up = RFB(nf)
        stages: list[nn.Module] = []
        for _ in range(scale.bit_length() - 1):
            stages += [nn.Conv2d(nf, nf * 4, 3, 1, 1), nn.PixelShuffle(2), Act("upsample")]
        self.upsample = nn.Sequential(*stages)
        self.conv_final = nn.Sequential(
            nn.Conv2d(nf, nf, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(nf, 3, 3, 1, 1), nn.Tanh()
        )
        self._init_weights()
        self.variant = variant

    @classmethod
    def from_profile(cls, profile: Profile, variant: Variant | None = None) -> Generator:
        return cls(profile.nf, profile.gc, profile.n_rrdb, profile.n_rrfdb, profile.scale,
                   variant or profile.default_variant)

    @property
    def variant(self) -> Variant:
        return self._variant

    @variant.setter
    def variant(self, name: str) -> None:
        """Switch the forward variant in place; the weights are untouched."""
        self._variant = check_variant(name)
        self._spec = VARIANT_SPECS[self._variant]
        for m in self.modules():
            if isinstance(m, Act):
                m.kind = self._spec.act(m.role)  # type: ignore[arg-type]
            elif isinstance(m, RFB):
                m.residual = self._spec.rfb_residual

    def _init_weights(self) -> None:
        # ESRGAN's scaled Kaiming init keeps the deep residual trunk near identity at the start,
        # which is what lets it train from scratch (only matters when no checkpoint is loaded).
        for block in (*self.trunk_a, *self.trunk_rfb, self.rfb_up):
            for m in block.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                    m.weight.data.mul_(0.1)
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv_first(x)
        trunk = self.rfb_up(self.trunk_rfb(self.trunk_a(feat)))
        if self._spec.global_skip:
            trunk = trunk + feat
        return self.conv_final(self.upsample(trunk))
