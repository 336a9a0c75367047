"""GeoPackage layers: class polygons, the patch grid for QA, scene footprints, default styles.

Every layer is in the map CRS, so they line up with the rasters without reprojection.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio.features
import shapely
from odc.geo.geobox import GeoBox
from shapely.geometry import MultiPolygon, shape

from models.legend import Legend, bigearthnet_legend
from pipeline.export.qgis import (
    categorized_sld,
    categorized_style,
    outline_style,
    to_text,
)
from pipeline.export.summary import SQUARE_METRES_PER_HECTARE, ClassStats, cell_area_m2, class_stats
from pipeline.mosaic import TOP_K, ClassMap

GPKG_VERSION = "1.3"  # QGIS 3.22 warns on 1.4
GEOMETRY_COLUMN = "geom"  # pyogrio's GPKG default; layer_styles rows must name it


def _crs(geobox: GeoBox) -> str:
    return geobox.crs.to_wkt()


def class_polygons(class_map: ClassMap, geobox: GeoBox, stats: Sequence[ClassStats] | None = None) -> gpd.GeoDataFrame:
    """One multipolygon per class present: the class raster's cells dissolved."""
    return dissolved_classes([(class_map, geobox)], geobox, stats or class_stats(class_map, geobox))


def dissolved_classes(
    windows: Iterable[tuple[ClassMap, GeoBox]], geobox: GeoBox, stats: Sequence[ClassStats]
) -> gpd.GeoDataFrame:
    """:func:`class_polygons` of a map read window by window (``geobox`` is the whole map's grid).

    Polygons that end on a window's edge inside the map are kept apart and unioned per class at the
    end, so a class area cut by window edges comes out as one polygon, as from one whole read.

    The windows may be sieved to a minimum mapping unit (:mod:`pipeline.export.sieve`): each row's
    ``cell_count`` and ``area_ha`` are those of its polygons, i.e. of the windows given, while
    ``mean_confidence`` comes from ``stats`` (the class's cells in the unsieved map: a cell merged
    into a neighbour has no probability of its new class).
    """
    parts: dict[int, list] = defaultdict(list)
    seams: dict[int, list] = defaultdict(list)
    counts: dict[int, int] = defaultdict(int)
    left, bottom, right, top = geobox.boundingbox[:4]
    for class_map, box in windows:
        found, n = np.unique(class_map.classes[class_map.valid], return_counts=True)
        for code, count in zip(found.tolist(), n.tolist(), strict=True):
            counts[code] += count
        w_left, w_bottom, w_right, w_top = box.boundingbox[:4]
        # shapes() traces maximal 4-connected runs of equal code, so each class is the union of its parts.
        for geom, value in rasterio.features.shapes(
            class_map.classes, mask=class_map.valid, transform=box.affine, connectivity=4
        ):
            polygon = shape(geom)
            x0, y0, x1, y1 = polygon.bounds
            on_seam = (x0 == w_left > left) or (x1 == w_right < right) or (y0 == w_bottom > bottom) or (y1 == w_top < top)
            (seams if on_seam else parts)[int(value)].append(polygon)
    for code, polygons in seams.items():
        # Not coverage_union: two windows trace a shared edge with different vertices.
        parts[code].extend(shapely.get_parts(shapely.union_all(polygons)))
    by_code = {s.code: s for s in stats}
    cell_ha = cell_area_m2(geobox) / SQUARE_METRES_PER_HECTARE
    rows = [
        {
            "class_id": code,
            "class_name": by_code[code].name,
            "area_ha": float(counts[code] * cell_ha),
            "mean_confidence": by_code[code].mean_confidence,
            "cell_count": counts[code],
            "geometry": MultiPolygon(parts[code]),
        }
        for code in sorted(parts)
    ]
    columns = {"class_id": "int32", "class_name": "object", "area_ha": "float64", "mean_confidence": "float64", "cell_count": "int64"}
    return _frame(rows, columns, geobox)


def patch_cells(class_map: ClassMap, geobox: GeoBox, offset: tuple[int, int] = (0, 0),
                legend: Legend | None = None) -> gpd.GeoDataFrame:
    """One square per valid cell with its class, top-3 classes and clear fraction, named by the
    legend. ``offset``: the (row, col) of the class map's first cell in the whole map, for maps
    written by windows."""
    class_name = (legend or bigearthnet_legend()).name
    rows, cols = np.nonzero(class_map.valid)
    affine = geobox.affine
    x0 = affine.c + cols * affine.a
    y0 = affine.f + rows * affine.e
    x1, y1 = x0 + affine.a, y0 + affine.e
    boxes = shapely.box(np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1))
    data: dict[str, Any] = {
        "row": (rows + offset[0]).astype("int32"),
        "col": (cols + offset[1]).astype("int32"),
        "class_id": class_map.classes[rows, cols].astype("int32"),
        "class_name": [class_name(int(c)) for c in class_map.classes[rows, cols]],
        "confidence": class_map.confidence[rows, cols].astype("float64"),
    }
    for k in range(TOP_K):
        data[f"top{k + 1}_class"] = [class_name(int(c)) for c in class_map.top_codes[k, rows, cols]]
        data[f"top{k + 1}_prob"] = class_map.top_probs[k, rows, cols].astype("float64")
    if class_map.multi_label:
        # Every class the model finds present (score >= the card's threshold), best first.
        present = class_map.labels()[:, rows, cols]
        scores = class_map.probs[:, rows, cols] if class_map.probs is not None else present.astype(np.float32)
        order = np.argsort(-np.nan_to_num(scores, nan=-1.0), axis=0, kind="stable")
        plane_codes = class_map.plane_codes
        codes_per_cell = [[int(plane_codes[c]) for c in order[:, i] if present[c, i]] for i in range(len(rows))]
        data["labels"] = ["; ".join(class_name(c) for c in codes) for codes in codes_per_cell]
        data["label_codes"] = [",".join(map(str, codes)) for codes in codes_per_cell]
        data["label_count"] = np.array([len(codes) for codes in codes_per_cell], dtype="int32")
    data["clear_fraction"] = class_map.clear_fraction[rows, cols].astype("float64")
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(boxes, crs=_crs(geobox)))


def scene_records(scenes: Sequence[Any]) -> list[dict[str, Any]]:
    """Id, date, cloud cover and tile of each input item (pystac.Item or STAC item dict)."""
    records = []
    for scene in scenes:
        item = scene.to_dict() if hasattr(scene, "to_dict") else dict(scene)
        props = item.get("properties", {})
        records.append({
            "item_id": item["id"],
            "datetime": props.get("datetime") or props.get("start_datetime"),
            "cloud_cover": props.get("eo:cloud_cover"),
            "mgrs_tile": _mgrs_tile(props),
            "platform": props.get("platform"),
            "collection": item.get("collection"),
            "geometry": item.get("geometry"),
        })
    return records


def _mgrs_tile(props: Mapping[str, Any]) -> str | None:
    if props.get("s2:mgrs_tile"):
        return str(props["s2:mgrs_tile"])
    zone, band, square = (props.get(f"mgrs:{k}") for k in ("utm_zone", "latitude_band", "grid_square"))
    return f"{int(zone):02d}{band}{square}" if zone and band and square else None


def scene_footprints(records: Sequence[Mapping[str, Any]], geobox: GeoBox) -> gpd.GeoDataFrame:
    """Item footprints (given in lon/lat) reprojected to the map CRS."""
    rows = [
        {**{k: v for k, v in r.items() if k != "geometry"}, "geometry": shape(r["geometry"]) if r["geometry"] else None}
        for r in records
    ]
    columns = {"item_id": "object", "datetime": "object", "cloud_cover": "float64", "mgrs_tile": "object", "platform": "object", "collection": "object"}
    frame = _frame(rows, columns, None, crs="EPSG:4326")
    frame["datetime"] = pd.to_datetime(frame["datetime"], utc=True, format="ISO8601")
    return frame.to_crs(_crs(geobox))


def _frame(rows: list[dict], columns: dict[str, str], geobox: GeoBox | None, crs: str | None = None) -> gpd.GeoDataFrame:
    """A GeoDataFrame with a fixed schema, also when there are no rows (an all-nodata map)."""
    crs = crs or _crs(geobox)
    if not rows:
        empty = {name: pd.Series([], dtype=dtype) for name, dtype in columns.items()}
        return gpd.GeoDataFrame(empty, geometry=gpd.GeoSeries([], crs=crs))
    frame = pd.DataFrame(rows)
    geometry = gpd.GeoSeries(frame.pop("geometry"), crs=crs)
    return gpd.GeoDataFrame(frame.astype(columns), geometry=geometry)


def layer_styles(now: datetime | None = None, legend: Legend | None = None) -> pd.DataFrame:
    """The table QGIS reads default styles from, one row per styled layer, coloured by the legend."""
    now = now or datetime.now(UTC)
    legend = legend or bigearthnet_legend()
    styles = {
        "landcover": (categorized_style(outline="35,35,35,255", outline_width=0.1, legend=legend),
                      categorized_sld("landcover", legend=legend)),
        "patches": (categorized_style(outline="80,80,80,255", outline_width=0.05, legend=legend),
                    categorized_sld("patches", legend=legend)),
        "scenes": (outline_style(), ""),
    }
    return style_rows({layer: (qml, f"land-cover classes by class_id ({layer})" if sld else "scene footprints", sld)
                       for layer, (qml, sld) in styles.items()}, now)


def write_geopackage(
    path: Path, layers: Mapping[str, gpd.GeoDataFrame | Iterable[gpd.GeoDataFrame]], styles: pd.DataFrame
) -> None:
    """Write the layers (polygons promoted to multipolygons) and the layer_styles table. A layer
    given as frames (one per window of a large map) is appended frame by frame."""
    dataset_options = {"VERSION": GPKG_VERSION}
    for name, frames in layers.items():
        for i, frame in enumerate([frames] if isinstance(frames, gpd.GeoDataFrame) else frames):
            pyogrio.write_dataframe(
                frame, path, layer=name, driver="GPKG", geometry_type="MultiPolygon",
                promote_to_multi=True, dataset_options=dataset_options, append=i > 0,
            )
            dataset_options = {}  # only the first write creates the dataset
    pyogrio.write_dataframe(styles, path, layer="layer_styles", driver="GPKG", layer_options={"FID": "id"})


def style_rows(styles: Mapping[str, tuple[Any, str] | tuple[Any, str, str]], now: datetime | None = None) -> pd.DataFrame:
    """layer_styles rows: layer -> (QML element, description[, SLD]), each QGIS's default style of its layer."""
    now = now or datetime.now(UTC)
    return pd.DataFrame([
        {
            "f_table_catalog": "",
            "f_table_schema": "",
            "f_table_name": layer,
            "f_geometry_column": GEOMETRY_COLUMN,
            "styleName": layer,
            "styleQML": to_text(style[0]),
            "styleSLD": style[2] if len(style) > 2 else "",
            "useAsDefault": True,
            "description": style[1],
            "owner": "",
            "ui": "",
            "update_time": pd.Timestamp(now),
        }
        for layer, style in styles.items()
    ])



def write_point_geopackage(
    path: Path, points: Mapping[str, gpd.GeoDataFrame], tables: Mapping[str, pd.DataFrame], styles: pd.DataFrame
) -> None:
    """A new GeoPackage at ``path`` of point layers, plain attribute tables and their layer_styles."""
    dataset_options: dict[str, str] = {"VERSION": GPKG_VERSION}
    for name, frame in points.items():
        pyogrio.write_dataframe(frame, path, layer=name, driver="GPKG", geometry_type="Point", dataset_options=dataset_options)
        dataset_options = {}  # only the first write creates the dataset
    for name, table in tables.items():
        pyogrio.write_dataframe(table, path, layer=name, driver="GPKG", dataset_options=dataset_options)
        dataset_options = {}
    pyogrio.write_dataframe(styles, path, layer="layer_styles", driver="GPKG", layer_options={"FID": "id"})
