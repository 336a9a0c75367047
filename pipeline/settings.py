"""Every setting of a map run, declared once.

:class:`MapSettings` holds what decides a map and how it is computed: where the scenes come
from, the model, the grid, the detail recipe, the cluster. Each field is declared here once, with
its default, its bounds and its help text; from it come

* the options of ``landcover map`` (:func:`cli_options`: flag, help, default shown in ``--help``),
* the keys of a region file (``workflows.region.Region`` inherits the model),
* the provenance of every map (``item.json`` records :meth:`MapSettings.provenance`),
* the plan display (``--plan`` lists the settings that differ from their defaults).

:class:`MapConfig` adds what only a one-off map has: its AOI, its output folder and its dates.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

Source = Literal["local", "earth-search", "planetary-computer"]
Device = Literal["auto", "cpu", "cuda"]
Blend = Literal["box", "hann", "gaussian"]

DEFAULT_WINDOW_DAYS = 90
# Sentinel-2A's launch: the start of the archive, the open start for the offline demo world.
ARCHIVE_START = date(2015, 6, 23)
# The type of a validation error whose message is a whole user-facing line (the CLI prints it as is).
WHOLE_LINE_ERROR = "landcover_whole_line"
_CRS_FIX = "e.g. EPSG:32633 (or omit --crs for the AOI's UTM zone)"


def setting(default: Any, help: str, *, region: bool = True, metavar: str | None = None, **bounds: Any) -> Any:
    """A field of the settings: its default, its help text (the CLI's and the docs'), whether a
    region file takes it as a key, and its bounds (pydantic ``ge``/``gt``/``le``)."""
    return Field(default, description=help, json_schema_extra={"region": region, "metavar": metavar}, **bounds)


class MapSettings(BaseModel):
    """What decides a map and how it is computed; shared by ``landcover map`` and region files."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    source: Source = setting(
        "local", "Where the scenes come from: local (the offline demo world, served by the run itself), "
        "earth-search (Element 84 v1) or planetary-computer.")
    stac_url: str | None = setting(None, "Override the source's STAC API URL.", metavar="URL")
    collection: str = setting(
        "sentinel-2-l2a", "STAC collection: sentinel-2-l2a, or sentinel-2-c1-l2a (Earth Search Collection 1).")
    max_cloud: float = setting(60.0, "Max scene cloud cover in percent.", ge=0, le=100)
    max_items_per_tile: int = setting(3, "Best scenes kept per MGRS tile.", ge=1, le=50)
    model: Path | None = setting(
        None, "Weights (.safetensors/.pt) with their card JSON beside them, or the repo id of an installed model "
        "(`landcover model fetch/import`); default: the bundled multi-band demo weights.", metavar="PATH|REPO_ID")
    scheduler: str | None = setting(
        None, "Address of an existing dask scheduler, e.g. tcp://host:8786 (default: a local cluster).", metavar="URL")
    workers: int | None = setting(None, "Local cluster worker processes (default: one per core).", ge=1)
    crs: str | None = setting(None, "Output CRS, a projected CRS in metres (default: the UTM zone of the AOI centre).")
    resolution: float = setting(10.0, "Pixel size of the grid the scenes are composited on, in metres.", gt=0)
    read_resolution: float | None = setting(
        None, "Metres to read and composite the COGs at, a whole multiple of the resolution (default: the overview "
        "level the model's input pixel allows: 20 for the seed-family models, 10 for reBEN).", gt=0)
    # Detail (pipeline.detail): cells smaller than the model's window, from overlapping windows
    # evaluated densely and blended. Defaults measured on the demo truth (benchmarks/detail.py);
    # --cell-size 1200 --stride 120 --no-dense is the map of one window per 1.2 km cell.
    cell_size: float | None = setting(
        None, "Output cell size in metres (default: 100 for classifiers; a per-pixel model's own resolution, 10 m for "
        "Dynamic World, where a coarser cell takes the mean probability of its pixels; 1200: one cell per 1.2 km "
        "window).", gt=0)
    stride: int | None = setting(None, "Pixels between window origins (default: a third of the window, 40).", gt=0)
    dense: bool = setting(True, "Apply the classifier head at every position of its last feature map.")
    blend: Blend = setting("gaussian", "Weight of a window's pixels when overlapping windows are blended.")
    cells_per_chunk: int | None = setting(
        None, "Block side in cells (default: about 9.6 km of ground, 19.2 km when classified from 20 m reads).",
        ge=1, le=4096)
    min_clear: float = setting(0.5, "Cells (and windows) with a smaller clear fraction become nodata.", ge=0, le=1)
    device: Device = setting("auto", "Where the model runs: auto, cpu or cuda.")
    batch_size: int | None = setting(None, "Inference batch size (default: adaptive).", ge=1)
    qa_grid: float = setting(
        1000.0, "Side in metres of the squares of the GeoPackage's `patches` QA layer (majority class, top-3 "
        "classes, clear fraction of the cells inside); 0: one square per map cell, a layer as large as the map.", ge=0)
    # 0.5 ha: 50 pixels of a 10 m map, so a country's map is not traced into millions of one-pixel
    # polygons; on a 100 m grid one cell is already 1 ha, so no cell of a coarse map is erased.
    mmu: float = setting(
        0.5, "Minimum mapping unit of the GeoPackage's land-cover polygons, in hectares: patches of one class "
        "smaller than it are merged into their largest neighbour before the map is traced (50 px of a 10 m map; "
        "nothing on a 100 m grid, whose cells are 1 ha); 0: no sieve. The rasters are never sieved.", ge=0)
    save_composite: bool = setting(
        False, "Also write composite.tif, the cloud-free reflectance the map was classified from (a QGIS backdrop, "
        "and the --imagery of `landcover active-learn`).")

    @field_validator("stac_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"{value!r} is not an address; write e.g. tcp://host:8786")
        return value

    @field_validator("collection")
    @classmethod
    def _collection(cls, value: str) -> str:
        from pipeline.errors import SearchError
        from pipeline.search import check_collection

        try:
            return check_collection(value)
        except SearchError as exc:  # refused before any work, not when the run searches
            raise PydanticCustomError(WHOLE_LINE_ERROR, "{line}", {"line": str(exc)}) from None

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
    def _read_resolution(self) -> MapSettings:
        problem = read_resolution_problem(self.read_resolution, self.resolution)
        if problem:
            raise PydanticCustomError(WHOLE_LINE_ERROR, "{line}", {"line": f"--read-resolution {problem}"})
        return self

    def provenance(self) -> dict[str, Any]:
        """Every setting as recorded in a map's provenance (JSON types)."""
        return self.model_dump(mode="json")

    def changed(self) -> dict[str, Any]:
        """The settings that differ from their defaults (the plan display lists these)."""
        return {name: value for name, value in self.provenance().items()
                if value != _json_default(type(self), name)}


def _json_default(model: type[BaseModel], name: str) -> Any:
    default = model.model_fields[name].default
    return str(default) if isinstance(default, Path) else default


class MapConfig(MapSettings):
    """One map run: the settings, plus its AOI, output folder and date window. Recorded verbatim
    in the output's provenance."""

    aoi: Path | dict[str, Any] = Field(description="AOI GeoJSON file, or the GeoJSON itself (EPSG:4326)")
    out: Path = Field(description="output folder")
    start: date | None = Field(None, description="first acquisition date (default: 90 days before the end; "
                               "for the offline demo world, the start of the archive)")
    end: date | None = Field(None, description="last acquisition date (default: today)")
    overwrite: bool = Field(False, description="replace a previous map in the output folder")
    demo_layout: tuple[int, int] | None = Field(
        None, description="(columns, rows) of the offline demo world served for source 'local'; None = its two tiles"
    )

    @model_validator(mode="after")
    def _window(self) -> MapConfig:
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self

    @property
    def settings(self) -> MapSettings:
        """The settings alone (what a region file could say)."""
        return MapSettings(**{name: getattr(self, name) for name in MapSettings.model_fields})

    @property
    def aoi_name(self) -> str:
        return self.aoi.name if isinstance(self.aoi, Path) else "inline AOI"

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


def region_keys() -> dict[str, Any]:
    """The settings a region file takes as keys, with their fields."""
    return {name: field for name, field in MapSettings.model_fields.items()
            if (field.json_schema_extra or {}).get("region", True)}


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

    Checked when the settings are made, so a bad --crs is refused before any work starts rather
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
