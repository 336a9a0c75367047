import json

import numpy as np
import pytest
import torch

from training_toys import small_run_config

from models.evaluate import (
    EvaluationError,
    LeakageError,
    evaluate_weights,
    evaluate_windows,
    label_metrics,
    multi_label_metrics,
    plot_confusion,
    plot_learning_curves,
    psnr_ssim,
    single_label_metrics,
)


def one_hot_probs(pred, n=19):
    p = np.full((len(pred), n), 0.01)
    p[np.arange(len(pred)), pred] = 0.8
    return p


def test_single_label_metrics_count_what_they_should():
    labels = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    m = single_label_metrics(labels, one_hot_probs(pred), split="validation",
                             dominance=np.array([0.9, 0.5, 0.8, 0.95, 0.7, 0.6]))
    assert m.n == 6 and m.accuracy == pytest.approx(4 / 6) and m.micro_f1 == pytest.approx(4 / 6)
    # per class F1: class 0 P=1/2 R=1/2, class 1 P=2/3 R=1, class 2 P=1 R=1/2
    f1 = [0.5, 0.8, 2 / 3]
    assert [c.f1 for c in m.per_class[:3]] == pytest.approx(f1)
    assert m.macro_f1 == pytest.approx(np.mean(f1))  # over the classes present only
    # cells dominated by one class (>= 70 %): samples 0, 2, 3, 4 -> all correct
    assert m.dominant_n == 4 and m.dominant_accuracy == 1.0
    assert m.confusion[0][:3] == [1, 1, 0]
    assert m.per_class[0].roc_auc is not None and m.per_class[5].roc_auc is None  # absent class


def test_samples_without_a_19_class_label_are_left_out():
    m = single_label_metrics(np.array([3, -1]), one_hot_probs([3, 3]), split="v")
    assert m.n == 1 and m.accuracy == 1.0


def test_multi_label_metrics_report_macro_and_micro_map():
    targets = np.zeros((4, 19))
    targets[[0, 1], 0] = 1
    targets[[1, 2], 4] = 1
    targets[3, 9] = 1
    perfect = targets * 0.9 + 0.05
    m = multi_label_metrics(targets, perfect, split="v")
    assert m.macro_map == pytest.approx(1.0) and m.micro_map == pytest.approx(1.0)
    assert m.accuracy == 1.0
    flipped = multi_label_metrics(targets, 1 - perfect, split="v")
    assert flipped.macro_map < 0.8


def test_psnr_and_ssim_rank_a_closer_image_higher():
    ref = torch.rand(2, 3, 32, 32) * 2 - 1
    near, far = ref + 0.02, ref + 0.3
    (p1, s1), (p2, s2) = psnr_ssim(near, ref), psnr_ssim(far, ref)
    assert p1 > p2 and s1 > s2
    assert p1 == pytest.approx(20 * np.log10(1 / 0.01), rel=1e-3)  # 0.02 in [-1, 1] is 0.01 in [0, 1]


def test_figures_are_written(tmp_path):
    m = single_label_metrics(np.array([0, 1, 1]), one_hot_probs([0, 1, 0]), split="v")
    plot_confusion(m, tmp_path / "c.png", "t")
    rows = [{"stage": "classifier", "epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1),
             "train_accuracy": 0.5, "val_accuracy": 0.4} for e in range(3)]
    plot_learning_curves(rows, tmp_path / "l.png", "t")
    assert (tmp_path / "c.png").stat().st_size > 1000 and (tmp_path / "l.png").stat().st_size > 1000
    assert not list(tmp_path.glob("*.tmp*"))


def test_evaluating_weights_updates_the_card_and_refuses_training_patches(tmp_path):
    from models.checkpoint import read_card
    from models.datasets import PatchSet
    from models.training.sr_classifier import run_training

    cfg = small_run_config(tmp_path, epochs=1)
    result = run_training(cfg, progress=False)
    held_out = PatchSet.load(tmp_path / "b.npz")
    metrics = evaluate_weights(result.weights, held_out)
    card = read_card(result.weights)
    assert card.metrics["validation_accuracy"] == pytest.approx(metrics.accuracy)
    assert card.metrics["validation_n"] == 12 and card.metrics["validation_groups"] == "B"
    assert (tmp_path / "out" / "toy-confusion.png").is_file()
    assert json.loads((tmp_path / "out" / "toy.validation.json").read_text())["n"] == 12
    with pytest.raises(LeakageError):
        evaluate_weights(result.weights, PatchSet.load(tmp_path / "a.npz"))


def test_agreement_on_labels_is_the_share_whose_own_class_is_the_top_class():
    own = np.array([0, 0, 1, 2])
    positives = np.eye(19, dtype=bool)[own]
    m = label_metrics(positives, own, one_hot_probs([0, 1, 1, 2]), task="single-label", split="labels")
    assert m.n == 4 and m.agreement == pytest.approx(3 / 4) and m.scored is None
    assert m.confusion[0][:3] == [1, 1, 0]  # own class 0: once the top class, once taken for 1
    assert m.per_class[0].agreement == pytest.approx(1 / 2) and m.per_class[3].agreement is None
    # a single-label row names the only class present, so the usual metrics hold as well
    assert m.scores is not None and m.scores.accuracy == pytest.approx(m.agreement)


def test_multi_label_rows_score_only_the_classes_they_list():
    # Row 0 lists classes 0 and 4 (own class 0), row 1 lists class 4 only: its class 0 is unknown.
    positives = np.zeros((2, 19), bool)
    positives[0, [0, 4]] = True
    positives[1, 4] = True
    probs = np.full((2, 19), 0.1)
    probs[0, [0, 4]] = [0.9, 0.3]
    probs[1, [0, 4]] = [0.8, 0.6]  # top class 0, unlisted: a disagreement, but no false positive
    m = label_metrics(positives, np.array([0, 4]), probs, task="multi-label", split="labels", threshold=0.5)
    assert m.agreement == pytest.approx(1 / 2)
    assert m.scored == pytest.approx(2 / 3)  # of the pairs (0, 0), (0, 4), (1, 4): 0.9 and 0.6 reach 0.5
    assert m.per_class[4].labelled == 2 and m.per_class[4].scored == pytest.approx(1 / 2)
    assert m.per_class[4].mean_score == pytest.approx(0.45) and m.scores is None


def test_a_patch_set_is_refused_for_a_model_that_takes_other_windows_in_one_line(tmp_path):
    from pipeline.plan import DEFAULT_WEIGHTS

    with pytest.raises(EvaluationError, match="not the seed's RGB patches") as exc:
        evaluate_weights(DEFAULT_WEIGHTS, None, out_dir=tmp_path)
    assert "\n" not in str(exc.value) and "--labels" in str(exc.value)


def _windows(n: int, group: str):
    from models.training.timm import WindowSet

    targets = np.zeros((n, 19), np.float32)
    targets[:, 0] = 1
    return WindowSet(np.full((n, 10, 120, 120), 0.1, np.float32), targets, [f"{group}/{i}" for i in range(n)], [group] * n)


def test_timm_windows_are_refused_without_proof_that_they_are_held_out(tmp_path):
    import shutil

    from pipeline.plan import DEFAULT_WEIGHTS

    weights = tmp_path / DEFAULT_WEIGHTS.name
    shutil.copyfile(DEFAULT_WEIGHTS, weights)
    shutil.copyfile(DEFAULT_WEIGHTS.with_suffix(".json"), weights.with_suffix(".json"))
    with pytest.raises(LeakageError, match="is not the config that trained it"):
        evaluate_windows(weights, _windows(3, "w"), config_name="another-config")
    with pytest.raises(LeakageError, match="gives 3 windows, but .* was validated on 194"):
        evaluate_windows(weights, _windows(3, "w"), config_name="demo-multiband-mobilenetv3")
    m = evaluate_windows(weights, _windows(3, "w"), config_name="another-config", unverified=True)
    assert m.split == "validation-unverified" and m.n == 3
    assert (tmp_path / f"{weights.stem}.validation-unverified.json").is_file()
