"""Metrics of a classifier against reference labels: single-label (accuracy, macro F1, per-class
scores, confusion, dominated cells), multi-label (mAP, F1 at the card's threshold) and agreement
with a user's labelled windows; PSNR/SSIM of super-resolved images. Pure functions of arrays:
:mod:`models.evaluate` decides what data they may be computed on, :mod:`models.figures` draws them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from models.classes import CLASS_NAMES
from models.errors import LandcoverError

# A cell counts as dominated by one class when that class covers at least this share of it.
DOMINANCE_THRESHOLD = 0.7


class EvaluationError(LandcoverError):
    """The model and the evaluation data do not fit together."""


class ClassScores(BaseModel):
    name: str
    precision: float
    recall: float
    f1: float
    support: int
    roc_auc: float | None = None
    average_precision: float | None = None


class Metrics(BaseModel):
    """What goes into the model card's metrics, per evaluation set."""

    split: str
    n: int
    accuracy: float
    macro_f1: float
    micro_f1: float
    dominant_threshold: float = DOMINANCE_THRESHOLD
    dominant_n: int = 0
    dominant_accuracy: float | None = None
    macro_map: float | None = None
    micro_map: float | None = None
    per_class: list[ClassScores] = Field(default_factory=list)
    confusion: list[list[int]] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    sr_psnr: float | None = None
    bicubic_psnr: float | None = None
    sr_ssim: float | None = None
    bicubic_ssim: float | None = None


def _auc_safe(fn, y: np.ndarray, score: np.ndarray) -> float | None:
    # a class absent from (or filling) the evaluation set has no ROC/PR curve
    if y.min() == y.max():
        return None
    return float(fn(y, score))


def single_label_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    *,
    split: str,
    dominance: np.ndarray | None = None,
    threshold: float = DOMINANCE_THRESHOLD,
    groups: Sequence[str] = (),
    class_names: Sequence[str] = CLASS_NAMES,
) -> Metrics:
    """Accuracy, macro/micro F1, per-class P/R/F1 with one-vs-rest ROC AUC and average
    precision, the confusion matrix, and accuracy on cells dominated by one class.
    ``labels`` index ``class_names`` (the columns of ``probs``); -1 = no label."""
    from sklearn.metrics import (
        average_precision_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    labels = np.asarray(labels)
    keep = labels >= 0
    labels, probs = labels[keep], np.asarray(probs)[keep]
    if labels.size == 0:
        raise LandcoverError(f"no labelled samples in the {split} set: check its data source")
    pred = probs.argmax(axis=1)
    all_classes = np.arange(len(class_names))
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=all_classes, zero_division=0)
    present = s > 0
    macro_f1 = float(f[present].mean())  # classes absent from the set would only add zeros
    per_class = []
    for c in all_classes:
        y = (labels == c).astype(int)
        per_class.append(ClassScores(
            name=class_names[c], precision=float(p[c]), recall=float(r[c]), f1=float(f[c]), support=int(s[c]),
            roc_auc=_auc_safe(roc_auc_score, y, probs[:, c]),
            average_precision=_auc_safe(average_precision_score, y, probs[:, c]),
        ))
    correct = pred == labels
    dom_n, dom_acc = 0, None
    if dominance is not None:
        dom = np.asarray(dominance)[keep] >= threshold
        dom_n = int(dom.sum())
        dom_acc = float(correct[dom].mean()) if dom_n else None
    return Metrics(
        split=split, n=int(labels.size), accuracy=float(correct.mean()),
        macro_f1=macro_f1, micro_f1=float(correct.mean()),  # single-label micro F1 == accuracy
        dominant_threshold=threshold, dominant_n=dom_n, dominant_accuracy=dom_acc,
        per_class=per_class, confusion=confusion_matrix(labels, pred, labels=all_classes).tolist(),
        groups=sorted(set(groups)),
    )


def multi_label_metrics(targets: np.ndarray, probs: np.ndarray, *, split: str, threshold: float = 0.5,
                        groups: Sequence[str] = (), class_names: Sequence[str] = CLASS_NAMES) -> Metrics:
    """Multi-label: macro/micro mAP over classes present, F1 at ``threshold``, exact-match accuracy."""
    from sklearn.metrics import (
        average_precision_score,
        f1_score,
        precision_recall_fscore_support,
    )

    targets = np.asarray(targets).astype(int)
    pred = (np.asarray(probs) >= threshold).astype(int)
    present = targets.sum(axis=0) > 0
    p, r, f, s = precision_recall_fscore_support(targets, pred, zero_division=0)
    per_class = [
        ClassScores(name=class_names[c], precision=float(p[c]), recall=float(r[c]), f1=float(f[c]), support=int(s[c]),
                    average_precision=_auc_safe(average_precision_score, targets[:, c], probs[:, c]))
        for c in range(len(class_names))
    ]
    return Metrics(
        split=split, n=len(targets), accuracy=float((pred == targets).all(axis=1).mean()),
        macro_f1=float(f1_score(targets[:, present], pred[:, present], average="macro", zero_division=0)),
        micro_f1=float(f1_score(targets, pred, average="micro", zero_division=0)),
        macro_map=float(average_precision_score(targets[:, present], probs[:, present], average="macro")),
        micro_map=float(average_precision_score(targets[:, present], probs[:, present], average="micro")),
        per_class=per_class, groups=sorted(set(groups)),
    )


class LabelScores(BaseModel):
    """One class on the user's labelled windows."""

    name: str
    labelled: int  # rows listing the class in any field
    own: int  # rows whose own class (first field) it is
    agreement: float | None = None  # of the ``own`` rows, the share whose top class it is
    scored: float | None = None  # multi-label: of the ``labelled`` rows, the share scoring it >= the threshold
    mean_score: float | None = None  # the class's mean probability on the rows listing it


class LabelMetrics(BaseModel):
    """A model measured on the user's labelled windows (``landcover evaluate --labels``)."""

    split: str
    n: int
    task: str
    agreement: float  # share of windows whose own class (first field) is the model's top class
    threshold: float | None = None  # multi-label: the card's decision threshold
    scored: float | None = None  # multi-label: share of (row, listed class) pairs scoring >= threshold
    per_class: list[LabelScores] = Field(default_factory=list)
    confusion: list[list[int]] = Field(default_factory=list)  # own class (rows) x top class (columns)
    left_out: int = 0  # rows the model was fine-tuned on, left out
    labels: str = ""
    layer: str = ""
    imagery: str = ""
    scores: Metrics | None = None  # single-label: the full metrics (a row's other classes are absent)


def label_metrics(positives: np.ndarray, own: np.ndarray, probs: np.ndarray, *, task: str, split: str,
                  threshold: float = 0.5, class_names: Sequence[str] = CLASS_NAMES) -> LabelMetrics:
    """Agreement of a model with labelled windows: ``positives`` (N, C) the classes a row lists,
    ``own`` (N,) its own class (first field), ``probs`` (N, C), all in ``class_names`` order.

    A multi-label row's unlisted classes are unknown (a labeller lists what covers the window, not
    everything absent), so multi-label models get the share of listed classes scoring at or above
    ``threshold`` (a recall) and no precision; single-label rows are complete, so those models also
    get :func:`single_label_metrics` in ``scores``."""
    from sklearn.metrics import confusion_matrix

    positives, own, probs = np.asarray(positives, bool), np.asarray(own), np.asarray(probs)
    if len(own) == 0:
        raise EvaluationError(f"no labelled windows in the {split} set: fill the class field of some rows")
    top = probs.argmax(axis=1)
    multi = task == "multi-label"
    hit = probs >= threshold
    per_class = []
    for c, name in enumerate(class_names):
        rows, mine = positives[:, c], own == c
        per_class.append(LabelScores(
            name=name, labelled=int(rows.sum()), own=int(mine.sum()),
            agreement=float((top[mine] == c).mean()) if mine.any() else None,
            scored=float(hit[rows, c].mean()) if multi and rows.any() else None,
            mean_score=float(probs[rows, c].mean()) if rows.any() else None,
        ))
    classes = np.arange(len(class_names))
    return LabelMetrics(
        split=split, n=len(own), task=task, agreement=float((top == own).mean()),
        threshold=threshold if multi else None, scored=float(hit[positives].mean()) if multi else None,
        per_class=per_class, confusion=confusion_matrix(own, top, labels=classes).tolist(),
        scores=None if multi else single_label_metrics(own, probs, split=split, class_names=class_names),
    )


# --------------------------------------------------------------------------- image quality


def psnr_ssim(pred: np.ndarray | object, ref: np.ndarray | object) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM of images in [-1, 1] (N, 3, H, W), on the [0, 1] scale."""
    import torch
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    p = (torch.as_tensor(pred).float() + 1) / 2
    r = (torch.as_tensor(ref).float() + 1) / 2
    psnr = peak_signal_noise_ratio(p.clamp(0, 1), r, data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(p.clamp(0, 1), r, data_range=1.0)
    return float(psnr), float(ssim)
