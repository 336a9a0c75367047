"""What made a map: recorded in the STAC Item, the raster tags, the summary and the quicklook."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Provenance(BaseModel):
    """Inputs, model and settings of one map run (filled by the orchestration)."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    input_items: list[str] = Field(default_factory=list, description="STAC ids of the scenes used")
    model_id: str = Field(description="profile/variant of the model, e.g. 'small/demo'")
    model_sha256: str = Field(description="sha256 of the weights file")
    model_card: dict[str, Any] = Field(default_factory=dict, description="the model card as JSON")
    software_version: str = Field(description="version of this package")
    parameters: dict[str, Any] = Field(default_factory=dict, description="every setting of the run")
    synthetic_model: bool = Field(description="weights trained on the synthetic demo world")
    notes: list[str] = Field(default_factory=list, description="what a reader of the map must know, e.g. the "
                             "model was trained on another product level than the run fed it")
    window: tuple[str, str] | None = Field(None, description="the acquisition dates searched (ISO), first and last")
    aoi_km2: float | None = Field(None, description="area of the AOI")
    catalogue: str | None = Field(None, description="the STAC API searched, or 'local demo catalogue' for the "
                                  "offline demo world served on loopback (its URL dies with the run)")
    model_source: str | None = Field(None, description="where the weights came from: a repository id or the file name")
    skipped_items: dict[str, str] = Field(default_factory=dict, description="scenes found but not used: id -> why")
    evaluation: dict[str, Any] = Field(default_factory=dict, description="how the model was run over the blocks: "
                                       "per window, or its backbone once per block with a halo (and why)")
