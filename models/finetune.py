"""Fine-tuning a model on the user's labels joined to a replay of the data it was trained on.

``landcover finetune BASE --labels MAP.gpkg --layer to_label --imagery composite.tif``:

1. The labelled rows of the layer (the ``class`` field, and ``class_2``/``class_3`` for
   multi-label models: names of the card's classes, BigEarthNet names or map codes) become
   windows of the card's footprint centred on each polygon, cut from the imagery's card bands.
   Fewer than :data:`models.user_labels.MIN_LABELS` labelled rows are refused with the count.
2. A fixed share (``holdout``) of them is held out, drawn with ``seed``; the rest join the
   replay's training windows - the data the base learned from (for demo models the demo world,
   rebuilt by ``pipeline.demo.replay``) - so the network learns the user's hard windows without
   forgetting the rest. User windows are repeated so they make up about a third of each epoch.
3. Loss: single-label models, cross-entropy on the row's class; multi-label models, binary
   cross-entropy where a user row's classes are positives and its other classes are left out of
   the loss (partial labels: an unlisted class is unknown, not absent), while replay rows carry
   every class - plus a cross-entropy (weight ``rank_weight``) on each window's own class (a user row's first field,
   a replay window's majority), so the class that covers most of a window ranks first.
   Replay windows are labelled by their majority class for single-label models too, like the
   user's windows: the seed's single-label training took the lowest class index present (its
   card's accuracy measures that), and teaching two conventions at once would undo both.
4. Agreement - the share of windows whose class is the model's top class (a user row's class is
   its first field, a replay window's its majority class: what a labeller picks) - is measured
   before and after on the held-out labels and on the replay's validation windows, leaving out every validation window that overlaps a labelled
   window (the user's labels may lie on the validation world's ground). The last epoch is kept:
   choosing an epoch by the held-out labels would make them part of training.
5. SSAS (``settings.ssas``, ``--ssas``): the two consecutive cycles are the base - the model
   that picked the windows - and the model just fine-tuned. Windows of the imagery every half
   window (:func:`ssas_pool`: none sharing a pixel with a held-out window, none a labelled window)
   whose top class both predict become pseudo-labelled rows (that class the one known positive),
   at most ``ssas_ratio`` per user label learned from, the classes taking turns
   (:func:`models.active.balanced_cap`); a short second round (``ssas_epochs`` at
   ``ssas_lr_scale`` of the rate) trains on replay + labels + pseudo-labels. Pseudo-labels never
   measure anything: with SSAS the replay's validation also leaves out every window under a
   candidate, before anything is measured, and the report keeps the agreement after the labels
   alone (``ssas.after_labels_only``) beside the final one.

The new weights get a card naming the parent (id, sha256), the labels (layer, count, sha256 of
the rows used), the replay, and the parent's ``synthetic`` flag, and a ``<name>.finetune.json``
report beside them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from models.card import LabelsUsed, Lineage, ModelCard, TrainingData
from models.errors import LandcoverError
from models.files import atomic_write_text
from models.imagery import Imagery
from models.user_labels import (
    LabelledWindows,
    bounds_to_4326,
    labels_digest,
    read_user_windows,
)


class FinetuneError(LandcoverError):
    """Fine-tuning cannot start with the given labels, imagery or base model."""


@dataclass(frozen=True)
class Replay:
    train: LabelledWindows
    validation: LabelledWindows
    description: str


ReplayLoader = Callable[[ModelCard, Path], "Replay | None"]


@dataclass(frozen=True)
class FinetuneSettings:
    name: str | None = None
    holdout: float = 1 / 3
    epochs: int | None = None  # None: the family's default
    lr: float | None = None
    batch_size: int = 32
    user_share: float = 1 / 3
    rank_weight: float = 1.0  # multi-label: weight of the cross-entropy on each window's own class
    seed: int = 0
    threads: int | None = None
    ssas: bool = False  # a second, short round with SSAS pseudo-labels (see the module's docstring)
    ssas_ratio: float = 4.0  # at most this many pseudo-labels per user label learned from
    ssas_epochs: int = 2
    ssas_lr_scale: float = 0.3  # the second round's learning rate, relative to the first's


# The families' recipes: a short, gentle continuation (the base already knows the classes).
_DEFAULTS = {"sr-classifier": {"epochs": 6, "lr": 3e-4, "weight_decay": 1e-5},
             "timm": {"epochs": 6, "lr": 1e-3, "weight_decay": 1e-4}}


@dataclass
class FinetuneResult:
    weights: Path
    card: ModelCard
    report: dict = field(default_factory=dict)
    seconds: float = 0.0


# --------------------------------------------------------------------------- labels


def holdout_split(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices: ``round(share * n)`` rows (at least one) held out, drawn with ``seed``."""
    if not 0 < share < 1:
        raise FinetuneError(f"--holdout {share} must lie between 0 and 1 (the share of labels held out)")
    order = np.random.default_rng(seed).permutation(n)
    k = min(max(int(round(share * n)), 1), n - 1)
    return np.sort(order[k:]), np.sort(order[:k])


# --------------------------------------------------------------------------- the network's input


class _Family:
    """What differs between families: the input the trainable part sees, and its forward pass."""

    def __init__(self, model, card: ModelCard) -> None:
        self.model, self.card = model, card

    @torch.no_grad()
    def inputs(self, windows: np.ndarray, batch: int = 64) -> Tensor:
        """float16 inputs of the trainable part for reflectance windows, computed once."""
        from models.preprocess import (
            reflectance_to_uint8,
            resize_windows,
            standardise_reflectance,
            to_model_input,
        )

        out = []
        for s in range(0, len(windows), batch):
            w = windows[s:s + batch]
            if self.card.family == "sr-classifier":
                lr = to_model_input(resize_windows(reflectance_to_uint8(w), self.card.patch_size))
                self.model.eval()
                out.append(self.model.classifier_input(lr).half())  # the frozen SR (or bicubic) stage
            else:
                n = self.card.normalisation
                out.append(standardise_reflectance(w, n.mean, n.std, dn_scale=n.dn_scale, offset_dn=n.offset_dn,
                                                   size=self.card.patch_size).half())
        return torch.cat(out) if out else torch.zeros(0)

    def logits(self, x: Tensor) -> Tensor:
        if self.card.family == "sr-classifier":
            return self.model.classify(x)[0]
        return self.model(x)

    def parameters(self) -> list[torch.nn.Parameter]:
        if self.card.family == "sr-classifier":
            return list(self.model.backbone.parameters())  # the SR stage stays frozen, as in training
        return list(self.model.parameters())

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if self.card.family == "sr-classifier":
            from models.training.sr_classifier import augment

            return augment(x, generator)
        from models.training.timm import augment

        return augment(x, generator)

    def loss(self, logits: Tensor, targets: Tensor, known: Tensor, main: Tensor, rank_weight: float = 1.0) -> Tensor:
        ranked = main >= 0
        first = F.cross_entropy(logits[ranked], main[ranked], label_smoothing=0.1) if ranked.any() else logits.sum() * 0
        if self.card.task != "multi-label":
            return first
        per = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        # Partial labels: only the known entries count; plus the ranking term, so each window's own
        # class - its first field, the majority of a replay window - comes out on top.
        return (per * known).sum() / known.sum().clamp_min(1) + rank_weight * first

    @torch.no_grad()
    def top(self, x: Tensor, batch: int = 128) -> np.ndarray:
        return self.top_confidence(x, batch)[0]

    @torch.no_grad()
    def top_confidence(self, x: Tensor, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """(top class, its probability: softmax, or sigmoid for multi-label) of each input."""
        self.model.eval()
        if not len(x):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        logits = torch.cat([self.logits(x[s:s + batch].float()).float() for s in range(0, len(x), batch)])
        probs = torch.sigmoid(logits) if self.card.task == "multi-label" else torch.softmax(logits, 1)
        confidence, top = probs.max(1)
        return top.numpy(), confidence.numpy()


def agreement(top: np.ndarray, main: np.ndarray) -> float:
    """Share of windows whose top class is their own class."""
    if len(top) == 0:
        return float("nan")
    return float((np.asarray(top) == np.asarray(main)).mean())


def _overlapping(bounds: Sequence[tuple[float, float, float, float]], others: Sequence[tuple[float, float, float, float]]) -> np.ndarray:
    """bool: which of ``bounds`` overlap any of ``others`` (boxes in one CRS)."""
    from shapely import STRtree, box

    tree = STRtree([box(*b) for b in others])
    return np.array([len(tree.query(box(*b), predicate="intersects")) > 0 for b in bounds], bool)


# --------------------------------------------------------------------------- training rounds and SSAS


def _train_round(fam: _Family, x: Tensor, y: Tensor, k: Tensor, m: Tensor, order: np.ndarray, *, epochs: int,
                 lr: float, weight_decay: float, settings: FinetuneSettings, generator: torch.Generator,
                 log: Callable[[str], None], first: int = 0) -> list[dict]:
    """``epochs`` passes over ``order`` (indices into ``x``; a repeated index is seen that often per
    epoch) with AdamW and a cosine decay to 5 % of ``lr``; the model is left in eval mode. Returns
    one history row per epoch, numbered from ``first + 1``."""
    from models.training.trainer import batches

    model, card = fam.model, fam.card
    if card.family == "sr-classifier":
        model.freeze_sr()
    optimizer = torch.optim.AdamW(fam.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(order) // settings.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=lr * 0.05)
    history = []
    for epoch in range(first, first + epochs):
        model.train()
        if card.family == "sr-classifier" and model.sr_model is not None:
            model.sr_model.eval()  # the SR stage stays frozen, as in training
        losses = []
        for b in batches(len(order), settings.batch_size, generator):
            if len(b) < 2:  # BatchNorm needs two samples
                continue
            idx = torch.from_numpy(order[b.numpy()])
            loss = fam.loss(fam.logits(fam.augment(x[idx].float(), generator)), y[idx], k[idx], m[idx],
                            settings.rank_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        history.append({"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 5)})
        log(f"epoch {epoch + 1}/{first + epochs}: loss {history[-1]['loss']:.4f}")
    model.eval()
    return history


def ssas_pool(image: Imagery, card: ModelCard, labelled: Sequence[tuple[int, int]], held_out: np.ndarray):
    """The unlabelled windows SSAS may pseudo-label: windows of the card's footprint every half window
    over the imagery (the labelled windows tile most of a small map), none sharing a pixel with a
    held-out labelled window (they measure the result) nor being a labelled window itself."""
    from models.imagery import cut_windows, overlapping, window_px

    size = window_px(card, image.pixel_m)
    pool = cut_windows(image, card, stride_px=max(size // 2, 1))
    held = [labelled[i] for i in held_out]
    keep = ~overlapping(pool.origins, held, size) & ~np.isin([f"{r},{c}" for r, c in pool.origins],
                                                              [f"{r},{c}" for r, c in labelled])
    return pool.subset(np.flatnonzero(keep))


def pseudo_targets(classes: np.ndarray, n_classes: int, task: str) -> tuple[Tensor, Tensor, Tensor]:
    """(targets, known, own class) rows for pseudo-labels: the agreed top class is the one positive;
    for multi-label models the other classes stay unknown (a window's top class says nothing of its
    others), for single-label models they are absent, as for a user's row."""
    targets = np.zeros((len(classes), n_classes), np.float32)
    targets[np.arange(len(classes)), classes] = 1.0
    known = targets.copy() if task == "multi-label" else np.ones_like(targets)
    return torch.from_numpy(targets), torch.from_numpy(known), torch.from_numpy(np.asarray(classes, np.int64))


# --------------------------------------------------------------------------- the run


def default_name(parent: Path, today: date | None = None) -> str:
    return f"{Path(parent).stem}-ft-{(today or date.today()).isoformat()}"


def finetune(base: Path, labels: Path, imagery: Path, *, layer: str = "to_label", out_dir: Path | None = None,
             settings: FinetuneSettings = FinetuneSettings(), replay_loader: ReplayLoader | None = None,
             bands: Sequence[int] | None = None, log: Callable[[str], None] = lambda s: None) -> FinetuneResult:
    """Fine-tune ``base`` on the labelled rows of ``layer`` in ``labels`` over ``imagery``; writes
    ``<out_dir>/<name>.safetensors`` with its card and ``<name>.finetune.json``."""
    import re

    from models.active import balanced_cap, ssas_pseudo_labels
    from models.checkpoint import load_model
    from models.files import sha256_file
    from models.training.trainer import Session

    t0 = time.perf_counter()
    base = Path(base)
    name = settings.name or default_name(base)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise FinetuneError(f"--name {name!r} may hold only letters, digits, '.', '_' and '-'")
    out_dir = Path(out_dir) if out_dir is not None else Path(labels).parent
    weights = out_dir / f"{name}.safetensors"
    if weights.resolve() == base.resolve():
        raise FinetuneError(f"--name {name!r} would overwrite the base weights: choose another name")
    model, card = load_model(base)
    card.require_windows("fine-tuning")
    if card.family not in _DEFAULTS:
        raise FinetuneError(f"{card.model_id} is a {card.family} model; finetune works for the seed (sr-classifier) "
                            "and timm families")
    recipe = _DEFAULTS[card.family]
    epochs, lr = settings.epochs or recipe["epochs"], settings.lr or recipe["lr"]

    labelled = read_user_windows(labels, layer, imagery, card, bands=bands)
    user, image, ids, written, centres = labelled.windows, labelled.image, labelled.windows.ids, labelled.written, labelled.centres
    train_idx, held_idx = holdout_split(len(user), settings.holdout, settings.seed)
    log(f"{len(user)} labelled windows: {len(train_idx)} to learn from, {len(held_idx)} held out")

    replay = replay_loader(card, base) if replay_loader is not None else None
    if replay is None:
        raise FinetuneError(f"no replay of {base.name}'s training data is available: fine-tuning on the labels alone "
                            "makes the model forget what it knew; finetune a demo model (its demo world is rebuilt) "
                            "or give the training data")
    pool = ssas_pool(image, card, labelled.origins, held_idx) if settings.ssas else None
    # Validation windows under a labelled window - or, with SSAS, under a window that may get a
    # pseudo-label - are left out before anything is measured, so before and after share one set.
    taken = user.bounds_4326 + (bounds_to_4326(pool.bounds, image.crs) if pool is not None else [])
    keep_val = ~_overlapping(replay.validation.bounds_4326 or [], taken) if len(replay.validation) else np.zeros(0, bool)
    validation = replay.validation.subset(np.flatnonzero(keep_val))
    log(f"replay: {len(replay.train)} training windows, {len(validation)} validation windows "
        f"({int((~keep_val).sum())} overlapping labelled{' or pseudo-label' if pool is not None else ''} windows "
        f"left out) - {replay.description}")

    session = Session.start(settings.seed, "cpu", settings.threads)
    model = model.to(session.device)
    fam = _Family(model, card)
    held = user.subset(held_idx)
    x_held, x_val = fam.inputs(held.reflectance()), fam.inputs(validation.reflectance())
    before = {"held_out": agreement(fam.top(x_held), held.main),
              "replay_validation": agreement(fam.top(x_val), validation.main)}
    log(f"before: held-out agreement {before['held_out']:.1%} (n={len(held)}), replay validation "
        f"{before['replay_validation']:.1%} (n={len(validation)})")
    x_pool = fam.inputs(pool.data) if pool is not None else None
    parent_top = fam.top(x_pool) if x_pool is not None else None  # SSAS's first cycle: the model that picked the windows

    mine = user.subset(train_idx)
    repeat = max(1, int(round(settings.user_share * len(replay.train) / ((1 - settings.user_share) * len(mine)))))
    x_train = torch.cat([fam.inputs(replay.train.reflectance()), fam.inputs(mine.reflectance())])
    y = torch.from_numpy(np.concatenate([replay.train.targets, mine.targets]).astype(np.float32))
    k = torch.from_numpy(np.concatenate([replay.train.known, mine.known]).astype(np.float32))
    m = torch.from_numpy(np.concatenate([replay.train.main, mine.main]).astype(np.int64))
    order = np.concatenate([np.arange(len(replay.train)), np.tile(np.arange(len(replay.train), len(x_train)), repeat)])
    history = _train_round(fam, x_train, y, k, m, order, epochs=epochs, lr=lr, weight_decay=recipe["weight_decay"],
                           settings=settings, generator=session.generator, log=log)
    after = {"held_out": agreement(fam.top(x_held), held.main),
             "replay_validation": agreement(fam.top(x_val), validation.main)}
    log(f"after: held-out agreement {after['held_out']:.1%}, replay validation {after['replay_validation']:.1%}")

    ssas_report = None
    if x_pool is not None and parent_top is not None and len(x_pool):
        top, confidence = fam.top_confidence(x_pool)  # the second cycle: the model just trained
        agree, pseudo = ssas_pseudo_labels(parent_top, top)
        pick = balanced_cap(pseudo, confidence[agree], int(settings.ssas_ratio * len(mine)))
        agree, pseudo = agree[pick], pseudo[pick]
        ssas_report = {"candidates": len(x_pool), "agreeing": int((parent_top == top).sum()), "pseudo_labels": len(agree),
                       "classes": {card.classes[c]: int((pseudo == c).sum()) for c in np.unique(pseudo)},
                       "after_labels_only": after}
        log(f"SSAS: {len(agree)} pseudo-labels ({ssas_report['agreeing']} of {len(x_pool)} unlabelled windows agree "
            f"between {card.model_id} and the fine-tuned model; at most {settings.ssas_ratio:g}x the labels)")
        if len(agree):
            py, pk, pm = pseudo_targets(pseudo, len(card.classes), card.task)
            x_train = torch.cat([x_train, x_pool[torch.from_numpy(agree)]])
            y, k, m = torch.cat([y, py]), torch.cat([k, pk]), torch.cat([m, pm])
            order = np.concatenate([order, np.arange(len(x_train) - len(agree), len(x_train))])
            history += _train_round(fam, x_train, y, k, m, order, epochs=settings.ssas_epochs,
                                    lr=lr * settings.ssas_lr_scale, weight_decay=recipe["weight_decay"],
                                    settings=settings, generator=session.generator, log=log, first=len(history))
            after = {"held_out": agreement(fam.top(x_held), held.main),
                     "replay_validation": agreement(fam.top(x_val), validation.main)}
            log(f"after SSAS: held-out agreement {after['held_out']:.1%}, replay validation "
                f"{after['replay_validation']:.1%}")
    n_pseudo = ssas_report["pseudo_labels"] if ssas_report is not None else 0

    parent_sha = card.sha256 or sha256_file(base)
    lineage = Lineage(
        name=name, parent_id=card.model_id, parent_sha256=parent_sha, parent_weights=base.name,
        root=card.lineage.root if card.lineage is not None else base.stem,
        labels=LabelsUsed(path=str(Path(labels).name), layer=layer, count=len(user), held_out=len(held),
                          sha256=labels_digest(ids, written, centres)),
        replay=replay.description,
    )
    metrics = {
        "finetune_held_out_n": len(held), "finetune_held_out_agreement_before": round(before["held_out"], 4),
        "finetune_held_out_agreement_after": round(after["held_out"], 4),
        "finetune_replay_validation_n": len(validation),
        "finetune_replay_validation_agreement_before": round(before["replay_validation"], 4),
        "finetune_replay_validation_agreement_after": round(after["replay_validation"], 4),
        "finetune_train_user_n": len(mine), "finetune_train_replay_n": len(replay.train), "finetune_epochs": epochs,
        "finetune_ssas_pseudo_labels": n_pseudo, "finetune_ssas_epochs": settings.ssas_epochs if n_pseudo else 0,
    }
    update = {
        "lineage": lineage, "source": None, "published_metrics": [], "metrics": metrics, "sha256": None,
        "training_data": TrainingData(
            description=f"fine-tuned from {card.model_id} on {len(mine)} user labels ({layer} of {Path(labels).name}) "
                        + (f"and {n_pseudo} SSAS pseudo-labels " if n_pseudo else "")
                        + f"joined to a replay ({replay.description}); parent: {card.training_data.description}",
            synthetic=card.training_data.synthetic),
        "created": datetime.now(UTC),
    }
    if card.family == "timm":
        update["profile"] = name
    new_card = card.model_copy(update=update)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu()
    if card.family == "timm":
        from models.training.timm import save_timm_model

        save_timm_model(model, new_card, weights)
    else:
        from models.checkpoint import save_model

        save_model(model, new_card, weights)
    seconds = time.perf_counter() - t0
    report = {"name": name, "parent": base.name, "before": before, "after": after, "metrics": metrics,
              "held_out_ids": list(held.ids), "train_label_ids": list(mine.ids), "ssas": ssas_report,
              "history": history, "seconds": round(seconds, 1)}
    atomic_write_text(out_dir / f"{name}.finetune.json", json.dumps(report, indent=2) + "\n")
    from models.checkpoint import read_card

    return FinetuneResult(weights, read_card(weights), report, seconds)
