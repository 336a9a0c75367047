"""Reference labels read at each sample point from a reference raster, for automated checks.

The raster's value at a point becomes the point's reference class: directly when the raster uses
the map's codes, or through a crosswalk (YAML, reference value -> map class by code or name) when
it has its own nomenclature. A point off the raster or on its nodata stays unlabelled; a value
neither the legend nor the crosswalk knows stops the command, naming the samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import yaml

from pipeline.assess.legend import Legend
from pipeline.assess.samples import Samples
from pipeline.errors import LandcoverError

_NAMED = 10  # sample ids named in an error before "and N more"


class LabelError(LandcoverError):
    """Reference labels cannot be read as asked."""


@dataclass(frozen=True)
class LabelOutcome:
    labelled: int  # points given a reference class now
    kept: int  # points that had one already and kept it
    no_reference: tuple[int, ...]  # sample ids off the raster or on its nodata, left unlabelled


def name_rows(sample_ids: np.ndarray | list[int]) -> str:
    """"samples 3, 17, 40" (the first few, then how many more), for one-line errors."""
    ids = sorted(int(i) for i in sample_ids)
    more = f" and {len(ids) - _NAMED} more" if len(ids) > _NAMED else ""
    return ("sample " if len(ids) == 1 else "samples ") + ", ".join(map(str, ids[:_NAMED])) + more


def read_crosswalk(path: Path, legend: Legend) -> dict[int, int | None]:
    """reference value -> map class code; a value mapped to null means "no reference here"."""
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise LabelError(f"cannot read the crosswalk {path} ({(str(exc).splitlines() or [''])[0]}); give a YAML mapping") from None
    if not isinstance(content, Mapping) or not content:
        raise LabelError(f"the crosswalk {path} is not a YAML mapping of reference value -> map class (name or code)")
    out: dict[int, int | None] = {}
    for key, value in content.items():
        try:
            ref = int(key)
        except (TypeError, ValueError):
            raise LabelError(f"crosswalk {path}: key {key!r} is not a reference raster value (an integer)") from None
        code = None if value is None else legend.code_of(value)
        if value is not None and code is None:
            raise LabelError(f"crosswalk {path}: {key}: {value!r} is not a class of the map's legend; use a class name or code")
        out[ref] = code
    return out


def raster_values(reference: Path, points) -> tuple[np.ndarray, np.ndarray]:
    """(values, has_value) of the reference raster's first band at each point (a GeoSeries);
    points off the raster or on its nodata have no value."""
    try:
        with rasterio.open(reference) as src:
            if src.crs is None:
                raise LabelError(f"{reference} has no CRS; give a georeferenced raster")
            xy = points.to_crs(src.crs.to_wkt())
            inside = np.array([_inside(src, p.x, p.y) for p in xy])
            values = np.zeros(len(xy), dtype=np.int64)
            if inside.any():
                values[inside] = np.fromiter(
                    (v[0] for v in src.sample([(p.x, p.y) for p in xy[inside]], indexes=1)), dtype=np.float64
                ).astype(np.int64)
            nodata = src.nodata
    except rasterio.errors.RasterioIOError as exc:
        raise LabelError(f"cannot read the reference {reference} ({exc})") from None
    has_value = inside & ((values != int(nodata)) if nodata is not None else True)
    return values, has_value


def _inside(src, x: float, y: float) -> bool:
    row, col = src.index(x, y)
    return 0 <= row < src.height and 0 <= col < src.width


def label_from_raster(
    samples: Samples, legend: Legend, reference: Path, crosswalk: Mapping[int, int | None] | None = None,
    *, overwrite: bool = False,
) -> tuple[Samples, LabelOutcome]:
    """The sample with ``reference`` filled from the raster (as map class codes, which the value-map
    form shows by name). Labels already there are kept unless ``overwrite``."""
    points = samples.points.copy()
    ids = points["sample_id"].to_numpy()
    todo = np.ones(len(points), bool) if overwrite else np.array([legend.code_of(v) is None for v in points["reference"]])
    values, has_value = raster_values(reference, points.geometry)
    codes: list[int | None] = []
    for value, ok in zip(values, has_value, strict=True):
        if not ok:
            codes.append(None)
        elif crosswalk is not None:
            codes.append(crosswalk.get(int(value), -1))
        else:
            codes.append(int(value) if legend.get(int(value)) else -1)
    bad = np.array([c == -1 for c in codes]) & todo
    if bad.any():
        values_seen = sorted({int(v) for v, b in zip(values, bad, strict=True) if b})
        fix = "add them to the crosswalk" if crosswalk is not None else "give --crosswalk FILE.yaml mapping them to the map's classes"
        raise LabelError(f"reference values {values_seen} at {name_rows(ids[bad])} are not classes of the map's legend; {fix}")
    missing = todo & np.array([c is None for c in codes])
    fill = todo & ~missing
    points["reference"] = points["reference"].astype("object")
    points.loc[fill, "reference"] = [str(c) for c, f in zip(codes, fill, strict=True) if f]
    outcome = LabelOutcome(int(fill.sum()), int((~todo).sum()), tuple(int(i) for i in ids[missing]))
    return Samples(points, samples.strata), outcome
