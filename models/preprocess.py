"""The seed's preprocessing, as array functions the pipeline and the predictor share.

Sentinel-2 L2A RGB (B04, B03, B02) surface reflectance -> clip to [0, 1] -> x255 to uint8 ->
bicubic resize of the 120 px (1.2 km) window to the 32 px LR patch -> (x/255)*2-1.

Functions take numpy or torch arrays laid out (N, 3, H, W) and give back the same kind, so the
pipeline can stay in numpy and the predictor in torch.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from models.errors import LandcoverError

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)


class PatchError(LandcoverError):
    """Patches have the wrong shape or type for the model."""


def _check_nchw(x: np.ndarray | Tensor, what: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise PatchError(f"{what} must be shaped (N, 3, H, W) with RGB channels, got {tuple(x.shape)}")


def reflectance_to_uint8(rgb: ArrayT) -> ArrayT:
    """Reflectance (N, 3, H, W) -> uint8: clip to [0, 1], x255, truncated as the seed's astype did.

    NaN (no data) becomes 0: cells without enough clear pixels are masked downstream anyway, and a
    NaN must never reach the network.
    """
    _check_nchw(rgb, "reflectance")
    t = torch.as_tensor(rgb, dtype=torch.float32)
    t = torch.nan_to_num(t, nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
    out = (t * 255.0).to(torch.uint8)  # float -> uint8 truncates toward zero, like numpy's astype
    return out.numpy() if isinstance(rgb, np.ndarray) else out


def resize_windows(windows: ArrayT, size: int = 32) -> ArrayT:
    """uint8 windows (N, 3, H, W) -> uint8 (N, 3, size, size), bicubic with antialiasing.

    Antialiasing makes a 120 -> 32 reduction average the window (as PIL's bicubic resize, which
    the seed used, does) instead of sampling a few pixels of it.
    """
    _check_nchw(windows, "windows")
    t = torch.as_tensor(windows)
    if t.dtype != torch.uint8:
        raise PatchError(f"windows must be uint8 (use reflectance_to_uint8 first), got {t.dtype}")
    if t.shape[-2:] == (size, size):
        return windows
    resized = F.interpolate(t.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    out = resized.clamp_(0, 255).round_().to(torch.uint8)
    return out.numpy() if isinstance(windows, np.ndarray) else out


def to_model_input(patches: np.ndarray | Tensor) -> Tensor:
    """uint8 patches (N, 3, H, W) -> float32 tensor in [-1, 1]: (x / 255) * 2 - 1."""
    _check_nchw(patches, "patches")
    t = torch.as_tensor(patches)
    if t.dtype != torch.uint8:
        raise PatchError(f"patches must be uint8 RGB, got {t.dtype}")
    return t.float().div_(255.0).mul_(2.0).sub_(1.0)


def sr_reference(images_uint8: Tensor, scale: int, lr_side: int = 32) -> Tensor:
    """The SR target: the full-resolution (120 px, 10 m) window resized to ``lr_side * scale``.

    ``images_uint8`` (N, 3, 120, 120); output in [-1, 1]. This is the only honest reference the
    data have: the SR model learns to restore the 10 m detail the 32 px input lost.
    """
    side = lr_side * scale
    x = to_model_input(images_uint8)
    return F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)


def from_model_output(image: Tensor) -> np.ndarray:
    """[-1, 1] images (N, 3, H, W) -> uint8 numpy, the inverse of ``to_model_input`` (rounded)."""
    return ((image.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu().numpy()


def preprocess_reflectance(rgb: np.ndarray | Tensor, patch_size: int = 32) -> Tensor:
    """The whole seed chain: reflectance windows -> model input (N, 3, patch_size, patch_size)."""
    return to_model_input(resize_windows(reflectance_to_uint8(rgb), patch_size))


def standardise_reflectance(windows: np.ndarray | Tensor, mean: list[float], std: list[float], *,
                            dn_scale: float = 10000.0, offset_dn: float = 0.0, size: int | None = None) -> Tensor:
    """Reflectance windows (N, C, H, W) -> float32 ``(DN - mean) / std`` per band, the timm family's input.

    DN = reflectance x ``dn_scale`` + ``offset_dn`` (the pipeline's reflectance is harmonised, so
    this rebuilds the DN convention the statistics were computed on). NaN (never clear) becomes
    the band mean, i.e. 0. ``size`` resizes bilinearly (antialiased) when the window is not the
    network's input size.
    """
    t = torch.as_tensor(windows, dtype=torch.float32)
    if t.ndim != 4 or t.shape[1] != len(mean):
        raise PatchError(f"windows must be shaped (N, {len(mean)}, H, W) for this model's bands, got {tuple(t.shape)}")
    m = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    s = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    x = torch.nan_to_num((t * dn_scale + offset_dn - m) / s, nan=0.0, posinf=0.0, neginf=0.0)
    if size is not None and x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x
