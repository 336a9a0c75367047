"""Learning-rate schedule and weight averaging of the training recipes."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel


def warmup_cosine(epoch: int, warmup: int, total: int, floor: float = 0.0) -> float:
    """LR factor of epoch ``epoch`` (0-based): linear warm-up to 1 over ``warmup`` epochs,
    then half a cosine down to ``floor`` at the last epoch."""
    if epoch < warmup:
        return (epoch + 1) / warmup
    span = max(total - warmup - 1, 1)
    progress = min((epoch - warmup) / span, 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int, floor: float = 0.0) -> LambdaLR:
    """Per-epoch :func:`warmup_cosine` schedule of ``optimizer``."""
    # a plain function: LambdaLR's state_dict then holds only numbers (weights_only-safe)
    return LambdaLR(optimizer, lambda e: warmup_cosine(e, warmup, total, floor))


def build_ema(model: nn.Module, decay: float, warmup: bool = True) -> AveragedModel:
    """Exponential moving average of parameters and buffers (BatchNorm statistics too).

    With ``warmup`` the decay ramps as min(decay, (1 + n) / (10 + n)) over the n updates so
    far: with a few hundred steps (a CPU run) a fixed 0.9995 would keep the EMA near the
    random initial weights.
    """
    def ema_avg(avg: Tensor, new: Tensor, n: Tensor) -> Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n))) if warmup else decay
        return avg * d + new * (1.0 - d)

    return AveragedModel(model, avg_fn=ema_avg, use_buffers=True)
