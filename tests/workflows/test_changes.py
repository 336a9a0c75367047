"""Change between two runs, cell by cell: polygons per (from, to) pair and area per class."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine

from models.classes import class_name
from workflows.changes import ClassRaster, change_polygons, change_summary, changed_cells, record_changes

CRS = "EPSG:32632"
TRANSFORM = Affine(1200, 0, 300_000, 0, -1200, 5_030_000)  # 1.2 km cells: 144 ha each
CELL_HA = 144.0


def raster(rows: list[list[int]]) -> ClassRaster:
    return ClassRaster(np.array(rows, dtype=np.uint8), TRANSFORM, CRS)


BEFORE = raster([[1, 1, 2], [3, 3, 0], [5, 5, 5]])
AFTER = raster([[1, 2, 2], [3, 4, 4], [0, 6, 6]])


def test_a_change_is_a_different_class_where_both_runs_saw_the_ground():
    expected = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 1]], dtype=bool)  # nodata on either side is no change
    np.testing.assert_array_equal(changed_cells(BEFORE.classes, AFTER.classes), expected)


def test_change_polygons_are_dissolved_per_transition_with_names_and_area():
    layer = change_polygons(BEFORE, AFTER)
    rows = {(r.from_class, r.to_class): r for r in layer.itertuples()}
    assert set(rows) == {(1, 2), (3, 4), (5, 6)}
    five_to_six = rows[(5, 6)]
    assert five_to_six.cell_count == 2 and five_to_six.area_ha == pytest.approx(2 * CELL_HA)
    assert five_to_six.from_name == class_name(5) and five_to_six.to_name == class_name(6)
    assert five_to_six.geometry.area / 10_000 == pytest.approx(2 * CELL_HA)
    cell_02 = shapely.box(300_000 + 1200, 5_030_000 - 1200, 300_000 + 2400, 5_030_000)  # row 0, col 1
    assert rows[(1, 2)].geometry.equals(shapely.MultiPolygon([cell_02]))


def test_area_gained_and_lost_per_class():
    summary = change_summary(BEFORE, AFTER)
    assert summary["compared_ha"] == pytest.approx(7 * CELL_HA)
    assert summary["changed_ha"] == pytest.approx(4 * CELL_HA)
    by_class = {c["class_id"]: c for c in summary["classes"]}
    assert by_class[5]["lost_ha"] == pytest.approx(2 * CELL_HA) and by_class[5]["net_ha"] == pytest.approx(-2 * CELL_HA)
    assert by_class[6]["gained_ha"] == pytest.approx(2 * CELL_HA)
    assert by_class[3]["lost_ha"] == pytest.approx(CELL_HA) and by_class[3]["gained_ha"] == 0.0
    assert 1 in by_class and 2 in by_class and 0 not in by_class  # nodata is never a class
    assert sum(c["net_ha"] for c in summary["classes"]) == pytest.approx(0.0)


def _write_tif(path, classes: ClassRaster) -> None:
    height, width = classes.classes.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype="uint8",
                       crs=CRS, transform=TRANSFORM, nodata=0) as dst:
        dst.write(classes.classes, 1)


def _run_dir(tmp_path, name: str, classes: ClassRaster):
    folder = tmp_path / name
    folder.mkdir()
    _write_tif(folder / "landcover.tif", classes)
    gpd.GeoDataFrame({"class_id": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs=CRS).to_file(
        folder / "landcover.gpkg", layer="landcover", driver="GPKG")
    pyogrio.write_dataframe(
        gpd.pd.DataFrame([{"f_table_name": "landcover", "styleName": "landcover", "styleQML": "<qgis/>"}]),
        folder / "landcover.gpkg", layer="layer_styles", driver="GPKG", layer_options={"FID": "id"},
    )
    (folder / "summary.json").write_text(json.dumps({"classes": []}))
    return folder


def test_record_changes_adds_the_layer_and_the_summary_without_touching_the_old_files(tmp_path):
    previous = _run_dir(tmp_path, "2024-07-05", BEFORE)
    current = _run_dir(tmp_path, "2024-07-08", AFTER)
    shared = tmp_path / "shared.gpkg"
    shared.hardlink_to(current / "landcover.gpkg")
    before_bytes = shared.read_bytes()

    report = record_changes(current, previous / "landcover.tif", "2024-07-05")

    assert report["previous"] == "2024-07-05" and report["changed_ha"] == pytest.approx(4 * CELL_HA)
    assert json.loads((current / "changes.json").read_text()) == report
    assert json.loads((current / "summary.json").read_text())["changes"] == report
    assert len(pyogrio.read_dataframe(current / "landcover.gpkg", layer="changes")) == 3
    styles = pyogrio.read_dataframe(current / "landcover.gpkg", layer="layer_styles", read_geometry=False)
    assert sorted(styles["f_table_name"]) == ["changes", "landcover"]
    # The GeoPackage was replaced by a new file, never written in place: a hard link to the old
    # file (as a reused run holds) still reads the old bytes.
    assert shared.read_bytes() == before_bytes
    assert not [p for p in current.iterdir() if ".partial" in p.name]


def test_the_first_run_and_a_changed_grid_give_an_empty_layer_and_a_note(tmp_path):
    first = _run_dir(tmp_path, "first", AFTER)
    assert record_changes(first, None, None)["previous"] is None
    assert len(pyogrio.read_dataframe(first / "landcover.gpkg", layer="changes")) == 0

    other_grid = _run_dir(tmp_path, "other", raster([[1, 1], [1, 1]]))
    report = record_changes(first, other_grid / "landcover.tif", "2024-01-01")
    assert "another grid" in report["note"] and "changed_ha" not in report
