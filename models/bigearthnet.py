"""BigEarthNet v1 and v2 (reBEN) as training and evaluation data for the seed's RGB model: each
patch folder's B04/B03/B02 become the seed's input (see :mod:`models.datasets`), read lazily
(the archives are large), its labels a 19-class multi-hot target, its tile the split group.

* v1: a folder per patch with ``<patch>_B02.tif`` ... and ``<patch>_labels_metadata.json``
  (43-class names); optional split CSVs of patch names and the official exclusion lists.
* v2 / reBEN: ``metadata.parquet`` (patch_id, labels, split) - or, where no parquet engine
  (pyarrow) is installed, a ``metadata.csv`` with the same columns and labels as a JSON list or
  ``;``-separated - and ``<tile>/<patch_id>/<patch_id>_B02.tif`` ...
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset

from models.classes import NUM_CLASSES
from models.datasets import (
    BEN_DN_QUANTIFICATION,
    DatasetError,
    PatchSet,
    as_sample,
    seed_patch,
)
from models.labels import multi_hot

RGB_BANDS = ("B04", "B03", "B02")


def read_rgb_reflectance(paths: Sequence[Path], quantification: float = BEN_DN_QUANTIFICATION,
                         offset_dn: float = 0.0) -> np.ndarray:
    """float32 (3, H, W) reflectance from three single-band GeoTIFFs (B04, B03, B02).

    Divides in float64 as the seed did (DN / 10000): multiplying by a float32 1e-4 lands
    a hair below x/255 boundaries and truncation then loses a grey level.
    """
    bands = []
    for p in paths:
        if not Path(p).is_file():
            raise DatasetError(f"missing band file {p}: the BigEarthNet patch folder is incomplete")
        with rasterio.open(p) as src:
            bands.append(src.read(1).astype(np.float64))
    return ((np.stack(bands) - offset_dn) / quantification).astype(np.float32)


def _band_paths(folder: Path, patch_id: str) -> list[Path]:
    return [folder / f"{patch_id}_{b}.tif" for b in RGB_BANDS]


class _BigEarthNet(Dataset):
    """Lazy BigEarthNet reader: one patch folder read per item (the archives are large)."""

    def __init__(self, folders: list[Path], ids: list[str], targets: np.ndarray, groups: list[str]) -> None:
        if not ids:
            raise DatasetError("no BigEarthNet patches found: check the root folder and the split")
        self.folders, self.ids, self.targets, self.groups = folders, ids, targets, groups

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, i: int) -> np.ndarray:
        return seed_patch(read_rgb_reflectance(_band_paths(self.folders[i], self.ids[i])))[0]

    def window(self, i: int) -> np.ndarray:
        """The full-resolution uint8 window (the SR stage's reference)."""
        return seed_patch(read_rgb_reflectance(_band_paths(self.folders[i], self.ids[i])))[1]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        return as_sample(self.image(i), self.targets[i], i)

    def materialise(self) -> PatchSet:
        return PatchSet(
            images=np.stack([self.image(i) for i in range(len(self))]),
            targets=self.targets.copy(), ids=list(self.ids), groups=list(self.groups),
        )


def _tile_of(patch_id: str) -> str:
    # S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57 -> tile folder without the row/col
    return patch_id.rsplit("_", 2)[0]


def _read_split_csv(path: Path) -> list[str]:
    lines = [ln.strip().split(",")[0] for ln in Path(path).read_text().splitlines()]
    return [ln for ln in lines if ln and ln != "patch_id"]


def _read_patch_list(path: Path) -> set[str]:
    """Patch names of an official BigEarthNet v1 list (one per line), plain or ``.bz2``.

    The official lists ship bz2-compressed, some with CRLF line ends; the first CSV field is
    the name, a ``patch_id`` header is skipped.
    """
    import bz2

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"exclusion list {path} not found: pass e.g. patches_with_seasonal_snow.csv.bz2")
    try:
        if path.suffix == ".bz2":
            with bz2.open(path, "rt", encoding="utf-8") as handle:
                text = handle.read()
        else:
            text = path.read_text(encoding="utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read exclusion list {path} ({exc}): give a plain or .bz2 list of patch names") from None
    lines = (ln.strip().split(",")[0].strip() for ln in text.splitlines())
    return {ln for ln in lines if ln and ln != "patch_id"}


class BigEarthNetV1(_BigEarthNet):
    """BigEarthNet v1.0: ``root/<patch>/<patch>_B0x.tif`` + ``<patch>_labels_metadata.json``.

    ``split_csv``: one of the official train/val/test CSVs (patch name per line); without it
    every patch folder under ``root`` is used. ``exclude_lists``: official lists of patches to
    leave out, as the BigEarthNet authors do (``patches_with_seasonal_snow.csv.bz2``,
    ``patches_with_cloud_and_shadow.csv.bz2``, ``patches_with_no_19_class_targets.csv.bz2``);
    the names left out are in ``excluded``.
    """

    def __init__(self, root: Path, split_csv: Path | None = None, exclude_lists: Sequence[Path] = ()) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"BigEarthNet v1 folder {root} does not exist: pass the extracted BigEarthNet-v1.0 folder")
        names = _read_split_csv(split_csv) if split_csv else sorted(
            p.name for p in root.iterdir() if (p / f"{p.name}_labels_metadata.json").is_file()
        )
        excluded = set().union(*(_read_patch_list(path) for path in exclude_lists))
        self.excluded = [name for name in names if name in excluded]
        names = [name for name in names if name not in excluded]
        targets = []
        groups = []
        for name in names:
            meta_path = root / name / f"{name}_labels_metadata.json"
            if not meta_path.is_file():
                raise DatasetError(f"missing {meta_path}: the patch folder is incomplete or the split names a patch not extracted")
            meta = json.loads(meta_path.read_text())
            targets.append(multi_hot(meta["labels"]))
            groups.append(str(meta.get("tile_source", _tile_of(name))))
        super().__init__([root / n for n in names], names,
                         np.array(targets, dtype=np.float32).reshape(-1, NUM_CLASSES), groups)


def _parse_labels(value: object) -> list[str]:
    if isinstance(value, str):
        text = value.strip()
        return list(json.loads(text)) if text.startswith("[") else [s for s in text.split(";") if s.strip()]
    return [str(v) for v in value]  # parquet list column (numpy array or list)


def read_reben_metadata(root: Path):
    """reBEN metadata as a DataFrame: parquet when an engine is installed, else metadata.csv."""
    import pandas as pd

    root = Path(root)
    parquet, csv = root / "metadata.parquet", root / "metadata.csv"
    if csv.is_file():
        return pd.read_csv(csv)
    if parquet.is_file():
        try:
            return pd.read_parquet(parquet)
        except ImportError as exc:
            raise DatasetError(
                f"cannot read {parquet}: no parquet engine: install pyarrow or provide metadata.csv beside it"
            ) from exc
    raise DatasetError(f"no metadata.parquet or metadata.csv in {root}: pass the reBEN root folder")


class BigEarthNetV2(_BigEarthNet):
    """BigEarthNet v2 (reBEN): metadata table + ``root/<tile>/<patch_id>/<patch_id>_B0x.tif``.

    ``split``: 'train', 'validation' or 'test' (None = all rows). Patch folders directly under
    ``root`` (no tile level) are accepted too.
    """

    def __init__(self, root: Path, split: str | None = None) -> None:
        root = Path(root)
        meta = read_reben_metadata(root)
        missing = {"patch_id", "labels"} - set(meta.columns)
        if missing:
            raise DatasetError(f"reBEN metadata lacks column(s) {sorted(missing)}: use the official metadata file")
        if split is not None:
            if "split" not in meta.columns:
                raise DatasetError("reBEN metadata has no 'split' column: drop the split option or add the column")
            meta = meta[meta["split"] == split]
        ids = [str(p) for p in meta["patch_id"]]
        folders = []
        for pid in ids:
            nested = root / _tile_of(pid) / pid
            folders.append(nested if nested.is_dir() else root / pid)
        targets = np.array([multi_hot(_parse_labels(v)) for v in meta["labels"]], dtype=np.float32)
        super().__init__(folders, ids, targets.reshape(-1, NUM_CLASSES), [_tile_of(p) for p in ids])
