"""Training a timm-family model on multi-band windows: what `make weights-multiband` runs, in miniature.

Windows are made here (two separable "classes" of ten-band reflectance), so the test needs no
demo world; the demo-world loader itself is tested in tests/pipeline/demo/test_dataset.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.torch import load_file

from models.classes import CLASS_NAMES
from models.predictor import Predictor
from models.reben import REBEN_CLASSES
from models.training.config import DataSpec
from models.training.timm import (
    TimmTrainConfig,
    TimmTrainError,
    WindowSet,
    dn_statistics,
    is_timm_config,
    load_timm_config,
    run_timm_training,
    select_groups,
    to_output_order,
)

WATER, FOREST = CLASS_NAMES.index("Inland waters"), CLASS_NAMES.index("Coniferous forest")


def windows(n: int, group: str, seed: int) -> WindowSet:
    """Dark windows are water, bright-NIR windows forest; a few forests hold some water too."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 2, n)
    refl = rng.normal(0.05, 0.01, (n, 10, 32, 32)).astype(np.float32)
    refl[kind == 1, 6:8] += 0.3  # nir, nir08
    targets = np.zeros((n, 19), np.float32)
    targets[kind == 0, WATER] = 1
    targets[kind == 1, FOREST] = 1
    targets[(kind == 1) & (np.arange(n) % 4 == 0), WATER] = 1
    return WindowSet(refl, targets, [f"{group}/{i}" for i in range(n)], [group] * n)


def config(tmp_path, **overrides) -> TimmTrainConfig:
    fields = dict(name="toy", model_name="mobilenetv3_small_050", train=DataSpec(source="demo-world"),
                  validation=DataSpec(source="demo-world", world_seed=1), epochs=12, warmup_epochs=1, batch_size=16,
                  lr=3e-3, output_dir=tmp_path, save_half=True, threads=2, synthetic=True, description="toy windows")
    return TimmTrainConfig(**(fields | overrides))


def loaders():
    return {"demo-world": lambda spec, bands: windows(96, "train", 0) if spec.world_seed == 0 else windows(48, "val", 1)}


def test_a_trained_model_is_a_synthetic_multi_label_card_in_the_published_layout(tmp_path):
    result = run_timm_training(config(tmp_path), window_sources=loaders(), progress=False)
    card = result.card
    assert card.family == "timm" and card.task == "multi-label" and card.training_data.synthetic
    assert card.classes == list(REBEN_CLASSES) and len(card.bands) == 10
    assert card.model_id == "toy" and card.sha256
    assert all(k.startswith("model.vision_encoder.") for k in load_file(result.weights))
    assert 0.0 <= card.metrics["validation_macro_map"] <= 1.0 and card.metrics["validation_n"] == 48

    # It learnt the toy task, and the predictor feeds it as training did.
    val = windows(48, "val", 1)
    probs = card.to_map_order(Predictor.from_path(result.weights, device="cpu").predict_reflectance(val.windows).probs)
    assert (probs.argmax(axis=1) == val.targets.argmax(axis=1)).mean() > 0.9
    assert (tmp_path / "toy.metrics.json").is_file()


def test_training_refuses_a_source_with_no_window_loader(tmp_path):
    with pytest.raises(TimmTrainError, match="demo-world"):
        run_timm_training(config(tmp_path), window_sources={}, progress=False)


def test_statistics_ignore_never_clear_pixels():
    refl = np.full((2, 3, 4, 4), 0.1, np.float32)
    refl[0, :, 0, 0] = np.nan
    mean, std = dn_statistics(refl)
    assert mean == [1000.0] * 3 and std == [1.0] * 3  # constant bands: std floored at 1 DN


def test_targets_follow_the_networks_alphabetical_class_order():
    target = np.zeros((1, 19), np.float32)
    target[0, FOREST] = 1
    assert REBEN_CLASSES[int(np.flatnonzero(to_output_order(target)[0])[0])] == "Coniferous forest"


def test_group_selection_keeps_and_drops_by_prefix():
    data = WindowSet(np.zeros((3, 1, 2, 2), np.float32), np.zeros((3, 19), np.float32), ["a", "b", "c"],
                     ["w/T1", "w/T2", "x/T1"])
    assert select_groups(data, ["w/"], ["w/T2"]).ids == ["a"]


def test_config_files_say_their_family(tmp_path):
    assert is_timm_config("models/configs/demo-multiband.yaml")
    assert not is_timm_config("models/configs/demo.yaml")
    assert load_timm_config("models/configs/demo-multiband.yaml").bands[0] == "blue"
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: timm\nname: x\n")
    with pytest.raises(TimmTrainError, match="train"):
        load_timm_config(bad)


def test_the_committed_multiband_demo_weights_say_what_they_are():
    from pathlib import Path

    from models.reben import BANDS_V02

    weights = Path(__file__).resolve().parents[2] / "models" / "weights" / "demo-multiband-mobilenetv3.safetensors"
    predictor = Predictor.from_path(weights, device="cpu")  # strict load; sha256 checked against the card
    card = predictor.card
    assert card.family == "timm" and card.task == "multi-label" and card.training_data.synthetic
    assert card.bands == list(BANDS_V02) and card.classes == list(REBEN_CLASSES)
    assert card.metrics["validation_macro_map"] > 0.8  # held out: the seed-0 world, never trained on
    probs = predictor.predict_reflectance(np.full((2, 10, 120, 120), 0.1, np.float32)).probs
    assert probs.shape == (2, 19) and np.all((probs >= 0) & (probs <= 1))
