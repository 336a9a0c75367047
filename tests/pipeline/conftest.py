"""Fixtures for pipeline tests: small random-weight models (the pipeline works with any valid weights)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Random `tiny`-profile weights with a card: fast on 2 cores, not a land-cover model."""
    import torch

    from models.card import ModelCard
    from models.checkpoint import save_model
    from models.classifier import SRClassifier
    from models.profiles import get_profile

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    card = ModelCard.for_profile("tiny", training_data={"description": "random init, tests only", "synthetic": True})
    save_model(SRClassifier(get_profile("tiny"), card.variant), card, path)
    return path
