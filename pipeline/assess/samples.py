"""The sample on disk: ``assessment.gpkg`` beside the map, listed in the map's QGIS project.

The GeoPackage holds the layer ``assessment`` (one point per sample: map class, stratum,
inclusion probability, and the ``reference`` field the interpreter fills, through a value-map
form of the legend's names), the table ``assessment_strata`` (the design: stratum sizes, sample
counts, seed) and its default style. Every change writes a whole new copy under a temporary name
and renames it into place, so QGIS or a killed command never sees half a file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pyogrio.errors
from pyproj import CRS

from models.files import atomic_write
from pipeline.assess.design import SampleDesign
from pipeline.assess.legend import Legend
from pipeline.errors import LandcoverError
from pipeline.export import qgis, vector

SAMPLES_GPKG = "assessment.gpkg"
LAYER = "assessment"
STRATA_LAYER = "assessment_strata"
PROJECT = "landcover.qgz"
PROJECT_LAYER_ID = "assessment_samples"  # fixed, so a redrawn sample replaces its layer in the project
_ALIASES = {
    "sample_id": "Sample", "map_class": "Map class (code)", "map_name": "Map class",
    "stratum": "Stratum", "inclusion_prob": "Inclusion probability", "reference": "Reference class",
}


class SamplesError(LandcoverError):
    """The sample file cannot be read or written."""


@dataclass(frozen=True)
class Samples:
    points: gpd.GeoDataFrame
    strata: pd.DataFrame  # one row per stratum, the design's figures (see :func:`strata_table`)


def strata_table(design: SampleDesign) -> pd.DataFrame:
    return pd.DataFrame([
        {
            "stratum": s.code, "name": s.name, "map_cells": s.cells, "units": s.units, "mapped_ha": s.mapped_ha,
            "assumed_users_accuracy": s.assumed_users, "samples": s.n, "inclusion_prob": s.inclusion_probability,
            "seed": str(design.seed), "unit_m": design.unit_m,
            "target_se": float("nan") if design.target_se is None else design.target_se,
        }
        for s in design.strata
    ])


def _legend_entries(legend: Legend) -> list[tuple[int, str, tuple[int, int, int]]]:
    return [(c.code, c.name, c.rgb) for c in legend.classes]


def points_style(legend: Legend):
    return qgis.sample_points_style(
        _legend_entries(legend), aliases=_ALIASES,
        read_only=("sample_id", "map_class", "map_name", "stratum", "inclusion_prob"),
    )


def write_samples(path: Path, samples: Samples, legend: Legend) -> None:
    """Write the whole sample file anew under a temporary name, then rename it over ``path``."""
    points = samples.points.copy()
    points["reference"] = points["reference"].astype("string")  # a text field, empty until labelled
    styles = vector.style_rows({LAYER: (points_style(legend), "assessment sample: map class, value-map form on reference")})

    def write(tmp: Path) -> None:
        tmp.unlink()  # GDAL creates the GeoPackage itself; an empty file is not one
        vector.write_point_geopackage(tmp, {LAYER: points}, {STRATA_LAYER: samples.strata}, styles)

    try:
        atomic_write(path, write)
    except (OSError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise SamplesError(f"could not write {path}: {(str(exc).splitlines() or [type(exc).__name__])[0]}; check free space and permissions") from None


def read_samples(path: Path) -> Samples:
    if not path.is_file():
        raise SamplesError(f"no sample at {path}; draw one with `landcover assess design` or give --samples")
    try:
        layers = {name for name, _ in pyogrio.list_layers(path)}
        if LAYER not in layers:
            raise SamplesError(f"{path} has no layer '{LAYER}'; give the GeoPackage `landcover assess design` wrote")
        points = pyogrio.read_dataframe(path, layer=LAYER)
        strata = pyogrio.read_dataframe(path, layer=STRATA_LAYER, read_geometry=False) if STRATA_LAYER in layers else pd.DataFrame()
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise SamplesError(f"cannot read {path} as a GeoPackage ({(str(exc).splitlines() or [''])[0]})") from None
    missing = [f for f in ("sample_id", "stratum", "map_class", "reference") if f not in points.columns]
    if missing:
        raise SamplesError(f"{path} layer '{LAYER}' lacks the fields {missing}; draw the sample again with `landcover assess design`")
    return Samples(points, strata)


def add_to_project(map_dir: Path, samples_path: Path, legend: Legend, crs: str) -> Path | None:
    """List the sample layer in the map's .qgz (on top, replacing an earlier sample's layer);
    None when the map has no project."""
    project = map_dir / PROJECT
    if not project.is_file():
        return None
    try:
        source = f"./{samples_path.relative_to(map_dir).as_posix()}"
    except ValueError:
        source = str(samples_path.resolve())  # a sample outside the map folder: an absolute path
    layer = qgis.ProjectLayer("assessment samples", f"{source}|layername={LAYER}", "ogr", points_style(legend), "Point", True, PROJECT_LAYER_ID)
    try:
        text = qgis.read_qgz(project)
        root_bounds = _project_bounds(text)
        updated = qgis.with_project_layer(text, layer, CRS.from_wkt(crs), root_bounds)
    except (OSError, ValueError) as exc:
        raise SamplesError(f"cannot update {project} ({exc}); remake the map's project or use {samples_path} on its own") from None
    atomic_write(project, lambda tmp: qgis.write_qgz(tmp, updated))
    return project


def _project_bounds(qgs_text: str) -> tuple[float, float, float, float]:
    """The map canvas extent the project already shows (the map's bounds)."""
    root = ET.fromstring(qgs_text)
    extent = root.find("mapcanvas/extent")
    if extent is None:
        raise ValueError("no map canvas extent")
    return tuple(float(extent.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[return-value]

