"""Figures about a map: area and confidence per class, valid and nodata cells.

Computed from the class raster itself so every product (GeoPackage, STAC, summary.json,
quicklook) reports the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox

from models.classes import CLASS_NAMES, class_name
from pipeline.export.provenance import Provenance
from pipeline.mosaic import ClassMap

SQUARE_METRES_PER_HECTARE = 10_000.0


@dataclass(frozen=True)
class ClassStats:
    code: int
    name: str
    cells: int
    area_ha: float
    percent: float  # of the mapped (valid) area
    mean_confidence: float


def cell_area_m2(geobox: GeoBox) -> float:
    """Area of one output cell; the grid must be north-up in a projected CRS."""
    if not geobox.axis_aligned:
        raise ValueError("the output grid must be axis-aligned (north up) to measure areas")
    if geobox.crs is None or geobox.crs.geographic:
        raise ValueError(f"the output grid must be in a projected CRS to measure areas, got {geobox.crs}")
    affine = geobox.affine
    return abs(affine.a * affine.e)


def class_stats(class_map: ClassMap, geobox: GeoBox) -> list[ClassStats]:
    """One entry per class present in the map, in code order."""
    area = cell_area_m2(geobox) / SQUARE_METRES_PER_HECTARE
    codes = class_map.classes[class_map.valid]
    confidence = class_map.confidence[class_map.valid]
    counts = np.bincount(codes, minlength=len(CLASS_NAMES) + 1)
    conf_sums = np.bincount(codes, weights=confidence.astype(np.float64), minlength=len(CLASS_NAMES) + 1)
    total = int(counts[1:].sum())
    return [
        ClassStats(
            code=code,
            name=class_name(code),
            cells=int(counts[code]),
            area_ha=float(counts[code] * area),
            percent=float(100.0 * counts[code] / total),
            mean_confidence=float(conf_sums[code] / counts[code]),
        )
        for code in range(1, len(CLASS_NAMES) + 1)
        if counts[code] > 0
    ]


def map_summary(
    class_map: ClassMap,
    geobox: GeoBox,
    provenance: Provenance,
    scenes: list[dict[str, Any]],
) -> dict[str, Any]:
    """The content of summary.json."""
    stats = class_stats(class_map, geobox)
    cell_area_ha = cell_area_m2(geobox) / SQUARE_METRES_PER_HECTARE
    valid = class_map.valid_count
    resolution = geobox.resolution
    return {
        "crs": str(geobox.crs),
        "cell_size_m": [abs(float(resolution.x)), abs(float(resolution.y))],
        "shape": list(class_map.shape),
        "bounds": list(geobox.boundingbox),
        "cells": {"total": int(class_map.valid.size), "valid": valid, "nodata": int(class_map.valid.size - valid)},
        "mapped_area_ha": valid * cell_area_ha,
        "mean_confidence": float(np.mean(class_map.confidence[class_map.valid])) if valid else None,
        "confidence": "sigmoid score" if class_map.multi_label else "softmax probability",
        "classes": [asdict(s) for s in stats],
        **({"labels": label_presence(class_map, geobox)} if class_map.multi_label else {}),
        "scenes": scenes,
        "model": {
            "id": provenance.model_id,
            "sha256": provenance.model_sha256,
            "synthetic": provenance.synthetic_model,
        },
        "software_version": provenance.software_version,
    }


def label_presence(class_map: ClassMap, geobox: GeoBox) -> dict[str, Any]:
    """Multi-label maps: in how many cells (and how much area) each class is present at all,
    whether or not it is the mapped class."""
    area = cell_area_m2(geobox) / SQUARE_METRES_PER_HECTARE
    counts = class_map.labels().sum(axis=(1, 2))
    return {
        "threshold": class_map.threshold,
        "classes": [
            {"code": code, "name": class_name(code), "cells": int(counts[code - 1]), "area_ha": float(counts[code - 1] * area)}
            for code in range(1, len(CLASS_NAMES) + 1)
            if counts[code - 1] > 0
        ],
    }
