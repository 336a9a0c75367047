"""Fine-tuning a model on the user's labels joined to a replay of the data it was trained on.

``landcover finetune BASE --labels MAP.gpkg --layer to_label --imagery composite.tif``:

1. The labelled rows of the layer (the ``class`` field, and ``class_2``/``class_3`` for
   multi-label models: names of the card's classes, BigEarthNet names or map codes) become
   windows of the card's footprint centred on each polygon, cut from the imagery's card bands.
   Fewer than :data:`MIN_LABELS` labelled rows are refused with the count.
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

The new weights get a card naming the parent (id, sha256), the labels (layer, count, sha256 of
the rows used), the replay, and the parent's ``synthetic`` flag, and a ``<name>.finetune.json``
report beside them.
"""

from __future__ import annotations

import hashlib
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

MIN_LABELS = 10


class FinetuneError(LandcoverError):
    """Fine-tuning cannot start with the given labels, imagery or base model."""


@dataclass
class LabelledWindows:
    """Windows of the card's bands with labels in the card's output order.

    ``targets`` (N, C) are 1 for a class present, 0 for absent; ``known`` (N, C) says which of them
    are labels at all (False for the classes a user row does not list); ``main`` (N,) is each
    window's own class (a user row's first field, a replay window's majority class), the one
    agreement is judged by. ``windows`` hold reflectance, or integer DN when ``dn_scale`` is not 1
    (0 = no data).
    """

    windows: np.ndarray
    targets: np.ndarray
    known: np.ndarray
    main: np.ndarray
    ids: list[str]
    bounds_4326: list[tuple[float, float, float, float]] | None = None
    dn_scale: float = 1.0

    def __len__(self) -> int:
        return len(self.ids)

    def reflectance(self, index: np.ndarray | None = None) -> np.ndarray:
        w = self.windows if index is None else self.windows[index]
        if self.dn_scale == 1.0:
            return np.asarray(w, np.float32)
        return np.where(w == 0, np.nan, w.astype(np.float32) * np.float32(self.dn_scale)).astype(np.float32)

    def subset(self, index: np.ndarray) -> LabelledWindows:
        return LabelledWindows(self.windows[index], self.targets[index], self.known[index], self.main[index],
                               [self.ids[i] for i in index],
                               None if self.bounds_4326 is None else [self.bounds_4326[i] for i in index], self.dn_scale)


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


def _class_index(value: object, card: ModelCard) -> int:
    """Output index of a class given by name (the card's, or BigEarthNet's either nomenclature) or map code."""
    from models.classes import CLASS_NAMES
    from models.labels import LabelError, index19

    text = str(value).strip()
    if text.isdigit():
        codes = card.class_codes
        if int(text) in codes:
            return codes.index(int(text))
        raise FinetuneError(f"class code {text} is not one of the model's classes (codes {min(codes)}..{max(codes)})")
    if text in card.classes:
        return card.classes.index(text)
    try:
        idx = index19(text)
    except LabelError:
        idx = None
    if idx is not None and CLASS_NAMES[idx] in card.classes:
        return card.classes.index(CLASS_NAMES[idx])
    raise FinetuneError(f"label {text!r} is not one of the model's classes: pick a name from the form's list "
                        f"(e.g. {card.classes[0]!r})")


def read_labels(gpkg: Path, layer: str, card: ModelCard, fields: Sequence[str], *, minimum: int = MIN_LABELS,
                purpose: str = "fine-tuning") -> tuple[list, np.ndarray, list[str], list[list[str]]]:
    """([window centres, their CRS], positives (N, C) bool, ids, the classes as written - the first
    is the row's own class) of the labelled rows of ``layer``."""
    import pyogrio
    import pyogrio.errors

    if not Path(gpkg).is_file():
        raise FinetuneError(f"labels not found: {gpkg}; give the GeoPackage active-learn wrote (e.g. maps/x/landcover.gpkg)")
    try:
        frame = pyogrio.read_dataframe(gpkg, layer=layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise FinetuneError(f"cannot read layer {layer!r} of {gpkg} ({str(exc).splitlines()[0]}); "
                            "give --layer the layer you labelled") from None
    present = [f for f in fields if f in frame.columns]
    if not present:
        raise FinetuneError(f"layer {layer!r} of {gpkg} has no {fields[0]!r} field: label the to_label layer "
                            "that `landcover active-learn` wrote")
    centres, positives, ids, written = [], [], [], []
    for i, row in frame.iterrows():
        values = [str(row[f]).strip() for f in present if row[f] is not None and str(row[f]).strip() not in ("", "nan", "None")]
        if not values:
            continue
        pos = np.zeros(len(card.classes), bool)
        for v in values:
            pos[_class_index(v, card)] = True
        point = row.geometry.representative_point()
        centres.append((point.x, point.y))
        positives.append(pos)
        written.append(values)
        ids.append(str(row["patch_id"]) if "patch_id" in frame.columns and row["patch_id"] else f"{layer}/{i}")
    if len(ids) < minimum:
        raise FinetuneError(f"only {len(ids)} rows of {layer!r} in {gpkg} are labelled; {purpose} needs at least "
                            f"{minimum} (fill the {present[0]!r} field of more rows in QGIS, 30 or more is better)")
    crs = frame.crs.to_wkt() if frame.crs is not None else None
    return [centres, crs], np.array(positives), ids, written


def main_classes(written: Sequence[Sequence[str]], card: ModelCard) -> np.ndarray:
    """Output index of each labelled row's own class: its first field."""
    return np.array([_class_index(w[0], card) for w in written], np.int64)


def labels_digest(ids: Sequence[str], written: Sequence[Sequence[str]], centres: Sequence[tuple[float, float]]) -> str:
    """sha256 of the labelled rows as used: id, classes and window centre (to the centimetre), in order."""
    rows = [[i, list(w), [round(x, 2), round(y, 2)]] for i, w, (x, y) in zip(ids, written, centres, strict=True)]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


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
        self.model.eval()
        return torch.cat([self.logits(x[s:s + batch].float()).argmax(1) for s in range(0, len(x), batch)]).numpy() \
            if len(x) else np.zeros(0, np.int64)


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


def _to_4326(bounds: Sequence[tuple[float, float, float, float]], crs: str | None) -> list[tuple[float, float, float, float]]:
    from pyproj import Transformer

    if crs is None:
        raise FinetuneError("the imagery has no CRS: give the map's composite.tif (georeferenced)")
    tx = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    out = []
    for x0, y0, x1, y1 in bounds:
        xs, ys = tx.transform([x0, x1, x1, x0], [y0, y0, y1, y1])
        out.append((min(xs), min(ys), max(xs), max(ys)))
    return out


# --------------------------------------------------------------------------- the run


def default_name(parent: Path, today: date | None = None) -> str:
    return f"{Path(parent).stem}-ft-{(today or date.today()).isoformat()}"


def finetune(base: Path, labels: Path, imagery: Path, *, layer: str = "to_label", out_dir: Path | None = None,
             settings: FinetuneSettings = FinetuneSettings(), replay_loader: ReplayLoader | None = None,
             bands: Sequence[int] | None = None, log: Callable[[str], None] = lambda s: None) -> FinetuneResult:
    """Fine-tune ``base`` on the labelled rows of ``layer`` in ``labels`` over ``imagery``; writes
    ``<out_dir>/<name>.safetensors`` with its card and ``<name>.finetune.json``."""
    import re

    from models.active import label_fields
    from models.checkpoint import load_model
    from models.files import sha256_file
    from models.imagery import read_imagery, windows_at
    from models.training.trainer import Session, batches

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

    (centres, label_crs), positives, ids, written = read_labels(labels, layer, card, label_fields(card.task))
    image = read_imagery(imagery, card, bands=bands)
    if label_crs is not None and image.crs is not None:
        from pyproj import CRS, Transformer

        if not CRS.from_wkt(label_crs).equals(CRS.from_wkt(image.crs)):
            tx = Transformer.from_crs(label_crs, image.crs, always_xy=True)
            centres = [tx.transform(x, y) for x, y in centres]
    user_win = windows_at(image, card, centres, ids)
    main = main_classes(written, card)
    user = LabelledWindows(user_win.data, positives.astype(np.float32), positives if card.task == "multi-label"
                           else np.ones_like(positives), main, ids, _to_4326(user_win.bounds, image.crs))
    train_idx, held_idx = holdout_split(len(user), settings.holdout, settings.seed)
    log(f"{len(user)} labelled windows: {len(train_idx)} to learn from, {len(held_idx)} held out")

    replay = replay_loader(card, base) if replay_loader is not None else None
    if replay is None:
        raise FinetuneError(f"no replay of {base.name}'s training data is available: fine-tuning on the labels alone "
                            "makes the model forget what it knew; finetune a demo model (its demo world is rebuilt) "
                            "or give the training data")
    keep_val = ~_overlapping(replay.validation.bounds_4326 or [], user.bounds_4326) if len(replay.validation) else np.zeros(0, bool)
    validation = replay.validation.subset(np.flatnonzero(keep_val))
    log(f"replay: {len(replay.train)} training windows, {len(validation)} validation windows "
        f"({int((~keep_val).sum())} overlapping labelled windows left out) - {replay.description}")

    session = Session.start(settings.seed, "cpu", settings.threads)
    model = model.to(session.device)
    fam = _Family(model, card)
    held = user.subset(held_idx)
    x_held, x_val = fam.inputs(held.reflectance()), fam.inputs(validation.reflectance())
    before = {"held_out": agreement(fam.top(x_held), held.main),
              "replay_validation": agreement(fam.top(x_val), validation.main)}
    log(f"before: held-out agreement {before['held_out']:.1%} (n={len(held)}), replay validation "
        f"{before['replay_validation']:.1%} (n={len(validation)})")

    mine = user.subset(train_idx)
    repeat = max(1, int(round(settings.user_share * len(replay.train) / ((1 - settings.user_share) * len(mine)))))
    x_train = torch.cat([fam.inputs(replay.train.reflectance()), fam.inputs(mine.reflectance())])
    y = torch.from_numpy(np.concatenate([replay.train.targets, mine.targets]).astype(np.float32))
    k = torch.from_numpy(np.concatenate([replay.train.known, mine.known]).astype(np.float32))
    m = torch.from_numpy(np.concatenate([replay.train.main, mine.main]).astype(np.int64))
    order = np.concatenate([np.arange(len(replay.train)), np.tile(np.arange(len(replay.train), len(x_train)), repeat)])

    params = fam.parameters()
    if card.family == "sr-classifier":
        model.freeze_sr()
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=recipe["weight_decay"])
    steps = epochs * -(-len(order) // settings.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=lr * 0.05)
    history = []
    for epoch in range(epochs):
        model.train()
        if card.family == "sr-classifier" and model.sr_model is not None:
            model.sr_model.eval()  # the SR stage stays frozen, as in training
        losses = []
        for b in batches(len(order), settings.batch_size, session.generator):
            if len(b) < 2:  # BatchNorm needs two samples
                continue
            idx = torch.from_numpy(order[b.numpy()])
            x = fam.augment(x_train[idx].float(), session.generator)
            loss = fam.loss(fam.logits(x), y[idx], k[idx], m[idx], settings.rank_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        history.append({"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 5)})
        log(f"epoch {epoch + 1}/{epochs}: loss {history[-1]['loss']:.4f}")
    model.eval()
    after = {"held_out": agreement(fam.top(x_held), held.main),
             "replay_validation": agreement(fam.top(x_val), validation.main)}
    log(f"after: held-out agreement {after['held_out']:.1%}, replay validation {after['replay_validation']:.1%}")

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
    }
    update = {
        "lineage": lineage, "source": None, "published_metrics": [], "metrics": metrics, "sha256": None,
        "training_data": TrainingData(
            description=f"fine-tuned from {card.model_id} on {len(mine)} user labels ({layer} of {Path(labels).name}) "
                        f"joined to a replay ({replay.description}); parent: {card.training_data.description}",
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
              "held_out_ids": [held.ids[i] for i in range(len(held))], "history": history, "seconds": round(seconds, 1)}
    atomic_write_text(out_dir / f"{name}.finetune.json", json.dumps(report, indent=2) + "\n")
    from models.checkpoint import read_card

    return FinetuneResult(weights, read_card(weights), report, seconds)
