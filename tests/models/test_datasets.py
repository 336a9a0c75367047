import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from models.bigearthnet import BigEarthNetV1, BigEarthNetV2
from models.classes import CLASS_NAMES
from models.datasets import (
    DatasetError,
    PatchDataset,
    PatchSet,
    patches_from_raster,
    user_label_patches,
    window_label,
)

UTM32 = "EPSG:32632"


def write_band(path, value, size=120):
    """A BigEarthNet-like single-band 120 px GeoTIFF of constant DN."""
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint16", crs=UTM32,
                   transform=Affine(10, 0, 600000, 0, -10, 5000000))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((1, size, size), value, dtype=np.uint16))


def make_patch(folder, patch_id, dn=(1000, 2000, 3000)):
    folder.mkdir(parents=True)
    for band, value in zip(("B04", "B03", "B02"), dn):
        write_band(folder / f"{patch_id}_{band}.tif", value)


def test_bigearthnet_v1_layout_loads_with_19_class_labels(tmp_path):
    patches = {
        "S2A_MSIL2A_20170613T101031_0_45": ["Discontinuous urban fabric", "Water bodies"],
        "S2A_MSIL2A_20170613T101031_0_46": ["Coniferous forest", "Airports"],
    }
    for name, labels in patches.items():
        make_patch(tmp_path / name, name)
        (tmp_path / name / f"{name}_labels_metadata.json").write_text(json.dumps({"labels": labels, "tile_source": "T33UUP"}))
    ds = BigEarthNetV1(tmp_path)
    assert ds.ids == sorted(patches)
    first = ds[0]
    assert np.flatnonzero(first["target"].numpy()).tolist() == [CLASS_NAMES.index("Urban fabric"), CLASS_NAMES.index("Inland waters")]
    assert first["label"] == 0
    assert ds[1]["label"] == CLASS_NAMES.index("Coniferous forest")
    # the seed input: uint8 32 px, reflectance 0.1/0.2/0.3 -> x255 truncated
    assert first["image"].dtype.__str__() == "torch.uint8" and tuple(first["image"].shape) == (3, 32, 32)
    assert first["image"][:, 0, 0].tolist() == [25, 51, 76]
    assert ds.groups == ["T33UUP", "T33UUP"]


def test_bigearthnet_v1_official_split_csv_selects_patches(tmp_path):
    root = tmp_path / "ben"
    for name in ("p_1_1", "p_1_2"):
        make_patch(root / name, name)
        (root / name / f"{name}_labels_metadata.json").write_text(json.dumps({"labels": ["Pastures"]}))
    split = tmp_path / "val.csv"
    split.write_text("p_1_2\n")
    assert BigEarthNetV1(root, split).ids == ["p_1_2"]


def reben_root(tmp_path):
    rows = [
        ("S2B_MSIL2A_20180525T94029_N9999_R036_T35ULA_33_29", ["Mixed forest", "Transitional woodland, shrub"], "train"),
        ("S2B_MSIL2A_20180525T94029_N9999_R036_T35ULA_33_30", ["Marine waters"], "test"),
    ]
    for pid, _, _ in rows:
        make_patch(tmp_path / pid.rsplit("_", 2)[0] / pid, pid)
    return tmp_path, rows


def test_bigearthnet_v2_csv_metadata_loads_split_and_labels(tmp_path):
    import pandas as pd

    root, rows = reben_root(tmp_path)
    pd.DataFrame({"patch_id": [r[0] for r in rows], "labels": [json.dumps(r[1]) for r in rows],
                  "split": [r[2] for r in rows]}).to_csv(root / "metadata.csv", index=False)
    train = BigEarthNetV2(root, split="train")
    assert train.ids == [rows[0][0]]
    assert np.flatnonzero(train[0]["target"].numpy()).tolist() == [10, 13]
    assert train.groups == ["S2B_MSIL2A_20180525T94029_N9999_R036_T35ULA"]
    test = BigEarthNetV2(root, split="test")
    assert test[0]["label"] == CLASS_NAMES.index("Marine waters")


def test_bigearthnet_v2_parquet_metadata_loads_when_an_engine_exists(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    root, rows = reben_root(tmp_path)
    pd.DataFrame({"patch_id": [r[0] for r in rows], "labels": [r[1] for r in rows],
                  "split": [r[2] for r in rows]}).to_parquet(root / "metadata.parquet")
    assert len(BigEarthNetV2(root)) == 2


def test_bigearthnet_v2_parquet_without_engine_names_the_fix(tmp_path):
    try:
        import pyarrow  # noqa: F401
        pytest.skip("a parquet engine is installed")
    except ImportError:
        pass
    (tmp_path / "metadata.parquet").write_bytes(b"PAR1")
    with pytest.raises(DatasetError, match="install pyarrow or provide metadata.csv"):
        BigEarthNetV2(tmp_path)


def test_window_label_majority_multi_hot_and_dominance():
    codes = np.zeros((10, 10), dtype=np.uint8)
    codes[:, :8] = 10  # coniferous 80 %
    codes[:, 8:] = 18  # inland waters 20 %
    lab = window_label(codes, min_share=0.1)
    assert lab.majority == 9 and lab.dominance == pytest.approx(0.8)
    assert np.flatnonzero(lab.multi_hot).tolist() == [9, 17]
    assert window_label(codes, min_share=0.3).multi_hot.sum() == 1


def world(rows=240, cols=360):
    """Three classes in vertical stripes over a bright/dark/mid reflectance composite."""
    truth = np.zeros((rows, cols), dtype=np.uint8)
    truth[:, :120], truth[:, 120:240], truth[:, 240:] = 3, 10, 19
    refl = np.zeros((3, rows, cols), dtype=np.float32)
    refl[:, :, :120], refl[:, :, 120:240], refl[:, :, 240:] = 0.3, 0.05, 0.02
    return refl, truth, Affine(10, 0, 500000, 0, -10, 5000000)


def test_raster_patches_carry_labels_provenance_and_ground_blocks():
    refl, truth, transform = world()
    refl[:, 0:5, 0:5] = np.nan  # a little nodata in the first window: still kept (>= 90 % valid)
    ps = patches_from_raster(refl, truth, source="T32TQR", transform=transform, crs=UTM32, block_m=2400, keep_windows=True)
    assert len(ps) == 6
    assert ps.labels.tolist() == [2, 9, 18, 2, 9, 18]
    assert ps.ids[4] == "T32TQR/r120c120"
    assert ps.windows.shape == (6, 3, 120, 120)
    assert ps.footprints[0] == (500000.0, 5000000.0 - 1200, 501200.0, 5000000.0)
    # 2.4 km ground blocks hold four 1.2 km windows at most
    assert 2 <= len(set(ps.groups)) <= 6 and all(g.startswith("blk") for g in ps.groups)


def test_raster_patches_skip_windows_mostly_without_data():
    refl, truth, _ = world()
    refl[:, :60, :120] = np.nan  # half of the first window
    ps = patches_from_raster(refl, truth, source="t")
    assert "t/r0c0" not in ps.ids and len(ps) == 5


def test_patch_set_round_trips_through_npz_and_selects_groups(tmp_path):
    refl, truth, transform = world()
    ps = patches_from_raster(refl, truth, source="A", transform=transform, crs=UTM32)
    ps = PatchSet.concat([ps, patches_from_raster(refl, truth, source="B", transform=transform, crs=UTM32)])
    ps.save(tmp_path / "p.npz")
    back = PatchSet.load(tmp_path / "p.npz")
    assert back.ids == ps.ids and np.array_equal(back.images, ps.images) and back.footprints == ps.footprints
    assert set(back.select_groups(["B"]).groups) == {"B"}
    assert len(back.select_groups(None, exclude=["A"])) == 6
    sample = PatchDataset(back)[7]
    assert sample["label"] == 9 and sample["index"] == 7


def test_user_labels_from_a_geopackage_over_imagery(tmp_path):
    import geopandas as gpd

    refl, truth, transform = world()
    imagery = tmp_path / "composite.tif"
    with rasterio.open(imagery, "w", driver="GTiff", width=360, height=240, count=3, dtype="float32",
                       crs=UTM32, transform=transform) as dst:
        dst.write(refl)
    # one labelled by name, one by map code, one left empty (skipped)
    cells = [box(500000 + x, 5000000 - 1200, 500000 + x + 1200, 5000000) for x in (0, 1200, 2400)]
    gpd.GeoDataFrame({"class": ["Arable land", "10", ""]}, geometry=cells, crs=UTM32).to_file(tmp_path / "l.gpkg", layer="to_label")
    ps = user_label_patches(tmp_path / "l.gpkg", imagery)
    assert ps.labels.tolist() == [2, 9]
    assert ps.images[0, :, 0, 0].tolist() == [76, 76, 76]


def test_user_labels_without_class_field_name_the_fix(tmp_path):
    import geopandas as gpd

    refl, truth, transform = world()
    imagery = tmp_path / "c.tif"
    with rasterio.open(imagery, "w", driver="GTiff", width=360, height=240, count=3, dtype="float32",
                       crs=UTM32, transform=transform) as dst:
        dst.write(refl)
    gpd.GeoDataFrame({"name": ["x"]}, geometry=[box(500000, 4999000, 501000, 5000000)], crs=UTM32).to_file(tmp_path / "l.gpkg")
    with pytest.raises(DatasetError, match="no field 'class'"):
        user_label_patches(tmp_path / "l.gpkg", imagery)
