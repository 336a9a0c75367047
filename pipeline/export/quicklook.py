"""A PNG preview of the class map: class colours, a legend of the classes present, km axes."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from shapely.geometry.base import BaseGeometry

from models.legend import NODATA_NAME, Legend, bigearthnet_legend
from pipeline.export.summary import ClassStats
from pipeline.mosaic import ClassMap

# Mid grey: the light palette entries (beaches, marine waters) stay distinguishable from it.
NODATA_RGBA = (0.6, 0.6, 0.6, 1.0)
SYNTHETIC_NOTE = "Model trained on synthetic demo data: this is not a real land-cover map"


def class_rgba(legend: Legend | None = None) -> np.ndarray:
    """(256, 4) lookup from code to RGBA in 0..1: the legend's colours; code 0 (nodata) and codes
    the legend does not use grey."""
    table = np.tile(np.asarray(NODATA_RGBA, dtype=np.float64), (256, 1))
    for code, _, rgb in (legend or bigearthnet_legend()).entries():
        table[code, :3] = np.asarray(rgb) / 255.0
    return table


def _outline_rings(aoi: BaseGeometry, geobox: GeoBox) -> list[np.ndarray]:
    with warnings.catch_warnings():
        # odc-geo still calls shapely.ops.transform, deprecated in shapely 2.1; harmless here.
        warnings.simplefilter("ignore", DeprecationWarning)
        projected = Geometry(aoi, "EPSG:4326").to_crs(geobox.crs, resolution="auto").geom
    polygons = getattr(projected, "geoms", [projected])
    return [np.asarray(p.exterior.coords) / 1000.0 for p in polygons if hasattr(p, "exterior")]


def render_quicklook(
    path: Path,
    class_map: ClassMap | np.ndarray,
    geobox: GeoBox,
    stats: list[ClassStats],
    *,
    title: str,
    synthetic_model: bool,
    aoi: BaseGeometry | None = None,
    dpi: int = 100,
    legend: Legend | None = None,
) -> None:
    """Draw the map in metres/1000 of its own CRS so the axes read as distances in km.

    ``class_map``: the map, or its class codes decimated to fit the picture (a large map)."""
    classes = class_map.classes if isinstance(class_map, ClassMap) else np.asarray(class_map)
    rgba = class_rgba(legend)
    left, bottom, right, top = geobox.boundingbox[:4]
    figure = Figure(figsize=(11, 7), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(
        rgba[classes],
        extent=(left / 1000, right / 1000, bottom / 1000, top / 1000),
        interpolation="nearest",
        origin="upper",
    )
    if aoi is not None:
        for ring in _outline_rings(aoi, geobox):
            axes.plot(ring[:, 0], ring[:, 1], color="black", linewidth=1.0)
    axes.set_xlim(left / 1000, right / 1000)
    axes.set_ylim(bottom / 1000, top / 1000)
    axes.set_xlabel(f"Easting (km, {geobox.crs})")
    axes.set_ylabel("Northing (km)")
    axes.ticklabel_format(useOffset=False, style="plain")
    axes.set_aspect("equal")
    cell = abs(geobox.resolution.x)
    axes.set_title(f"{title}\n{geobox.shape[0]} x {geobox.shape[1]} cells of {cell:g} m")

    handles = [
        Patch(facecolor=rgba[s.code], edgecolor="0.3", label=_legend_label(s)) for s in stats
    ] + [Patch(facecolor=NODATA_RGBA, edgecolor="0.3", label=NODATA_NAME)]
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    if synthetic_model:
        figure.suptitle(SYNTHETIC_NOTE, color="darkred", fontsize=12, fontweight="bold")
    # The same words in the PNG's text chunks, for tools that show or index metadata.
    metadata = {"Title": title, "Description": SYNTHETIC_NOTE if synthetic_model else "Land-cover map"}
    figure.savefig(path, format="png", dpi=dpi, metadata=metadata)


def _legend_label(stats: ClassStats) -> str:
    name = "\n".join(textwrap.wrap(stats.name, 34))
    return f"{stats.code:>2} {name} ({stats.percent:.1f}%)"
