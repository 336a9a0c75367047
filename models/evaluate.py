"""Honest evaluation: metrics, figures, and a guard against reporting training data.

Everything here is computed on held-out data, for every model family with windows, from three
sources (``landcover evaluate``):

* a seed-family patch set (:func:`evaluate_weights`: a seed config's validation source or an
  ``.npz``): the model card records which patches and groups (tiles / spatial blocks) the
  weights were trained on; :func:`assert_held_out` refuses an evaluation set that shares a patch
  with training, or a group when training was split by group;
* multi-band windows of a timm config's validation source (:func:`evaluate_windows`): the same
  guard when a split record lies beside the weights, else only the config that trained the
  weights (its name, and the validation size its card records), whose training refused a shared group;
* the user's own labelled windows over an image (:func:`evaluate_labels`): agreement - the share
  of windows whose own class (the first field) is the model's top class - and, for multi-label
  models, how the labelled classes score (the other classes of a row are unknown, so no precision).
  Rows a fine-tuned model learned from (its ``.finetune.json``) are left out. These numbers
  describe the user's labels, not the model's published validation, so they go into a JSON and
  figures beside the labels and never into the card.

So a number in a card labelled "validation" cannot come from training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from models.classes import CLASS_NAMES
from models.errors import LandcoverError
from models.files import atomic_write, atomic_write_text
from models.splits import (
    LeakageError,
    assert_held_out,
    ids_digest,
    read_split_record,
    split_record_path,
)

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


# --------------------------------------------------------------------------- leakage guard


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


def require_patch_model(card) -> None:
    """Refuse a model that cannot read a patch set (the seed's RGB LR patches): every family but the seed's."""
    if card.family != "sr-classifier":
        raise EvaluationError(
            f"{card.model_id} takes {len(card.bands)}-band windows of {card.window_px} px, not the seed's RGB patches of a "
            "patch set: evaluate it with a timm config (e.g. models/configs/demo-multiband.yaml) or on labels "
            "(--labels MAP.gpkg --imagery composite.tif)")


def evaluate_weights(weights: Path, data, *, split_name: str = "validation", unverified: bool = False,
                     out_dir: Path | None = None, update_card: bool = True) -> Metrics:
    """Evaluate a weights file on held-out patches: metrics, figures, and the card updated.

    ``data``: a PatchSet (with ``windows`` for the SR figure) - e.g. from a training config's
    validation source. Seed family only: a PatchSet holds the seed's RGB LR patches. Refuses data
    that overlap the training split unless ``unverified``, in which case the split is named
    ``<split_name>-unverified``.
    """

    from models.checkpoint import load_model
    from models.training.state import EpochLog

    weights = Path(weights)
    out_dir = Path(out_dir) if out_dir else weights.parent
    model, card = load_model(weights)
    require_patch_model(card)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    _record(weights, card, metrics, out_dir, update_card)
    return metrics


def _record(weights: Path, card, metrics: Metrics, out_dir: Path, update_card: bool) -> None:
    """``<stem>.<split>.json`` in ``out_dir`` and, when asked, the split's numbers in the card."""
    from models.checkpoint import card_path

    atomic_write_text(out_dir / f"{weights.stem}.{metrics.split}.json", metrics.model_dump_json(indent=1))
    if update_card:
        flat = {f"{metrics.split}_{k}": v for k, v in metrics.model_dump().items()
                if isinstance(v, (int, float)) and v is not None and k != "dominant_threshold"}
        flat[f"{metrics.split}_groups"] = ",".join(metrics.groups[:20])
        flat[f"{metrics.split}_dominant_threshold"] = metrics.dominant_threshold
        new = card.model_copy(update={"metrics": {**card.metrics, **flat}})
        atomic_write_text(card_path(weights), new.model_dump_json(indent=2) + "\n")


def _legend_names(card) -> list[str]:
    return [c.name for c in card.legend.classes]


def _guard_windows(weights: Path, card, ids: Sequence[str], groups: Sequence[str], config_name: str | None) -> None:
    """Refuse windows that may hold training data: by the split record when one lies beside the
    weights; else only the config that trained these weights (not fine-tuned since), recognised
    by its name and the validation size the card records - its training refused a shared group."""
    if split_record_path(weights).is_file():
        record = read_split_record(weights)
        assert_held_out(set(record["train_ids"]), set(record["train_groups"]), ids, groups,
                        split_by_group=record.get("split_by") == "group")
        return
    if card.lineage is not None:
        raise LeakageError(f"{weights.name} was fine-tuned on labels that may lie on these windows' ground and has no "
                           "split record: evaluate it on held-out labels (--labels) or pass --unverified")
    if config_name is None or card.profile != config_name:
        raise LeakageError(f"no training split record beside {weights.name}, and {config_name or 'this config'} is not "
                           f"the config that trained it ({card.profile}): cannot prove the windows are held out; pass "
                           "--unverified to report the numbers as unverified")
    recorded = card.metrics.get("validation_n")
    if recorded != len(ids):
        raise LeakageError(f"the config's validation source gives {len(ids)} windows, but {weights.name} was validated on "
                           f"{recorded}: its data changed since training; pass --unverified to report the numbers as unverified")


def evaluate_windows(weights: Path, data, *, config_name: str | None = None, split_name: str = "validation",
                     unverified: bool = False, out_dir: Path | None = None, update_card: bool = True) -> Metrics:
    """Evaluate a multi-label window classifier of any family on reflectance windows of its bands
    with multi-hot targets in the BigEarthNet-19 order (``data``: a ``models.training.timm.WindowSet``,
    e.g. a timm config's validation source, named ``config_name``): metrics, ROC/PR figure, card.

    The guard is :func:`_guard_windows`; ``unverified`` skips it and names the split
    ``<split_name>-unverified``.
    """
    from models.imagery import classify
    from models.predictor import Predictor

    weights = Path(weights)
    out_dir = Path(out_dir) if out_dir else weights.parent
    predictor = Predictor.from_path(weights)
    card = predictor.card
    card.require_windows("evaluation")
    if card.task != "multi-label":
        raise EvaluationError(f"{card.model_id} is single-label; a timm config's windows carry multi-label targets: "
                              "evaluate it on its own config (e.g. models/configs/demo.yaml) or on labels (--labels)")
    if unverified:
        split_name = f"{split_name}-unverified"
    else:
        _guard_windows(weights, card, data.ids, data.groups, config_name)
    names = _legend_names(card)
    missing = [n for n in names if n not in CLASS_NAMES]
    if missing:
        raise EvaluationError(f"{card.model_id}'s legend has classes the windows are not labelled with ({missing[0]}): "
                              "evaluate it on labels (--labels)")
    targets = np.asarray(data.targets)[:, [CLASS_NAMES.index(n) for n in names]]
    probs = card.to_map_order(classify(predictor, data.windows).probs)
    metrics = multi_label_metrics(targets, probs, split=split_name, threshold=card.threshold, groups=data.groups,
                                  class_names=names)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_roc_pr(targets, probs, out_dir / f"{weights.stem}-roc-pr.png", f"{card.demo_label} - {split_name}", names)
    _record(weights, card, metrics, out_dir, update_card)
    return metrics


def _learned_label_ids(weights: Path, card, labels: Path, layer: str) -> set[str]:
    """ids of the labelled rows ``weights`` were fine-tuned on (its ``.finetune.json``); a model
    fine-tuned on this very layer without that record is refused."""
    import json

    used = card.lineage.labels if card.lineage is not None else None
    if used is None:
        return set()
    report = weights.with_suffix(".finetune.json")
    if report.is_file():
        ids = json.loads(report.read_text()).get("train_label_ids")
        if ids is not None:
            return set(ids)
    if used.path == Path(labels).name and used.layer == layer:
        raise LeakageError(f"{weights.name} was fine-tuned on {used.count} rows of {layer!r} in {used.path} and "
                           f"{report.name}, which names them, is missing: evaluate on other labels or pass --unverified")
    return set()


def evaluate_labels(weights: Path, labels: Path, imagery: Path, *, layer: str = "to_label",
                    bands: Sequence[int] | None = None, unverified: bool = False, out_dir: Path | None = None,
                    split_name: str = "labels") -> LabelMetrics:
    """Measure any window classifier on the user's labelled windows over ``imagery`` (the rows of
    ``layer`` as ``landcover finetune`` reads them): :func:`label_metrics`, the confusion matrix of
    own class x top class, for single-label models the ROC/PR figure, and ``<stem>.<split>.json``
    - in ``out_dir`` (default: the labels' folder). The card is left alone: the user's labels are
    no held-out set the card can vouch for. Rows the model was fine-tuned on are left out
    (``unverified``: kept, and the split is named ``<split_name>-unverified``)."""
    from models.imagery import classify
    from models.predictor import Predictor
    from models.user_labels import read_user_windows

    weights, labels = Path(weights), Path(labels)
    out_dir = Path(out_dir) if out_dir else labels.parent
    predictor = Predictor.from_path(weights)
    card = predictor.card
    card.require_windows("evaluation")
    learned = set() if unverified else _learned_label_ids(weights, card, labels, layer)
    split_name = f"{split_name}-unverified" if unverified else split_name
    user = read_user_windows(labels, layer, imagery, card, bands=bands, minimum=1, purpose="evaluation").windows
    keep = np.flatnonzero([i not in learned for i in user.ids])
    if not len(keep):
        raise LeakageError(f"every labelled row of {layer!r} in {labels.name} was used to fine-tune {weights.name}: "
                           "evaluate it on other labels")
    left_out, user = len(user) - len(keep), user.subset(keep)
    names, own = _legend_names(card), np.array(card.map_planes)[user.main]
    probs = card.to_map_order(classify(predictor, user.reflectance()).probs)
    metrics = label_metrics(card.to_map_order(user.targets) > 0, own, probs, task=card.task, split=split_name,
                            threshold=card.threshold, class_names=names)
    metrics = metrics.model_copy(update={"left_out": left_out, "labels": str(labels), "layer": layer,
                                         "imagery": str(imagery)})
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = weights.stem
    plot_confusion(metrics, out_dir / f"{stem}-{split_name}-confusion.png",
                   f"{card.demo_label}\n{split_name} ({layer} of {labels.name}): {metrics.n} windows, agreement "
                   f"{metrics.agreement:.1%}", names, axes=("own class (first field)", "top class"))
    if metrics.scores is not None:
        plot_roc_pr(own, probs, out_dir / f"{stem}-{split_name}-roc-pr.png", f"{card.demo_label} - {split_name}", names)
    atomic_write_text(out_dir / f"{stem}.{split_name}.json", metrics.model_dump_json(indent=1))
    return metrics
