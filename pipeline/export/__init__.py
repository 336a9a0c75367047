"""Export stage: the class map as QGIS-ready, self-describing files in one directory.

    files = export_map(class_map, cell_geobox, out_dir, aoi=aoi, scenes=items, provenance=prov)

All files are staged under temporary names and renamed into place together (landcover.tif
last, so its presence marks a complete map); an error midway leaves no file behind.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyogrio.errors
import rasterio.errors
from odc.geo.geobox import GeoBox
from pyproj import CRS
from rasterio._err import (
    CPLE_BaseError,  # no public alias; what GDAL's write errors raise
)
from shapely.geometry.base import BaseGeometry

from models.legend import Legend, bigearthnet_legend
from pipeline.errors import OutputError
from pipeline.export import qgis, raster, sieve, stac, vector
from pipeline.export.provenance import Provenance
from pipeline.export.quicklook import render_quicklook
from pipeline.export.staging import prepare_out_dir, staged, sweep_partials
from pipeline.export.summary import MapStats, cell_area_m2, class_stats, map_summary
from pipeline.export.qa import qa_squares
from pipeline.export.writer import READ_WINDOW, MapRasters
from pipeline.mosaic import ClassMap

__all__ = ["ExportedFiles", "MapExport", "Provenance", "export_map", "map_export"]

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
    legend: Legend | None = None,
) -> ExportedFiles:
    """Write every product of an in-memory map into ``out_dir`` (created if missing): the
    whole map as one block of :func:`map_export`.

    cell_geobox: the output grid (projected CRS, north up) with the shape of ``class_map``.
    """
    if tuple(cell_geobox.shape) != class_map.shape:
        raise ValueError(f"cell_geobox has shape {tuple(cell_geobox.shape)} but the class map {class_map.shape}")
    with map_export(
        cell_geobox, out_dir, provenance=provenance, multi_label=class_map.multi_label, threshold=class_map.threshold,
        aoi=aoi, scenes=scenes, overwrite=overwrite, progress=progress, composite=composite, legend=legend,
    ) as export:
        export.write((slice(0, class_map.shape[0]), slice(0, class_map.shape[1])), class_map)
    return export.files


class MapExport:
    """The products of one map being written: ``write`` each finished block of cells; the files
    are made when the ``with map_export(...)`` block ends without an error (``files`` then)."""

    def __init__(self, rasters: MapRasters) -> None:
        self._rasters = rasters
        self.files: ExportedFiles | None = None

    def write(self, cells: tuple[slice, slice], block: ClassMap) -> None:
        self._rasters.write(cells, block)

    @property
    def stats(self) -> MapStats:
        return self._rasters.stats


@contextlib.contextmanager
def map_export(
    cell_geobox: GeoBox,
    out_dir: str | Path,
    *,
    provenance: Provenance | Mapping[str, Any],
    multi_label: bool = False,
    threshold: float = 0.5,
    aoi: BaseGeometry | None = None,
    scenes: Sequence[Any] = (),
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    composite: Callable[[Path], None] | None = None,
    legend: Legend | None = None,
    qa_cells: int = 1,
    mmu_ha: float = 0.0,
) -> Iterator[MapExport]:
    """Write a map's products block by block into ``out_dir`` (created if missing).

    Blocks go into scratch rasters as they are written; when the ``with`` block ends, the COGs,
    the GeoPackage (read back window by window), styles, project, quicklook, summary and STAC item
    are made and renamed into place together, landcover.tif last. An error, in the ``with`` block
    or here, leaves no product behind (a previous map in ``out_dir`` stays as it was).

    aoi: the area of interest in lon/lat, outlined on the quicklook.
    scenes: the input STAC items (pystac.Item or dicts).
    composite: writes the reflectance composite (``composite.tif``) to the path it is given;
    staged with the other files, so it lands with them or not at all.
    legend: the classes of the map (the model card's); default BigEarthNet-19. Every product
    names and colours the classes by it.
    qa_cells: map cells per side of a square of the `patches` QA layer (1: a square per cell).
    mmu_ha: the minimum mapping unit of the GeoPackage's land-cover polygons (hectares): patches
    of the map smaller than it are merged into a neighbour before it is traced
    (:mod:`pipeline.export.sieve`); the rasters and summary.json are not sieved.
    Raises OutputError when ``out_dir`` holds a previous map (unless ``overwrite``) or
    cannot be written.
    """
    cell_area_m2(cell_geobox)  # refuses rotated or geographic grids before anything is written
    provenance = provenance if isinstance(provenance, Provenance) else Provenance.model_validate(dict(provenance))
    out = Path(out_dir)
    prepare_out_dir(out, marker=LANDCOVER_TIF, overwrite=overwrite)
    sweep_partials(out)
    done = progress or (lambda name: None)
    current = {"file": "scratch rasters"}  # named in the one-line error if writing it fails
    rasters: MapRasters | None = None
    try:
        rasters = MapRasters(out, cell_geobox, provenance, multi_label=multi_label, threshold=threshold,
                             legend=legend or bigearthnet_legend())
        export = MapExport(rasters)
        with staged(out) as staging:
            yield export
            finals = _write_products(
                staging, rasters, cell_geobox, provenance, aoi=aoi, scenes=scenes, composite=composite, done=done,
                step=lambda name: current.update(file=name), qa_cells=qa_cells, mmu_ha=mmu_ha,
            )
            export.files = _exported(out, finals)
    # GDAL's own write errors (a full disk while a COG is copied) come as rasterio._err.CPLE_* errors.
    except (OSError, rasterio.errors.RasterioError, CPLE_BaseError, pyogrio.errors.DataSourceError,
            pyogrio.errors.DataLayerError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise OutputError(f"could not write {current['file']} in {out}: {reason}; check free space and permissions") from exc
    finally:
        if rasters is not None:
            rasters.discard()


def _write_products(
    staging: Any, rasters: MapRasters, cell_geobox: GeoBox, provenance: Provenance, *, aoi: BaseGeometry | None,
    scenes: Sequence[Any], composite: Callable[[Path], None] | None, done: Callable[[str], None],
    step: Callable[[str], None], qa_cells: int = 1, mmu_ha: float = 0.0,
) -> dict[str, Path]:
    stats = class_stats(rasters.stats, cell_geobox)
    legend = rasters.legend
    records = vector.scene_records(scenes)
    created = datetime.now(UTC)

    step(LANDCOVER_TIF)
    rasters.finish(staging.path(LANDCOVER_TIF), staging.path(CONFIDENCE_TIF), staging.path(PROBABILITIES_TIF))
    staging.path(LANDCOVER_AUX).write_text(raster.class_aux_xml(legend), encoding="utf-8")
    for name in (LANDCOVER_TIF, CONFIDENCE_TIF, PROBABILITIES_TIF):
        done(name)

    if composite is not None:
        step(COMPOSITE_TIF)
        composite(staging.path(COMPOSITE_TIF))
        done(COMPOSITE_TIF)

    step(GEOPACKAGE)
    # The polygons come from the map sieved to the minimum mapping unit, decided on the whole map
    # (a first pass over its codes), so window edges leave no seam in it.
    sieved = sieve.plan_sieve(rasters.class_windows(), sieve.mmu_cells(mmu_ha, cell_geobox))
    polygons = vector.dissolved_classes(
        ((replace(w.class_map, classes=sieved.apply(w.cells, w.class_map.classes)), w.geobox) for w in rasters.windows()),
        cell_geobox, stats)
    layers = {
        "landcover": polygons,
        "patches": _patches(rasters, qa_cells, legend),
        "scenes": vector.scene_footprints(records, cell_geobox),
    }
    vector.write_geopackage(staging.path(GEOPACKAGE), layers, vector.layer_styles(created, legend))
    done(GEOPACKAGE)

    step("QGIS styles and project")
    staging.path(LANDCOVER_QML).write_text(qgis.to_text(qgis.landcover_raster_style(legend)), encoding="utf-8")
    staging.path(CONFIDENCE_QML).write_text(qgis.to_text(qgis.confidence_raster_style()), encoding="utf-8")
    qgis.write_qgz(staging.path(PROJECT), _project(cell_geobox, provenance, with_composite=composite is not None,
                                                  legend=legend))
    done(PROJECT)

    step(QUICKLOOK)
    title = f"Land cover ({provenance.model_id})"
    render_quicklook(
        staging.path(QUICKLOOK), rasters.overview(), cell_geobox, stats,
        title=title, synthetic_model=provenance.synthetic_model, aoi=aoi, legend=legend,
    )
    done(QUICKLOOK)

    step(SUMMARY)
    scene_rows = [{k: v for k, v in r.items() if k != "geometry"} for r in records]
    summary = map_summary(rasters.stats, cell_geobox, provenance, scene_rows)
    summary["areas"] = sieve.areas_note(mmu_ha, sieved.min_cells, LANDCOVER_TIF)
    _write_json(staging.path(SUMMARY), summary)
    done(SUMMARY)

    step(ITEM)
    assets = {**_ASSETS, **(_COMPOSITE_ASSET if composite is not None else {})}
    item = stac.map_item(cell_geobox, provenance, records, stac.input_links(scenes), assets, stats, created=created,
                         legend=legend)
    _write_json(staging.path(ITEM), item.to_dict(include_self_link=False, transform_hrefs=False))
    done(ITEM)
    return staging.commit(last=LANDCOVER_TIF)


def _patches(rasters: MapRasters, k: int, legend: Legend):
    """The `patches` QA layer, window by window: a square per cell, or per ``k`` x ``k`` cells
    (windows then hold whole squares)."""
    if k == 1:
        return (vector.patch_cells(w.class_map, w.geobox, (w.cells[0].start, w.cells[1].start), legend)
                for w in rasters.windows())
    size = max(1, READ_WINDOW // k) * k
    return (qa_squares(w.class_map, w.geobox, k, (w.cells[0].start, w.cells[1].start), legend)
            for w in rasters.windows(size))


def _exported(out: Path, finals: dict[str, Path]) -> ExportedFiles:
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


def _project(geobox: GeoBox, provenance: Provenance, *, with_composite: bool = False, legend: Legend | None = None) -> str:
    gpkg = f"./{GEOPACKAGE}"
    synthetic = " (synthetic demo model)" if provenance.synthetic_model else ""
    backdrop = [qgis.ProjectLayer("composite", f"./{COMPOSITE_TIF}", "gdal", qgis.rgb_composite_style(), None, False, "composite")]
    layers = [
        qgis.ProjectLayer("scenes", f"{gpkg}|layername=scenes", "ogr", qgis.outline_style(), "Polygon", True, "scenes"),
        qgis.ProjectLayer("patches", f"{gpkg}|layername=patches", "ogr", qgis.categorized_style(outline_width=0.05, legend=legend), "Polygon", False, "patches"),
        qgis.ProjectLayer("landcover polygons", f"{gpkg}|layername=landcover", "ogr", qgis.categorized_style(legend=legend), "Polygon", False, "landcover_polygons"),
        qgis.ProjectLayer("confidence", f"./{CONFIDENCE_TIF}", "gdal", qgis.confidence_raster_style(), None, False, "confidence"),
        qgis.ProjectLayer("landcover", f"./{LANDCOVER_TIF}", "gdal", qgis.landcover_raster_style(legend), None, True, "landcover"),
    ] + backdrop * with_composite  # the composite under everything, hidden until asked for
    bounds = tuple(geobox.boundingbox)[:4]
    return qgis.project_qgs(f"Land cover{synthetic}", layers, CRS.from_wkt(geobox.crs.to_wkt()), bounds)


def _write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
