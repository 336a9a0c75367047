"""The one configuration object of a map run, passed down to every stage."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Source = Literal["local", "earth-search", "planetary-computer"]
Device = Literal["auto", "cpu", "cuda"]

DEFAULT_WINDOW_DAYS = 90
# Sentinel-2A's launch: the start of the archive, the open start for the offline demo world.
ARCHIVE_START = date(2015, 6, 23)


class MapConfig(BaseModel):
    """Everything that decides a map. Recorded verbatim in the output's provenance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    aoi: Path
    out: Path
    source: Source = "local"
    stac_url: str | None = Field(None, description="override the source's STAC API URL")
    collection: str = "sentinel-2-l2a"
    start: date | None = None
    end: date | None = None
    max_cloud: float = Field(60.0, ge=0, le=100)
    max_items_per_tile: int = Field(3, ge=1, le=50)
    model: Path | None = Field(None, description="weights file; default: the bundled demo weights")
    scheduler: str | None = Field(None, description="address of an existing dask scheduler")
    workers: int | None = Field(None, ge=1, description="LocalCluster worker processes")
    crs: str | None = None
    resolution: float = Field(10.0, gt=0)
    stride: int | None = Field(None, gt=0, description="cell size in pixels; default = window")
    cells_per_chunk: int = Field(8, ge=1, le=64)
    min_clear: float = Field(0.5, ge=0, le=1)
    device: Device = "auto"
    batch_size: int | None = Field(None, ge=1)
    overwrite: bool = False
    save_composite: bool = Field(False, description="also write composite.tif, the reflectance the map was classified from")

    @field_validator("stac_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _window(self) -> MapConfig:
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self

    def date_window(self, today: date | None = None) -> tuple[date, date]:
        """The search window. Open ends: the last 90 days up to today, except for the offline
        demo world (`local`), whose whole archive is searched."""
        end = self.end or (today or date.today())
        if self.start:
            start = self.start
        elif self.source == "local":
            start = ARCHIVE_START
        else:
            start = end - timedelta(days=DEFAULT_WINDOW_DAYS)
        return start, end
