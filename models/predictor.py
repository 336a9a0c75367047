"""Batched inference: uint8 RGB patches in, class probabilities and embeddings out.

Eval mode and ``torch.inference_mode`` always; channels_last memory format (faster for these
convolutions on CPU as well as GPU); on CUDA, bf16 autocast. The batch size halves on an
out-of-memory error and the batch is retried, so one worker configuration fits any device.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from models.card import ModelCard
from models.classifier import SRClassifier
from models.preprocess import PatchError, from_model_output, reflectance_to_uint8, resize_windows, to_model_input

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
    """Runs a loaded ``SRClassifier`` as its model card says (task, patch size, normalisation)."""

    def __init__(self, model: SRClassifier, card: ModelCard, device: str | torch.device | None = None,
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
                                 variant=kwargs.pop("variant", None))
        return cls(model, card, device=dev, **kwargs)

    def _check_patches(self, patches: np.ndarray | Tensor) -> None:
        size = self.card.patch_size
        if patches.ndim != 4 or tuple(patches.shape[1:]) != (3, size, size):
            raise PatchError(f"patches must be shaped (N, 3, {size}, {size}), got {tuple(patches.shape)}")
        if patches.dtype not in (np.uint8, torch.uint8):
            raise PatchError(f"patches must be uint8 RGB (see models.preprocess), got {patches.dtype}")

    def _batched(self, patches: np.ndarray | Tensor, step: Callable[[Tensor], tuple[Tensor, ...]]) -> list[np.ndarray]:
        """Apply ``step`` to model-input batches, halving the batch size on out-of-memory."""
        n = len(patches)
        chunks: list[tuple[Tensor, ...]] = []
        start = 0
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            while start < n:
                stop = min(start + self.batch_size, n)
                x = to_model_input(patches[start:stop]).to(self.device).contiguous(memory_format=torch.channels_last)
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

    def _classify(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, embedding = self.model.forward_features(x)
        logits = logits.float()
        probs = torch.sigmoid(logits) if self.card.task == "multi-label" else torch.softmax(logits, dim=1)
        return probs, embedding

    def predict(self, patches_uint8: np.ndarray | Tensor) -> Prediction:
        """uint8 RGB patches (N, 3, 32, 32) -> probabilities (softmax or sigmoid per the card) + embeddings."""
        self._check_patches(patches_uint8)
        if len(patches_uint8) == 0:
            return Prediction(np.zeros((0, self.model.num_classes), np.float32),
                              np.zeros((0, self.model.profile.hidden), np.float32))
        probs, emb = self._batched(patches_uint8, self._classify)
        return Prediction(probs.astype(np.float32), emb.astype(np.float32))

    def predict_reflectance(self, rgb: np.ndarray | Tensor) -> Prediction:
        """Reflectance windows (N, 3, H, W) (e.g. 120 x 120 at 10 m) through the card's normalisation."""
        return self.predict(resize_windows(reflectance_to_uint8(rgb), self.card.patch_size))

    def super_resolve(self, patches_uint8: np.ndarray | Tensor) -> np.ndarray:
        """uint8 patches (N, 3, h, w) -> uint8 super-resolved images (N, 3, h*scale, w*scale)."""
        self._check_patches(patches_uint8)
        (sr,) = self._batched(patches_uint8, lambda x: (self.model.super_resolve(x),))
        return from_model_output(torch.from_numpy(sr))
