"""Model card: the JSON beside the weights that says what the numbers mean and where they came from."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from models import __version__
from models.bands import common_name
from models.classes import CLASS_NAMES
from models.errors import LandcoverError
from models.files import sha256_file  # noqa: F401 - re-exported: pipeline/ and workflows/ import it from here
from models.legend import Legend, bigearthnet_legend
from models.profiles import Variant, get_profile

Task = Literal["single-label", "multi-label"]
# `sr-classifier`: the seed's family (models.classifier, RGB, profiles); `timm`: any timm
# architecture in the layout of the published BigEarthNet v2 (reBEN) checkpoints (models.reben);
# `per-pixel`: a segmentation network whose output is a class-probability map of its input's size
# (Dynamic World's published network, models.dynamicworld), run over blocks with a halo.
Family = Literal["sr-classifier", "timm", "per-pixel"]
ProcessingLevel = Literal["L1C", "L2A"]


class CardError(LandcoverError):
    """A model card cannot be read or does not validate."""


# card_path lives here, not in models.checkpoint, so a process that only records which weights a
# run uses (the map's client) never imports torch (~0.5 GiB resident).
def card_path(weights: str | os.PathLike[str]) -> Path:
    """The card lives beside the weights: same stem, ``.json``."""
    return Path(weights).with_suffix(".json")


def model_cache(root: Path | None = None) -> Path:
    """Where fetched and imported models live: ``$LANDCOVER_CACHE/models`` or ``~/.cache/landcover/models``."""
    if root is not None:
        return Path(root)
    base = os.environ.get("LANDCOVER_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "landcover") / "models"


class SeedNormalisation(BaseModel):
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


class StandardNormalisation(BaseModel):
    """Per-band standardisation of L2A digital numbers: ``(DN - mean) / std``, band by band.

    DN are reflectance x ``dn_scale``. ``boa_offset`` says which DN the statistics were computed
    on: ``removed`` - harmonised to the pre-04.00 convention (no +1000; what BigEarthNet v2 uses),
    ``added`` - every scene with the +1000 offset of processing baseline >= 04.00. The pipeline
    harmonises every scene first, so either is exact whatever baseline a scene has.
    Pixels with no clear observation become the band mean (0 after standardisation).
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["standardise"] = "standardise"
    mean: list[float]
    std: list[float]
    dn_scale: float = Field(10000.0, gt=0)
    boa_offset: Literal["removed", "added"] = "removed"
    resize: Literal["none", "bilinear"] = "none"
    description: str = "(DN - mean) / std per band on L2A DN without the +1000 BOA offset"

    @model_validator(mode="after")
    def _positive(self) -> StandardNormalisation:
        if len(self.mean) != len(self.std):
            raise ValueError(f"{len(self.mean)} means but {len(self.std)} stds")
        if any(s <= 0 for s in self.std):
            raise ValueError("every std must be positive")
        return self

    @property
    def offset_dn(self) -> float:
        return 1000.0 if self.boa_offset == "added" else 0.0


class DynamicWorldNormalisation(BaseModel):
    """Dynamic World's log/percentile normalisation of TOA DN (``models.dynamicworld.normalise_dn``):
    ``x = log(DN * 0.005 + 1); x = (x - p0) / p1; x = exp(5 x - 1); x / (x + 1)`` per band.

    DN = reflectance x ``dn_scale``; the pipeline hands harmonised reflectance (no +1000 offset).
    Pixels with no clear observation are never classified (the map marks them nodata).
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["dynamicworld-log"] = "dynamicworld-log"
    percentiles: list[tuple[float, float]]
    dn_scale: float = Field(10000.0, gt=0)
    description: str = "x = log(DN * 0.005 + 1); x = (x - p0) / p1; x = exp(5 x - 1); x / (x + 1), per band"


Normalisation = Annotated[SeedNormalisation | StandardNormalisation | DynamicWorldNormalisation,
                          Field(discriminator="kind")]


class PixelNetwork(BaseModel):
    """per-pixel family: which network to build and the sizes its input must keep.

    ``size_multiple``: block, halo and block offsets must be multiples of it (a network that
    downsamples by 2 gives other values at odd sizes and offsets). ``halo_px``: pixels of context
    on every side of a block, enough that block edges leave no seam (within float tolerance).
    """

    model_config = ConfigDict(frozen=True)

    network: Literal["dynamicworld"]
    resolution_m: float = Field(10.0, gt=0, description="the ground pixel the network was trained at")
    size_multiple: int = Field(1, ge=1)
    halo_px: int = Field(32, ge=0)
    outputs: Literal["logits"] = "logits"

    @model_validator(mode="after")
    def _halo(self) -> PixelNetwork:
        if self.halo_px % self.size_multiple:
            raise ValueError(f"halo {self.halo_px} px is not a multiple of {self.size_multiple}")
        return self


class Citation(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str
    doi: str | None = None


class TimmArchitecture(BaseModel):
    """What ``timm.create_model`` needs to rebuild the network the weights belong to."""

    model_config = ConfigDict(frozen=True)

    model_name: str
    channels: int = Field(gt=0)
    image_size: int = Field(120, gt=0)
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0


class ModelSource(BaseModel):
    """Where published weights came from."""

    model_config = ConfigDict(frozen=True)

    repo_id: str
    revision: str = "main"
    commit: str | None = None
    url: str | None = None
    licence: str | None = None


class PublishedMetric(BaseModel):
    """A figure the authors published for these weights, with where they said it."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: float
    split: str
    source: str


class TrainingData(BaseModel):
    model_config = ConfigDict(frozen=True)

    description: str = "unknown"
    synthetic: bool = False


class LabelsUsed(BaseModel):
    """The user's labels a fine-tuned model learned from."""

    model_config = ConfigDict(frozen=True)

    path: str
    layer: str
    count: int = Field(ge=0, description="labelled rows used: trained on and held out")
    held_out: int = Field(0, ge=0)
    sha256: str = Field(description="sha256 of the labelled rows as used (id, classes, window centre), in order")


class Lineage(BaseModel):
    """Where a fine-tuned model came from (``landcover finetune``)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the name the user gave the fine-tuned model")
    parent_id: str
    parent_sha256: str
    parent_weights: str = Field(description="file name of the parent's weights")
    root: str = Field(description="stem of the first weights of the lineage, whose training data the replay rebuilds")
    labels: LabelsUsed
    replay: str = Field(description="the data replayed beside the labels")


class ModelCard(BaseModel):
    """Everything a run needs to feed a checkpoint correctly and to report what it used.

    ``classes`` are in the network's output order, by BigEarthNet 19-class name; map codes come
    from the names (:attr:`class_codes`), so a model with another class order maps correctly.
    """

    family: Family = "sr-classifier"
    profile: str
    variant: Variant | None = Field(
        default=None, description="SR forward variant the weights need; None for a profile without SR"
    )
    architecture: TimmArchitecture | None = Field(None, description="timm family: the network to build")
    task: Task = "single-label"
    threshold: float = Field(0.5, gt=0, lt=1, description="multi-label: a class is present at or above this score")
    classes: list[str] = Field(default_factory=lambda: list(CLASS_NAMES),
                               description="the network's outputs in order, by legend name")
    legend: Legend = Field(default_factory=bigearthnet_legend, description="the map's classes: codes, names, colours")
    pixel: PixelNetwork | None = Field(None, description="per-pixel family: the network and its size rules")
    processing_level: ProcessingLevel = Field("L2A", description="the Sentinel-2 product level the model was trained on")
    bands: list[str] = Field(default_factory=lambda: ["red", "green", "blue"])
    resampling: Literal["bilinear", "nearest"] = Field(
        "bilinear", description="how every band is resampled onto the 10 m grid (20 m bands, other UTM zones)"
    )
    normalisation: Normalisation = Field(default_factory=SeedNormalisation)
    patch_size: int = 32
    window_px: int = 120
    ground_footprint_m: float = 1200.0
    training_data: TrainingData = Field(default_factory=TrainingData)
    metrics: dict[str, float | int | str | list[float]] = Field(default_factory=dict)
    published_metrics: list[PublishedMetric] = Field(default_factory=list)
    source: ModelSource | None = None
    licence: str | None = None
    notice: str | None = Field(None, description="attribution the licence requires to travel with the weights")
    citation: Citation | None = None
    sha256: str | None = None
    software_version: str = __version__
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    lineage: Lineage | None = Field(None, description="fine-tuned models: parent, labels used, replay")

    @field_validator("bands")
    @classmethod
    def _band_names(cls, bands: list[str]) -> list[str]:
        names = [common_name(b) for b in bands]
        if len(set(names)) != len(names):
            raise ValueError(f"bands repeat: {bands}")
        return names

    @model_validator(mode="before")
    @classmethod
    def _classes_from_legend(cls, data: object) -> object:
        # A card with its own legend and no class list: the network's outputs are the legend's classes.
        if isinstance(data, dict) and data.get("legend") is not None and "classes" not in data:
            legend = data["legend"]
            legend = legend if isinstance(legend, Legend) else Legend.model_validate(legend)
            data = {**data, "classes": list(legend.names)}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        unknown = [c for c in self.classes if c not in self.legend.names]
        if unknown:
            raise ValueError(f"classes {unknown[:3]} are not in the legend ({self.legend.title})")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes repeat")
        if self.family == "per-pixel":
            if self.pixel is None:
                raise ValueError("a per-pixel card must give its network (pixel.network)")
            if self.normalisation.kind != "dynamicworld-log" or len(self.normalisation.percentiles) != len(self.bands):
                raise ValueError("a per-pixel card needs a dynamicworld-log normalisation with one pair per band")
            return self
        if self.family == "sr-classifier":
            profile = get_profile(self.profile)
            if profile.super_resolution and self.variant is None:
                raise ValueError(f"profile {self.profile!r} has an SR generator: the card must name its variant")
            if len(self.bands) != 3:
                raise ValueError(f"the network takes 3 bands, the card lists {len(self.bands)}")
            if self.normalisation.kind != "seed":
                raise ValueError("the sr-classifier family takes the seed normalisation")
        else:
            if self.architecture is None:
                raise ValueError("a timm-family card must give its architecture (model_name, channels)")
            if self.architecture.channels != len(self.bands):
                raise ValueError(f"the network takes {self.architecture.channels} channels, the card lists "
                                 f"{len(self.bands)} bands")
            if self.normalisation.kind != "standardise" or len(self.normalisation.mean) != len(self.bands):
                raise ValueError("a timm-family card needs a standardise normalisation with one mean/std per band")
        return self

    @property
    def class_codes(self) -> list[int]:
        """Map code of each network output (the legend's), in output order."""
        return [self.legend.classes[self.legend.index(name)].code for name in self.classes]

    @property
    def map_planes(self) -> list[int]:
        """Legend plane of each network output, in output order."""
        return [self.legend.index(name) for name in self.classes]

    def to_map_order(self, probs: np.ndarray) -> np.ndarray:
        """(N, len(classes)) probabilities in output order -> (N, len(legend)) in legend order (0 for
        legend classes the model does not output)."""
        out = np.zeros((len(probs), len(self.legend)), dtype=np.float32)
        out[:, self.map_planes] = probs
        return out

    @property
    def per_pixel(self) -> bool:
        return self.family == "per-pixel"

    def require_windows(self, what: str) -> None:
        """Refuse ``what`` (active learning, fine-tuning) for a per-pixel model: those work on the
        windows and embeddings of classifiers."""
        if self.per_pixel:
            raise CardError(f"{what} works on window classifiers; {self.model_id} is a per-pixel model, for which "
                            f"{what} is not available yet: map with it (`landcover map --model ...`)")

    @property
    def model_id(self) -> str:
        """A short id for logs and provenance: a fine-tuned model's name, the published repo, else profile[/variant]."""
        if self.lineage is not None:
            return self.lineage.name
        if self.source is not None:
            return self.source.repo_id
        if self.family in ("timm", "per-pixel"):
            return self.profile
        return self.profile + (f"/{self.variant}" if self.variant else "")

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
