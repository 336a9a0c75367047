"""Model card: the JSON beside the weights that says what the numbers mean and where they came from."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.classes import CLASS_NAMES
from models.profiles import Variant, get_profile
from pipeline import __version__
from pipeline.errors import LandcoverError

Task = Literal["single-label", "multi-label"]


class CardError(LandcoverError):
    """A model card cannot be read or does not validate."""


# These two live here, not in models.checkpoint, so a process that only records which weights a
# run uses (the map's client) never imports torch (~0.5 GiB resident).
def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_path(weights: str | os.PathLike[str]) -> Path:
    """The card lives beside the weights: same stem, ``.json``."""
    return Path(weights).with_suffix(".json")


class Normalisation(BaseModel):
    """How reflectance becomes model input (defaults: the seed's preprocessing)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["seed"] = "seed"
    reflectance_clip: tuple[float, float] = (0.0, 1.0)
    uint8_scale: float = 255.0
    resize: Literal["bicubic"] = "bicubic"
    output_range: tuple[float, float] = (-1.0, 1.0)
    description: str = (
        "clip reflectance to [0, 1], x255 to uint8 (truncated), bicubic resize of the window to the "
        "patch size, then x/255*2-1"
    )


class TrainingData(BaseModel):
    model_config = ConfigDict(frozen=True)

    description: str = "unknown"
    synthetic: bool = False


class ModelCard(BaseModel):
    """Everything a run needs to feed a checkpoint correctly and to report what it used."""

    profile: str
    variant: Variant | None = Field(
        default=None, description="SR forward variant the weights need; None for a profile without SR"
    )
    task: Task = "single-label"
    classes: list[str] = Field(default_factory=lambda: list(CLASS_NAMES))
    bands: list[str] = Field(default_factory=lambda: ["red", "green", "blue"])
    normalisation: Normalisation = Field(default_factory=Normalisation)
    patch_size: int = 32
    window_px: int = 120
    ground_footprint_m: float = 1200.0
    training_data: TrainingData = Field(default_factory=TrainingData)
    metrics: dict[str, float | int | str | list[float]] = Field(default_factory=dict)
    sha256: str | None = None
    software_version: str = __version__
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        profile = get_profile(self.profile)
        if profile.super_resolution and self.variant is None:
            raise ValueError(f"profile {self.profile!r} has an SR generator: the card must name its variant")
        if len(self.bands) != 3:
            raise ValueError(f"the network takes 3 bands, the card lists {len(self.bands)}")
        return self

    @classmethod
    def for_profile(cls, profile: str, *, variant: Variant | None = None, **fields: object) -> ModelCard:
        """A card with the profile's default variant and the seed's data conventions."""
        p = get_profile(profile)
        if p.super_resolution:
            variant = variant or p.default_variant
        else:
            variant = None
        return cls(profile=profile, variant=variant, **fields)  # type: ignore[arg-type]

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_text())
        except OSError as e:
            raise CardError(f"cannot read model card {path}: {e.strerror}") from None
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(map(str, err["loc"])) or "card"
            raise CardError(f"model card {path} is invalid at {where}: {err['msg']}; fix or remove it") from None

    @property
    def demo_label(self) -> str:
        """A short provenance label for places where predictions appear."""
        if self.training_data.synthetic:
            return f"{self.profile} model, DEMO weights trained on synthetic data"
        return f"{self.profile} model ({self.training_data.description})"
