"""Honest evaluation: what a model may be measured on, and measuring it there (the metrics are in
:mod:`models.metrics`, the figures in :mod:`models.figures`), with a guard against reporting training data.

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

from models.classes import CLASS_NAMES
from models.figures import (
    plot_confusion,
    plot_learning_curves,
    plot_roc_pr,
    plot_sr_figure,
)
from models.files import atomic_write_text
from models.metrics import (  # noqa: F401 - the metrics are part of this module's interface
    DOMINANCE_THRESHOLD,
    EvaluationError,
    LabelMetrics,
    Metrics,
    label_metrics,
    multi_label_metrics,
    psnr_ssim,
    single_label_metrics,
)
from models.splits import (
    LeakageError,
    assert_held_out,
    ids_digest,
    read_split_record,
    split_record_path,
)

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
