import sqlite3
import xml.etree.ElementTree as ET

import numpy as np
import pyogrio
import pytest
import shapely
from export_helpers import class_map_from, make_provenance, utm_grid

from models.classes import CLASS_NAMES
from pipeline.export import export_map

CELL_HA = 1200.0 * 1200.0 / 10_000


def test_geopackage_has_the_three_layers_in_the_map_crs(exported):
    files, _, _ = exported
    layers = dict(pyogrio.list_layers(files.geopackage))
    assert {"landcover", "patches", "scenes", "layer_styles"} <= set(layers)
    for name in ("landcover", "patches", "scenes"):
        info = pyogrio.read_info(files.geopackage, layer=name)
        assert info["crs"] == "EPSG:32633"
        assert info["geometry_type"] == "MultiPolygon"
        assert info["geometry_name"] == "geom"


def test_geopackage_is_version_1_3_for_qgis_3_22(exported):
    files, _, _ = exported
    with sqlite3.connect(files.geopackage) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10300


def test_class_polygons_are_dissolved_per_class_with_areas_that_match_the_raster(exported):
    files, cmap, _ = exported
    polygons = pyogrio.read_dataframe(files.geopackage, layer="landcover")
    assert list(polygons.columns) == ["class_id", "class_name", "area_ha", "mean_confidence", "cell_count", "geometry"]
    assert polygons["class_id"].is_unique
    codes, counts = np.unique(cmap.classes[cmap.valid], return_counts=True)
    assert sorted(polygons["class_id"]) == codes.tolist()
    by_code = polygons.set_index("class_id")
    for code, count in zip(codes, counts, strict=True):
        assert by_code.loc[code, "area_ha"] == pytest.approx(count * CELL_HA)
        assert by_code.loc[code, "class_name"] == CLASS_NAMES[code - 1]
        assert by_code.loc[code, "geometry"].area / 10_000 == pytest.approx(count * CELL_HA)
    assert polygons["area_ha"].sum() == pytest.approx(cmap.valid.sum() * CELL_HA)
    assert polygons.geometry.is_valid.all()
    np.testing.assert_allclose(polygons["mean_confidence"], 0.7, rtol=1e-6)


def test_patch_layer_has_one_square_per_valid_cell_with_top_three(exported):
    files, cmap, grid = exported
    patches = pyogrio.read_dataframe(files.geopackage, layer="patches")
    assert len(patches) == cmap.valid.sum()
    for column in ["row", "col", "class_id", "class_name", "confidence", "clear_fraction"] + [
        f"top{k}_{what}" for k in (1, 2, 3) for what in ("class", "prob")
    ]:
        assert column in patches.columns
    assert (patches["class_name"] == patches["top1_class"]).all()
    assert (patches["top1_prob"] >= patches["top2_prob"]).all()
    assert (patches["clear_fraction"] >= 0.5).all()

    first = patches.iloc[0]
    assert cmap.classes[first["row"], first["col"]] == first["class_id"]
    x0, y0 = grid.affine @ (first["col"], first["row"] + 1)
    assert first.geometry.equals(shapely.MultiPolygon([shapely.box(x0, y0, x0 + 1200, y0 + 1200)]))


def test_scene_footprints_are_reprojected_with_their_metadata(exported, scenes):
    files, _, _ = exported
    footprints = pyogrio.read_dataframe(files.geopackage, layer="scenes")
    assert footprints["item_id"].tolist() == [s.id for s in scenes]
    assert footprints["mgrs_tile"].tolist() == ["33TWL", "33TWL"]
    assert footprints["cloud_cover"].tolist() == [12.5, 12.5]
    assert str(footprints["datetime"].iloc[0]).startswith("2024-06-01 10:00:00")
    # 14.9..15.9 E lies around the zone 33 central meridian (15 E), i.e. easting ~ 500 km.
    minx, _, maxx, _ = footprints.total_bounds
    assert 480_000 < minx < 500_000 < maxx < 590_000


def test_layer_styles_hold_a_default_qml_for_each_layer(exported):
    files, _, _ = exported
    styles = pyogrio.read_dataframe(files.geopackage, layer="layer_styles")
    assert {"f_table_catalog", "f_table_schema", "f_table_name", "f_geometry_column", "styleName",
            "styleQML", "styleSLD", "useAsDefault", "description", "owner", "ui", "update_time"} <= set(styles.columns)
    assert sorted(styles["f_table_name"]) == ["landcover", "patches", "scenes"]
    assert styles["useAsDefault"].all()
    assert (styles["f_geometry_column"] == "geom").all()
    for row in styles.itertuples():
        qml = ET.fromstring(row.styleQML.split("\n", 1)[1])  # after the DOCTYPE line
        assert qml.tag == "qgis"
        if row.f_table_name != "scenes":
            renderer = qml.find("renderer-v2")
            assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class_id"
            labels = [c.get("label") for c in renderer.find("categories")]
            assert labels == list(CLASS_NAMES)
            ET.fromstring(row.styleSLD)


def test_an_all_nodata_map_still_writes_every_layer_with_its_fields(tmp_path, scenes):
    cmap = class_map_from(np.full((6, 8), -1))
    files = export_map(cmap, utm_grid(6, 8), tmp_path / "out", scenes=scenes, provenance=make_provenance(scenes))
    for layer in ("landcover", "patches"):
        info = pyogrio.read_info(files.geopackage, layer=layer)
        assert info["features"] == 0
        assert "class_id" in info["fields"]
