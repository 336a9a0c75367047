"""The structure both model families train on.

A run starts a :class:`Session` (threads, device, seeded generators), then drives one or more
:class:`Stage` s through :func:`run_stage`: the epoch loop with progress, the validation hook and
the end-of-epoch hook where a stage logs its learning curve and keeps its last (resumable) or
best checkpoint. What an epoch trains is the stage's own business; the helpers every stage's
epoch needs (:func:`batches`, :func:`train_step`) live here too.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from models.training.config import TrainConfigError


def pick_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, or ``auto`` (CUDA when one is visible)."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainConfigError("device: cuda asked for but no CUDA device is visible; use device: auto")
        return torch.device("cuda")
    return torch.device("cpu")


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads; when None, ``OMP_NUM_THREADS`` where it is set (a job sharing the
    machine says so there), else every core."""
    if threads:
        torch.set_num_threads(threads)
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    elif os.cpu_count():
        torch.set_num_threads(os.cpu_count() or 1)


def elapsed_since(t0: float) -> float:
    return round(time.perf_counter() - t0, 2)


@dataclass(frozen=True)
class Session:
    """Where a run computes, and the generator every random draw of its data comes from."""

    device: torch.device
    generator: torch.Generator

    @classmethod
    def start(cls, seed: int, device: str, threads: int | None) -> Session:
        """Set threads, pick the device and seed torch; the same seed then gives the same weights."""
        set_threads(threads)
        dev = pick_device(device)
        # The global generator initialises the networks built after this; ``generator`` draws
        # batches, crops and augmentations, and is saved with a resumable state.
        torch.manual_seed(seed)
        return cls(dev, torch.Generator().manual_seed(seed))


def batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[Tensor]:
    """Indices of ``n`` samples in batches: shuffled by ``generator``, in order when None."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def train_step(
    model: Callable[[Tensor], Tensor],
    params: list[nn.Parameter],
    inputs: Tensor,
    targets: Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
) -> float:
    """One optimisation step (AMP when a scaler is given); returns the loss before the step."""
    optimizer.zero_grad(set_to_none=True)
    device_type = inputs.device.type
    with torch.autocast(device_type, dtype=torch.float16, enabled=scaler is not None):
        loss = loss_fn(model(inputs), targets)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return float(loss.detach())


class Progress(Protocol):
    """What a stage reports progress to: rich's Progress, or :class:`NoProgress`."""

    def add_task(self, description: str, **fields: Any) -> Any: ...

    def update(self, task: Any, **fields: Any) -> None: ...


def progress_bar() -> Any:
    """A rich progress display (a context manager) with one bar per stage."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), transient=False)


class NoProgress:
    """Progress that shows nothing (``progress=False``, tests, batch jobs)."""

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *a: Any, **k: Any) -> int:
        return 0

    def update(self, *a: Any, **k: Any) -> None:
        return None


class Stage(ABC):
    """One training loop of a run. Subclasses implement :meth:`train_epoch` and may override the hooks.

    ``label`` names the stage's progress bar; ``steps_per_epoch`` sizes it; ``timed`` adds the
    epoch's ``seconds`` to its row.
    """

    label: str = "training"
    steps_per_epoch: int = 1
    timed: bool = True

    @abstractmethod
    def train_epoch(self, epoch: int, advance: Callable[[str], None]) -> dict[str, Any]:
        """Train one epoch, calling ``advance(info)`` after each step; returns the epoch's row."""

    def validate(self, epoch: int) -> dict[str, Any]:
        """Validation metrics of the epoch just trained (merged into its row)."""
        return {}

    def end_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        """Log ``row`` and keep what the stage keeps (last resumable state, best weights)."""
        return None


def run_stage(stage: Stage, start: int, stop: int, bar: Progress) -> None:
    """Epochs ``start`` .. ``stop - 1`` of ``stage`` (``start`` > 0 when resuming), with a progress bar."""
    steps = stage.steps_per_epoch
    task = bar.add_task(stage.label, total=stop * steps, info="", completed=start * steps)
    advance = lambda info: bar.update(task, advance=1, info=info)
    for epoch in range(start, stop):
        t = time.perf_counter()
        row = stage.train_epoch(epoch, advance)
        row |= stage.validate(epoch)
        if stage.timed:
            row["seconds"] = elapsed_since(t)
        stage.end_epoch(epoch, row)
