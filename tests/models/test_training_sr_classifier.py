"""models.training.sr_classifier: the seed family's recipe pieces, and whole (tiny) training runs."""

import pytest
import torch
from training_toys import small_run_config

from models.tensors import load_state_dict
from models.training.sr_classifier import (
    ClassifierTrainer,
    augment,
    make_loss,
    random_crops,
    run_training,
    smooth_multi_hot,
)
from models.training.state import CheckpointResumeError, EpochLog, load_training_state


def test_label_smoothing_single_label_matches_the_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    target = torch.tensor([[0.0, 1.0, 0.0]])
    logp = torch.log_softmax(logits, dim=1)[0]
    eps = 0.15
    expected = -((1 - eps) * logp[1] + eps / 3 * logp.sum())
    assert float(make_loss("single", eps)(logits, target)) == pytest.approx(float(expected), rel=1e-6)

def test_single_label_mode_trains_on_the_lowest_index_of_a_multi_hot():
    logits = torch.tensor([[0.0, 5.0, 5.0]])
    both = torch.tensor([[0.0, 1.0, 1.0]])
    assert float(make_loss("single", 0.0)(logits, both)) == pytest.approx(float(make_loss("single", 0.0)(logits, torch.tensor([[0.0, 1.0, 0.0]]))))

def test_multi_label_smoothing_pulls_targets_towards_one_half():
    assert smooth_multi_hot(torch.tensor([1.0, 0.0]), 0.15).tolist() == pytest.approx([0.925, 0.075])

def test_augment_keeps_shapes_and_values_in_range_and_replays_from_the_generator():
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    # geometry only: a dihedral transform keeps each image's pixel multiset
    g = augment(x, torch.Generator().manual_seed(3), jitter=0.0)
    assert torch.allclose(g.flatten(1).sort(1).values, x.flatten(1).sort(1).values)

def test_sr_crops_stay_aligned_with_the_reference():
    lr = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    ref = torch.nn.functional.interpolate(lr, scale_factor=8, mode="nearest")
    lc, rc = random_crops(lr, ref, 8, 8, torch.Generator().manual_seed(0))
    assert lc.shape == (2, 3, 8, 8) and rc.shape == (2, 3, 64, 64)
    assert torch.equal(torch.nn.functional.interpolate(lc, scale_factor=8, mode="nearest"), rc)

def test_training_saves_the_ema_weights_not_the_raw_ones(tmp_path):
    cfg = small_run_config(tmp_path)
    result = run_training(cfg, progress=False)
    saved = load_state_dict(result.weights)
    state = load_training_state(tmp_path / "work" / "toy" / "checkpoint.pt")
    raw = state["model"]
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    key = "backbone.fc.1.weight"
    assert not torch.equal(raw[key], ema[key])
    assert torch.equal(saved[key], ema[key])
    assert result.card.metrics["n_train"] == 24 and result.card.metrics["train_groups"] == "A"
    rows = result.log_json.read_text()
    assert '"val_accuracy"' in rows and (tmp_path / "out" / "toy.metrics.csv").is_file()

def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    straight = run_training(small_run_config(tmp_path / "s"), progress=False)

    calls = {"n": 0}
    real_validate = ClassifierTrainer.validate

    def crash_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    cfg = small_run_config(tmp_path / "r")
    monkeypatch.setattr(ClassifierTrainer, "validate", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, progress=False)
    monkeypatch.setattr(ClassifierTrainer, "validate", real_validate)
    resumed = run_training(cfg, progress=False)
    a, b = load_state_dict(straight.weights), load_state_dict(resumed.weights)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert [r["epoch"] for r in EpochLog.read(resumed.log_json)] == [0, 1]

def test_resuming_with_a_changed_config_is_refused(tmp_path):
    cfg = small_run_config(tmp_path, epochs=1)
    run_training(cfg, progress=False)
    changed = cfg.model_copy(update={"classifier": cfg.classifier.model_copy(update={"lr": 1e-3})})
    with pytest.raises(CheckpointResumeError, match="different config"):
        run_training(changed, progress=False)
