"""Batched inference: patches in, class probabilities and embeddings out, for either model family.

The seed family (``SRClassifier``) takes uint8 RGB patches; the timm family (``TimmClassifier``,
the reBEN layout) takes standardised multi-band windows. :meth:`Predictor.predict_reflectance`
takes reflectance windows of the card's bands and applies whichever preprocessing the card names;
:meth:`Predictor.predict_reflectance_block` runs a fully convolutional timm backbone once over a
whole block (the head at every feature position), the map's block path.

Eval mode and ``torch.inference_mode`` always; channels_last memory format (faster for these
convolutions on CPU as well as GPU); on CUDA, bf16 autocast. bf16 on CPU is not the
default: on this AMX CPU it runs a ResNet50 block 2x faster, but its rounding flips near-tied
classes at block edges (99.4% agreement, below the 99.5% the block path is held to;
``python -m benchmarks.blocks``). The batch size halves on an
out-of-memory error and the batch is retried, so one worker configuration fits any device.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

from models.card import ModelCard
from models.classifier import SRClassifier

if TYPE_CHECKING:
    from models.dynamicworld import DynamicWorldNet
    from models.reben import TimmClassifier
from models.preprocess import (
    PatchError,
    from_model_output,
    reflectance_to_uint8,
    resize_windows,
    standardise_reflectance,
    to_model_input,
)

Precision = Literal["fp32", "bf16"]
DEFAULT_BATCH = {"cpu": 32, "cuda": 128}


@dataclass(frozen=True)
class Prediction:
    """Per-patch class probabilities (N, C) and penultimate-layer embeddings (N, D), float32."""

    probs: np.ndarray
    embeddings: np.ndarray

    def __len__(self) -> int:
        return len(self.probs)

    def top(self, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Indices (N, k) of the k most probable classes, most probable first, and their probabilities."""
        idx = np.argsort(-self.probs, axis=1, kind="stable")[:, :k]
        return idx, np.take_along_axis(self.probs, idx, axis=1)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


class Predictor:
    """Runs a loaded model as its card says (family, task, patch size, normalisation)."""

    def __init__(self, model: SRClassifier | TimmClassifier | DynamicWorldNet, card: ModelCard, device: str | torch.device | None = None,
                 batch_size: int | None = None, precision: Precision | None = None) -> None:
        self.device = pick_device(device)
        self.card = card
        self.precision: Precision = precision or ("bf16" if self.device.type == "cuda" else "fp32")
        self.batch_size = batch_size or DEFAULT_BATCH.get(self.device.type, 32)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], device: str | torch.device | None = None, **kwargs) -> Predictor:
        from models.checkpoint import load_model  # checkpoint imports are heavy; keep them lazy

        dev = pick_device(device)
        model, card = load_model(path, device=dev, profile=kwargs.pop("profile", None),
                                 variant=kwargs.pop("variant", None), card=kwargs.pop("card", None),
                                 sha256=kwargs.pop("sha256", None))
        return cls(model, card, device=dev, **kwargs)

    def _check_patches(self, patches: np.ndarray | Tensor) -> None:
        size = self.card.patch_size
        if patches.ndim != 4 or tuple(patches.shape[1:]) != (3, size, size):
            raise PatchError(f"patches must be shaped (N, 3, {size}, {size}), got {tuple(patches.shape)}")
        if patches.dtype not in (np.uint8, torch.uint8):
            raise PatchError(f"patches must be uint8 RGB (see models.preprocess), got {patches.dtype}")

    def _batched(self, n: int, inputs: Callable[[int, int], Tensor],
                 step: Callable[[Tensor], tuple[Tensor, ...]]) -> list[np.ndarray]:
        """Apply ``step`` to model-input batches ``inputs(start, stop)``, halving the batch size on out-of-memory."""
        chunks: list[tuple[Tensor, ...]] = []
        start = 0
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            while start < n:
                stop = min(start + self.batch_size, n)
                x = inputs(start, stop).to(self.device).contiguous(memory_format=torch.channels_last)
                try:
                    out = step(x)
                except (torch.OutOfMemoryError, RuntimeError) as e:
                    if not _is_oom(e) or self.batch_size == 1:
                        raise
                    self.batch_size //= 2
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                chunks.append(tuple(t.float().cpu() for t in out))
                start = stop
        if not chunks:
            return []
        return [torch.cat(parts).numpy() for parts in zip(*chunks)]

    @property
    def embedding_dim(self) -> int:
        dim = getattr(self.model, "embedding_dim", None)
        return int(dim) if dim is not None else self.model.profile.hidden

    def _empty(self) -> Prediction:
        return Prediction(np.zeros((0, self.model.num_classes), np.float32), np.zeros((0, self.embedding_dim), np.float32))

    def _classify(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, embedding = self.model.forward_features(x)
        logits = logits.float()
        probs = torch.sigmoid(logits) if self.card.task == "multi-label" else torch.softmax(logits, dim=1)
        return probs, embedding

    def predict(self, patches_uint8: np.ndarray | Tensor) -> Prediction:
        """Seed family: uint8 RGB patches (N, 3, 32, 32) -> probabilities (softmax or sigmoid per the card) + embeddings."""
        if self.card.family != "sr-classifier":
            raise PatchError(f"{self.card.model_id} takes {len(self.card.bands)}-band reflectance: use predict_reflectance")
        self._check_patches(patches_uint8)
        if len(patches_uint8) == 0:
            return self._empty()
        probs, emb = self._batched(len(patches_uint8), lambda a, b: to_model_input(patches_uint8[a:b]), self._classify)
        return Prediction(probs.astype(np.float32), emb.astype(np.float32))

    def predict_reflectance(self, windows: np.ndarray | Tensor) -> Prediction:
        """Reflectance windows (N, bands, H, W) of the card's bands (e.g. 120 x 120 at 10 m) through the
        card's normalisation. Probabilities are in the card's class order (``card.to_map_order``)."""
        if self.card.family == "sr-classifier":
            return self.predict(resize_windows(reflectance_to_uint8(windows), self.card.patch_size))
        norm = self.card.normalisation
        if len(windows) == 0:
            return self._empty()

        def inputs(a: int, b: int) -> Tensor:
            return standardise_reflectance(windows[a:b], norm.mean, norm.std, dn_scale=norm.dn_scale,
                                           offset_dn=norm.offset_dn, size=self.card.patch_size)

        probs, emb = self._batched(len(windows), inputs, self._classify)
        return Prediction(probs.astype(np.float32), emb.astype(np.float32))

    def predict_reflectance_dense(self, windows: np.ndarray | Tensor, *, window_px: int | None = None) -> np.ndarray:
        """Reflectance windows (N, bands, W, W) -> probabilities (N, C, g, g) in the card's class order,
        one vector per position of the last feature map (see :mod:`models.dense`).

        Same preprocessing as :meth:`predict_reflectance`. ``W`` is the card's window or a
        multiple of it (a larger window is scaled by the same factor, so the network sees the
        ground at its trained scale and returns a proportionally larger grid). ``window_px`` is
        the side the card's window has in these pixels (default: the card's own, e.g. 120 px of
        10 m; 60 for windows of 20 m pixels over the same ground). Softmax over classes for
        single-label cards, sigmoid for multi-label. An empty input gives (0, C, 0, 0).
        """
        from models.dense import dense_logits

        n_classes = len(self.card.classes)
        if len(windows) == 0:
            return np.zeros((0, n_classes, 0, 0), np.float32)
        side = int(windows.shape[-1])
        window = window_px or self.card.window_px
        if windows.ndim != 4 or windows.shape[-2] != side or (side * self.card.patch_size) % window:
            raise PatchError(f"dense windows must be square with a side of k x {window} px "
                             f"(the card's window), got {tuple(windows.shape)}")
        size = side * self.card.patch_size // window
        multi = self.card.task == "multi-label"

        def step(x: Tensor) -> tuple[Tensor]:
            logits = dense_logits(self.model, x, patch_size=self.card.patch_size).float()
            return (torch.sigmoid(logits) if multi else torch.softmax(logits, dim=1),)

        if self.card.family == "sr-classifier":
            lr = resize_windows(reflectance_to_uint8(windows), size)
            (probs,) = self._batched(len(lr), lambda a, b: to_model_input(lr[a:b]), step)
        else:
            norm = self.card.normalisation

            def inputs(a: int, b: int) -> Tensor:
                return standardise_reflectance(windows[a:b], norm.mean, norm.std, dn_scale=norm.dn_scale,
                                               offset_dn=norm.offset_dn, size=size)

            (probs,) = self._batched(len(windows), inputs, step)
        return probs.astype(np.float32)

    def predict_reflectance_block(self, image: np.ndarray) -> np.ndarray:
        """timm family, fully convolutional backbones: one reflectance image (bands, H, W) of the card's
        bands, seen at the card's input scale (one pixel per pixel of its patch) -> class
        probabilities (C, h, w) in the card's class order, one vector per feature-map position
        (every :meth:`feature_lattice` stride), from one backbone pass over the whole image.

        Each position is what :meth:`predict_reflectance_dense` gives for the windows that hold it,
        without recomputing the overlaps; unlike a window, a position sees the real pixels around
        it rather than the zero padding at a window's edge. H and W should be multiples of the
        network's stride (the caller pads), so every position is a whole stride of the image.
        """
        from models.dense import dense_logits

        if self.card.family != "timm" or image.ndim != 3 or image.shape[0] != len(self.card.bands):
            raise PatchError(f"block evaluation takes one (bands={len(self.card.bands)}, H, W) image of a timm "
                             f"model's bands, got {tuple(image.shape)} for a {self.card.family} model")
        norm = self.card.normalisation
        multi = self.card.task == "multi-label"

        def step(x: Tensor) -> tuple[Tensor]:
            logits = dense_logits(self.model, x).float()
            return (torch.sigmoid(logits) if multi else torch.softmax(logits, dim=1),)

        (probs,) = self._batched(1, lambda a, b: standardise_reflectance(
            image[None], norm.mean, norm.std, dn_scale=norm.dn_scale, offset_dn=norm.offset_dn), step)
        return probs[0].astype(np.float32)

    def feature_lattice(self) -> tuple[int, float]:
        """Where the feature-map positions of :meth:`predict_reflectance_block` sit: the stride in input
        pixels and the centre of position 0 (pixel coordinates, pixel i spanning [i, i + 1)).

        Measured, not assumed: the stride from the map size of a blank input, the centre as the
        centroid of the input gradient of an interior position (a ResNet centres position k on
        pixel 32 k, a ConvNeXt's patchify stem on the middle of its stride, 32 k + 16)."""

        side = 320
        probe = torch.randn(1, len(self.card.bands), side, side, generator=torch.Generator().manual_seed(0))
        x = probe.to(self.device).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        with torch.enable_grad():
            feats = self.model.net.forward_features(x)
            stride = side // feats.shape[-1]
            k = feats.shape[-1] // 2
            (grad,) = torch.autograd.grad(feats[0, :, k, k].abs().sum(), x)  # leaves the weights' .grad alone
        weight = grad.abs().sum(dim=(0, 1)).double().cpu()
        at = torch.arange(side, dtype=torch.float64) + 0.5
        centre = float(((weight.sum(dim=1) * at).sum() + (weight.sum(dim=0) * at).sum()) / (2 * weight.sum()))
        return stride, round(centre - k * stride, 1)

    def predict_pixels(self, images: np.ndarray) -> np.ndarray:
        """per-pixel family: reflectance images (N, bands, H, W) of the card's bands -> class
        probabilities (N, C, H, W) in the card's class order (softmax over classes), float32.

        The card's normalisation makes the network input; pixels with no observation (NaN) enter
        as 0 after it. The card's ``pixel.size_multiple`` must divide H and W: a network that
        downsamples inside returns other values at other sizes.
        """
        if self.card.family != "per-pixel":
            raise PatchError(f"{self.card.model_id} is a {self.card.family} model: use predict_reflectance")
        images = np.asarray(images, dtype=np.float32)
        multiple = self.card.pixel.size_multiple
        if images.ndim != 4 or images.shape[1] != len(self.card.bands) or images.shape[2] % multiple \
                or images.shape[3] % multiple:
            raise PatchError(f"images must be (N, {len(self.card.bands)}, H, W) with H and W multiples of {multiple}, "
                             f"got {tuple(images.shape)}")
        if len(images) == 0:
            return np.zeros((0, len(self.card.classes), *images.shape[2:]), np.float32)
        from models.dynamicworld import normalise_dn

        norm = self.card.normalisation

        def inputs(a: int, b: int) -> Tensor:
            x = normalise_dn(images[a:b] * np.float32(norm.dn_scale), norm.percentiles)
            return torch.from_numpy(np.nan_to_num(x, nan=0.0))

        def step(x: Tensor) -> tuple[Tensor]:
            return (torch.softmax(self.model(x).float(), dim=1),)

        (probs,) = self._batched(len(images), inputs, step)
        return probs.astype(np.float32)

    def dense_grid(self, window_px: int | None = None) -> int:
        """Side g of the grid :meth:`predict_reflectance_dense` returns for windows of ``window_px``
        (default: the card's window), found by running one blank window."""
        side = window_px or self.card.window_px
        blank = np.zeros((1, len(self.card.bands), side, side), np.float32)
        return int(self.predict_reflectance_dense(blank).shape[-1])

    def super_resolve(self, patches_uint8: np.ndarray | Tensor) -> np.ndarray:
        """uint8 patches (N, 3, h, w) -> uint8 super-resolved images (N, 3, h*scale, w*scale)."""
        self._check_patches(patches_uint8)
        (sr,) = self._batched(len(patches_uint8), lambda a, b: to_model_input(patches_uint8[a:b]),
                              lambda x: (self.model.super_resolve(x),))
        return from_model_output(torch.from_numpy(sr))
