"""Training the timm family: a classifier on multi-band windows, multi-label, in the reBEN layout.

What ``make weights-multiband`` runs: a small timm network on the ten L2A bands of the synthetic
demo world (reBEN's bands, window and class order), so the path the published BigEarthNet v2
models take - any bands, standardised DN, sigmoid outputs, classes mapped by name - runs offline
end to end. The weights are saved with the published key layout (``model.vision_encoder.*``)
and a card that says they are synthetic.

Windows come from a loader the caller injects (``window_sources``, keyed by a DataSpec's
source): models/ reads no scenes itself. Standardisation statistics are computed on the training
windows; the input the network sees is built by the same function the predictor uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from torch.nn import functional as F

from models.bands import common_name
from models.card import (
    ModelCard,
    StandardNormalisation,
    TimmArchitecture,
    TrainingData,
    card_path,
)
from models.classes import CLASS_NAMES
from models.errors import LandcoverError
from models.files import atomic_write_text, sha256_file
from models.metrics import multi_label_metrics
from models.preprocess import standardise_reflectance
from models.reben import BANDS_V02, REBEN_CLASSES, TimmClassifier
from models.splits import assert_held_out
from models.tensors import write_safetensors
from models.training.config import DataSpec
from models.training.schedule import build_scheduler
from models.training.state import BestWeights
from models.training.trainer import NoProgress, Session, Stage, batches, run_stage


class TimmTrainError(LandcoverError):
    """A timm-family training run cannot start."""


@dataclass
class WindowSet:
    """Reflectance windows of some bands with multi-hot labels (19 classes in map-code order)."""

    windows: np.ndarray  # float32 (N, C, H, W) reflectance, NaN where never clear
    targets: np.ndarray  # float32 (N, 19) multi-hot, CLASS_NAMES order
    ids: list[str]
    groups: list[str]

    def __len__(self) -> int:
        return len(self.ids)


WindowLoader = Callable[[DataSpec, Sequence[str]], WindowSet]


def select_groups(data: WindowSet, keep: Sequence[str] | None, drop: Sequence[str] = ()) -> WindowSet:
    """Windows whose group starts with one of ``keep`` (all when None) and with none of ``drop``."""
    mask = np.array([(keep is None or any(g.startswith(k) for k in keep)) and not any(g.startswith(d) for d in drop)
                     for g in data.groups], dtype=bool)
    idx = np.flatnonzero(mask)
    return WindowSet(data.windows[idx], data.targets[idx], [data.ids[i] for i in idx], [data.groups[i] for i in idx])


class TimmTrainConfig(BaseModel):
    """A YAML training config with ``family: timm`` (see models/configs/demo-multiband.yaml)."""

    model_config = ConfigDict(extra="forbid")

    family: Literal["timm"] = "timm"
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    model_name: str = "mobilenetv3_small_100"
    bands: list[str] = Field(default_factory=lambda: list(BANDS_V02))
    seed: int = 0
    train: DataSpec
    validation: DataSpec
    epochs: int = Field(30, ge=1)
    warmup_epochs: int = Field(2, ge=0)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(32, ge=1)
    drop_rate: float = Field(0.1, ge=0, lt=1)
    threshold: float = Field(0.5, gt=0, lt=1)
    output_dir: Path = Path("models/weights")
    save_half: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)
    synthetic: bool = False
    description: str = ""


@dataclass
class TimmTrainResult:
    weights: Path
    card: ModelCard
    seconds: float


def dn_statistics(windows: np.ndarray, dn_scale: float = 10000.0) -> tuple[list[float], list[float]]:
    """Per-band mean and std of the clear pixels' DN (reflectance x ``dn_scale``, no BOA offset)."""
    dn = windows.transpose(1, 0, 2, 3).reshape(windows.shape[1], -1).astype(np.float64) * dn_scale
    mean = np.nanmean(dn, axis=1)
    std = np.nanstd(dn, axis=1)
    return [round(float(m), 2) for m in mean], [round(float(max(s, 1.0)), 2) for s in std]


def to_output_order(targets_map_order: np.ndarray) -> np.ndarray:
    """(N, 19) in map-code order -> reBEN's alphabetical output order."""
    return targets_map_order[:, [CLASS_NAMES.index(name) for name in REBEN_CLASSES]]


def augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random flips and quarter turns per batch (land cover has no up)."""
    k = int(torch.randint(0, 4, (1,), generator=generator))
    if torch.rand(1, generator=generator) < 0.5:
        x = x.flip(-1)
    return torch.rot90(x, k, dims=(-2, -1))


def _inputs(data: WindowSet, norm: StandardNormalisation, size: int) -> Tensor:
    return standardise_reflectance(data.windows, norm.mean, norm.std, dn_scale=norm.dn_scale,
                                   offset_dn=norm.offset_dn, size=size).to(torch.float16)


@torch.inference_mode()
def predict_probs(model: TimmClassifier, x: Tensor, device: torch.device, batch_size: int = 64) -> np.ndarray:
    model.eval()
    out = [torch.sigmoid(model(x[i:i + batch_size].to(device, torch.float32))).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def load_windows(spec: DataSpec, bands: Sequence[str], window_sources: Mapping[str, WindowLoader] | None) -> WindowSet:
    loader = (window_sources or {}).get(spec.source)
    if loader is None:
        raise TimmTrainError(
            f"source {spec.source!r} gives no multi-band windows here; the timm family trains on the demo world "
            "(source: demo-world) through `landcover train`"
        )
    data = loader(spec, bands)
    if len(data) == 0:
        raise TimmTrainError(f"the {spec.source} source yields no windows: check its settings")
    return data


def run_timm_training(config: TimmTrainConfig, *, window_sources: Mapping[str, WindowLoader] | None = None,
                      progress: bool = True) -> TimmTrainResult:
    """Train, keep the epoch with the best validation macro mAP, write weights + card + metrics."""
    t0 = time.perf_counter()
    bands = [common_name(b) for b in config.bands]
    train, val = (load_windows(s, bands, window_sources) for s in (config.train, config.validation))
    assert_held_out(set(train.ids), set(train.groups), val.ids, val.groups, split_by_group=True)
    session = Session.start(config.seed, config.device, config.threads)

    mean, std = dn_statistics(train.windows)
    norm = StandardNormalisation(mean=mean, std=std, boa_offset="removed",
                                 description="(DN - mean) / std per band on L2A DN without the +1000 BOA offset; "
                                             "statistics of the training windows")
    size = train.windows.shape[-1]
    arch = TimmArchitecture(model_name=config.model_name, channels=len(bands), image_size=size, drop_rate=config.drop_rate)
    model = TimmClassifier(arch, len(REBEN_CLASSES)).to(session.device)
    stage = TimmTrainer(model, _inputs(train, norm, size), torch.from_numpy(to_output_order(train.targets)),
                        _inputs(val, norm, size), to_output_order(val.targets), config, session, progress)
    run_stage(stage, 0, config.epochs, NoProgress())  # an epoch is a few seconds: a line per epoch says enough

    model.load_state_dict(stage.best.state)
    model.cpu()
    probs_map_order = np.zeros_like(val.targets)
    probs_map_order[:, [CLASS_NAMES.index(n) for n in REBEN_CLASSES]] = predict_probs(model, stage.x_val, torch.device("cpu"))
    metrics = multi_label_metrics(val.targets, probs_map_order, split="validation", threshold=config.threshold,
                                  groups=val.groups)
    card = ModelCard(
        family="timm", profile=config.name, architecture=arch, task="multi-label", threshold=config.threshold,
        classes=list(REBEN_CLASSES), bands=bands, resampling="nearest", normalisation=norm,
        patch_size=size, window_px=size, ground_footprint_m=size * 10.0,
        training_data=TrainingData(description=config.description or config.name, synthetic=config.synthetic),
        metrics={
            "validation_n": metrics.n, "validation_macro_map": round(metrics.macro_map or 0.0, 4),
            "validation_micro_map": round(metrics.micro_map or 0.0, 4), "validation_macro_f1": round(metrics.macro_f1, 4),
            "validation_micro_f1": round(metrics.micro_f1, 4), "validation_exact_match": round(metrics.accuracy, 4),
            "best_epoch": stage.best.epoch + 1, "epochs": config.epochs, "train_n": len(train),
        },
    )
    weights = save_timm_model(model, card, Path(config.output_dir) / f"{config.name}.safetensors", half=config.save_half)
    out = Path(config.output_dir)
    atomic_write_text(out / f"{config.name}.metrics.json", json.dumps(
        {"history": stage.history, "validation": metrics.model_dump(mode="json")}, indent=2) + "\n")
    return TimmTrainResult(weights, ModelCard.read(card_path(weights)), time.perf_counter() - t0)


class TimmTrainer(Stage):
    """Multi-label BCE with flips and quarter turns, AdamW with warm-up then cosine to 2 %;
    keeps the weights of the epoch with the best validation macro mAP (``self.best``)."""

    label = "timm"
    timed = False  # metrics.json holds no timings, so the same seed writes the same file

    def __init__(self, model: TimmClassifier, x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: np.ndarray,
                 config: TimmTrainConfig, session: Session, progress: bool) -> None:
        self.model, self.x_train, self.y_train, self.x_val, self.y_val = model, x_train, y_train, x_val, y_val
        self.config, self.session, self.progress = config, session, progress
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, config.warmup_epochs, config.epochs, floor=0.02)
        self.steps_per_epoch = -(-len(x_train) // config.batch_size)
        self.best = BestWeights()
        self.history: list[dict[str, Any]] = []

    def train_epoch(self, epoch: int, advance: Callable[[str], None]) -> dict[str, Any]:
        device, gen = self.session.device, self.session.generator
        self.model.train()
        losses = []
        for idx in batches(len(self.x_train), self.config.batch_size, gen):
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            x = augment(self.x_train[idx].to(device, torch.float32), gen)
            loss = F.binary_cross_entropy_with_logits(self.model(x), self.y_train[idx].to(device))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.detach().item())
            advance(f"loss {losses[-1]:.4f}")
        self.scheduler.step()
        return {"epoch": epoch, "loss": float(np.mean(losses))}

    def validate(self, epoch: int) -> dict[str, Any]:
        from sklearn.metrics import average_precision_score

        probs = predict_probs(self.model, self.x_val, self.session.device)
        present = self.y_val.sum(axis=0) > 0
        return {"val_macro_map": float(average_precision_score(self.y_val[:, present], probs[:, present], average="macro"))}

    def end_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        self.history.append(row)
        if self.progress:
            print(f"epoch {epoch + 1}/{self.config.epochs}: loss {row['loss']:.4f}, "
                  f"validation macro mAP {row['val_macro_map']:.3f}", flush=True)
        self.best.offer(row["val_macro_map"], epoch, self.model)


def save_timm_model(model: TimmClassifier, card: ModelCard, path: Path, *, half: bool = False) -> Path:
    """safetensors in the published layout (``model.vision_encoder.*``) and the card, sha256 filled in."""
    state = model.state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    write_safetensors(state, path, metadata={"format": "reben-timm", "timm_model_name": card.architecture.model_name})
    card = card.model_copy(update={"sha256": sha256_file(path)})
    atomic_write_text(card_path(path), card.model_dump_json(indent=2) + "\n")
    return path


def is_timm_config(path: Path) -> bool:
    """True for a training config that says ``family: timm`` (others are the seed family's)."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False  # models.training.config.load_config reports what is wrong with it
    return isinstance(raw, dict) and raw.get("family") == "timm"


def load_timm_config(path: Path) -> TimmTrainConfig:
    import yaml
    from pydantic import ValidationError

    try:
        return TimmTrainConfig.model_validate(yaml.safe_load(Path(path).read_text()))
    except ValidationError as exc:
        from models.training.config import every_error

        raise TimmTrainError(f"{path}: {every_error(exc, 'models/configs/demo-multiband.yaml')} "
                             "(see models/configs/demo-multiband.yaml)") from None
