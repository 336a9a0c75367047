"""Change between two runs of a region: cells whose class differs, as a GeoPackage layer and as
area gained and lost per class.

Both runs map the same region onto the same grid (the grid follows from the AOI and the model
card), so the comparison is cell by cell. A cell that is nodata in either run (clouds, no scene)
is not a change: nothing is known about it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import rasterio.features
from affine import Affine
from shapely.geometry import MultiPolygon, shape

from models.legend import Legend, bigearthnet_legend
from pipeline.export.qgis import categorized_style, to_text
from pipeline.export.vector import GEOMETRY_COLUMN

NODATA = 0
LAYER = "changes"
CHANGES_JSON = "changes.json"
_HA = 10_000.0


@dataclass(frozen=True)
class ClassRaster:
    classes: np.ndarray  # uint8 codes, 0 = nodata
    transform: Affine
    crs: str

    @property
    def cell_area_ha(self) -> float:
        return abs(self.transform.a * self.transform.e) / _HA

    def same_grid(self, other: ClassRaster) -> bool:
        return (self.classes.shape == other.classes.shape and self.transform.almost_equals(other.transform)
                and rasterio.crs.CRS.from_user_input(self.crs) == rasterio.crs.CRS.from_user_input(other.crs))


def read_class_raster(path: Path) -> ClassRaster:
    with rasterio.open(path) as src:
        return ClassRaster(src.read(1), src.transform, src.crs.to_wkt())


def changed_cells(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Cells classified in both runs whose class differs."""
    return (before != NODATA) & (after != NODATA) & (before != after)


def map_legend(run_dir: Path) -> Legend:
    """The legend a map was made with: its item.json's model card's (BigEarthNet-19 for maps made
    before cards carried one)."""
    item = run_dir / "item.json"
    card = json.loads(item.read_text(encoding="utf-8"))["properties"].get("landcover:model_card", {}) if item.is_file() else {}
    return Legend.model_validate(card["legend"]) if card.get("legend") else bigearthnet_legend()


def change_polygons(before: ClassRaster, after: ClassRaster, legend: Legend | None = None) -> gpd.GeoDataFrame:
    """One multipolygon per (from, to) pair of classes, with its area, named by ``legend``."""
    class_name = (legend or bigearthnet_legend()).name
    changed = changed_cells(before.classes, after.classes)
    # One code per transition, so shapes() traces each pair's cells as its own regions.
    pair = before.classes.astype(np.int32) * 256 + after.classes.astype(np.int32)
    parts: dict[int, list] = defaultdict(list)
    counts: dict[int, int] = defaultdict(int)
    for geom, value in rasterio.features.shapes(pair, mask=changed, transform=after.transform, connectivity=4):
        parts[int(value)].append(shape(geom))
    for value, n in zip(*np.unique(pair[changed], return_counts=True)):
        counts[int(value)] = int(n)
    rows = [
        {
            "from_class": value // 256,
            "from_name": class_name(value // 256),
            "to_class": value % 256,
            "to_name": class_name(value % 256),
            "cell_count": counts[value],
            "area_ha": counts[value] * after.cell_area_ha,
            "geometry": MultiPolygon(parts[value]),
        }
        for value in sorted(parts)
    ]
    columns = {"from_class": "int32", "from_name": "object", "to_class": "int32", "to_name": "object",
               "cell_count": "int64", "area_ha": "float64"}
    if not rows:
        empty = {name: pd.Series([], dtype=dtype) for name, dtype in columns.items()}
        return gpd.GeoDataFrame(empty, geometry=gpd.GeoSeries([], crs=after.crs))
    frame = pd.DataFrame(rows)
    geometry = gpd.GeoSeries(frame.pop("geometry"), crs=after.crs)
    return gpd.GeoDataFrame(frame.astype(columns), geometry=geometry)


def change_summary(before: ClassRaster, after: ClassRaster, legend: Legend | None = None) -> dict[str, Any]:
    """Area compared, changed, and gained/lost/net per class of ``legend`` (hectares)."""
    legend = legend or bigearthnet_legend()
    both = (before.classes != NODATA) & (after.classes != NODATA)
    changed = changed_cells(before.classes, after.classes)
    n = 256
    gained = np.bincount(after.classes[changed], minlength=n)
    lost = np.bincount(before.classes[changed], minlength=n)
    area = after.cell_area_ha
    return {
        "compared_ha": float(both.sum() * area),
        "changed_ha": float(changed.sum() * area),
        "classes": [
            {"class_id": code, "class_name": legend.name(code), "gained_ha": float(gained[code] * area),
             "lost_ha": float(lost[code] * area), "net_ha": float((int(gained[code]) - int(lost[code])) * area)}
            for code in sorted(legend.codes) if gained[code] or lost[code]
        ],
    }


def _style_row(now: datetime, legend: Legend | None = None) -> pd.DataFrame:
    return pd.DataFrame([{
        "f_table_catalog": "", "f_table_schema": "", "f_table_name": LAYER, "f_geometry_column": GEOMETRY_COLUMN,
        "styleName": LAYER, "styleQML": to_text(categorized_style(attr="to_class", outline="200,0,0,255", outline_width=0.3,
                                                                     legend=legend)),
        "styleSLD": "", "useAsDefault": True, "description": "cells whose class changed since the previous run, by new class",
        "owner": "", "ui": "", "update_time": pd.Timestamp(now),
    }])


def _temp_beside(path: Path) -> Path:
    # The export's partial-file pattern, so a killed run's leftovers are swept like the export's.
    return path.with_name(f"{path.stem}.{secrets.token_hex(6)}.partial{path.suffix}")


def _replace_atomically(final: Path, write) -> None:
    temp = _temp_beside(final)
    try:
        write(temp)
        os.replace(temp, final)
    finally:
        for leftover in final.parent.glob(f"{temp.name}*"):
            leftover.unlink(missing_ok=True)


def write_changes_layer(gpkg: Path, changes: gpd.GeoDataFrame, *, now: datetime | None = None,
                        legend: Legend | None = None) -> None:
    """Put the ``changes`` layer (and its default style) into a copy of ``gpkg`` and rename the
    copy over it: the file at the final name is never modified in place (it may be a hard link
    to an earlier run's file)."""
    def write(temp: Path) -> None:
        shutil.copyfile(gpkg, temp)
        pyogrio.write_dataframe(changes, temp, layer=LAYER, driver="GPKG", geometry_type="MultiPolygon",
                                promote_to_multi=True)
        styles = pyogrio.read_dataframe(temp, layer="layer_styles", read_geometry=False)
        styles = styles[styles["f_table_name"] != LAYER]
        styles = pd.concat([styles, _style_row(now or datetime.now(UTC), legend)], ignore_index=True)
        pyogrio.write_dataframe(styles, temp, layer="layer_styles", driver="GPKG", layer_options={"FID": "id"})

    _replace_atomically(gpkg, write)


def write_json_atomically(path: Path, content: Any) -> None:
    _replace_atomically(path, lambda temp: temp.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8"))


def record_changes(run_dir: Path, previous_tif: Path | None, previous_as_of: str | None) -> dict[str, Any]:
    """Compare ``run_dir/landcover.tif`` with the previous run's and write the ``changes`` layer,
    ``changes.json`` and a ``changes`` section of ``summary.json``. Returns that section."""
    current = read_class_raster(run_dir / "landcover.tif")
    legend = map_legend(run_dir)
    if previous_tif is None:
        report: dict[str, Any] = {"previous": None, "note": "first run of the region: nothing to compare"}
        layer = change_polygons(current, current, legend)  # empty, with the layer's schema
    else:
        previous = read_class_raster(previous_tif)
        if not previous.same_grid(current):
            report = {"previous": previous_as_of, "note": "the previous run used another grid (AOI or model changed)"}
            layer = change_polygons(current, current, legend)
        else:
            report = {"previous": previous_as_of, **change_summary(previous, current, legend)}
            layer = change_polygons(previous, current, legend)
    write_changes_layer(run_dir / "landcover.gpkg", layer, legend=legend)
    write_json_atomically(run_dir / CHANGES_JSON, report)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    summary["changes"] = report
    write_json_atomically(summary_path, summary)
    return report
