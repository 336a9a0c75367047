"""The worker side: a worker gets the card from the client, checks the weights' sha256 once when it
loads the model, and keeps the model for every later task."""

from __future__ import annotations

from pathlib import Path

import pytest

import models.files
from models.card import ModelCard, card_path
from pipeline import infer


@pytest.fixture(autouse=True)
def fresh_cache():
    infer._LOADED.clear()
    yield
    infer._LOADED.clear()


def test_a_worker_hashes_the_weights_once_and_uses_the_clients_card(tiny_model, monkeypatch):
    hashed: list[Path] = []
    real = models.files.sha256_file
    monkeypatch.setattr(models.files, "sha256_file", lambda p: hashed.append(Path(p)) or real(p))
    card = ModelCard.read(card_path(tiny_model)).model_copy(update={"threshold": 0.3})  # differs from the file's
    model = infer.ModelRef(str(tiny_model), real(tiny_model), card, device="cpu")
    first = infer._predictor(model)
    assert infer._predictor(model) is first and infer.load_model_here(model) == "cpu"
    assert hashed == [Path(tiny_model)]
    assert first.card.threshold == 0.3  # the card the client planned with, not a second read of the file


def test_weights_that_changed_since_the_client_saw_them_are_refused(tiny_model):
    model = infer.ModelRef(str(tiny_model), "0" * 64, device="cpu")
    with pytest.raises(RuntimeError, match="changed during the run"):
        infer._predictor(model)
