"""The one configuration object of a map run, passed down to every stage."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

Source = Literal["local", "earth-search", "planetary-computer"]
Device = Literal["auto", "cpu", "cuda"]

DEFAULT_WINDOW_DAYS = 90
# Sentinel-2A's launch: the start of the archive, the open start for the offline demo world.
ARCHIVE_START = date(2015, 6, 23)
# The type of a validation error whose message is a whole user-facing line (the CLI prints it as is).
WHOLE_LINE_ERROR = "landcover_whole_line"
_CRS_FIX = "e.g. EPSG:32633 (or omit --crs for the AOI's UTM zone)"


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
    read_resolution: float | None = Field(
        None, gt=0, description="metres the COGs are read and composited at, a whole multiple of resolution; "
        "default: the coarsest overview still finer than the model's input pixel",
    )
    # Detail (pipeline.detail): cells smaller than the model's window, from overlapping windows
    # evaluated densely and blended. Defaults measured on the demo truth (benchmarks/detail.py);
    # --cell-size 1200 --stride 120 --no-dense is the map of one window per 1.2 km cell.
    cell_size: float = Field(100.0, gt=0, description="output cell size in metres")
    stride: int | None = Field(None, gt=0, description="pixels between window origins; default: a third of the window")
    dense: bool = Field(True, description="apply the classifier head at every position of its last feature map")
    blend: Literal["box", "hann", "gaussian"] = Field("gaussian", description="weight of a window's pixels when blending")
    cells_per_chunk: int | None = Field(
        None, ge=1, le=4096, description="block side in cells; default: about 9.6 km (19.2 km when classified from 20 m reads)"
    )
    min_clear: float = Field(0.5, ge=0, le=1)
    device: Device = "auto"
    batch_size: int | None = Field(None, ge=1)
    overwrite: bool = False
    save_composite: bool = Field(False, description="also write composite.tif, the reflectance the map was classified from")
    demo_layout: tuple[int, int] | None = Field(
        None, description="(columns, rows) of the offline demo world served for source 'local'; None = its two tiles"
    )

    @field_validator("stac_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("crs")
    @classmethod
    def _crs(cls, value: str | None) -> str | None:
        if value is not None:
            problem = grid_crs_problem(value)
            if problem:
                # Through the context: the value may hold braces (PROJJSON), which a template would parse.
                raise PydanticCustomError(WHOLE_LINE_ERROR, "{line}", {"line": problem})
        return value

    @model_validator(mode="after")
    def _window(self) -> MapConfig:
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        problem = read_resolution_problem(self.read_resolution, self.resolution)
        if problem:
            raise PydanticCustomError(WHOLE_LINE_ERROR, "{line}", {"line": f"--read-resolution {problem}"})
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


def read_resolution_problem(read_resolution: float | None, resolution: float) -> str | None:
    """Why the COGs cannot be read at ``read_resolution`` metres onto a grid of ``resolution``
    (it must be a whole multiple of it), or None if they can."""
    if read_resolution is None:
        return None
    factor = read_resolution / resolution
    if factor >= 1 - 1e-9 and abs(factor - round(factor)) <= 1e-9:
        return None
    return (f"{read_resolution:g} is not a whole multiple of the grid's {resolution:g} m; write e.g. {resolution:g} or "
            f"{2 * resolution:g}, or leave it out to read as the model card allows")


def grid_crs_problem(value: str) -> str | None:
    """Why ``value`` cannot be the map grid's CRS (one line naming the fix), or None if it can.

    Checked when the config is made, so a bad --crs is refused before any work starts rather
    than as a pyproj traceback once the grid is planned.
    """
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(value)
    except CRSError:
        return f"--crs {value} is not a CRS pyproj knows; give an EPSG code of a projected CRS in metres, {_CRS_FIX}"
    units = sorted({axis.unit_name for axis in crs.axis_info})
    if not crs.is_projected or crs.is_compound:
        return (f"--crs {value} is a {crs.type_name} (axes in {', '.join(units)}); the map grid needs a 2D projected CRS "
                f"in metres, {_CRS_FIX}")
    if units != ["metre"]:
        return (f"--crs {value} is in {', '.join(units)}; the map grid needs a projected CRS in metres, {_CRS_FIX}")
    return None
