"""Region definitions: one YAML file per region, validated before any work starts.

A region names an area, where its scenes come from, a search window relative to the run date,
the model, where its maps go and when it runs::

    name: lagoon
    aoi: lagoon.geojson            # a path (relative to this file) or inline GeoJSON
    source: earth-search
    collection: sentinel-2-l2a     # or sentinel-2-c1-l2a (Earth Search Collection 1)
    window: {last_days: 60}        # or {season: {start: "06-01", end: "08-31"}}
    max_cloud: 40
    root: /srv/landcover           # maps go to <root>/<name>/<as-of date>/
    schedule: "0 3 * * 1"          # cron, evaluated in UTC
    scheduler: tcp://host:8786     # optional: an existing dask scheduler (`cluster:` is read too)

Every setting of ``landcover map`` is a key too (cell_size, blend, model, ...), with the same default.
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import LandcoverError
from pipeline.settings import WHOLE_LINE_ERROR, MapConfig, MapSettings, Source

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_MONTH_DAY = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")
# Keys a region file may still spell the old way: the map setting they are.
_RENAMED = {"cluster": "scheduler"}


class RegionError(LandcoverError):
    """A region file cannot be used as written."""


class Season(BaseModel):
    """A recurring window of the year, e.g. summer: ``{start: "06-01", end: "08-31"}``; a season
    whose end comes before its start runs over the new year (``{start: "12-01", end: "02-28"}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str = Field(description="first day, MM-DD")
    end: str = Field(description="last day, MM-DD")

    @field_validator("start", "end")
    @classmethod
    def _month_day(cls, value: str) -> str:
        if not _MONTH_DAY.match(value):
            raise ValueError(f"{value!r} is not a day of the year; write MM-DD, e.g. 06-01")
        date.fromisoformat(f"2024-{value}")  # 2024 is a leap year: 02-29 is a valid season edge
        return value

    def latest(self, as_of: date) -> tuple[date, date]:
        """The most recent occurrence that has started by ``as_of``, cut at ``as_of``."""
        for year in (as_of.year, as_of.year - 1):
            start = _day(year, self.start)
            end = _day(year + (self.end < self.start), self.end)
            if start <= as_of:
                return start, min(end, as_of)
        raise AssertionError("unreachable: last year's season has always started")


def _day(year: int, month_day: str) -> date:
    month, day = map(int, month_day.split("-"))
    try:
        return date(year, month, day)
    except ValueError:  # 02-29 in a common year
        return date(year, month, day - 1)


class Window(BaseModel):
    """The search window, relative to the run's as-of date: exactly one of the two."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    last_days: int | None = Field(None, ge=1, le=36525)
    season: Season | None = None

    @model_validator(mode="after")
    def _one(self) -> Window:
        if (self.last_days is None) == (self.season is None):
            raise ValueError("give exactly one of last_days or season")
        return self

    def dates(self, as_of: date) -> tuple[date, date]:
        if self.last_days is not None:
            return as_of - timedelta(days=self.last_days - 1), as_of
        assert self.season is not None
        return self.season.latest(as_of)


class Region(MapSettings):
    """One region as written in its YAML file (relative paths already resolved): its name, AOI,
    window, output root and schedule, plus any map setting (:class:`pipeline.settings.MapSettings`:
    the same keys, defaults and checks as the options of ``landcover map``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    name: str
    aoi: Path | dict[str, Any] = Field(description="GeoJSON file or inline GeoJSON (EPSG:4326)")
    # A scheduled run names its catalogue: no silent fallback to the offline demo world.
    source: Source
    window: Window
    root: Path = Field(description="output root: maps go to <root>/<name>/<as-of>/")
    schedule: str = Field(description="cron expression (UTC) of when the region is due")
    # Example regions ship disabled: run-due skips them and `landcover run` refuses them until the
    # user has set their root and enabled them.
    enabled: bool = Field(True, description="false: run-due skips the region and `landcover run` refuses it")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} must be lower-case letters, digits, - or _ (it names a folder)")
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression; write five fields, e.g. '0 3 * * 1'")
        return value

    @field_validator("aoi")
    @classmethod
    def _aoi(cls, value: Path | dict[str, Any]) -> Path | dict[str, Any]:
        if isinstance(value, dict) and value.get("type") not in ("FeatureCollection", "Feature", "Polygon", "MultiPolygon"):
            raise ValueError("inline GeoJSON must be a FeatureCollection, Feature, Polygon or MultiPolygon")
        if isinstance(value, Path) and not value.is_file():
            raise ValueError(f"AOI file {value} does not exist; fix the path (relative to the region file)")
        return value

    def map_config(self, out: Path, as_of: date) -> MapConfig:
        """The map run of this region on ``as_of`` (its AOI as written: a file or the GeoJSON itself)."""
        start, end = self.window.dates(as_of)
        settings = {name: getattr(self, name) for name in MapSettings.model_fields}
        return MapConfig(aoi=self.aoi, out=out, start=start, end=end, overwrite=True, **settings)

    def aoi_geojson(self) -> str:
        """The AOI as GeoJSON text (for writing inline AOIs beside the run)."""
        if isinstance(self.aoi, dict):
            return json.dumps(self.aoi, indent=2, sort_keys=True)
        return self.aoi.read_text(encoding="utf-8")


def _resolve(data: dict[str, Any], base: Path) -> dict[str, Any]:
    # Paths in a region file are relative to the file, so a regions folder can move as a whole.
    out = {_RENAMED.get(key, key): value for key, value in data.items()}
    for key in ("aoi", "model", "root"):
        value = out.get(key)
        if isinstance(value, str):
            path = Path(value).expanduser()
            out[key] = (path if path.is_absolute() else base / path).resolve()
    return out


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if not isinstance(p, int)) or "file"
    if first["type"] == "extra_forbidden":
        known = ", ".join(Region.model_fields)
        return f"unknown key {where!r}; the keys are {known}"
    if first["type"] == "missing":
        return f"missing key {where!r}"
    if first["type"] == WHOLE_LINE_ERROR:  # a line naming the CLI option: a region file names the key
        option, _, rest = first["msg"].partition(" ")
        if option.startswith("--"):
            return f"{option[2:].replace('-', '_')}: {rest}"
        return f"{where}: {first['msg']}"
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}"


def parse_region(data: Any, base: Path, source: str = "region") -> Region:
    """Validate a region mapping; paths are resolved against ``base``."""
    if not isinstance(data, dict):
        raise RegionError(f"{source}: a region file must be a YAML mapping of keys (name, aoi, window, ...)")
    try:
        return Region.model_validate(_resolve(data, base))
    except ValidationError as exc:
        raise RegionError(f"{source}: {_one_line(exc)}") from None


def load_region(path: Path) -> Region:
    """Read and validate a region YAML file; every problem is one RegionError line."""
    path = Path(path)
    if not path.is_file():
        raise RegionError(f"region file {path} not found; give the path to a region .yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RegionError(f"{path}: not valid YAML{where}; check the indentation and quoting") from None
    return parse_region(data, path.resolve().parent, str(path))


def region_files(folder: Path) -> list[Path]:
    """The region files of a folder, in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RegionError(f"{folder} is not a folder of region files; give e.g. workflows/regions/")
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
