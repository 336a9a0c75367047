"""Training: the SR stage (L1; perceptual + relativistic GAN when VGG19 weights are given)
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

import csv
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel

from models.errors import LandcoverError


class TrainConfigError(LandcoverError):
    """The training configuration is invalid."""


class CheckpointResumeError(LandcoverError):
    """A training checkpoint cannot be resumed."""


# --------------------------------------------------------------------------- configuration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Source = Literal["demo-world", "bigearthnet-v1", "bigearthnet-v2", "user-labels", "patches"]


class DataSpec(_Strict):
    """Where samples come from, and which groups (tiles / spatial blocks) to keep or drop.

    ``path``: BigEarthNet root, user-label GeoPackage, .npz patch set, or demo world folder
    (None: the deterministic demo world, generated into the cache when missing).
    ``split``: reBEN split name or BigEarthNet v1 split CSV. ``groups`` / ``exclude_groups``:
    group names or prefixes ("T32TMT" keeps "T32TMT/b0_1").
    """

    source: Source
    path: Path | None = None
    imagery: Path | None = None
    layer: str | None = Field(None, description="user-labels: the GeoPackage layer, e.g. to_label (default: the first)")
    split: str | None = None
    class_field: str = "class"
    groups: list[str] | None = None
    exclude_groups: list[str] = Field(default_factory=list)
    window: int = 120
    stride: int = 120
    block: int | None = None
    min_share: float = Field(0.1, gt=0, le=1)
    block_m: float | None = Field(None, gt=0)
    world_seed: int = Field(0, ge=0)
    world_size_px: int = Field(1200, ge=240)


class SRStage(_Strict):
    epochs: int = Field(0, ge=0)
    lr: float = Field(2e-4, gt=0)
    batch_size: int = Field(16, ge=1)
    crop: int = Field(8, ge=4, description="LR crop side (px); the reference crop is crop x scale")
    steps_per_epoch: int | None = Field(None, ge=1)
    vgg19_weights: Path | None = None
    perceptual_weight: float = 1.0
    gan_weight: float = 5e-3
    l1_weight: float = 1e-2


class ClassifierStage(_Strict):
    epochs: int = Field(30, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    warmup_epochs: int = Field(5, ge=0)
    label_smoothing: float = Field(0.15, ge=0, lt=1)
    ema_decay: float = Field(0.9995, gt=0, lt=1)
    ema_warmup: bool = True
    batch_size: int = Field(64, ge=1)
    mode: Literal["single", "multi"] = "single"
    grad_clip: float | None = Field(1.0, gt=0)
    augment: bool = True
    freeze_sr: bool = True
    sr_cache: Literal["auto", "always", "never"] = "auto"


class TrainConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    profile: str = "small"
    variant: Literal["esrgan", "seed-classifier"] | None = None
    seed: int = 0
    init_weights: Path | None = None
    train: DataSpec
    validation: DataSpec
    sr: SRStage = SRStage()
    classifier: ClassifierStage = ClassifierStage()
    output_dir: Path = Path("models/weights")
    # float16 weights file: half the size, for weights that ship for inference (demo weights).
    save_half: bool = False
    work_dir: Path = Path(".cache/train")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)
    synthetic: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _profile_exists(self) -> TrainConfig:
        from models.profiles import PROFILES

        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose one of {', '.join(PROFILES)}")
        return self


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "config"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check its spelling against models/configs/demo.yaml)"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {msg}{more}"


def load_config(path: Path) -> TrainConfig:
    """Read and validate a YAML training config; paths resolve relative to the working dir."""
    path = Path(path)
    if not path.is_file():
        raise TrainConfigError(f"training config {path} not found: pass a YAML file such as models/configs/demo.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise TrainConfigError(f"{path} must hold a mapping of settings")
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise TrainConfigError(f"{path}: {_one_line(exc)}") from None


# --------------------------------------------------------------------------- recipe pieces


def warmup_cosine(epoch: int, warmup: int, total: int, floor: float = 0.0) -> float:
    """LR factor of epoch ``epoch`` (0-based): linear warm-up to 1 over ``warmup`` epochs,
    then half a cosine down to ``floor`` at the last epoch."""
    if epoch < warmup:
        return (epoch + 1) / warmup
    span = max(total - warmup - 1, 1)
    progress = min((epoch - warmup) / span, 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> LambdaLR:
    # a plain function: LambdaLR's state_dict then holds only numbers (weights_only-safe)
    return LambdaLR(optimizer, lambda e: warmup_cosine(e, warmup, total))


def build_ema(model: nn.Module, decay: float, warmup: bool = True) -> AveragedModel:
    """Exponential moving average of parameters and buffers (BatchNorm statistics too).

    With ``warmup`` the decay ramps as min(decay, (1 + n) / (10 + n)) over the n updates so
    far: with a few hundred steps (a CPU run) a fixed 0.9995 would keep the EMA near the
    random initial weights.
    """
    def ema_avg(avg: Tensor, new: Tensor, n: Tensor) -> Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n))) if warmup else decay
        return avg * d + new * (1.0 - d)

    return AveragedModel(model, avg_fn=ema_avg, use_buffers=True)


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


def to_model_input(images_uint8: Tensor) -> Tensor:
    """Seed normalisation of uint8 RGB: (x / 255) * 2 - 1."""
    return images_uint8.float().div(255.0).mul(2.0).sub(1.0)


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
        u = lambda: (torch.rand(shape, generator=generator) * 2 - 1) * jitter  # noqa: E731
        x = (out + 1) / 2
        x = x * (1 + u())
        mean = x.mean(dim=(-3, -2, -1), keepdim=True)
        x = (x - mean) * (1 + u()) + mean
        gray = x.mean(dim=-3, keepdim=True)
        x = (x - gray) * (1 + u()) + gray
        out = (x.clamp(0, 1) * 2 - 1).to(images.dtype)
    return out


def train_step(
    model: Callable[[Tensor], Tensor],
    params: list[nn.Parameter],
    inputs: Tensor,
    targets: Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
) -> float:
    """One optimisation step (AMP when a scaler is given); returns the loss before the step."""
    optimizer.zero_grad(set_to_none=True)
    device_type = inputs.device.type
    with torch.autocast(device_type, dtype=torch.float16, enabled=scaler is not None):
        loss = loss_fn(model(inputs), targets)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return float(loss.detach())


# --------------------------------------------------------------------------- SR losses


class PerceptualLoss(nn.Module):
    """ESRGAN perceptual loss: L1 between VGG19 conv5_4 features (before activation).

    Needs user-supplied torchvision VGG19 weights (nothing is downloaded here).
    """

    def __init__(self, weights: Path) -> None:
        super().__init__()
        from torchvision.models import vgg19

        from models.checkpoint import load_state_dict

        vgg = vgg19(weights=None)
        vgg.load_state_dict(load_state_dict(Path(weights)))
        self.features = vgg.features[:35].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, sr: Tensor, ref: Tensor) -> Tensor:
        norm = lambda x: ((x + 1) / 2 - self.mean) / self.std  # noqa: E731
        return F.l1_loss(self.features(norm(sr)), self.features(norm(ref)))


class Discriminator(nn.Module):
    """VGG-style patch discriminator for the relativistic GAN loss (any input size)."""

    def __init__(self, nf: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, nf, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
        ch = nf
        for i in range(4):
            out = nf * 2 ** min(i + 1, 3)
            layers += [nn.Conv2d(ch, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, inplace=True)]
            ch = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def relativistic_losses(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor]:
    """Relativistic average GAN (ESRGAN): (discriminator loss, generator loss)."""
    bce = F.binary_cross_entropy_with_logits
    real_rel = d_real - d_fake.mean()
    fake_rel = d_fake - d_real.mean()
    ones, zeros = torch.ones_like(d_real), torch.zeros_like(d_fake)
    d_loss = (bce(real_rel, ones) + bce(fake_rel, zeros)) / 2
    g_loss = (bce(real_rel, zeros) + bce(fake_rel, ones)) / 2
    return d_loss, g_loss


def sr_reference(images_uint8: Tensor, scale: int, lr_side: int = 32) -> Tensor:
    """The SR target: the full-resolution (120 px, 10 m) window resized to ``lr_side * scale``.

    ``images_uint8`` (N, 3, 120, 120); output in [-1, 1]. This is the only honest reference the
    data have: the SR model learns to restore the 10 m detail the 32 px input lost.
    """
    side = lr_side * scale
    x = to_model_input(images_uint8)
    return F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)


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


# --------------------------------------------------------------------------- run state


@dataclass
class EpochLog:
    """Per-epoch metrics written to ``metrics.csv`` and ``metrics.json`` (atomically)."""

    path_csv: Path
    path_json: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        tmp = self.path_csv.with_name(self.path_csv.name + ".tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path_csv)
        atomic_write_text(self.path_json, json.dumps(self.rows, indent=1))

    @staticmethod
    def read(path_json: Path) -> list[dict[str, Any]]:
        return json.loads(Path(path_json).read_text()) if Path(path_json).is_file() else []


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    """Save a resumable state (tensors, numbers, strings, dicts only: weights_only-loadable)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_training_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise CheckpointResumeError(
            f"cannot resume from {path}: {type(exc).__name__}; delete it to start over"
        ) from None


def ids_digest(ids: list[str]) -> str:
    """sha256 of the sorted patch ids: identifies a training set in the model card."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainConfigError("device: cuda asked for but no CUDA device is visible; use device: auto")
        return torch.device("cuda")
    return torch.device("cpu")


def batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    elif os.cpu_count():
        torch.set_num_threads(os.cpu_count() or 1)


def elapsed_since(t0: float) -> float:
    return round(time.perf_counter() - t0, 2)


# --------------------------------------------------------------------------- data


SourceLoader = Callable[[DataSpec, bool], Any]
"""Loads a source models/ cannot load alone: ``loader(spec, keep_windows) -> PatchSet``.

The ``demo-world`` source is one: its loader (``pipeline.demo.dataset.demo_world_source``) lives
beside the demo, and the command line hands it in (``models.train_cli.register``), because
models/ never imports pipeline/.
"""

BUILTIN_SOURCES: tuple[str, ...] = ("patches", "user-labels", "bigearthnet-v1", "bigearthnet-v2")


def load_source(spec: DataSpec, *, keep_windows: bool = False, sources: Mapping[str, SourceLoader] | None = None):
    """The samples a DataSpec names: a PatchSet (in memory) or a lazy BigEarthNet dataset.

    ``sources`` maps further source names (``demo-world``) to their loaders; they may not
    replace a built-in source. Group selection applies to every in-memory source.
    """
    from models import datasets as ds

    loader = _loader_of(spec, sources)
    if loader is not None:
        data = loader(spec, keep_windows)
    elif spec.source == "patches":
        data = ds.PatchSet.load(_need(spec.path, "path: the .npz patch set"))
    elif spec.source == "user-labels":
        data = ds.user_label_patches(_need(spec.path, "path: the labelled GeoPackage"),
                                     _need(spec.imagery, "imagery: the reflectance raster the labels sit on"),
                                     layer=spec.layer, class_field=spec.class_field, window=spec.window)
    elif spec.source == "bigearthnet-v1":
        split_csv = Path(spec.split) if spec.split else None
        return ds.BigEarthNetV1(_need(spec.path, "path: the BigEarthNet-v1.0 folder"), split_csv)
    else:
        return ds.BigEarthNetV2(_need(spec.path, "path: the reBEN folder"), spec.split)
    if spec.groups is not None or spec.exclude_groups:
        data = data.select_groups(spec.groups, spec.exclude_groups)
    if len(data) == 0:
        raise TrainConfigError(f"the {spec.source} source yields no patches after group selection: check groups/exclude_groups")
    return data


def _loader_of(spec: DataSpec, sources: Mapping[str, SourceLoader] | None) -> SourceLoader | None:
    """The injected loader of ``spec``'s source; None for a built-in source; an error naming the
    fix when the source needs a loader nobody supplied."""
    sources = sources or {}
    shadowed = sorted(set(sources) & set(BUILTIN_SOURCES))
    if shadowed:
        raise ValueError(f"source loaders may not replace the built-in sources {', '.join(shadowed)}")
    if spec.source in sources:
        return sources[spec.source]
    if spec.source in BUILTIN_SOURCES:
        return None
    raise TrainConfigError(
        f"the {spec.source} source is loaded by the landcover command line, not by models/ alone: "
        f"run this config with `landcover train CONFIG.yaml` (or `landcover evaluate --config`, "
        f"`landcover active-learn --simulate`) instead of `python -m models.train_cli`"
    )


def _need(value: Path | None, what: str) -> Path:
    if value is None:
        raise TrainConfigError(f"data source needs {what}")
    return value


def lr_images(source, index: np.ndarray) -> np.ndarray:
    """uint8 LR patches of ``index`` from a PatchSet or a lazy dataset."""
    if hasattr(source, "images"):
        return source.images[index]
    return np.stack([source.image(int(i)) for i in index])


def ref_windows(source, index: np.ndarray) -> np.ndarray:
    if getattr(source, "windows", None) is not None:
        return source.windows[index]
    if hasattr(source, "window"):
        return np.stack([source.window(int(i)) for i in index])
    raise TrainConfigError("the SR stage needs full-resolution windows: use a demo-world, user-labels or BigEarthNet source")


@torch.no_grad()
def classifier_inputs(model, source, device: torch.device, batch_size: int = 64, dtype=torch.float16) -> Tensor:
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


def config_digest(config: TrainConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), transient=False)


_STAGE_ORDER = {"sr": 0, "classifier": 1}


def run_training(config: TrainConfig, *, resume: bool = True, progress: bool = True,
                 sources: Mapping[str, SourceLoader] | None = None) -> TrainResult:
    """Both stages end to end; writes the EMA weights, model card, split record and logs.

    ``sources``: loaders of sources models/ cannot load alone (see :func:`load_source`)."""
    from models.card import ModelCard, TrainingData
    from models.checkpoint import load_model, save_model
    from models.classifier import SRClassifier
    from models.evaluate import assert_held_out
    from models.profiles import get_profile

    for spec in (config.train, config.validation):
        _loader_of(spec, sources)  # a source nobody can load fails before any work
    t0 = time.perf_counter()
    set_threads(config.threads)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)

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
    model.to(device)

    state: dict[str, Any] | None = None
    if ckpt_path.exists() and resume:
        state = load_training_state(ckpt_path)
        if state.get("config") != config_digest(config):
            raise CheckpointResumeError(
                f"{ckpt_path} was written by a different config; delete it or pass --fresh to start over"
            )
        model.load_state_dict(state["model"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        done = (state["stage_order"], state["epoch"])
        log.rows = [r for r in EpochLog.read(log.path_json) if (_STAGE_ORDER[r["stage"]], r["epoch"]) <= done]
    elif ckpt_path.exists():
        ckpt_path.unlink()

    base_state = lambda stage_order, epoch: {  # noqa: E731
        "config": config_digest(config), "stage_order": stage_order, "epoch": epoch,
        "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
    }
    with _progress() if progress else _NoProgress() as bar:
        if need_windows:
            _sr_stage(model, train_src, config, device, gen, state, ckpt_path, log, bar, base_state)
        ema = _classifier_stage(model, train_src, val_src, config, device, gen, state, ckpt_path, log, bar, base_state)

    final = ema.module
    split_path = Path(config.output_dir) / f"{config.name}.split.json"
    split = {
        "train_ids": sorted(train_src.ids), "train_groups": sorted(set(train_src.groups)),
        "validation_groups": sorted(set(val_src.groups)), "split_by": "group",
    }
    atomic_write_text(split_path, json.dumps(split, indent=0))
    seconds = elapsed_since(t0)
    last = log.rows[-1]
    card = ModelCard.for_profile(
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
    weights = Path(config.output_dir) / f"{config.name}.safetensors"
    card = save_model(final.cpu(), card, weights, half=config.save_half)
    for src, suffix in ((log.path_json, ".metrics.json"), (log.path_csv, ".metrics.csv")):
        atomic_write_text(Path(config.output_dir) / f"{config.name}{suffix}", Path(src).read_text())
    return TrainResult(weights, card, Path(config.output_dir) / f"{config.name}.metrics.json", seconds, split_path)


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, *a, **k) -> int:
        return 0

    def update(self, *a, **k) -> None:
        return None


def _sr_stage(model, source, config: TrainConfig, device, gen, state, ckpt_path, log, bar, base_state) -> None:
    cfg = config.sr
    sr = model.sr_model
    scale = model.profile.scale
    start = 0
    opt = torch.optim.Adam(sr.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    perceptual = PerceptualLoss(cfg.vgg19_weights).to(device) if cfg.vgg19_weights else None
    disc = Discriminator().to(device) if perceptual is not None else None
    d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.9, 0.99)) if disc is not None else None
    if state is not None:
        if state["stage_order"] > 0:
            return  # SR stage finished before the interruption
        opt.load_state_dict(state["optimizer"])
        if disc is not None and "disc" in state:
            disc.load_state_dict(state["disc"])
            d_opt.load_state_dict(state["d_optimizer"])
        start = state["epoch"] + 1
    n = len(source)
    steps = cfg.steps_per_epoch or max(n // cfg.batch_size, 1)
    task = bar.add_task("SR stage", total=cfg.epochs * steps, info="", completed=start * steps)
    for epoch in range(start, cfg.epochs):
        t = time.perf_counter()
        sr.train().requires_grad_(True)
        losses = []
        for _ in range(steps):
            idx = torch.randint(0, n, (cfg.batch_size,), generator=gen).numpy()
            lr = to_model_input(torch.from_numpy(lr_images(source, idx)))
            ref = sr_reference(torch.from_numpy(ref_windows(source, idx)), scale, lr.shape[-1])
            lr_c, ref_c = random_crops(lr, ref, cfg.crop, scale, gen)
            lr_c, ref_c = lr_c.to(device), ref_c.to(device)
            out = sr(lr_c)
            l1 = F.l1_loss(out, ref_c)
            if perceptual is None:
                loss = l1
            else:
                d_loss, g_loss = relativistic_losses(disc(ref_c), disc(out))
                loss = cfg.l1_weight * l1 + cfg.perceptual_weight * perceptual(out, ref_c) + cfg.gan_weight * g_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if disc is not None:
                d_loss, _ = relativistic_losses(disc(ref_c), disc(out.detach()))
                d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                d_opt.step()
            losses.append(float(l1.detach()))
            bar.update(task, advance=1, info=f"L1 {losses[-1]:.4f}")
        log.add({"stage": "sr", "epoch": epoch, "train_l1": float(np.mean(losses)), "seconds": elapsed_since(t)})
        st = base_state(0, epoch) | {"model": model.state_dict(), "optimizer": opt.state_dict()}
        if disc is not None:
            st |= {"disc": disc.state_dict(), "d_optimizer": d_opt.state_dict()}
        save_training_state(ckpt_path, st)
    sr.eval()


def _classifier_stage(model, train_src, val_src, config: TrainConfig, device, gen, state, ckpt_path, log, bar, base_state):
    cfg = config.classifier
    if cfg.freeze_sr:
        model.freeze_sr()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = build_scheduler(opt, cfg.warmup_epochs, cfg.epochs)
    ema = build_ema(model, cfg.ema_decay, cfg.ema_warmup)
    start = 0
    if state is not None and state["stage_order"] == 1:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        ema.load_state_dict(state["ema"])
        start = state["epoch"] + 1
    loss_fn = make_loss(cfg.mode, cfg.label_smoothing)
    eval_loss = make_loss(cfg.mode, 0.0)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    train_targets = torch.from_numpy(np.asarray(train_src.targets))
    val_targets = torch.from_numpy(np.asarray(val_src.targets))
    keep = train_targets.sum(1) > 0  # patches with only dropped BigEarthNet labels teach nothing
    train_index = torch.nonzero(keep).flatten()

    side = model.profile.input_size
    cache_bytes = (len(train_src) + len(val_src)) * 3 * side * side * 2
    cached = cfg.freeze_sr and (cfg.sr_cache == "always" or (cfg.sr_cache == "auto" and cache_bytes < 2 * 1024**3))
    if cached:
        task = bar.add_task("SR cache", total=2, info=f"{len(train_src) + len(val_src)} patches", completed=0)
        train_x = classifier_inputs(model, train_src, device)
        bar.update(task, advance=1)
        val_x = classifier_inputs(model, val_src, device)
        bar.update(task, advance=1)

    def inputs(src, x_cache, idx: Tensor) -> Tensor:
        if cached:
            return x_cache[idx].to(device, torch.float32)
        with torch.no_grad():
            lr = to_model_input(torch.from_numpy(lr_images(src, idx.numpy()))).to(device)
            return model.classifier_input(lr)

    steps = math.ceil(len(train_index) / cfg.batch_size)
    task = bar.add_task("classifier", total=cfg.epochs * steps, info="", completed=start * steps)
    for epoch in range(start, cfg.epochs):
        t = time.perf_counter()
        model.train()
        if model.sr_model is not None and cfg.freeze_sr:
            model.sr_model.eval()
        losses, correct, seen = [], 0, 0
        for b in batches(len(train_index), cfg.batch_size, gen):
            idx = train_index[b]
            x = inputs(train_src, train_x if cached else None, idx)
            if cfg.augment:
                x = augment(x.cpu(), gen).to(device)
            y = train_targets[idx].to(device)
            logits_holder: list[Tensor] = []

            def forward(inp: Tensor) -> Tensor:
                logits = model.classify(inp)[0]
                logits_holder.append(logits.detach())
                return logits

            losses.append(train_step(forward, params, x, y, opt, loss_fn, scaler, cfg.grad_clip))
            ema.update_parameters(model)
            correct += int((logits_holder[0].argmax(1) == y.argmax(1)).sum())
            seen += len(idx)
            bar.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.epochs} loss {losses[-1]:.3f}")
        lr_now = opt.param_groups[0]["lr"]
        sched.step()
        val = _validate(ema.module, val_src, val_x if cached else None, val_targets, inputs, eval_loss, cfg, device)
        log.add({"stage": "classifier", "epoch": epoch, "lr": lr_now, "train_loss": float(np.mean(losses)),
                 "train_accuracy": correct / max(seen, 1), **val, "seconds": elapsed_since(t)})
        save_training_state(ckpt_path, base_state(1, epoch) | {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "ema": ema.state_dict(),
        })
    return ema


@torch.no_grad()
def _validate(model, src, x_cache, targets: Tensor, inputs, loss_fn, cfg: ClassifierStage, device) -> dict[str, float]:
    model.eval()
    logits = []
    for idx in batches(len(src), 128, None):
        logits.append(model.classify(inputs(src, x_cache, idx))[0].float().cpu())
    out = torch.cat(logits)
    keep = targets.sum(1) > 0
    loss = float(loss_fn(out[keep], targets[keep]))
    if cfg.mode == "single":
        acc = float((out[keep].argmax(1) == targets[keep].argmax(1)).float().mean())
    else:
        acc = float(((out[keep].sigmoid() >= 0.5) == targets[keep].bool()).all(1).float().mean())
    return {"val_loss": loss, "val_accuracy": acc}
