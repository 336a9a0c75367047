"""The evaluation's figures: confusion matrix, ROC/PR curves, learning curves and the SR figure,
each written atomically as a PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.classes import CLASS_NAMES
from models.files import atomic_write
from models.metrics import LabelMetrics, Metrics


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    _plt().close(fig)
    return path


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def plot_confusion(metrics: Metrics | LabelMetrics, path: Path, title: str, class_names: Sequence[str] = CLASS_NAMES,
                   axes: tuple[str, str] = ("true", "predicted")) -> Path:
    """Row-normalised confusion matrix over the classes present, with counts (rows: ``axes[0]``)."""
    plt = _plt()
    cm = np.asarray(metrics.confusion)
    present = np.flatnonzero(cm.sum(axis=1) + cm.sum(axis=0))
    cm = cm[np.ix_(present, present)]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    names = [_short(class_names[i]) for i in present]
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(names) + 3, 0.45 * len(names) + 2.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(cm):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel(axes[1])
    ax.set_ylabel(axes[0])
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, label=f"share of {axes[0].split(' (')[0]}" + " class" * ("class" not in axes[0]))
    fig.tight_layout()
    return _save(fig, path)


def plot_roc_pr(labels: np.ndarray, probs: np.ndarray, path: Path, title: str,
                class_names: Sequence[str] = CLASS_NAMES) -> Path:
    """One-vs-rest ROC and precision-recall curves with AUC per class present; ``labels`` are class
    indices (N,) or, for multi-label sets, multi-hot targets (N, C)."""
    from sklearn.metrics import (
        auc,
        average_precision_score,
        precision_recall_curve,
        roc_curve,
    )

    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 5.5))
    labels = np.asarray(labels)
    for c in range(len(class_names)):
        y = (labels[:, c] > 0 if labels.ndim == 2 else labels == c).astype(int)
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, probs[:, c])
        prec, rec, _ = precision_recall_curve(y, probs[:, c])
        a1.plot(fpr, tpr, lw=1, label=f"{_short(class_names[c], 22)} {auc(fpr, tpr):.3f}")
        a2.plot(rec, prec, lw=1, label=f"{_short(class_names[c], 22)} {average_precision_score(y, probs[:, c]):.3f}")
    a1.plot([0, 1], [0, 1], "k:", lw=0.8)
    a1.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (AUC)")
    a2.set(xlabel="recall", ylabel="precision", title="precision-recall (AP)")
    for a in (a1, a2):
        if a.get_legend_handles_labels()[0]:  # no class both present and absent: no curve to name
            a.legend(fontsize=6, loc="lower right" if a is a1 else "lower left")
        a.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_learning_curves(rows: list[dict], path: Path, title: str) -> Path:
    """Loss and accuracy per epoch from the training log (metrics.json rows)."""
    plt = _plt()
    cls = [r for r in rows if r.get("stage") == "classifier"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    ep = [r["epoch"] for r in cls]
    a1.plot(ep, [r["train_loss"] for r in cls], marker="o", label="train loss")
    if cls and "val_loss" in cls[0]:
        a1.plot(ep, [r["val_loss"] for r in cls], marker="o", label="validation loss (EMA)")
    for key, lab in (("train_accuracy", "train (raw, augmented)"), ("val_accuracy", "validation (EMA)")):
        if cls and key in cls[0]:
            a2.plot(ep, [100 * r[key] for r in cls], marker="o", label=lab)
    a1.set(xlabel="epoch", ylabel="loss")
    a2.set(xlabel="epoch", ylabel="accuracy (%)")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_sr_figure(lr: np.ndarray, bicubic: np.ndarray, sr: np.ndarray, ref: np.ndarray, path: Path, title: str) -> Path:
    """Rows of LR | bicubic | SR | reference (images (N, 3, H, W) in [-1, 1])."""
    plt = _plt()
    n = len(lr)
    fig, axes = plt.subplots(n, 4, figsize=(10, 2.6 * n), squeeze=False)
    for i in range(n):
        for j, (img, name) in enumerate(((lr, "LR 32 px"), (bicubic, "bicubic x8"), (sr, "SR x8"), (ref, "reference (10 m)"))):
            ax = axes[i, j]
            ax.imshow(np.clip((np.transpose(np.asarray(img[i]), (1, 2, 0)) + 1) / 2, 0, 1), interpolation="nearest")
            ax.set_axis_off()
            if i == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
