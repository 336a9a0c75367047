"""Training and evaluation data: every source becomes seed model input plus labels.

A sample is the seed's input (uint8 RGB, 3 x 32 x 32, made from a 120 x 120 px 10 m window
of B04/B03/B02 reflectance by the seed preprocessing) with its 19-class multi-hot target, the
seed's single label (argmax of the multi-hot, lowest index on ties), the share of the window
covered by its majority class (``dominance``; 1.0 when unknown) and provenance: a patch id
and a ``group`` (tile, or tile + spatial block) so held-out splits never share ground with
training.

Sources:

* BigEarthNet v1 and v2 / reBEN patch folders (:mod:`models.bigearthnet`).
* Any reflectance composite with a class-code truth raster on the same grid
  (:func:`patches_from_raster`): 120 px windows, label = majority truth class, multi-hot =
  classes covering at least ``min_share`` of the window. The demo world is cut this way by its
  own loader beside the demo (``pipeline.demo.dataset``; models/ never imports pipeline/).
* Labels a user drew in QGIS: a GeoPackage polygon layer with a class field (name or map
  code) over a reflectance raster the pipeline wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset

from models.classes import NUM_CLASSES
from models.errors import LandcoverError
from models.files import atomic_write
from models.labels import class_index, single_label
from models.preprocess import reflectance_to_uint8, resize_windows

WINDOW_PX = 120  # the seed's 1.2 km footprint at 10 m
BEN_DN_QUANTIFICATION = 10000.0  # BigEarthNet DN -> reflectance (L2A, no BOA offset in v1 or reBEN)


class DatasetError(LandcoverError):
    """Training data is missing, malformed or unreadable."""


@dataclass
class PatchSet:
    """Samples held in memory: seed uint8 images with labels and provenance.

    Small sources (the demo world, user labels, evaluation subsets) are materialised as a
    PatchSet; it is also what active learning and evaluation work on.
    """

    images: np.ndarray  # uint8 (N, 3, 32, 32)
    targets: np.ndarray  # float32 (N, 19) multi-hot
    ids: list[str]
    groups: list[str]
    dominance: np.ndarray = field(default=None)  # type: ignore[assignment]
    windows: np.ndarray | None = None  # uint8 (N, 3, 120, 120) full-resolution windows, when kept
    footprints: list[tuple[float, float, float, float]] | None = None  # window bounds in ``crs``
    crs: str | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.dominance is None:
            self.dominance = np.ones(n, dtype=np.float32)
        if not (self.images.shape[0] == self.targets.shape[0] == len(self.groups) == len(self.dominance) == n):
            raise DatasetError("patch set arrays disagree in length: rebuild the data set")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labels(self) -> np.ndarray:
        """The seed's single labels (int64, -1 where only dropped labels)."""
        return np.array([single_label(t) for t in self.targets], dtype=np.int64)

    def subset(self, index: Sequence[int] | np.ndarray) -> PatchSet:
        index = np.asarray(index, dtype=np.int64)
        return PatchSet(
            images=self.images[index],
            targets=self.targets[index],
            ids=[self.ids[i] for i in index],
            groups=[self.groups[i] for i in index],
            dominance=self.dominance[index],
            windows=None if self.windows is None else self.windows[index],
            footprints=None if self.footprints is None else [self.footprints[i] for i in index],
            crs=self.crs,
        )

    def select_groups(self, keep: Sequence[str] | None, exclude: Sequence[str] = ()) -> PatchSet:
        """Patches whose group (or id) starts with one of ``keep`` and none of ``exclude``."""
        def hit(i: int, prefixes: Sequence[str]) -> bool:
            return any(self.groups[i].startswith(p) or self.ids[i].startswith(p) for p in prefixes)

        return self.subset([i for i in range(len(self)) if (keep is None or hit(i, keep)) and not hit(i, exclude)])

    @staticmethod
    def concat(sets: Sequence[PatchSet]) -> PatchSet:
        if not sets:
            raise DatasetError("no patches to combine: check the data sources in the config")
        crs = {s.crs for s in sets}
        return PatchSet(
            images=np.concatenate([s.images for s in sets]),
            targets=np.concatenate([s.targets for s in sets]),
            ids=[i for s in sets for i in s.ids],
            groups=[g for s in sets for g in s.groups],
            dominance=np.concatenate([s.dominance for s in sets]),
            windows=None if any(s.windows is None for s in sets) else np.concatenate([s.windows for s in sets]),  # type: ignore[misc]
            # footprints only make sense in one CRS
            footprints=None if len(crs) != 1 or any(s.footprints is None for s in sets)
            else [f for s in sets for f in s.footprints],  # type: ignore[union-attr]
            crs=crs.pop() if len(crs) == 1 else None,
        )

    def save(self, path: Path) -> None:
        """Write as .npz (temporary name, then renamed into place)."""
        extra: dict[str, np.ndarray] = {}
        if self.windows is not None:
            extra["windows"] = self.windows
        if self.footprints is not None:
            extra["footprints"] = np.asarray(self.footprints, dtype=np.float64)
        atomic_write(path, lambda tmp: np.savez_compressed(
            tmp, images=self.images, targets=self.targets, ids=np.array(self.ids),
            groups=np.array(self.groups), dominance=self.dominance, crs=np.array(self.crs or ""), **extra,
        ))

    @staticmethod
    def load(path: Path) -> PatchSet:
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"patch set {path} not found: build it first or fix the path")
        with np.load(path) as z:
            return PatchSet(
                z["images"], z["targets"], z["ids"].tolist(), z["groups"].tolist(), z["dominance"],
                windows=z["windows"] if "windows" in z else None,
                footprints=[tuple(f) for f in z["footprints"]] if "footprints" in z else None,
                crs=str(z["crs"]) or None,
            )


def seed_patch(rgb_reflectance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3, H, W) B04/B03/B02 reflectance -> (seed LR patch uint8 (3, 32, 32), window uint8 (3, H, W))
    through the models' seed preprocessing (clip, x255, bicubic resize)."""
    window = reflectance_to_uint8(np.asarray(rgb_reflectance, dtype=np.float32)[None])
    return resize_windows(window, 32)[0], window[0]


def as_sample(image: np.ndarray, target: np.ndarray, index: int) -> dict[str, torch.Tensor | int]:
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image)),
        "target": torch.from_numpy(np.asarray(target, dtype=np.float32)),
        "label": single_label(target),
        "index": index,
    }


class PatchDataset(Dataset):
    """torch view of a PatchSet: dicts with image (uint8), target (multi-hot), label, index."""

    def __init__(self, patches: PatchSet) -> None:
        self.patches = patches

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        return as_sample(self.patches.images[i], self.patches.targets[i], i)


# --------------------------------------------------------------------------- labelled rasters


@dataclass(frozen=True)
class WindowLabel:
    multi_hot: np.ndarray
    majority: int  # 0-based class index, -1 when the window has no labelled pixel
    dominance: float  # share of labelled pixels in the majority class
    valid_share: float  # share of pixels with a class (not nodata)


def window_label(truth_codes: np.ndarray, min_share: float = 0.1) -> WindowLabel:
    """Labels of a window of 1-based class codes (0 = nodata).

    The multi-hot holds every class covering at least ``min_share`` of the labelled pixels,
    and always the majority class.
    """
    codes = np.asarray(truth_codes).ravel()
    valid = codes[(codes >= 1) & (codes <= NUM_CLASSES)]
    target = np.zeros(NUM_CLASSES, dtype=np.float32)
    if valid.size == 0:
        return WindowLabel(target, -1, 0.0, 0.0)
    counts = np.bincount(valid - 1, minlength=NUM_CLASSES)
    shares = counts / valid.size
    majority = int(np.argmax(counts))
    target[shares >= min_share] = 1.0
    target[majority] = 1.0
    return WindowLabel(target, majority, float(shares[majority]), valid.size / codes.size)


def window_origins(shape: tuple[int, int], window: int = WINDOW_PX, stride: int = WINDOW_PX) -> list[tuple[int, int]]:
    """Top-left (row, col) of every whole window on a grid of ``shape``."""
    rows, cols = shape
    return [(r, c) for r in range(0, rows - window + 1, stride) for c in range(0, cols - window + 1, stride)]


BLOCK_CRS = "EPSG:8857"  # Equal Earth: one metric grid for blocks across UTM zones


def block_ids(xs: np.ndarray, ys: np.ndarray, crs: object, block_m: float) -> list[str]:
    """Spatial block of points (in ``crs``) on a global metric grid of ``block_m`` squares.

    Blocks are defined on the ground, not per tile: two overlapping tiles (e.g. either side of
    a UTM zone boundary) put the same ground in the same block, so a block split cannot leak.
    """
    from pyproj import Transformer

    tx = Transformer.from_crs(crs, BLOCK_CRS, always_xy=True)
    gx, gy = tx.transform(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
    return [f"blk{int(a)}_{int(b)}" for a, b in zip(np.floor(gx / block_m), np.floor(gy / block_m))]


def patches_from_raster(
    reflectance: np.ndarray,
    truth_codes: np.ndarray,
    *,
    source: str,
    transform: object | None = None,
    crs: object | None = None,
    window: int = WINDOW_PX,
    stride: int = WINDOW_PX,
    block_m: float | None = None,
    min_share: float = 0.1,
    min_valid: float = 0.9,
    keep_windows: bool = False,
) -> PatchSet:
    """Windows of a (3, H, W) B04/B03/B02 reflectance composite labelled by a class-code raster.

    ``source`` names the tile (and dates) of the composite and prefixes every patch id; the
    group of a patch is ``source``, or with ``block_m`` (needs ``transform`` and ``crs``) the
    ground block of its centre. Windows with less than ``min_valid`` labelled, finite pixels
    are skipped: a nodata-heavy window is no evidence of any class. ``keep_windows`` keeps the
    full-resolution uint8 windows (the SR stage's reference).
    """
    if reflectance.shape[1:] != truth_codes.shape:
        raise DatasetError(
            f"composite {reflectance.shape[1:]} and truth {truth_codes.shape} differ in size: put them on one grid"
        )
    if block_m and (transform is None or crs is None):
        raise DatasetError("block splits need the raster's transform and CRS")
    finite = np.isfinite(reflectance).all(axis=0)
    images, windows, targets, ids, dominance, origins = [], [], [], [], [], []
    for r, c in window_origins(truth_codes.shape, window, stride):
        win = (slice(r, r + window), slice(c, c + window))
        lab = window_label(np.where(finite[win], truth_codes[win], 0), min_share)
        if lab.majority < 0 or lab.valid_share < min_valid:
            continue
        lr, full = seed_patch(reflectance[(slice(None), *win)])
        images.append(lr)
        if keep_windows:
            windows.append(full)
        targets.append(lab.multi_hot)
        dominance.append(lab.dominance)
        ids.append(f"{source}/r{r}c{c}")
        origins.append((r, c))
    if block_m and origins:
        rc = np.asarray(origins, dtype=np.float64) + window / 2
        xs, ys = pixel_to_xy(transform, rc[:, 1], rc[:, 0])
        groups = block_ids(xs, ys, crs, block_m)
    else:
        groups = [source] * len(ids)
    footprints = None
    if transform is not None:
        footprints = [window_bounds(transform, r, c, window) for r, c in origins]
    return PatchSet(
        images=np.stack(images) if images else np.zeros((0, 3, 32, 32), np.uint8),
        targets=np.array(targets, dtype=np.float32).reshape(-1, NUM_CLASSES),
        ids=ids, groups=groups, dominance=np.array(dominance, dtype=np.float32),
        windows=np.stack(windows) if windows else None,
        footprints=footprints, crs=None if crs is None else str(crs),
    )


def pixel_to_xy(transform, col, row):
    """Map coordinates of pixel corner (col, row) under an affine transform (arrays welcome)."""
    a, b, c, d, e, f = transform[:6]
    return a * col + b * row + c, d * col + e * row + f


def unlabelled_patches(reflectance: np.ndarray, transform: object, crs: object, *, source: str,
                       window: int = WINDOW_PX, stride: int = WINDOW_PX, min_valid: float = 0.9) -> PatchSet:
    """Every window of a reflectance raster with enough data, without labels (an AL pool)."""
    valid = np.isfinite(reflectance).all(axis=0).astype(np.uint8)  # code 1 marks data, 0 none
    ps = patches_from_raster(reflectance, valid, source=source, transform=transform, crs=crs, window=window,
                             stride=stride, min_valid=min_valid)
    ps.targets[:] = 0.0
    ps.dominance[:] = 0.0
    return ps


def window_bounds(transform: object, row: int, col: int, window: int) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of a pixel window under a north-up affine transform."""
    x0, y0 = pixel_to_xy(transform, col, row)
    x1, y1 = pixel_to_xy(transform, col + window, row + window)
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def read_reflectance_raster(path: Path, bands: Sequence[int] = (1, 2, 3), scale: float | None = None) -> tuple[np.ndarray, object, object]:
    """(3, H, W) float32 reflectance, transform and CRS of a B04/B03/B02 raster.

    Integer rasters are taken as DN x 1e-4 unless ``scale`` says otherwise; nodata becomes NaN.
    """
    with rasterio.open(path) as src:
        data = src.read(list(bands), masked=True)
        is_int = np.issubdtype(src.dtypes[0], np.integer)
        transform, crs = src.transform, src.crs
    divisor = 1.0 / scale if scale is not None else (BEN_DN_QUANTIFICATION if is_int else 1.0)
    return (data.astype(np.float64) / divisor).astype(np.float32).filled(np.nan), transform, crs


def user_label_patches(
    gpkg: Path,
    imagery: Path,
    *,
    layer: str | None = None,
    class_field: str = "class",
    window: int = WINDOW_PX,
    bands: Sequence[int] = (1, 2, 3),
    reader: Callable[..., tuple[np.ndarray, object, object]] = read_reflectance_raster,
) -> PatchSet:
    """Patches a user labelled in QGIS: each polygon with a filled class field gives the
    ``window`` px window centred on it over ``imagery`` (a B04/B03/B02 reflectance raster).

    The class field holds a class name (either BigEarthNet nomenclature) or a 1-based map
    code; rows left empty are skipped (a partly filled ``to_label`` layer is fine).
    """
    import geopandas as gpd

    frame = gpd.read_file(gpkg, layer=layer)
    if class_field not in frame.columns:
        raise DatasetError(
            f"layer in {gpkg} has no field {class_field!r}: fill a class field in QGIS or pass its name"
        )
    reflectance, transform, crs = reader(imagery, bands=bands)
    frame = frame[frame[class_field].notna() & (frame[class_field].astype(str).str.strip() != "")]
    if frame.empty:
        raise DatasetError(f"no polygon in {gpkg} has a {class_field!r} value: label some in QGIS first")
    if frame.crs is not None and crs is not None:
        frame = frame.to_crs(crs)
    inverse = (~transform)[:6]  # type: ignore[operator]
    images, windows, targets, ids, footprints = [], [], [], [], []
    half = window // 2
    height, width = reflectance.shape[1:]
    for idx, row in frame.iterrows():
        point = row.geometry.representative_point()
        col, rw = pixel_to_xy(inverse, point.x, point.y)
        r0, c0 = int(round(rw)) - half, int(round(col)) - half
        if r0 < 0 or c0 < 0 or r0 + window > height or c0 + window > width:
            raise DatasetError(f"labelled polygon {idx} lies too close to the edge of {imagery}: move it or use larger imagery")
        rgb = reflectance[:, r0:r0 + window, c0:c0 + window]
        target = np.zeros(NUM_CLASSES, dtype=np.float32)
        target[class_index(row[class_field])] = 1.0
        lr, full = seed_patch(np.nan_to_num(rgb, nan=0.0))
        images.append(lr)
        windows.append(full)
        targets.append(target)
        footprints.append(window_bounds(transform, r0, c0, window))
        ids.append(str(row["patch_id"]) if "patch_id" in frame.columns and row["patch_id"] else f"user/{idx}")
    return PatchSet(np.stack(images), np.array(targets, dtype=np.float32), ids, ["user"] * len(ids),
                    windows=np.stack(windows), footprints=footprints, crs=str(crs))
