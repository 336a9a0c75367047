"""Shared fixtures for the model tests: random-weight checkpoints with cards, written once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.card import ModelCard, TrainingData
from models.checkpoint import save_model
from models.classifier import SRClassifier
from models.profiles import get_profile


def save_random_model(directory: Path, profile: str, seed: int = 0, **card_fields) -> Path:
    torch.manual_seed(seed)
    model = SRClassifier(get_profile(profile))
    card = ModelCard.for_profile(
        profile, training_data=TrainingData(description="random weights for tests", synthetic=True), **card_fields
    )
    path = directory / f"{profile}.safetensors"
    save_model(model, card, path)
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("tiny"), "tiny")


@pytest.fixture(scope="session")
def small_weights(tmp_path_factory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("small"), "small")


@pytest.fixture
def patches() -> np.ndarray:
    """Seven uint8 RGB LR patches: an odd count, so batching leaves a remainder."""
    return np.random.default_rng(42).integers(0, 256, size=(7, 3, 32, 32), dtype=np.uint8)
