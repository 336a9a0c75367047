"""What a run keeps between epochs: the resumable state, the best weights so far, the learning-curve log."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models.errors import LandcoverError
from models.files import atomic_write, atomic_write_text


class CheckpointResumeError(LandcoverError):
    """A training checkpoint cannot be resumed."""


@dataclass
class EpochLog:
    """Per-epoch metrics written to ``metrics.csv`` and ``metrics.json`` (atomically)."""

    path_csv: Path
    path_json: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]

        def write_csv(tmp: Path) -> None:
            with tmp.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=keys)
                writer.writeheader()
                writer.writerows(self.rows)

        atomic_write(self.path_csv, write_csv)
        atomic_write_text(self.path_json, json.dumps(self.rows, indent=1))

    @staticmethod
    def read(path_json: Path) -> list[dict[str, Any]]:
        return json.loads(Path(path_json).read_text()) if Path(path_json).is_file() else []


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    """Save a resumable state (tensors, numbers, strings, dicts only: weights_only-loadable)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointResumeError(
            f"cannot resume from {path}: {type(exc).__name__}; delete it to start over"
        ) from None


@dataclass
class BestWeights:
    """CPU copies of the weights of the epoch with the highest score so far."""

    score: float = -1.0
    epoch: int = -1
    state: dict[str, Tensor] = field(default_factory=dict)

    def offer(self, score: float, epoch: int, model: nn.Module) -> None:
        """Keep ``model``'s weights if ``score`` beats the best so far (the earlier epoch wins a tie)."""
        if score > self.score:
            self.score, self.epoch = score, epoch
            self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
