"""The BigEarthNet v1 loader on real BigEarthNet-S2 v1.0 patches and the official exclusion lists.

Real data (read in place, none of it made by this team; see realdata/bigearthnet/NOTE.md):
``realdata/bigearthnet/BigEarthNet-S2-v1.0-patches`` holds 14 real patches in the v1 folder
layout (``<patch>/<patch>_B02.tif`` ..., ``<patch>_labels_metadata.json`` with 43-class CORINE
names), from Ireland, Portugal, Austria/Germany, Serbia, Finland and the Baltics, one of them
snow-covered; ``realdata/bigearthnet/lists`` holds the official v1 lists of patches to leave out
(seasonal snow, cloud and shadow, no 19-class target) as bz2 CSVs.
"""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from models.bigearthnet import BigEarthNetV1
from models.classes import CLASS_NAMES
from models.datasets import DatasetError

SNOWY = "S2B_MSIL2A_20180204T94161_57_38"  # listed in patches_with_seasonal_snow (NOTE.md)
FOREST = "S2B_MSIL2A_20170924T093019_43_47"  # Finland, coniferous forest + transitional woodland
# The published 43 -> 19 grouping (Sumbul et al. 2020, table 1) for every label these patches carry.
GROUPING = {
    "Non-irrigated arable land": "Arable land",
    "Pastures": "Pastures",
    "Complex cultivation patterns": "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation":
        "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Broad-leaved forest": "Broad-leaved forest",
    "Coniferous forest": "Coniferous forest",
    "Mixed forest": "Mixed forest",
    "Transitional woodland/shrub": "Transitional woodland, shrub",
    "Peatbogs": "Inland wetlands",
    "Water bodies": "Inland waters",
}


@pytest.fixture(scope="module")
def root(realdata: Path) -> Path:
    return realdata / "bigearthnet" / "BigEarthNet-S2-v1.0-patches"


@pytest.fixture(scope="module")
def lists(realdata: Path) -> dict[str, Path]:
    return {p.name.split(".")[0]: p for p in sorted((realdata / "bigearthnet" / "lists").glob("*.csv.bz2"))}


@pytest.fixture(scope="module")
def dataset(root: Path) -> BigEarthNetV1:
    return BigEarthNetV1(root)


def labels_of(root: Path, patch: str) -> list[str]:
    return json.loads((root / patch / f"{patch}_labels_metadata.json").read_text())["labels"]


def names_19(target: np.ndarray) -> set[str]:
    return {CLASS_NAMES[i] for i in np.flatnonzero(target)}


def test_every_real_patch_folder_is_a_sample(dataset, root):
    assert dataset.ids == sorted(p.name for p in root.iterdir() if p.is_dir())
    assert len(dataset) == 14 and dataset.excluded == []


def test_a_patch_of_five_labels_gets_its_five_19_class_targets(dataset, root):
    patch = "S2B_MSIL2A_20170924T93020_69_24"
    assert labels_of(root, patch) == ["Coniferous forest", "Mixed forest", "Transitional woodland/shrub", "Peatbogs", "Water bodies"]
    target = dataset.targets[dataset.ids.index(patch)]
    assert names_19(target) == {"Coniferous forest", "Mixed forest", "Transitional woodland, shrub", "Inland wetlands", "Inland waters"}


def test_non_irrigated_arable_land_is_the_19_class_arable_land(dataset, root):
    patch = "S2A_MSIL2A_20170617T113321_36_85"
    assert labels_of(root, patch) == ["Non-irrigated arable land", "Pastures"]
    assert names_19(dataset.targets[dataset.ids.index(patch)]) == {"Arable land", "Pastures"}


def test_every_patchs_targets_follow_the_published_grouping(dataset, root):
    for patch, target in zip(dataset.ids, dataset.targets, strict=True):
        assert names_19(target) == {GROUPING[name] for name in labels_of(root, patch)}, patch


def test_the_one_real_patch_on_an_official_list_is_the_snowy_one(root, lists):
    assert set(lists) == {"patches_with_seasonal_snow", "patches_with_cloud_and_shadow", "patches_with_no_19_class_targets"}
    listed = set()
    for path in lists.values():
        with bz2.open(path, "rt") as handle:
            listed |= {line.strip() for line in handle}
    assert {p.name for p in root.iterdir()} & listed == {SNOWY}


def test_the_official_exclusion_lists_drop_the_snowy_patch(root, lists):
    kept = BigEarthNetV1(root, exclude_lists=list(lists.values()))
    assert len(kept) == 13 and SNOWY not in kept.ids
    assert kept.excluded == [SNOWY]


@pytest.mark.parametrize(
    ("name", "dropped"),
    [("patches_with_seasonal_snow", [SNOWY]), ("patches_with_cloud_and_shadow", []), ("patches_with_no_19_class_targets", [])],
)
def test_each_official_list_is_read_as_shipped(root, lists, name, dropped):
    """The seasonal-snow list has CRLF line ends, the no-19-class list LF: both read as names."""
    assert BigEarthNetV1(root, exclude_lists=[lists[name]]).excluded == dropped


def test_an_exclusion_list_also_thins_an_official_split(root, lists, tmp_path):
    split = tmp_path / "train.csv"
    split.write_text(f"{SNOWY}\n{FOREST}\n")
    assert BigEarthNetV1(root, split, exclude_lists=[lists["patches_with_seasonal_snow"]]).ids == [FOREST]


def test_a_missing_exclusion_list_is_a_one_line_error(root, tmp_path):
    with pytest.raises(DatasetError, match="exclusion list .* not found") as err:
        BigEarthNetV1(root, exclude_lists=[tmp_path / "patches_with_seasonal_snow.csv.bz2"])
    assert "\n" not in str(err.value)


def test_a_real_patch_window_is_its_b04_b03_b02_reflectance_as_seed_uint8(dataset, root):
    patch = FOREST
    bands = []
    for band in ("B04", "B03", "B02"):
        with rasterio.open(root / patch / f"{patch}_{band}.tif") as src:
            assert src.shape == (120, 120) and src.crs.to_epsg() == 32635
            bands.append(src.read(1))
    expected = (np.clip(np.stack(bands) / 10000.0, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(dataset.window(dataset.ids.index(patch)), expected)


def test_a_real_patch_image_is_a_32_px_rgb_patch_with_texture(dataset):
    image = dataset.image(dataset.ids.index(FOREST))
    assert image.shape == (3, 32, 32) and image.dtype == np.uint8
    assert len(np.unique(image)) >= 10 and image.std() > 1


def test_the_snowy_patch_is_far_brighter_than_the_forest(dataset):
    snowy, forest = (dataset.image(dataset.ids.index(p)).mean() for p in (SNOWY, FOREST))
    assert snowy > 5 * forest
