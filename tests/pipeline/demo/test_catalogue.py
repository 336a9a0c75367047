"""The metadata-only synthetic catalogue: real MGRS tiling, Earth Search v1 shaped Items, and a
real STAC API (`rustac serve` on 127.0.0.1) that the pipeline's own search pages through."""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.error
import urllib.request

import pystac
import pytest
from shapely.geometry import Polygon, shape
from shapely.ops import unary_union

from pipeline.aoi import parse_aoi
from pipeline.demo import catalogue, serve_items
from pipeline.search import SearchParams, scene_problem, search_items

EARTH_SEARCH_KEYS = {
    "aot", "blue", "coastal", "green", "nir", "nir08", "nir09", "red", "rededge1", "rededge2", "rededge3",
    "scl", "swir16", "swir22", "thumbnail", "visual", "wvp", "granule_metadata", "tileinfo_metadata",
}
MGRS_NAME = re.compile(r"^(\d{2})([C-HJ-NP-X])([A-HJ-NP-Z])([A-HJ-NP-V])$")


@pytest.fixture(scope="module")
def items_100() -> tuple[dict, list[dict]]:
    aoi = catalogue.country_aoi(100)
    return aoi, catalogue.synthetic_catalogue(aoi, dates_per_tile=2)


def test_square_letters_and_bands_match_real_earth_search_items(realdata):
    """The letters follow from the UTM zone and the tile's corner, as in the real items."""
    checked = 0
    for path in sorted((realdata / "stac").glob("earth-search-v1__S2*_L2A.json")):
        item = json.loads(path.read_text())
        p = item["properties"]
        ulx, uly = item["assets"]["blue"]["proj:transform"][2], item["assets"]["blue"]["proj:transform"][5]
        e0, n0 = (ulx + 100) // 100_000 * 100_000, round(uly / 100_000) * 100_000 - 100_000  # real corners sit <= 40 m off
        assert catalogue.square_letters(p["mgrs:utm_zone"], e0, n0) == p["mgrs:grid_square"], item["id"]
        checked += 1
    assert checked >= 5


def test_footprints_tile_a_country_aoi_without_gaps(items_100):
    aoi, items = items_100
    area = catalogue.aoi_geometry(aoi)
    covered = unary_union([shape(i["geometry"]) for i in items])
    assert area.difference(covered).area < 1e-9 * area.area
    assert len({catalogue.utm_zone(lon) for lon in area.bounds[::2]}) >= 2  # it crosses zone boundaries


def test_items_are_named_and_shaped_like_earth_search_v1_items_on_mgrs_tiles(items_100):
    _, items = items_100
    assert len({i["id"] for i in items}) == len(items)
    for raw in items:
        p = raw["properties"]
        zone, band, column, row = MGRS_NAME.match(p["s2:mgrs_tile"]).groups()
        assert (int(zone), band, column + row) == (p["mgrs:utm_zone"], p["mgrs:latitude_band"], p["mgrs:grid_square"])
        assert p["grid:code"] == f"MGRS-{p['s2:mgrs_tile']}" and p["proj:code"] == f"EPSG:{p['proj:epsg']}"
        assert p["proj:epsg"] == 32600 + int(zone)
        assert raw["id"] == f"S2{p['platform'][-1].upper()}_{p['s2:mgrs_tile']}_{p['datetime'][:10].replace('-', '')}_0_L2A"
        assert set(raw["assets"]) == EARTH_SEARCH_KEYS
        blue = raw["assets"]["blue"]
        assert blue["proj:shape"] == [10_980, 10_980] and blue["proj:transform"][2] % 100_000 == 0
        assert blue["raster:bands"][0]["offset"] == -0.1 and p["earthsearch:boa_offset_applied"] is True
        assert all(".invalid/" in a["href"] for a in raw["assets"].values())  # a host that never resolves
        assert scene_problem(pystac.Item.from_dict(raw), "sentinel-2-l2a") is None


def test_a_tile_reaches_9_8_km_into_its_eastern_neighbour():
    west = catalogue.MgrsTile(32, True, "U", "NA", 500_000.0, 5_500_000.0)
    east = catalogue.MgrsTile(32, True, "U", "PA", 600_000.0, 5_500_000.0)
    assert catalogue.square_letters(32, 600_000.0, 5_500_000.0) == "PA"
    overlap = Polygon(shape(catalogue.footprint(west)).exterior).intersection(shape(catalogue.footprint(east)))
    assert overlap.area / shape(catalogue.footprint(west)).area == pytest.approx(9.8 / 109.8, rel=0.02)


@pytest.mark.parametrize("n", [1, 10, 100, 1000])
def test_country_aois_cover_about_the_number_of_tiles_asked_for(n):
    tiles = catalogue.tiles_for(catalogue.aoi_geometry(catalogue.country_aoi(n)))
    assert len({(t.epsg, t.name) for t in tiles}) == len(tiles)
    assert 0.75 * n <= len(tiles) <= 1.25 * n if n > 1 else len(tiles) == 1


def test_the_catalogue_is_deterministic_per_seed():
    box = (9.0, 49.5, 10.5, 50.5)
    first, again = catalogue.synthetic_catalogue(box, seed=1), catalogue.synthetic_catalogue(box, seed=1)
    other = catalogue.synthetic_catalogue(box, seed=2)
    assert first == again
    assert [i["properties"]["eo:cloud_cover"] for i in first] != [i["properties"]["eo:cloud_cover"] for i in other]
    assert len(catalogue.synthetic_catalogue(box, dates_per_tile=3)) == 3 * len(first) // 2


def test_served_items_are_found_by_the_pipelines_search_exactly_where_footprints_meet_the_aoi(items_100):
    """More items than one page (100): the search follows the server's next links to the end."""
    aoi, items = items_100
    lon0, lat0, lon1, lat1 = catalogue.aoi_geometry(aoi).bounds
    # A triangle over part of the catalogue: its bbox holds tiles its footprint test must drop.
    triangle = [[lon0 + 1, lat0 + 1], [lon1 - 1, lat0 + 2], [lon0 + 2, lat1 - 1], [lon0 + 1, lat0 + 1]]
    query = {"type": "Polygon", "coordinates": [triangle]}
    expected = {i["id"] for i in catalogue.items_intersecting(items, query)}
    in_bbox = {i["id"] for i in catalogue.items_intersecting(items, shape(query).envelope)}
    assert len(expected) < len(in_bbox) and len(in_bbox) > 100  # the server pages its bbox answer
    with serve_items(items, catalogue.catalogue_collection(items)) as url:
        params = SearchParams(source="earth-search", stac_url=url, start=dt.date(2024, 5, 1), end=dt.date(2024, 7, 31),
                              max_cloud=100.0, max_items_per_tile=2)
        found = search_items(params, parse_aoi(query))
    assert sorted(i.id for i in found) == sorted(expected)
    with pytest.raises((urllib.error.URLError, OSError)):  # the server is gone after the block
        urllib.request.urlopen(url, timeout=2)
