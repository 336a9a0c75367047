"""Dense evaluation: a classifier's head applied at every position of its last feature map.

One window then yields a grid of class logits instead of one vector, with the same network and
the same weights. Both families end in global average pooling followed by a head, so:

* seed family (:class:`~models.classifier.SRClassifier`): the ResNet trunk (conv1 .. layer4) runs
  fully convolutionally and ``backbone.fc`` (Dropout, Linear, ReLU, Dropout, Linear) is applied to
  the feature vector of each position.
* timm family (:class:`~models.reben.TimmClassifier`): ``forward_features`` gives (N, F, h, w); it
  is reshaped to (N*h*w, F, 1, 1) and handed to the model's own ``forward_head``. Global pooling of
  a 1 x 1 map is the identity, so this is exact for any head that pools first, including
  ConvNeXt's norm + fc and MobileNetV3's pool + conv_head + act + classifier.

For an input whose feature map is 1 x 1, the dense logits equal the ordinary forward's.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from models.classifier import SRClassifier


class DenseError(ValueError):
    """The model cannot be evaluated densely (e.g. a transformer's token output)."""


def dense_logits(model: nn.Module, x: Tensor, *, patch_size: int | None = None) -> Tensor:
    """Model input (N, C_in, H, W) -> logits (N, num_classes, h, w), one vector per feature-map position.

    ``x`` is what the model's ordinary forward takes: for the seed family the LR patch in
    [-1, 1], for the timm family the standardised window. ``patch_size`` (seed family only) is the
    LR side the network was trained on; an LR input ``k`` times larger is upsampled by the same
    factor as a training patch was, so the backbone sees the ground at its trained scale.
    """
    if isinstance(model, SRClassifier):
        return _seed_dense(model, x, patch_size or x.shape[-1])
    net = getattr(model, "net", None)
    if net is None or not hasattr(net, "forward_head"):
        raise DenseError(f"{type(model).__name__} has neither the seed layout nor a timm network")
    return _timm_dense(net, x)


def _seed_dense(model: SRClassifier, lr: Tensor, patch_size: int) -> Tensor:
    factor = model.profile.input_size / patch_size
    size = (round(lr.shape[-2] * factor), round(lr.shape[-1] * factor))
    if model.sr_model is not None:
        image = F.interpolate(model.sr_model(lr), size=size, mode="bilinear", align_corners=False)
    else:
        image = F.interpolate(lr, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)
    b = model.backbone
    feats = b.layer4(b.layer3(b.layer2(b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(image))))))))
    n, f, h, w = feats.shape
    logits = b.fc(feats.permute(0, 2, 3, 1).reshape(n * h * w, f))
    return logits.reshape(n, h, w, -1).permute(0, 3, 1, 2)


def _timm_dense(net: nn.Module, x: Tensor) -> Tensor:
    feats = net.forward_features(x)
    if feats.ndim != 4:
        raise DenseError(
            f"{type(net).__name__}.forward_features gives a {feats.ndim}-D output, not a (N, F, h, w) feature map; "
            "only convolutional backbones can be evaluated densely"
        )
    n, f, h, w = feats.shape
    # reshape, not view: the map may be channels_last, and the head wants one position per sample.
    positions = feats.permute(0, 2, 3, 1).reshape(n * h * w, f, 1, 1)
    logits = net.forward_head(positions)
    return logits.reshape(n, h, w, -1).permute(0, 3, 1, 2)
