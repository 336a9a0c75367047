"""Honest evaluation: metrics, figures, and a guard against reporting training data.

Everything here is computed on held-out patches. The model card records which patches and
groups (tiles / spatial blocks) the weights were trained on; :func:`assert_held_out` refuses
an evaluation set that shares a patch with training, or a group when training was split by
group. So a number in a card labelled "validation" cannot come from training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from models.classes import CLASS_NAMES, NUM_CLASSES
from models.errors import LandcoverError
from models.files import atomic_write, atomic_write_text
from models.splits import (  # noqa: F401 - LeakageError and assert_held_out are part of this module's interface
    LeakageError,
    assert_held_out,
    ids_digest,
    read_split_record,
    split_record_path,
)

DOMINANCE_THRESHOLD = 0.7


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
) -> Metrics:
    """Accuracy, macro/micro F1, per-class P/R/F1 with one-vs-rest ROC AUC and average
    precision, the confusion matrix, and accuracy on cells dominated by one class."""
    from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

    labels = np.asarray(labels)
    keep = labels >= 0
    labels, probs = labels[keep], np.asarray(probs)[keep]
    if labels.size == 0:
        raise LandcoverError(f"no labelled samples in the {split} set: check its data source")
    pred = probs.argmax(axis=1)
    all_classes = np.arange(NUM_CLASSES)
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=all_classes, zero_division=0)
    present = s > 0
    macro_f1 = float(f[present].mean())  # classes absent from the set would only add zeros
    per_class = []
    for c in all_classes:
        y = (labels == c).astype(int)
        per_class.append(ClassScores(
            name=CLASS_NAMES[c], precision=float(p[c]), recall=float(r[c]), f1=float(f[c]), support=int(s[c]),
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
                        groups: Sequence[str] = ()) -> Metrics:
    """Multi-label: macro/micro mAP over classes present, F1 at ``threshold``, exact-match accuracy."""
    from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support

    targets = np.asarray(targets).astype(int)
    pred = (np.asarray(probs) >= threshold).astype(int)
    present = targets.sum(axis=0) > 0
    p, r, f, s = precision_recall_fscore_support(targets, pred, zero_division=0)
    per_class = [
        ClassScores(name=CLASS_NAMES[c], precision=float(p[c]), recall=float(r[c]), f1=float(f[c]), support=int(s[c]),
                    average_precision=_auc_safe(average_precision_score, targets[:, c], probs[:, c]))
        for c in range(NUM_CLASSES)
    ]
    return Metrics(
        split=split, n=int(len(targets)), accuracy=float((pred == targets).all(axis=1).mean()),
        macro_f1=float(f1_score(targets[:, present], pred[:, present], average="macro", zero_division=0)),
        micro_f1=float(f1_score(targets, pred, average="micro", zero_division=0)),
        macro_map=float(average_precision_score(targets[:, present], probs[:, present], average="macro")),
        micro_map=float(average_precision_score(targets[:, present], probs[:, present], average="micro")),
        per_class=per_class, groups=sorted(set(groups)),
    )


# --------------------------------------------------------------------------- leakage guard


# --------------------------------------------------------------------------- image quality


def psnr_ssim(pred: np.ndarray | object, ref: np.ndarray | object) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM of images in [-1, 1] (N, 3, H, W), on the [0, 1] scale."""
    import torch
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    p = (torch.as_tensor(pred).float() + 1) / 2
    r = (torch.as_tensor(ref).float() + 1) / 2
    psnr = peak_signal_noise_ratio(p.clamp(0, 1), r, data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(p.clamp(0, 1), r, data_range=1.0)
    return float(psnr), float(ssim)


# --------------------------------------------------------------------------- figures


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


def plot_confusion(metrics: Metrics, path: Path, title: str) -> Path:
    """Row-normalised confusion matrix over the classes present, with counts."""
    plt = _plt()
    cm = np.asarray(metrics.confusion)
    present = np.flatnonzero(cm.sum(axis=1) + cm.sum(axis=0))
    cm = cm[np.ix_(present, present)]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    names = [_short(CLASS_NAMES[i]) for i in present]
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(names) + 3, 0.45 * len(names) + 2.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(cm):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, label="share of true class")
    fig.tight_layout()
    return _save(fig, path)


def plot_roc_pr(labels: np.ndarray, probs: np.ndarray, path: Path, title: str) -> Path:
    """One-vs-rest ROC and precision-recall curves with AUC per class present."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 5.5))
    for c in range(NUM_CLASSES):
        y = (labels == c).astype(int)
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, probs[:, c])
        prec, rec, _ = precision_recall_curve(y, probs[:, c])
        a1.plot(fpr, tpr, lw=1, label=f"{_short(CLASS_NAMES[c], 22)} {auc(fpr, tpr):.3f}")
        a2.plot(rec, prec, lw=1, label=f"{_short(CLASS_NAMES[c], 22)} {average_precision_score(y, probs[:, c]):.3f}")
    a1.plot([0, 1], [0, 1], "k:", lw=0.8)
    a1.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (AUC)")
    a2.set(xlabel="recall", ylabel="precision", title="precision-recall (AP)")
    for a in (a1, a2):
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


# --------------------------------------------------------------------------- evaluate a weights file


def predict(model, images: np.ndarray, *, multi_label: bool = False, batch: int = 64) -> np.ndarray:
    """Class probabilities of uint8 LR patches (softmax, or sigmoid for multi-label)."""
    import torch

    from models.preprocess import to_model_input

    probs = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = to_model_input(torch.from_numpy(images[start:start + batch]))
            logits = model(x)
            probs.append(torch.sigmoid(logits) if multi_label else torch.softmax(logits, 1))
    return torch.cat(probs).numpy()


def sr_quality(model, images: np.ndarray, windows: np.ndarray, n_figure: int, path: Path, title: str) -> dict[str, float]:
    """PSNR/SSIM of SR and of bicubic x8 against the 10 m reference, and the SR figure."""
    import torch
    from torch.nn import functional as F

    from models.preprocess import sr_reference, to_model_input

    lr = to_model_input(torch.from_numpy(images))
    scale = model.profile.scale
    with torch.no_grad():
        sr = torch.cat([model.super_resolve(lr[i:i + 32]) for i in range(0, len(lr), 32)])
    bicubic = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)
    ref = sr_reference(torch.from_numpy(windows), scale, lr.shape[-1])
    sr_psnr, sr_ssim = psnr_ssim(sr, ref)
    bi_psnr, bi_ssim = psnr_ssim(bicubic, ref)
    k = min(n_figure, len(lr))
    plot_sr_figure(
        F.interpolate(lr[:k], scale_factor=scale, mode="nearest").numpy(), bicubic[:k].numpy(), sr[:k].numpy(),
        ref[:k].numpy(), path,
        f"{title}\nheld-out PSNR/SSIM vs 10 m reference: SR {sr_psnr:.2f} dB / {sr_ssim:.3f}, "
        f"bicubic {bi_psnr:.2f} dB / {bi_ssim:.3f}",
    )
    return {"sr_psnr": sr_psnr, "sr_ssim": sr_ssim, "bicubic_psnr": bi_psnr, "bicubic_ssim": bi_ssim}


def evaluate_weights(weights: Path, data, *, split_name: str = "validation", unverified: bool = False,
                     out_dir: Path | None = None, update_card: bool = True) -> Metrics:
    """Evaluate a weights file on held-out patches: metrics, figures, and the card updated.

    ``data``: a PatchSet (with ``windows`` for the SR figure) - e.g. from a training config's
    validation source. Refuses data that overlap the training split unless ``unverified``, in
    which case the split is named ``<split_name>-unverified``.
    """

    from models.checkpoint import card_path, load_model
    from models.training.state import EpochLog

    weights = Path(weights)
    out_dir = Path(out_dir) if out_dir else weights.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    model, card = load_model(weights)
    if unverified:
        split_name = f"{split_name}-unverified"
    else:
        record = read_split_record(weights)
        if card.metrics.get("train_ids_sha256") not in (None, ids_digest(record["train_ids"])):
            raise LeakageError(f"{split_record_path(weights).name} does not match the card's training ids: retrain or restore it")
        assert_held_out(set(record["train_ids"]), set(record["train_groups"]), data.ids, data.groups,
                        split_by_group=record.get("split_by") == "group")
    probs = predict(model, data.images, multi_label=card.task == "multi-label")
    stem = weights.stem
    label = card.demo_label
    if card.task == "multi-label":
        metrics = multi_label_metrics(data.targets, probs, split=split_name, groups=data.groups)
    else:
        metrics = single_label_metrics(data.labels, probs, split=split_name, dominance=data.dominance, groups=data.groups)
        plot_confusion(metrics, out_dir / f"{stem}-confusion.png",
                       f"{label}\n{split_name}: {metrics.n} patches, accuracy {metrics.accuracy:.1%}"
                       + (f", dominated cells {metrics.dominant_accuracy:.1%}" if metrics.dominant_accuracy is not None else ""))
        keep = data.labels >= 0
        plot_roc_pr(data.labels[keep], probs[keep], out_dir / f"{stem}-roc-pr.png", f"{label} - {split_name}")
    log = EpochLog.read(weights.with_suffix(".metrics.json"))
    if log:
        plot_learning_curves(log, out_dir / f"{stem}-learning-curves.png", label)
    if model.sr_model is not None and data.windows is not None:
        metrics = metrics.model_copy(update=sr_quality(model, data.images, data.windows, 4, out_dir / f"{stem}-sr.png", label))
    atomic_write_text(out_dir / f"{stem}.{split_name}.json", metrics.model_dump_json(indent=1))
    if update_card:
        flat = {f"{split_name}_{k}": v for k, v in metrics.model_dump().items()
                if isinstance(v, (int, float)) and v is not None and k != "dominant_threshold"}
        flat[f"{split_name}_groups"] = ",".join(metrics.groups[:20])
        flat[f"{split_name}_dominant_threshold"] = metrics.dominant_threshold
        new = card.model_copy(update={"metrics": {**card.metrics, **flat}})
        atomic_write_text(card_path(weights), new.model_dump_json(indent=2) + "\n")
    return metrics
