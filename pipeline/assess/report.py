"""The accuracy and area report of a labelled sample: assessment.json, assessment.md,
assessment.png, and a summary recorded in the map's item.json.

The sample's reference labels (codes or class names, as the value-map form or ``assess label``
writes them) are tabulated against the strata into the error matrix; the map's own class areas
(pixel counting, read from landcover.tif now) are the stratum sizes; the stratified estimator
(:mod:`pipeline.assess.estimate`) gives the rest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio

from models.files import atomic_write, atomic_write_text
from pipeline.assess.estimate import (
    Z_95,
    Estimate,
    StratifiedEstimate,
    stratified_estimate,
)
from pipeline.assess.figure import render_assessment
from pipeline.assess.label import name_rows
from pipeline.assess.legend import ITEM, Legend, read_legend
from pipeline.assess.samples import SAMPLES_GPKG, read_samples
from pipeline.assess.strata import count_cells, map_grid
from pipeline.errors import LandcoverError

REPORT_JSON = "assessment.json"
REPORT_MD = "assessment.md"
REPORT_PNG = "assessment.png"
PREFIX = "landcover"  # the map item's namespace for this project's properties
REFERENCE = (
    "Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A. (2014). "
    "Good practices for estimating area and assessing accuracy of land change. Remote Sensing of Environment 148, 42-57."
)
METHOD = "stratified estimator of Olofsson et al. (2014), strata = map classes, 95% intervals = +/- 1.96 SE"


class ReportError(LandcoverError):
    """The sample cannot be turned into a report."""


@dataclass(frozen=True)
class Assessment:
    legend: Legend
    codes: tuple[int, ...]  # the classes of the error matrix, in its row and column order
    estimate: StratifiedEstimate  # areas in hectares
    samples: int
    notes: tuple[str, ...]  # what a reader must know: thin strata, unsampled strata


def reference_codes(points: pd.DataFrame, legend: Legend) -> np.ndarray:
    """The reference class code of every sample; a one-line error names unlabelled samples, then
    samples whose label is no class of the legend."""
    ids = points["sample_id"].to_numpy()
    labels = points["reference"].tolist()
    codes = [legend.code_of(v) for v in labels]
    blank = np.array([v is None or (isinstance(v, float) and math.isnan(v)) or not str(v).strip() for v in labels])
    if blank.any():
        raise ReportError(
            f"{name_rows(ids[blank])} have no reference label; label them in QGIS (field 'reference') "
            "or with `landcover assess label --reference`"
        )
    unknown = np.array([c is None for c in codes])
    if unknown.any():
        seen = sorted({str(v) for v, u in zip(labels, unknown, strict=True) if u})
        raise ReportError(f"{name_rows(ids[unknown])} have references {seen} that are not classes of the map's legend; use a class name or code")
    return np.array(codes, dtype=np.int64)


def tabulate(strata: np.ndarray, references: np.ndarray, codes: Sequence[int]) -> np.ndarray:
    """(q, q) counts n_ij of samples in stratum codes[i] with reference codes[j]."""
    index = {c: k for k, c in enumerate(codes)}
    counts = np.zeros((len(codes), len(codes)), dtype=np.int64)
    np.add.at(counts, ([index[int(s)] for s in strata], [index[int(r)] for r in references]), 1)
    return counts


def assess_samples(points: pd.DataFrame, legend: Legend, mapped_ha: dict[int, float]) -> Assessment:
    """The estimate from labelled sample points and the map's area of each class (ha)."""
    references = reference_codes(points, legend)
    strata = points["stratum"].to_numpy(dtype=np.int64)
    foreign = ~np.isin(strata, [c for c, a in mapped_ha.items() if a > 0])
    if foreign.any():
        raise ReportError(
            f"{name_rows(points['sample_id'].to_numpy()[foreign])} lie in strata the map does not have; "
            "the sample belongs to another map: draw a new one with `landcover assess design`"
        )
    codes = tuple(c for c in legend.codes if mapped_ha.get(c, 0) > 0 or c in set(references.tolist()))
    counts = tabulate(strata, references, codes)
    estimate = stratified_estimate(counts, np.array([mapped_ha.get(c, 0.0) for c in codes]))
    notes = []
    for result in estimate.classes:
        name = legend.name(codes[result.index])
        if result.mapped_area > 0 and result.map_samples == 0:
            notes.append(
                f"'{name}' is mapped on {result.mapped_area:,.0f} ha but has no sample: its area is left out of every "
                "estimate (overall accuracy and the areas are biased); add samples of it"
            )
        elif result.mapped_area > 0 and result.map_samples < 2:
            notes.append(
                f"'{name}' has {result.map_samples} sample: its user's accuracy has no standard error, nor has overall "
                "accuracy nor any area it contributes to; add samples of it"
            )
    return Assessment(legend, codes, estimate, int(counts.sum()), tuple(notes))


def mapped_areas(tif: Path, legend: Legend) -> dict[int, float]:
    """The map's own area of each legend class in hectares (pixel counting)."""
    grid = map_grid(tif)
    cells = count_cells(tif)
    return {c: float(cells[c]) * grid.cell_ha for c in legend.codes}


def check_map_classes(points: pd.DataFrame, tif: Path) -> None:
    """Refuse a sample whose recorded map class no longer matches the map at its points."""
    with rasterio.open(tif) as src:
        xy = points.geometry.to_crs(src.crs.to_wkt())
        now = np.array([v[0] for v in src.sample([(p.x, p.y) for p in xy], indexes=1)], dtype=np.int64)
    changed = now != points["map_class"].to_numpy(dtype=np.int64)
    if changed.any():
        raise ReportError(
            f"the map changed under {name_rows(points['sample_id'].to_numpy()[changed])} since the sample was drawn; "
            "draw a new sample with `landcover assess design`"
        )


# --- outputs ------------------------------------------------------------------------------


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _estimate_json(e: Estimate) -> dict[str, Any]:
    return {"estimate": _num(e.value), "se": _num(e.se), "ci95": [_num(e.low), _num(e.high)]}


def report_json(a: Assessment, *, samples_file: str, design: pd.DataFrame | None = None) -> dict[str, Any]:
    e = a.estimate
    classes = [{"code": c, "name": a.legend.name(c)} for c in a.codes]
    per_class = [
        {
            **classes[r.index],
            "users_accuracy": _estimate_json(r.users),
            "producers_accuracy": _estimate_json(r.producers),
            "area_ha": _estimate_json(r.area),
            "area_proportion": _estimate_json(r.proportion),
            "mapped_area_ha": r.mapped_area,
            "samples_in_stratum": r.map_samples,
            "samples_with_reference": r.reference_samples,
        }
        for r in e.classes
    ]
    seed = None
    if design is not None and len(design) and "seed" in design:
        seed = str(design["seed"].iloc[0])
    return {
        "method": METHOD,
        "reference": REFERENCE,
        "samples_file": samples_file,
        "samples": a.samples,
        "seed": seed,
        "total_area_ha": e.total_area,
        "classes": classes,
        "error_matrix": {
            "rows": "map class (stratum)", "columns": "reference class",
            "sample_counts": e.counts.tolist(),
            "area_proportions": [[float(x) for x in row] for row in e.proportions],
        },
        "overall_accuracy": _estimate_json(e.overall),
        "per_class": per_class,
        "notes": list(a.notes),
    }


def _pm(e: Estimate, digits: int = 3, scale: float = 1.0) -> str:
    if math.isnan(e.value):
        return "n/a"
    value = f"{e.value * scale:,.{digits}f}"
    return value if math.isnan(e.se) else f"{value} ± {e.half_width * scale:,.{digits}f}"


def report_markdown(a: Assessment, *, map_name: str, samples_file: str) -> str:
    e = a.estimate
    names = [a.legend.name(c) for c in a.codes]
    lines = [
        f"# Accuracy and area of {map_name}",
        "",
        f"{a.samples} sample points from `{samples_file}`; {METHOD}.",
        "",
        f"**Overall accuracy: {_pm(e.overall)}** (95% interval {e.overall.low:.3f} to {e.overall.high:.3f})"
        if not math.isnan(e.overall.se) else f"**Overall accuracy: {_pm(e.overall)}** (no standard error: see the notes)",
        "",
        "## Accuracy and area per class",
        "",
        "| class | user's accuracy | producer's accuracy | estimated area (ha) | mapped area (ha) | samples (map / reference) |",
        "|---|---|---|---|---|---|",
    ]
    for r, name in zip(e.classes, names, strict=True):
        lines.append(
            f"| {name} | {_pm(r.users)} | {_pm(r.producers)} | {_pm(r.area, 0)} | {r.mapped_area:,.0f} | "
            f"{r.map_samples} / {r.reference_samples} |"
        )
    lines += [
        "",
        f"User's and producer's accuracy and areas are given ± the half width of their 95% interval ({Z_95} standard errors).",
        "",
        "## Error matrix (percent of area; rows: map, columns: reference)",
        "",
        "| map \\ reference | " + " | ".join(names) + " | total |",
        "|---" * (len(names) + 2) + "|",
    ]
    for i, name in enumerate(names):
        row = e.proportions[i]
        lines.append(f"| {name} | " + " | ".join(f"{100 * x:.2f}" for x in row) + f" | {100 * row.sum():.2f} |")
    lines.append("| total | " + " | ".join(f"{100 * x:.2f}" for x in e.proportions.sum(0)) + f" | {100 * e.proportions.sum():.2f} |")
    lines += ["", "## Sample counts (rows: map, columns: reference)", "",
              "| map \\ reference | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(x) for x in e.counts[i]) + " |" for i, name in enumerate(names)]
    if a.notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in a.notes]]
    return "\n".join(lines) + "\n"


_ASSETS = {
    "assessment": (REPORT_JSON, "Accuracy and area estimates with 95% intervals (Olofsson et al. 2014)", "application/json"),
    "assessment_md": (REPORT_MD, "Accuracy and area report (readable)", "text/markdown"),
    "assessment_png": (REPORT_PNG, "Error matrix and estimated areas with 95% intervals", "image/png"),
}


def record_in_item(item_path: Path, a: Assessment, samples_href: str, created: datetime) -> None:
    """Add the report files as assets and a summary property to the map's STAC item."""
    item = json.loads(item_path.read_text(encoding="utf-8"))
    assets = item.setdefault("assets", {})
    for key, (href, title, media_type) in _ASSETS.items():
        assets[key] = {"href": href, "type": media_type, "title": title, "roles": ["metadata"]}
    assets["assessment_samples"] = {
        "href": samples_href, "type": "application/geopackage+sqlite3",
        "title": "Assessment sample points with their reference labels", "roles": ["data"],
    }
    overall = a.estimate.overall
    item.setdefault("properties", {})[f"{PREFIX}:assessment"] = {
        "method": METHOD,
        "created": created.isoformat().replace("+00:00", "Z"),
        "samples": a.samples,
        "overall_accuracy": _num(overall.value),
        "overall_accuracy_ci95": [_num(overall.low), _num(overall.high)],
    }
    atomic_write_text(item_path, json.dumps(item, indent=2, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    markdown: Path
    png: Path
    item: Path | None


def write_report(map_dir: Path, samples_path: Path | None = None) -> tuple[Assessment, ReportFiles]:
    """Assess the map in ``map_dir`` from its labelled sample and write the report beside it."""
    samples_path = samples_path or map_dir / SAMPLES_GPKG
    legend = read_legend(map_dir)
    tif = map_dir / "landcover.tif"
    samples = read_samples(samples_path)
    if not len(samples.points):
        raise ReportError(f"{samples_path} holds no sample point; draw a sample with `landcover assess design`")
    check_map_classes(samples.points, tif)
    assessment = assess_samples(samples.points, legend, mapped_areas(tif, legend))
    try:
        href = samples_path.resolve().relative_to(map_dir.resolve()).as_posix()
    except ValueError:
        href = str(samples_path.resolve())
    created = datetime.now(UTC)
    files = ReportFiles(map_dir / REPORT_JSON, map_dir / REPORT_MD, map_dir / REPORT_PNG, map_dir / ITEM)
    content = report_json(assessment, samples_file=href, design=samples.strata)
    atomic_write_text(files.json, json.dumps(content, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(files.markdown, report_markdown(assessment, map_name=map_dir.name, samples_file=href))
    atomic_write(files.png, lambda tmp: render_assessment(tmp, assessment.estimate, [legend.name(c) for c in assessment.codes]))
    if files.item is not None and files.item.is_file():
        record_in_item(files.item, assessment, href, created)
        return assessment, files
    return assessment, ReportFiles(files.json, files.markdown, files.png, None)
