"""The seed family's training configuration: one YAML file, validated strictly (see models/configs/demo.yaml)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.errors import LandcoverError


class TrainConfigError(LandcoverError):
    """The training configuration is invalid."""


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


def every_error(exc: ValidationError, example: str = "models/configs/demo.yaml") -> str:
    """Every missing or wrong field of a config in one line: ``where: problem; where: problem``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "missing":
            msg = "missing"
        elif err["type"] == "extra_forbidden":
            msg = f"unknown key (check its spelling against {example})"
        else:
            msg = err["msg"]
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


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
        raise TrainConfigError(f"{path}: {every_error(exc)} (see models/configs/demo.yaml; to learn from labels "
                               "use `landcover finetune`)") from None


def config_digest(config: TrainConfig) -> str:
    """Identifies a config in a resumable state: a run resumes only under the config that began it."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]
