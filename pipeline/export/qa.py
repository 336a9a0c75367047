"""The GeoPackage's `patches` QA layer, bounded: squares of about a kilometre by default (each the
summary of the map cells inside it), one square per map cell on request. A 100 m map of a country
would otherwise be tens of millions of features."""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from odc.geo.geobox import GeoBox

from models.legend import Legend, bigearthnet_legend
from pipeline.mosaic import ClassMap

TOP_K = 3


def qa_factor(cell_m: float, qa_grid_m: float) -> int:
    """Map cells per side of a QA square: ``qa_grid_m`` in whole cells (at least one; 0 m: one)."""
    return max(1, round(qa_grid_m / cell_m)) if qa_grid_m > 0 else 1


def qa_squares(class_map: ClassMap, geobox: GeoBox, k: int, offset: tuple[int, int] = (0, 0),
               legend: Legend | None = None) -> gpd.GeoDataFrame:
    """One square per ``k`` x ``k`` cells with at least one mapped cell: its majority class and that
    class's share of the mapped cells, the three most probable classes of the mean probabilities,
    mean confidence and clear fraction, and how many cells it summarises. ``offset``: the (row,
    col) of the class map's first cell in the whole map (a multiple of ``k``)."""
    if offset[0] % k or offset[1] % k:
        raise ValueError(f"window offset {offset} is not on the {k}-cell QA lattice")
    name = (legend or bigearthnet_legend()).name
    ny, nx = class_map.shape
    sy, sx = -(-ny // k), -(-nx // k)

    def blocks(a: np.ndarray, fill: float) -> np.ndarray:  # (..., ny, nx) -> (..., sy, sx, k*k)
        lead = a.shape[:-2]
        padded = np.full((*lead, sy * k, sx * k), fill, dtype=np.float64)
        padded[..., :ny, :nx] = a
        return padded.reshape(*lead, sy, k, sx, k).swapaxes(-3, -2).reshape(*lead, sy, sx, k * k)

    valid = blocks(class_map.valid, 0) > 0
    cells = valid.sum(-1)
    rows, cols = np.nonzero(cells)
    codes = blocks(class_map.classes, 0)[rows, cols].astype(np.int64)
    mask = valid[rows, cols]
    counts = np.zeros((len(rows), 256), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(len(rows)), mask.sum(1)), codes[mask]), 1)
    counts[:, 0] = 0
    major = counts.argmax(1)
    share = counts.max(1) / cells[rows, cols]
    with np.errstate(invalid="ignore"):
        confidence = np.nanmean(np.where(mask, blocks(class_map.confidence, np.nan)[rows, cols], np.nan), axis=1)
        clear = np.nanmean(np.where(mask, blocks(class_map.clear_fraction, np.nan)[rows, cols], np.nan), axis=1)
    data: dict[str, Any] = {
        "row": (rows * k + offset[0]).astype("int32"),
        "col": (cols * k + offset[1]).astype("int32"),
        "cells": cells[rows, cols].astype("int32"),
        "class_id": major.astype("int32"),
        "class_name": [name(int(c)) for c in major],
        "class_share": share.astype("float64"),
        "confidence": confidence.astype("float64"),
    }
    if class_map.probs is not None:
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(np.where(mask[None], blocks(class_map.probs, np.nan)[:, rows, cols], np.nan), axis=2)
        order = np.argsort(-np.nan_to_num(mean, nan=-1.0), axis=0, kind="stable")[:TOP_K]
        plane_codes = class_map.plane_codes
        for i in range(min(TOP_K, len(order))):
            data[f"top{i + 1}_class"] = [name(int(plane_codes[p])) for p in order[i]]
            data[f"top{i + 1}_prob"] = np.take_along_axis(mean, order[i:i + 1], axis=0)[0].astype("float64")
    data["clear_fraction"] = clear.astype("float64")
    t = geobox.affine
    x0, y0 = t.c + cols * k * t.a, t.f + rows * k * t.e
    x1 = t.c + np.minimum((cols + 1) * k, nx) * t.a
    y1 = t.f + np.minimum((rows + 1) * k, ny) * t.e
    squares = shapely.box(np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1))
    return gpd.GeoDataFrame(data, geometry=squares, crs=geobox.crs.to_wkt())
