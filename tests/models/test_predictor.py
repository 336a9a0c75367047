"""The batched predictor: same numbers as one-by-one, the card's task, adaptive batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.card import ModelCard
from models.checkpoint import load_model
from models.classifier import SRClassifier
from models.predictor import Prediction, Predictor
from models.preprocess import PatchError
from models.profiles import get_profile


@pytest.fixture(scope="module")
def predictor(request) -> Predictor:
    path = request.getfixturevalue("tiny_weights")
    return Predictor.from_path(path, device="cpu", batch_size=3)


def test_batched_equals_one_by_one(predictor, patches):
    batched = predictor.predict(patches)
    singles = [predictor.predict(patches[i:i + 1]) for i in range(len(patches))]
    np.testing.assert_allclose(batched.probs, np.concatenate([s.probs for s in singles]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(batched.embeddings, np.concatenate([s.embeddings for s in singles]), rtol=1e-4, atol=1e-5)


def test_single_label_probabilities_are_a_softmax_and_embeddings_the_penultimate_layer(predictor, patches):
    pred = predictor.predict(patches)
    assert pred.probs.shape == (7, 19) and pred.probs.dtype == np.float32
    assert pred.embeddings.shape == (7, get_profile("tiny").hidden) and pred.embeddings.dtype == np.float32
    np.testing.assert_allclose(pred.probs.sum(axis=1), 1.0, atol=1e-5)
    with torch.inference_mode():
        from models.preprocess import to_model_input

        logits, emb = predictor.model.float().forward_features(to_model_input(patches))
    np.testing.assert_allclose(pred.probs, torch.softmax(logits, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(pred.embeddings, emb.numpy(), rtol=1e-4, atol=1e-5)


def test_multi_label_cards_get_independent_sigmoid_probabilities(tiny_weights, patches):
    model, card = load_model(tiny_weights)
    single = Predictor(model, card, device="cpu").predict(patches).probs
    multi = Predictor(model, card.model_copy(update={"task": "multi-label"}), device="cpu").predict(patches).probs
    assert not np.allclose(multi.sum(axis=1), 1.0)
    # Same logits underneath: the class ranking does not change.
    assert (np.argsort(-multi, axis=1)[:, 0] == np.argsort(-single, axis=1)[:, 0]).all()


def test_reflectance_windows_go_through_the_card_normalisation(predictor):
    refl = np.random.default_rng(3).uniform(0, 0.4, size=(2, 3, 120, 120)).astype(np.float32)
    from models.preprocess import reflectance_to_uint8, resize_windows

    expected = predictor.predict(resize_windows(reflectance_to_uint8(refl), 32))
    np.testing.assert_array_equal(predictor.predict_reflectance(refl).probs, expected.probs)


def test_super_resolve_gives_uint8_images_eight_times_larger(predictor, patches):
    sr = predictor.super_resolve(patches[:2])
    assert sr.shape == (2, 3, 256, 256) and sr.dtype == np.uint8


def test_top_classes_are_sorted(predictor, patches):
    idx, p = predictor.predict(patches).top(5)
    assert idx.shape == p.shape == (7, 5)
    assert (np.diff(p, axis=1) <= 0).all()


def test_empty_input_gives_empty_prediction(predictor):
    pred = predictor.predict(np.zeros((0, 3, 32, 32), np.uint8))
    assert pred.probs.shape == (0, 19) and len(pred) == 0


@pytest.mark.parametrize(
    ("array", "match"),
    [(np.zeros((2, 3, 120, 120), np.uint8), r"\(N, 3, 32, 32\)"), (np.zeros((2, 3, 32, 32), np.float32), "uint8")],
)
def test_wrong_patches_are_refused(predictor, array, match):
    with pytest.raises(PatchError, match=match):
        predictor.predict(array)


class RunsOutOfMemoryAbove(SRClassifier):
    """A model that, like a GPU, cannot fit batches larger than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__(get_profile("tiny"))
        self.limit = limit
        self.seen: list[int] = []

    def forward_features(self, lr):
        self.seen.append(len(lr))
        if len(lr) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward_features(lr)


def test_batch_size_halves_on_out_of_memory_and_every_patch_is_still_predicted(patches):
    torch.manual_seed(0)
    model = RunsOutOfMemoryAbove(limit=2)
    predictor = Predictor(model, ModelCard.for_profile("tiny"), device="cpu", batch_size=8)

    pred = predictor.predict(patches)

    assert predictor.batch_size == 2
    assert model.seen[:3] == [7, 4, 2]  # tried 7 (all), halved to 4, then 2
    assert pred.probs.shape == (7, 19)
    reference = Predictor(RunsOutOfMemoryAbove(limit=99), ModelCard.for_profile("tiny"), device="cpu")
    reference.model.load_state_dict(model.state_dict())
    np.testing.assert_allclose(pred.probs, reference.predict(patches).probs, atol=1e-5)


def test_out_of_memory_at_batch_one_is_raised(patches):
    predictor = Predictor(RunsOutOfMemoryAbove(limit=0), ModelCard.for_profile("tiny"), device="cpu", batch_size=4)
    with pytest.raises(torch.OutOfMemoryError):
        predictor.predict(patches)


def test_prediction_is_a_plain_record():
    pred = Prediction(np.zeros((1, 19), np.float32), np.zeros((1, 4), np.float32))
    assert len(pred) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_bf16_agrees_with_cpu_fp32(tiny_weights, patches):
    cpu = Predictor.from_path(tiny_weights, device="cpu").predict(patches)
    gpu = Predictor.from_path(tiny_weights, device="cuda").predict(patches)
    assert (cpu.probs.argmax(1) == gpu.probs.argmax(1)).mean() >= 0.8
    np.testing.assert_allclose(gpu.probs, cpu.probs, atol=0.05)
