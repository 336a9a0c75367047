"""Tiny learnable data and a tiny-profile training config, shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.datasets import PatchSet
from models.training.config import TrainConfig


def colour_patches(n: int, group: str, seed: int) -> PatchSet:
    """Three learnable classes: mostly red, green or blue patches with noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 60, (n, 3, 32, 32)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, c] += 150
    targets = np.zeros((n, 19), np.float32)
    targets[np.arange(n), labels] = 1
    return PatchSet(images, targets, [f"{group}/{i}" for i in range(n)], [group] * n)


def small_run_config(tmp_path: Path, epochs: int = 2) -> TrainConfig:
    """Train on group A (24 patches), validate on group B (12), tiny profile, no SR stage."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    colour_patches(24, "A", 0).save(tmp_path / "a.npz")
    colour_patches(12, "B", 1).save(tmp_path / "b.npz")
    return TrainConfig(
        name="toy", profile="tiny",
        train={"source": "patches", "path": tmp_path / "a.npz"},
        validation={"source": "patches", "path": tmp_path / "b.npz"},
        classifier={"epochs": epochs, "warmup_epochs": 1, "batch_size": 8},
        output_dir=tmp_path / "out", work_dir=tmp_path / "work", threads=2,
    )
