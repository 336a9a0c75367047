import json

import pystac
import pytest

from models.classes import CLASS_NAMES
from pipeline.export.stac import slug


def test_item_json_is_a_stac_item_with_an_asset_for_every_file(exported):
    files, _, _ = exported
    item = pystac.Item.from_file(str(files.item))
    hrefs = {asset.href for asset in item.assets.values()}
    others = {path.name for path in files.paths()} - {"item.json"}
    assert {href.removeprefix("./") for href in hrefs} == others
    assert item.assets["landcover"].media_type == pystac.MediaType.COG
    assert "data" in item.assets["landcover"].roles
    assert item.assets["quicklook"].media_type == pystac.MediaType.PNG


def test_item_covers_the_map_in_lon_lat_over_the_time_span_of_its_inputs(exported):
    files, _, _ = exported
    item = pystac.Item.from_file(str(files.item))
    west, south, east, north = item.bbox
    assert 14.9 < west < 15.1 and 15.6 < east < 15.8 and 45.1 < south < north < 45.6
    assert item.datetime is None
    assert item.common_metadata.start_datetime.isoformat().startswith("2024-06-01T10:00")
    assert item.common_metadata.end_datetime.isoformat().startswith("2024-06-11T10:00")
    assert item.properties["proj:code"] == "EPSG:32633"
    assert item.properties["proj:shape"] == [40, 50]


def test_item_records_provenance_and_links_to_the_input_items(exported, scenes):
    files, _, _ = exported
    properties = json.loads(files.item.read_text())["properties"]
    assert properties["landcover:input_items"] == [s.id for s in scenes]
    assert properties["landcover:model_sha256"] == "ab" * 32
    assert properties["landcover:synthetic_model"] is True
    assert properties["landcover:parameters"]["min_clear"] == 0.5
    item = pystac.Item.from_file(str(files.item))
    assert [link.href for link in item.get_links("derived_from")] == [s.get_self_href() for s in scenes]


def test_landcover_asset_carries_the_class_table(exported):
    files, cmap, _ = exported
    raw = json.loads(files.item.read_text())
    assert any("classification" in url for url in raw["stac_extensions"])
    classes = raw["assets"]["landcover"]["classification:classes"]
    assert classes[0] == {"value": 0, "name": "no_data", "title": "No data", "nodata": True}
    by_value = {c["value"]: c for c in classes}
    assert [by_value[v]["title"] for v in range(1, 20)] == list(CLASS_NAMES)
    assert by_value[1]["color_hint"] == "E6004D"
    urban_cells = int((cmap.classes == 1).sum())
    assert by_value[1]["count"] == urban_cells


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Urban fabric", "urban_fabric"), ("Transitional woodland, shrub", "transitional_woodland_shrub")],
)
def test_class_slugs_are_machine_readable(name, expected):
    assert slug(name) == expected
