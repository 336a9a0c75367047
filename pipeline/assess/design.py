"""A stratified random sample of points for assessing a map (Olofsson et al. 2014, section 4).

Sample units are points: the centres of the pixels of the finest reference one will label with
(10 m by default), inside the map's valid area. Strata are the map classes; every unit of a stratum
has the same chance, n_h / N_h, of being drawn (units nest in the map's cells, so a cell holds
(cell / unit)^2 of them). The sample size comes from a target standard error of overall accuracy
(eq. 13) or is given; it is allocated proportionally with a minimum per class (the paper's advice
for rare classes), or as a fixed number per class.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.assess.estimate import sample_size
from pipeline.assess.legend import Legend, LegendError, read_legend
from pipeline.assess.strata import MapGrid, count_cells, locate_cells, map_grid
from pipeline.errors import LandcoverError

DEFAULT_USERS_ACCURACY = 0.8  # the paper's example assumes 0.7-0.9; one value for every class unless told
DEFAULT_TARGET_SE = 0.01
DEFAULT_MIN_PER_CLASS = 50
DEFAULT_UNIT_M = 10.0


class DesignError(LandcoverError):
    """The sample cannot be designed as asked."""


@dataclass(frozen=True)
class Stratum:
    code: int
    name: str
    cells: int  # map cells of the class
    units: int  # sample units (points) in those cells, N_h
    mapped_ha: float
    assumed_users: float  # user's accuracy assumed for the sample size
    n: int  # points drawn, n_h

    @property
    def inclusion_probability(self) -> float:
        return self.n / self.units if self.units else 0.0


@dataclass(frozen=True)
class SampleDesign:
    strata: tuple[Stratum, ...]
    samples: gpd.GeoDataFrame  # one point per sample, fields of :data:`SAMPLE_FIELDS`
    seed: int
    unit_m: float
    target_se: float | None  # the standard error of overall accuracy the size was chosen for


def units_per_side(cell_m: float, unit_m: float) -> int:
    """How many sample units a map cell holds along a side; the unit must divide the cell."""
    ratio = cell_m / unit_m
    if unit_m <= 0 or ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-6:
        raise DesignError(
            f"--unit {unit_m:g} m does not divide the map's {cell_m:g} m cells; "
            f"give the reference's pixel size when it divides {cell_m:g} m, else {cell_m:g}"
        )
    return round(ratio)


def allocate_proportional(units: np.ndarray, n_total: int, min_per_class: int) -> np.ndarray:
    """Points per stratum: ``min_per_class`` to every stratum whose proportional share is smaller,
    the rest of ``n_total`` shared in proportion to stratum size (largest remainders, so the total
    is ``n_total`` unless the minimums alone exceed it); never more points than a stratum has units."""
    units = np.asarray(units, dtype=np.int64)
    floor = np.minimum(min_per_class, units)
    raised = np.zeros(len(units), dtype=bool)
    while True:
        free = (units > 0) & ~raised
        rest = max(n_total - int(floor[raised].sum()), 0)
        share = np.where(free, rest * units / max(int(units[free].sum()), 1), 0.0)
        below = free & (share < floor)
        if not below.any():
            break
        raised |= below
    counts = np.floor(share).astype(np.int64)
    short = rest - int(counts.sum()) if free.any() else 0
    counts[np.argsort(-(share - counts), kind="stable")[:short]] += 1
    return np.minimum(np.where(raised, floor, counts), units)


def allocate_equal(units: np.ndarray, per_class: int) -> np.ndarray:
    """``per_class`` points in every stratum (all of a stratum's units where it has fewer)."""
    return np.minimum(per_class, np.asarray(units, dtype=np.int64))


def draw_units(rng: np.random.Generator, units: int, n: int) -> np.ndarray:
    """``n`` distinct unit ranks out of ``units``, each equally likely (simple random sampling)."""
    return rng.choice(units, size=n, replace=False) if n else np.empty(0, np.int64)


def parse_users_accuracy(items: list[str], legend: Legend) -> dict[int, float]:
    """``CLASS=U`` pairs (class by name or code) as code -> assumed user's accuracy."""
    out = {}
    for item in items:
        label, sep, value = item.rpartition("=")
        code = legend.code_of(label) if sep else None
        try:
            accuracy = float(value)
        except ValueError:
            accuracy = -1.0
        if code is None or not 0 < accuracy < 1:
            raise DesignError(f"--users-accuracy {item!r}: give CLASS=U with a class of the map's legend (name or code) and 0 < U < 1")
        out[code] = accuracy
    return out


def design_sample(
    map_dir: Path,
    *,
    n: int | None = None,
    target_se: float | None = None,
    per_class: int | None = None,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    users_accuracy: Mapping[int, float] | None = None,
    unit_m: float = DEFAULT_UNIT_M,
    seed: int | None = None,
) -> SampleDesign:
    """Draw the sample for the map in ``map_dir``: ``n`` points in all, or as many as ``target_se``
    needs (the default, 0.01), allocated proportionally with ``min_per_class``; or ``per_class``
    points in every class. The same ``seed`` draws the same points from the same map."""
    if sum(x is not None for x in (n, target_se, per_class)) > 1:
        raise DesignError("give one of --n, --target-se and --per-class")
    if target_se is not None and not 0 < target_se < 1:
        raise DesignError(f"--target-se {target_se:g} must be between 0 and 1, e.g. 0.01")
    if (n is not None and n < 1) or (per_class is not None and per_class < 1) or min_per_class < 0:
        raise DesignError("--n and --per-class must be at least 1, --min-per-class at least 0")
    legend = read_legend(map_dir)
    tif = map_dir / "landcover.tif"
    grid = map_grid(tif)
    k = units_per_side(grid.cell_m, unit_m)
    cells = _class_cells(tif, grid, legend)
    codes = np.array([c for c in legend.codes if cells[c] > 0], dtype=np.int64)
    if not len(codes):
        raise DesignError(f"{tif} has no mapped cell to sample; map an area with valid data first")
    units = cells[codes] * k * k
    weights = units / units.sum()
    users = {**{int(c): DEFAULT_USERS_ACCURACY for c in codes}, **(users_accuracy or {})}
    assumed = np.array([users[int(c)] for c in codes])
    if per_class is not None:
        counts = allocate_equal(units, per_class)
    else:
        if n is None:
            target_se = DEFAULT_TARGET_SE if target_se is None else target_se
            n = sample_size(weights, assumed, target_se)
        counts = allocate_proportional(units, n, min_per_class)

    seed = secrets.randbits(32) if seed is None else seed  # recorded, so any sample can be drawn again
    rng = np.random.default_rng(seed)
    ranks = {int(c): draw_units(rng, int(u), int(m)) for c, u, m in zip(codes, units, counts, strict=True)}
    strata = tuple(
        Stratum(int(c), legend.name(int(c)), int(cells[c]), int(u), float(cells[c] * grid.cell_ha), float(a), int(m))
        for c, u, a, m in zip(codes, units, assumed, counts, strict=True)
    )
    samples = _sample_points(tif, grid, k, ranks, strata, rng)
    return SampleDesign(strata, samples, seed, unit_m, target_se)


def _class_cells(tif: Path, grid: MapGrid, legend: Legend) -> np.ndarray:
    """(256,) cells per code; refuses codes the legend does not name (they could not be labelled)."""
    counts = count_cells(tif)
    counts[grid.nodata] = 0
    unnamed = sorted(set(np.flatnonzero(counts)) - set(legend.codes))
    if unnamed:
        raise LegendError(f"{tif} holds codes {unnamed} that its legend does not name; remake the map with its model card")
    return counts


SAMPLE_FIELDS = ("sample_id", "map_class", "map_name", "stratum", "inclusion_prob", "reference")


def _sample_points(
    tif: Path, grid: MapGrid, k: int, ranks: Mapping[int, np.ndarray], strata: tuple[Stratum, ...],
    rng: np.random.Generator,
) -> gpd.GeoDataFrame:
    """The drawn units as points at their pixel centres, numbered in a random order so the ids
    say nothing of the strata (the interpreter labels without being led by the map)."""
    per_cell = k * k
    cells = locate_cells(tif, {code: r // per_cell for code, r in ranks.items()})
    xs, ys, rows = [], [], []
    for stratum in strata:
        unit = ranks[stratum.code] % per_cell
        row, col = cells[stratum.code]
        sub_row, sub_col = np.divmod(unit, k)
        x, y = grid.transform * (col + (sub_col + 0.5) / k, row + (sub_row + 0.5) / k)
        xs.append(np.asarray(x, float))
        ys.append(np.asarray(y, float))
        rows += [(stratum.code, stratum.name, stratum.inclusion_probability)] * stratum.n
    frame = pd.DataFrame(rows, columns=["map_class", "map_name", "inclusion_prob"])
    frame.insert(0, "sample_id", rng.permutation(len(frame)) + 1)
    frame.insert(3, "stratum", frame["map_class"])
    frame["reference"] = pd.Series([None] * len(frame), dtype="object")
    points = gpd.points_from_xy(np.concatenate(xs) if xs else [], np.concatenate(ys) if ys else [], crs=grid.crs)
    return gpd.GeoDataFrame(frame, geometry=points).sort_values("sample_id", ignore_index=True)
