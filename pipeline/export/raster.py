"""Cloud-Optimized GeoTIFFs of the class map and its confidence, with the class table.

GeoTIFF holds the colour table but not category names; GDAL keeps those (and a raster
attribute table) in the PAM sidecar ``<file>.aux.xml``, which GDAL, QGIS and ArcGIS read.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox

from models.classes import NODATA_CODE
from models.legend import Legend, bigearthnet_legend
from pipeline.export.provenance import Provenance
from pipeline.mosaic import ClassMap

COG_BLOCK = 512
_MIN_BLOCK = 128  # GDAL's COG driver warns on smaller tiles (and small maps need no overviews)


def block_size(shape: tuple[int, int], largest: int = COG_BLOCK) -> int:
    """Tile edge for a COG: 512, or smaller for a small map so it still gets a few tiles and
    overviews instead of one mostly empty 512 px tile."""
    size = largest
    while size > _MIN_BLOCK and max(shape) < 2 * size:
        size //= 2
    return size


def colormap(legend: Legend | None = None) -> dict[int, tuple[int, int, int, int]]:
    """All 256 palette entries: the legend's colour at each class code, transparent elsewhere."""
    table = {value: (0, 0, 0, 0) for value in range(256)}
    for code, _, rgb in (legend or bigearthnet_legend()).entries():
        table[code] = (*rgb, 255)
    return table


def class_tags(provenance: Provenance, legend: Legend | None = None) -> dict[str, str]:
    legend = legend or bigearthnet_legend()
    return {
        "CLASS_NAMES": ";".join(f"{code}={legend.name(code)}" for code in (NODATA_CODE, *legend.codes)),
        "NODATA_CODE": str(NODATA_CODE),
        "MODEL_ID": provenance.model_id,
        "MODEL_SHA256": provenance.model_sha256,
        "SYNTHETIC_MODEL": str(provenance.synthetic_model).lower(),
        "SOFTWARE_VERSION": provenance.software_version,
    }


def _cog_profile(geobox: GeoBox, dtype: str, nodata: float, resampling: str, predictor: str, count: int = 1) -> dict:
    ny, nx = geobox.shape
    block = block_size((ny, nx))
    return {
        "driver": "COG",
        "width": nx,
        "height": ny,
        "count": count,
        "dtype": dtype,
        "crs": geobox.crs.to_wkt(),
        "transform": geobox.affine,
        "nodata": nodata,
        "BLOCKSIZE": block,
        "COMPRESS": "DEFLATE",
        "PREDICTOR": predictor,
        "OVERVIEW_RESAMPLING": resampling,
        "OVERVIEWS": "AUTO",
    }


def write_class_cog(path: Path, class_map: ClassMap, geobox: GeoBox, provenance: Provenance,
                    legend: Legend | None = None) -> None:
    """uint8 legend codes, 0 = nodata, palette, MODE overviews (no averaged, invalid codes)."""
    legend = legend or bigearthnet_legend()
    profile = _cog_profile(geobox, "uint8", NODATA_CODE, "MODE", "NO")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(class_map.classes, 1)
        dst.write_colormap(1, colormap(legend))
        dst.set_band_description(1, f"land-cover class code ({legend.title}; 0 = no data)")
        dst.update_tags(**class_tags(provenance, legend))


def write_confidence_cog(path: Path, class_map: ClassMap, geobox: GeoBox, provenance: Provenance) -> None:
    """float32 probability of the mapped class, NaN = nodata, AVERAGE overviews."""
    profile = _cog_profile(geobox, "float32", float("nan"), "AVERAGE", "YES")
    kind = "sigmoid score" if class_map.multi_label else "softmax probability"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(class_map.confidence.astype(np.float32), 1)
        dst.set_band_description(1, f"confidence: {kind} of the mapped class (0..1)")
        dst.update_tags(
            MODEL_ID=provenance.model_id,
            SYNTHETIC_MODEL=str(provenance.synthetic_model).lower(),
            CONFIDENCE=kind,
        )


def write_probability_cog(path: Path, class_map: ClassMap, geobox: GeoBox, provenance: Provenance,
                          legend: Legend | None = None) -> None:
    """float32 probability of every class, one band per class in legend order, named by class and
    tagged with its code; NaN = nodata; AVERAGE overviews. The layout Dynamic World ships."""
    legend = legend or bigearthnet_legend()
    if class_map.probs is None:
        raise ValueError("the class map carries no per-class probabilities; build it with pipeline.mosaic.mosaic")
    profile = _cog_profile(geobox, "float32", float("nan"), "AVERAGE", "YES", count=len(legend))
    kind = "sigmoid score" if class_map.multi_label else "softmax probability"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(class_map.probs.astype(np.float32))
        for band, (code, name, _) in enumerate(legend.entries(), start=1):
            dst.set_band_description(band, name)
            dst.update_tags(band, CLASS_CODE=str(code), CLASS_NAME=name)
        dst.update_tags(
            MODEL_ID=provenance.model_id,
            SYNTHETIC_MODEL=str(provenance.synthetic_model).lower(),
            PROBABILITY=kind,
            **({"MULTI_LABEL_THRESHOLD": f"{class_map.threshold:g}"} if class_map.multi_label else {}),
        )


# GDAL raster attribute table codes (gdal.h: GDALRATFieldType / GDALRATFieldUsage).
_GFT_INTEGER, _GFT_STRING = 0, 2
_GFU_NAME, _GFU_MINMAX, _GFU_RED, _GFU_GREEN, _GFU_BLUE = 2, 5, 6, 7, 8


def class_aux_xml(legend: Legend | None = None) -> str:
    """PAM sidecar with category names (index = code; codes the legend skips get an empty name)
    and a thematic attribute table."""
    legend = legend or bigearthnet_legend()
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    categories = ET.SubElement(band, "CategoryNames")
    for code in range(legend.max_code + 1):
        ET.SubElement(categories, "Category").text = legend.name(code) if code in (NODATA_CODE, *legend.codes) else ""

    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    fields = [
        ("Value", _GFT_INTEGER, _GFU_MINMAX),
        ("Class_Name", _GFT_STRING, _GFU_NAME),
        ("Red", _GFT_INTEGER, _GFU_RED),
        ("Green", _GFT_INTEGER, _GFU_GREEN),
        ("Blue", _GFT_INTEGER, _GFU_BLUE),
    ]
    for index, (name, ftype, usage) in enumerate(fields):
        defn = ET.SubElement(rat, "FieldDefn", index=str(index))
        ET.SubElement(defn, "Name").text = name
        ET.SubElement(defn, "Type").text = str(ftype)
        ET.SubElement(defn, "Usage").text = str(usage)
    for row, (code, name, rgb) in enumerate(legend.entries()):
        element = ET.SubElement(rat, "Row", index=str(row))
        for value in (code, name, *rgb):
            ET.SubElement(element, "F").text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
