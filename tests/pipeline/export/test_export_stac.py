import json
import shutil
import subprocess
import sys
from pathlib import Path

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


def rustac_cli() -> str | None:
    return shutil.which("rustac") or next(
        (str(p) for p in [Path(sys.executable).parent / "rustac"] if p.exists()), None
    )


@pytest.mark.skipif(rustac_cli() is None, reason="the rustac CLI is not installed")
def test_item_is_valid_against_the_stac_core_schema(exported, tmp_path):
    files, _, _ = exported
    raw = json.loads(files.item.read_text())
    # Extension schemas are fetched from the internet; the core schema ships with rustac.
    raw["stac_extensions"] = []
    core = tmp_path / "core.json"
    core.write_text(json.dumps(raw))
    result = subprocess.run([rustac_cli(), "validate", str(core)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    del raw["bbox"]  # and the check does catch a broken item
    core.write_text(json.dumps(raw))
    assert subprocess.run([rustac_cli(), "validate", str(core)], capture_output=True, timeout=60).returncode != 0


def test_input_links_prefer_the_catalogues_canonical_link_and_skip_loopback_servers():
    from pipeline.export.stac import input_links

    def item(id_, **links):
        return {"id": id_, "links": [{"rel": rel, "href": href} for rel, href in links.items()]}

    scenes = [
        item("a", self="https://earth-search.aws.element84.com/v1/collections/x/items/a", canonical="s3://bucket/a.json"),
        item("b", self="https://planetarycomputer.microsoft.com/api/stac/v1/collections/x/items/b"),
        item("c", self="http://127.0.0.1:40123/collections/x/items/c"),  # the demo's server, gone after the run
        item("d"),
    ]
    assert input_links(scenes) == ["s3://bucket/a.json", "https://planetarycomputer.microsoft.com/api/stac/v1/collections/x/items/b"]
