"""Training the seed family: the SR stage (L1; perceptual + relativistic GAN when VGG19 weights are given)
and the classifier stage with the seed recipe.

Seed recipe (classifier stage): SR frozen, AdamW lr 3e-4, weight decay 1e-5, 5 warm-up
epochs then cosine (per-epoch LambdaLR), label smoothing 0.15, EMA 0.9995 of all weights and
buffers (the EMA is what is evaluated and saved), dropout 0.4/0.3 in the head, flips,
rotations and colour jitter, batch 64, AMP on GPU, gradient clipping. Single-label mode
trains on the seed's argmax of the multi-hot; multi-label mode uses BCE.

Because the generator is frozen, the image the backbone sees is a pure function of the LR
patch: it is computed once per patch (``sr_cache``) and augmentations are applied to it.
Rotations, flips and jitter of the classifier input are the same augmentations the seed
applied to the LR patch, up to the generator's (near) equivariance, and they make a CPU run
an order of magnitude cheaper.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.card import ModelCard, TrainingData
from models.checkpoint import load_model, save_model
from models.classifier import SRClassifier
from models.files import atomic_write_text
from models.preprocess import sr_reference, to_model_input
from models.profiles import get_profile
from models.splits import (
    assert_held_out,
    ids_digest,
    split_record_path,
    write_split_record,
)
from models.training.config import ClassifierStage, SRStage, TrainConfig, config_digest
from models.training.gan import Discriminator, PerceptualLoss, relativistic_losses
from models.training.schedule import build_ema, build_scheduler
from models.training.sources import (
    SourceLoader,
    load_source,
    loader_of,
    lr_images,
    ref_windows,
)
from models.training.state import (
    CheckpointResumeError,
    EpochLog,
    load_training_state,
    save_training_state,
)
from models.training.trainer import (
    NoProgress,
    Progress,
    Session,
    Stage,
    batches,
    elapsed_since,
    progress_bar,
    run_stage,
    train_step,
)

# Saves the resumable state after an epoch: (stage order, epoch, the stage's own tensors).
Checkpoint = Callable[[int, int, dict[str, Any]], None]


def smooth_multi_hot(target: Tensor, smoothing: float) -> Tensor:
    """Label smoothing for BCE: 1 -> 1 - s/2, 0 -> s/2."""
    return target * (1.0 - smoothing) + 0.5 * smoothing


def make_loss(mode: Literal["single", "multi"], smoothing: float) -> Callable[[Tensor, Tensor], Tensor]:
    """Loss of logits against multi-hot targets: CE on the seed's argmax, or BCE."""
    if mode == "single":
        ce = nn.CrossEntropyLoss(label_smoothing=smoothing)
        # argmax returns the first maximum: the lowest class index on ties, as the seed
        return lambda logits, target: ce(logits, target.argmax(dim=1))
    bce = nn.BCEWithLogitsLoss()
    return lambda logits, target: bce(logits, smooth_multi_hot(target, smoothing))


def augment(images: Tensor, generator: torch.Generator, jitter: float = 0.2) -> Tensor:
    """Random dihedral transform (rot90 x flip) and brightness/contrast/saturation jitter of
    images in [-1, 1], drawn per sample from ``generator`` (so a resumed run replays it)."""
    n = images.shape[0]
    k = torch.randint(0, 4, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    out = torch.empty_like(images)
    for rot in range(4):
        for fl in (False, True):
            sel = (k == rot) & (flip == fl)
            if sel.any():
                x = torch.rot90(images[sel], rot, dims=(-2, -1))
                out[sel] = torch.flip(x, dims=(-1,)) if fl else x
    if jitter > 0:
        shape = (n, 1, 1, 1)
        u = lambda: (torch.rand(shape, generator=generator) * 2 - 1) * jitter
        x = (out + 1) / 2
        x = x * (1 + u())
        mean = x.mean(dim=(-3, -2, -1), keepdim=True)
        x = (x - mean) * (1 + u()) + mean
        gray = x.mean(dim=-3, keepdim=True)
        x = (x - gray) * (1 + u()) + gray
        out = (x.clamp(0, 1) * 2 - 1).to(images.dtype)
    return out


def random_crops(lr: Tensor, ref: Tensor, crop: int, scale: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Aligned random crops: LR ``crop`` px and reference ``crop * scale`` px (generators are
    fully convolutional, so the SR stage trains on crops at a fraction of the cost)."""
    n, _, h, w = lr.shape
    ys = torch.randint(0, h - crop + 1, (n,), generator=generator).tolist()
    xs = torch.randint(0, w - crop + 1, (n,), generator=generator).tolist()
    lr_c = torch.stack([lr[i, :, y:y + crop, x:x + crop] for i, (y, x) in enumerate(zip(ys, xs))])
    s = crop * scale
    ref_c = torch.stack([ref[i, :, y * scale:y * scale + s, x * scale:x * scale + s] for i, (y, x) in enumerate(zip(ys, xs))])
    return lr_c, ref_c


@torch.no_grad()
def classifier_inputs(model: SRClassifier, source: Any, device: torch.device, batch_size: int = 64,
                      dtype: torch.dtype = torch.float16) -> Tensor:
    """What the backbone sees for every patch, computed once (the SR model is frozen)."""
    model.eval()
    out = []
    for idx in batches(len(source), batch_size, None):
        x = to_model_input(torch.from_numpy(lr_images(source, idx.numpy()))).to(device)
        out.append(model.classifier_input(x).to("cpu", dtype))
    return torch.cat(out)


# --------------------------------------------------------------------------- the run


@dataclass
class TrainResult:
    weights: Path
    card: Any
    log_json: Path
    seconds: float
    split_path: Path


_STAGE_ORDER = {"sr": 0, "classifier": 1}


def run_training(config: TrainConfig, *, resume: bool = True, progress: bool = True,
                 sources: Mapping[str, SourceLoader] | None = None) -> TrainResult:
    """Both stages end to end; writes the EMA weights, model card, split record and logs.

    ``sources``: loaders of sources models/ cannot load alone (see :func:`load_source`)."""
    for spec in (config.train, config.validation):
        loader_of(spec, sources)  # a source nobody can load fails before any work
    t0 = time.perf_counter()
    session = Session.start(config.seed, config.device, config.threads)

    work = Path(config.work_dir) / config.name
    work.mkdir(parents=True, exist_ok=True)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    ckpt_path = work / "checkpoint.pt"
    log = EpochLog(work / "metrics.csv", work / "metrics.json")

    profile = get_profile(config.profile)
    need_windows = config.sr.epochs > 0 and profile.super_resolution
    train_src = load_source(config.train, keep_windows=need_windows, sources=sources)
    val_src = load_source(config.validation, sources=sources)
    assert_held_out(set(train_src.ids), set(train_src.groups), val_src.ids, val_src.groups, split_by_group=True)

    if config.init_weights:
        model, _ = load_model(config.init_weights, profile=config.profile, variant=config.variant)
    else:
        model = SRClassifier(profile, config.variant)
    device = session.device
    model.to(device)

    state: dict[str, Any] | None = None
    if ckpt_path.exists() and resume:
        state = _resume(ckpt_path, config, model, session, log)
    elif ckpt_path.exists():
        ckpt_path.unlink()

    def checkpoint(stage_order: int, epoch: int, tensors: dict[str, Any]) -> None:
        save_training_state(ckpt_path, {
            "config": config_digest(config), "stage_order": stage_order, "epoch": epoch,
            "generator": session.generator.get_state(), "torch_rng": torch.get_rng_state(),
        } | tensors)

    with progress_bar() if progress else NoProgress() as bar:
        if need_windows:
            sr_stage = SRTrainer(model, train_src, config.sr, session, state, log, checkpoint)
            if sr_stage.start is not None:  # None: the SR stage finished before the interruption
                run_stage(sr_stage, sr_stage.start, config.sr.epochs, bar)
                model.sr_model.eval()
        stage = ClassifierTrainer(model, train_src, val_src, config.classifier, session, state, log, checkpoint, bar)
        run_stage(stage, stage.start, config.classifier.epochs, bar)

    final = stage.ema.module
    weights = Path(config.output_dir) / f"{config.name}.safetensors"
    split = write_split_record(weights, train_src.ids, train_src.groups, val_src.groups)
    seconds = elapsed_since(t0)
    card = save_model(final.cpu(), _card(config, split, train_src, val_src, log.rows[-1], seconds, device), weights,
                      half=config.save_half)
    for src, suffix in ((log.path_json, ".metrics.json"), (log.path_csv, ".metrics.csv")):
        atomic_write_text(Path(config.output_dir) / f"{config.name}{suffix}", Path(src).read_text())
    return TrainResult(weights, card, Path(config.output_dir) / f"{config.name}.metrics.json", seconds,
                       split_record_path(weights))


def _resume(ckpt_path: Path, config: TrainConfig, model: nn.Module, session: Session, log: EpochLog) -> dict[str, Any]:
    """Load the resumable state into the model, the generators and the log; returns it for the stages."""
    state = load_training_state(ckpt_path)
    if state.get("config") != config_digest(config):
        raise CheckpointResumeError(
            f"{ckpt_path} was written by a different config; delete it or pass --fresh to start over"
        )
    model.load_state_dict(state["model"])
    session.generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    done = (state["stage_order"], state["epoch"])
    log.rows = [r for r in EpochLog.read(log.path_json) if (_STAGE_ORDER[r["stage"]], r["epoch"]) <= done]
    return state


def _card(config: TrainConfig, split: dict[str, Any], train_src: Any, val_src: Any, last: dict[str, Any],
          seconds: float, device: torch.device) -> ModelCard:
    return ModelCard.for_profile(
        config.profile, variant=config.variant,
        task="single-label" if config.classifier.mode == "single" else "multi-label",
        training_data=TrainingData(
            description=(config.description or f"{config.train.source} patches") +
            f"; validation: {config.validation.source} groups {', '.join(split['validation_groups'][:4])}",
            synthetic=config.synthetic,
        ),
        metrics={
            "train_ids_sha256": ids_digest(list(train_src.ids)),
            "train_groups": ",".join(split["train_groups"]),
            "validation_groups": ",".join(split["validation_groups"]),
            "n_train": len(train_src), "n_validation": len(val_src),
            "epochs": config.classifier.epochs, "training_seconds": seconds,
            "training_threads": torch.get_num_threads(), "training_device": device.type,
            "val_accuracy_last_epoch": last.get("val_accuracy", float("nan")),
        },
    )


# --------------------------------------------------------------------------- the stages


class SRTrainer(Stage):
    """The SR stage: the generator on aligned random crops against the 10 m reference."""

    label = "SR stage"

    def __init__(self, model: SRClassifier, source: Any, cfg: SRStage, session: Session,
                 state: dict[str, Any] | None, log: EpochLog, checkpoint: Checkpoint) -> None:
        self.model, self.source, self.cfg, self.session, self.log, self.checkpoint = model, source, cfg, session, log, checkpoint
        assert model.sr_model is not None
        self.sr = model.sr_model
        self.scale = model.profile.scale
        device = session.device
        self.opt = torch.optim.Adam(self.sr.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        self.perceptual = PerceptualLoss(cfg.vgg19_weights).to(device) if cfg.vgg19_weights else None
        # Built (drawing from the global generator) even when resuming past this stage, so a
        # resumed run draws the same numbers afterwards as a straight one.
        self.disc = Discriminator().to(device) if self.perceptual is not None else None
        self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=(0.9, 0.99)) if self.disc is not None else None
        self.start: int | None = 0
        if state is not None:
            if state["stage_order"] > 0:
                self.start = None
            else:
                self.opt.load_state_dict(state["optimizer"])
                if self.disc is not None and self.d_opt is not None and "disc" in state:
                    self.disc.load_state_dict(state["disc"])
                    self.d_opt.load_state_dict(state["d_optimizer"])
                self.start = state["epoch"] + 1
        self.steps_per_epoch = cfg.steps_per_epoch or max(len(source) // cfg.batch_size, 1)

    def train_epoch(self, epoch: int, advance: Callable[[str], None]) -> dict[str, Any]:
        cfg, gen, device = self.cfg, self.session.generator, self.session.device
        self.sr.train().requires_grad_(True)
        losses = []
        for _ in range(self.steps_per_epoch):
            idx = torch.randint(0, len(self.source), (cfg.batch_size,), generator=gen).numpy()
            lr = to_model_input(torch.from_numpy(lr_images(self.source, idx)))
            ref = sr_reference(torch.from_numpy(ref_windows(self.source, idx)), self.scale, lr.shape[-1])
            lr_c, ref_c = random_crops(lr, ref, cfg.crop, self.scale, gen)
            lr_c, ref_c = lr_c.to(device), ref_c.to(device)
            out = self.sr(lr_c)
            l1 = F.l1_loss(out, ref_c)
            if self.perceptual is None or self.disc is None:
                loss = l1
            else:
                _, g_loss = relativistic_losses(self.disc(ref_c), self.disc(out))
                loss = cfg.l1_weight * l1 + cfg.perceptual_weight * self.perceptual(out, ref_c) + cfg.gan_weight * g_loss
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if self.disc is not None and self.d_opt is not None:
                d_loss, _ = relativistic_losses(self.disc(ref_c), self.disc(out.detach()))
                self.d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                self.d_opt.step()
            losses.append(float(l1.detach()))
            advance(f"L1 {losses[-1]:.4f}")
        return {"stage": "sr", "epoch": epoch, "train_l1": float(np.mean(losses))}

    def end_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        self.log.add(row)
        tensors = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict()}
        if self.disc is not None and self.d_opt is not None:
            tensors |= {"disc": self.disc.state_dict(), "d_optimizer": self.d_opt.state_dict()}
        self.checkpoint(_STAGE_ORDER["sr"], epoch, tensors)


class ClassifierTrainer(Stage):
    """The classifier stage with the seed recipe; what it evaluates and saves is the EMA (``self.ema``)."""

    label = "classifier"

    def __init__(self, model: SRClassifier, train_src: Any, val_src: Any, cfg: ClassifierStage, session: Session,
                 state: dict[str, Any] | None, log: EpochLog, checkpoint: Checkpoint, bar: Progress) -> None:
        self.model, self.train_src, self.val_src, self.cfg = model, train_src, val_src, cfg
        self.session, self.log, self.checkpoint = session, log, checkpoint
        device = session.device
        if cfg.freeze_sr:
            model.freeze_sr()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = build_scheduler(self.opt, cfg.warmup_epochs, cfg.epochs)
        self.ema = build_ema(model, cfg.ema_decay, cfg.ema_warmup)
        self.start = 0
        if state is not None and state["stage_order"] == _STAGE_ORDER["classifier"]:
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.ema.load_state_dict(state["ema"])
            self.start = state["epoch"] + 1
        self.loss_fn = make_loss(cfg.mode, cfg.label_smoothing)
        self.eval_loss = make_loss(cfg.mode, 0.0)
        self.scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
        self.train_targets = torch.from_numpy(np.asarray(train_src.targets))
        self.val_targets = torch.from_numpy(np.asarray(val_src.targets))
        keep = self.train_targets.sum(1) > 0  # patches with only dropped BigEarthNet labels teach nothing
        self.train_index = torch.nonzero(keep).flatten()

        side = model.profile.input_size
        cache_bytes = (len(train_src) + len(val_src)) * 3 * side * side * 2
        self.cached = cfg.freeze_sr and (cfg.sr_cache == "always" or (cfg.sr_cache == "auto" and cache_bytes < 2 * 1024**3))
        self.train_x: Tensor | None = None
        self.val_x: Tensor | None = None
        if self.cached:
            task = bar.add_task("SR cache", total=2, info=f"{len(train_src) + len(val_src)} patches", completed=0)
            self.train_x = classifier_inputs(model, train_src, device)
            bar.update(task, advance=1)
            self.val_x = classifier_inputs(model, val_src, device)
            bar.update(task, advance=1)
        self.steps_per_epoch = math.ceil(len(self.train_index) / cfg.batch_size)

    def inputs(self, src: Any, x_cache: Tensor | None, idx: Tensor) -> Tensor:
        """What the backbone sees for patches ``idx`` of ``src``: from the cache, or through the SR model."""
        device = self.session.device
        if x_cache is not None:
            return x_cache[idx].to(device, torch.float32)
        with torch.no_grad():
            lr = to_model_input(torch.from_numpy(lr_images(src, idx.numpy()))).to(device)
            return self.model.classifier_input(lr)

    def train_epoch(self, epoch: int, advance: Callable[[str], None]) -> dict[str, Any]:
        cfg, model, gen, device = self.cfg, self.model, self.session.generator, self.session.device
        model.train()
        if model.sr_model is not None and cfg.freeze_sr:
            model.sr_model.eval()
        losses, correct, seen = [], 0, 0
        for b in batches(len(self.train_index), cfg.batch_size, gen):
            idx = self.train_index[b]
            x = self.inputs(self.train_src, self.train_x, idx)
            if cfg.augment:
                x = augment(x.cpu(), gen).to(device)
            y = self.train_targets[idx].to(device)
            logits_holder: list[Tensor] = []

            def forward(inp: Tensor) -> Tensor:
                logits = model.classify(inp)[0]
                logits_holder.append(logits.detach())
                return logits

            losses.append(train_step(forward, self.params, x, y, self.opt, self.loss_fn, self.scaler, cfg.grad_clip))
            self.ema.update_parameters(model)
            correct += int((logits_holder[0].argmax(1) == y.argmax(1)).sum())
            seen += len(idx)
            advance(f"epoch {epoch + 1}/{cfg.epochs} loss {losses[-1]:.3f}")
        lr_now = self.opt.param_groups[0]["lr"]
        self.sched.step()
        return {"stage": "classifier", "epoch": epoch, "lr": lr_now, "train_loss": float(np.mean(losses)),
                "train_accuracy": correct / max(seen, 1)}

    @torch.no_grad()
    def validate(self, epoch: int) -> dict[str, Any]:
        """Loss and accuracy of the EMA on the validation patches (those with a kept label)."""
        ema = self.ema.module
        ema.eval()
        logits = []
        for idx in batches(len(self.val_src), 128, None):
            logits.append(ema.classify(self.inputs(self.val_src, self.val_x, idx))[0].float().cpu())
        return classification_scores(torch.cat(logits), self.val_targets, self.eval_loss, self.cfg.mode)

    def end_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        self.log.add(row)
        self.checkpoint(_STAGE_ORDER["classifier"], epoch, {
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "ema": self.ema.state_dict(),
        })


def classification_scores(logits: Tensor, targets: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor],
                          mode: Literal["single", "multi"]) -> dict[str, float]:
    """Validation loss and accuracy (argmax, or every label right at 0.5) over patches with a label."""
    keep = targets.sum(1) > 0
    loss = float(loss_fn(logits[keep], targets[keep]))
    if mode == "single":
        acc = float((logits[keep].argmax(1) == targets[keep].argmax(1)).float().mean())
    else:
        acc = float(((logits[keep].sigmoid() >= 0.5) == targets[keep].bool()).all(1).float().mean())
    return {"val_loss": loss, "val_accuracy": acc}
