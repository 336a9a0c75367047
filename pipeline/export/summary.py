"""Figures about a map: area and confidence per class, valid and nodata cells.

Computed from the class raster itself so every product (GeoPackage, STAC, summary.json,
quicklook) reports the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox

from models.legend import Legend, bigearthnet_legend
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


@dataclass
class MapStats:
    """Running totals of a map, added up block by block as the blocks are written, so the
    summary, the legend and the STAC item never need the whole map in memory."""

    total: int  # cells of the grid, mapped or not
    multi_label: bool = False
    threshold: float = 0.5
    legend: Legend = field(default_factory=bigearthnet_legend)
    # Indexed by map code (0 = no data): up to the legend's largest code.
    counts: np.ndarray = field(default=None)  # type: ignore[assignment]
    confidence_sums: np.ndarray = field(default=None)  # type: ignore[assignment]
    present: np.ndarray = field(default=None)  # type: ignore[assignment]  # in legend order

    def __post_init__(self) -> None:
        size = self.legend.max_code + 1
        self.counts = np.zeros(size, np.int64) if self.counts is None else self.counts
        self.confidence_sums = np.zeros(size, np.float64) if self.confidence_sums is None else self.confidence_sums
        self.present = np.zeros(len(self.legend), np.int64) if self.present is None else self.present

    @classmethod
    def of(cls, class_map: ClassMap, legend: Legend | None = None) -> MapStats:
        stats = cls(total=int(class_map.valid.size), multi_label=class_map.multi_label, threshold=class_map.threshold,
                    legend=legend or bigearthnet_legend())
        stats.add(class_map)
        return stats

    def add(self, block: ClassMap) -> None:
        codes = block.classes[block.valid]
        size = len(self.counts)
        self.counts += np.bincount(codes, minlength=size)[:size]
        self.confidence_sums += np.bincount(
            codes, weights=block.confidence[block.valid].astype(np.float64), minlength=size
        )[:size]
        if self.multi_label:
            self.present += block.labels().sum(axis=(1, 2))

    @property
    def valid(self) -> int:
        return int(self.counts[1:].sum())

    @property
    def mean_confidence(self) -> float | None:
        return float(self.confidence_sums[1:].sum() / self.valid) if self.valid else None


def class_stats(stats: MapStats | ClassMap, geobox: GeoBox) -> list[ClassStats]:
    """One entry per class present in the map, in code order."""
    stats = stats if isinstance(stats, MapStats) else MapStats.of(stats)
    legend = stats.legend
    area = cell_area_m2(geobox) / SQUARE_METRES_PER_HECTARE
    counts, conf_sums = stats.counts, stats.confidence_sums
    total = int(counts[1:].sum())
    return [
        ClassStats(
            code=code,
            name=legend.name(code),
            cells=int(counts[code]),
            area_ha=float(counts[code] * area),
            percent=float(100.0 * counts[code] / total),
            mean_confidence=float(conf_sums[code] / counts[code]),
        )
        for code in sorted(legend.codes)
        if counts[code] > 0
    ]


def map_summary(
    stats: MapStats | ClassMap,
    geobox: GeoBox,
    provenance: Provenance,
    scenes: list[dict[str, Any]],
) -> dict[str, Any]:
    """The content of summary.json."""
    stats = stats if isinstance(stats, MapStats) else MapStats.of(stats)
    cell_area_ha = cell_area_m2(geobox) / SQUARE_METRES_PER_HECTARE
    valid = stats.valid
    resolution = geobox.resolution
    return {
        "crs": str(geobox.crs),
        "cell_size_m": [abs(float(resolution.x)), abs(float(resolution.y))],
        "shape": list(geobox.shape),
        "bounds": list(geobox.boundingbox),
        "cells": {"total": stats.total, "valid": valid, "nodata": stats.total - valid},
        "mapped_area_ha": valid * cell_area_ha,
        "mean_confidence": stats.mean_confidence,
        "confidence": "sigmoid score" if stats.multi_label else "softmax probability",
        "classes": [asdict(s) for s in class_stats(stats, geobox)],
        **({"labels": label_presence(stats, geobox),
            "labels_note": "a multi-label model: a cell may carry several classes, so the shares of `labels` add up "
                           "to more than 100%; `classes` counts each cell once, by its mapped (top) class"}
           if stats.multi_label else {}),
        "window": ({"start": provenance.window[0], "end": provenance.window[1]} if provenance.window else None),
        "aoi_km2": provenance.aoi_km2,
        "catalogue": provenance.catalogue,
        "scenes": scenes,
        "scenes_skipped": [{"item_id": k, "why": v} for k, v in provenance.skipped_items.items()],
        "model": {
            "id": provenance.model_id,
            "sha256": provenance.model_sha256,
            "synthetic": provenance.synthetic_model,
        },
        **({"notes": list(provenance.notes)} if provenance.notes else {}),
        "software_version": provenance.software_version,
    }


def label_presence(stats: MapStats | ClassMap, geobox: GeoBox) -> dict[str, Any]:
    """Multi-label maps: in how many cells (and how much area) each class is present at all,
    whether or not it is the mapped class."""
    stats = stats if isinstance(stats, MapStats) else MapStats.of(stats)
    area = cell_area_m2(geobox) / SQUARE_METRES_PER_HECTARE
    counts = stats.present
    return {
        "threshold": stats.threshold,
        "classes": [
            {"code": code, "name": name, "cells": int(counts[plane]), "area_ha": float(counts[plane] * area)}
            for plane, (code, name, _) in enumerate(stats.legend.entries())
            if counts[plane] > 0
        ],
    }
