"""Export stage: the class map as QGIS-ready, self-describing files in one directory.

    files = export_map(class_map, cell_geobox, out_dir, aoi=aoi, scenes=items, provenance=prov)

All files are staged under temporary names and renamed into place together (landcover.tif
last, so its presence marks a complete map); an error midway leaves no file behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyogrio.errors
import rasterio.errors
from odc.geo.geobox import GeoBox
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from pipeline.errors import OutputError
from pipeline.export import qgis, raster, stac, vector
from pipeline.export.provenance import Provenance
from pipeline.export.quicklook import render_quicklook
from pipeline.export.staging import prepare_out_dir, staged, sweep_partials
from pipeline.export.summary import cell_area_m2, class_stats, map_summary
from pipeline.mosaic import ClassMap

__all__ = ["ExportedFiles", "Provenance", "export_map"]

LANDCOVER_TIF = "landcover.tif"
LANDCOVER_AUX = "landcover.tif.aux.xml"
CONFIDENCE_TIF = "confidence.tif"
PROBABILITIES_TIF = "probabilities.tif"
GEOPACKAGE = "landcover.gpkg"
LANDCOVER_QML = "landcover.qml"
CONFIDENCE_QML = "confidence.qml"
PROJECT = "landcover.qgz"
ITEM = "item.json"
QUICKLOOK = "quicklook.png"
SUMMARY = "summary.json"
COMPOSITE_TIF = "composite.tif"


@dataclass(frozen=True)
class ExportedFiles:
    """Final paths of everything one export wrote."""

    out_dir: Path
    landcover: Path
    landcover_aux: Path
    confidence: Path
    probabilities: Path
    geopackage: Path
    landcover_qml: Path
    confidence_qml: Path
    project: Path
    item: Path
    quicklook: Path
    summary: Path
    composite: Path | None = None  # only with --save-composite

    def paths(self) -> list[Path]:
        return [p for f in fields(self) if f.name != "out_dir" and (p := getattr(self, f.name)) is not None]


# (href, title, roles) of each file in the STAC Item.
_ASSETS: dict[str, tuple[str, str, list[str]]] = {
    "landcover": (LANDCOVER_TIF, "Land-cover class codes (COG, 0 = no data)", ["data"]),
    "landcover_aux": (LANDCOVER_AUX, "GDAL sidecar: category names and attribute table", ["metadata"]),
    "confidence": (CONFIDENCE_TIF, "Probability of the mapped class (COG)", ["data", "quality"]),
    "probabilities": (PROBABILITIES_TIF, "Probability of every class, one band per class code (COG)", ["data"]),
    "landcover_gpkg": (GEOPACKAGE, "Class polygons, patch grid and scene footprints", ["data"]),
    "landcover_qml": (LANDCOVER_QML, "QGIS style of landcover.tif", ["style"]),
    "confidence_qml": (CONFIDENCE_QML, "QGIS style of confidence.tif", ["style"]),
    "qgis_project": (PROJECT, "QGIS project with every layer", ["metadata"]),
    "quicklook": (QUICKLOOK, "Preview with legend", ["overview"]),
    "summary": (SUMMARY, "Area per class and run summary", ["metadata"]),
}
_COMPOSITE_ASSET = {
    "composite": (COMPOSITE_TIF, "Cloud-free median composite the map was classified from (reflectance x 1e4, COG)", ["data", "visual"]),
}


def export_map(
    class_map: ClassMap,
    cell_geobox: GeoBox,
    out_dir: str | Path,
    *,
    provenance: Provenance | Mapping[str, Any],
    aoi: BaseGeometry | None = None,
    scenes: Sequence[Any] = (),
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    composite: Callable[[Path], None] | None = None,
) -> ExportedFiles:
    """Write every product of a map into ``out_dir`` (created if missing).

    cell_geobox: the output grid (projected CRS, north up) with the shape of ``class_map``.
    aoi: the area of interest in lon/lat, outlined on the quicklook.
    scenes: the input STAC items (pystac.Item or dicts).
    composite: writes the reflectance composite (``composite.tif``) to the path it is given;
    staged with the other files, so it lands with them or not at all.
    Raises OutputError when ``out_dir`` holds a previous map (unless ``overwrite``) or
    cannot be written.
    """
    if tuple(cell_geobox.shape) != class_map.shape:
        raise ValueError(f"cell_geobox has shape {tuple(cell_geobox.shape)} but the class map {class_map.shape}")
    cell_area_m2(cell_geobox)  # refuses rotated or geographic grids before anything is written
    provenance = provenance if isinstance(provenance, Provenance) else Provenance.model_validate(dict(provenance))
    out = Path(out_dir)
    prepare_out_dir(out, marker=LANDCOVER_TIF, overwrite=overwrite)
    sweep_partials(out)
    done = progress or (lambda name: None)

    stats = class_stats(class_map, cell_geobox)
    records = vector.scene_records(scenes)
    created = datetime.now(UTC)
    current = ""
    try:
        with staged(out) as staging:
            current = LANDCOVER_TIF
            raster.write_class_cog(staging.path(LANDCOVER_TIF), class_map, cell_geobox, provenance)
            staging.path(LANDCOVER_AUX).write_text(raster.class_aux_xml(), encoding="utf-8")
            done(LANDCOVER_TIF)

            current = CONFIDENCE_TIF
            raster.write_confidence_cog(staging.path(CONFIDENCE_TIF), class_map, cell_geobox, provenance)
            done(CONFIDENCE_TIF)

            current = PROBABILITIES_TIF
            raster.write_probability_cog(staging.path(PROBABILITIES_TIF), class_map, cell_geobox, provenance)
            done(PROBABILITIES_TIF)

            if composite is not None:
                current = COMPOSITE_TIF
                composite(staging.path(COMPOSITE_TIF))
                done(COMPOSITE_TIF)

            current = GEOPACKAGE
            layers = {
                "landcover": vector.class_polygons(class_map, cell_geobox),
                "patches": vector.patch_cells(class_map, cell_geobox),
                "scenes": vector.scene_footprints(records, cell_geobox),
            }
            vector.write_geopackage(staging.path(GEOPACKAGE), layers, vector.layer_styles(created))
            done(GEOPACKAGE)

            current = "QGIS styles and project"
            staging.path(LANDCOVER_QML).write_text(qgis.to_text(qgis.landcover_raster_style()), encoding="utf-8")
            staging.path(CONFIDENCE_QML).write_text(qgis.to_text(qgis.confidence_raster_style()), encoding="utf-8")
            qgis.write_qgz(staging.path(PROJECT), _project(cell_geobox, provenance, with_composite=composite is not None))
            done(PROJECT)

            current = QUICKLOOK
            title = f"Land cover ({provenance.model_id})"
            render_quicklook(
                staging.path(QUICKLOOK), class_map, cell_geobox, stats,
                title=title, synthetic_model=provenance.synthetic_model, aoi=aoi,
            )
            done(QUICKLOOK)

            current = SUMMARY
            scene_rows = [{k: v for k, v in r.items() if k != "geometry"} for r in records]
            summary = map_summary(class_map, cell_geobox, provenance, scene_rows)
            _write_json(staging.path(SUMMARY), summary)
            done(SUMMARY)

            current = ITEM
            assets = {**_ASSETS, **(_COMPOSITE_ASSET if composite is not None else {})}
            item = stac.map_item(
                cell_geobox, provenance, records, stac.input_links(scenes), assets, stats, created=created
            )
            _write_json(staging.path(ITEM), item.to_dict(include_self_link=False, transform_hrefs=False))
            done(ITEM)

            finals = staging.commit(last=LANDCOVER_TIF)
    except (OSError, rasterio.errors.RasterioError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise OutputError(f"could not write {current} in {out}: {reason}; check free space and permissions") from exc

    return ExportedFiles(
        out_dir=out,
        landcover=finals[LANDCOVER_TIF],
        landcover_aux=finals[LANDCOVER_AUX],
        confidence=finals[CONFIDENCE_TIF],
        probabilities=finals[PROBABILITIES_TIF],
        geopackage=finals[GEOPACKAGE],
        landcover_qml=finals[LANDCOVER_QML],
        confidence_qml=finals[CONFIDENCE_QML],
        project=finals[PROJECT],
        item=finals[ITEM],
        quicklook=finals[QUICKLOOK],
        summary=finals[SUMMARY],
        composite=finals.get(COMPOSITE_TIF),
    )


def _project(geobox: GeoBox, provenance: Provenance, *, with_composite: bool = False) -> str:
    gpkg = f"./{GEOPACKAGE}"
    synthetic = " (synthetic demo model)" if provenance.synthetic_model else ""
    backdrop = [qgis.ProjectLayer("composite", f"./{COMPOSITE_TIF}", "gdal", qgis.rgb_composite_style(), None, False, "composite")]
    layers = [
        qgis.ProjectLayer("scenes", f"{gpkg}|layername=scenes", "ogr", qgis.outline_style(), "Polygon", True, "scenes"),
        qgis.ProjectLayer("patches", f"{gpkg}|layername=patches", "ogr", qgis.categorized_style(outline_width=0.05), "Polygon", False, "patches"),
        qgis.ProjectLayer("landcover polygons", f"{gpkg}|layername=landcover", "ogr", qgis.categorized_style(), "Polygon", False, "landcover_polygons"),
        qgis.ProjectLayer("confidence", f"./{CONFIDENCE_TIF}", "gdal", qgis.confidence_raster_style(), None, False, "confidence"),
        qgis.ProjectLayer("landcover", f"./{LANDCOVER_TIF}", "gdal", qgis.landcover_raster_style(), None, True, "landcover"),
    ] + backdrop * with_composite  # the composite under everything, hidden until asked for
    bounds = tuple(geobox.boundingbox)[:4]
    return qgis.project_qgs(f"Land cover{synthetic}", layers, CRS.from_wkt(geobox.crs.to_wkt()), bounds)


def _write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
