"""Demo worlds of many tiles: `generate_world(layout=(columns, rows))` across the 12°E zone boundary.

The layout geometry is checked without rendering a pixel; one small 3 x 2 world is generated to
check what lands on disk. The default layout must stay the original two-tile world exactly.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from shapely.geometry import shape
from shapely.ops import unary_union

from pipeline.demo import DemoWorldError, generate_world, parse_layout
from pipeline.demo import scenes, stac
from pipeline.demo.world import GENERATOR_VERSION, central_aoi, layout_aoi, world_key
from pipeline.errors import LandcoverError

SMALL_PX = 240  # the smallest tile the generator accepts: a 3 x 2 world renders in seconds


def footprints(size_px: int, layout: tuple[int, int]) -> list:
    return [shape(stac.footprint(t)) for t in scenes.layout_tiles(size_px, layout)]


def aoi_shape(aoi: dict):
    return shape(aoi["features"][0]["geometry"])


# ---------------------------------------------------------------------------- the default stays


def test_the_default_layout_keeps_the_key_it_had_before_layouts_existed():
    before = hashlib.sha256(
        json.dumps({"version": GENERATOR_VERSION, "size_px": 1200, "seed": 0}, sort_keys=True).encode()
    ).hexdigest()[:16]
    assert world_key(1200, 0) == world_key(1200, 0, (2, 1)) == before
    assert world_key(1200, 0, (3, 2)) != before


def test_the_default_layout_is_the_original_two_tiles_and_six_scenes(demo_world):
    assert scenes.layout_tiles(1200, (2, 1)) == scenes.make_tiles(1200)
    assert demo_world.layout == (2, 1) and demo_world.root.name == f"world-{world_key(1200, 0)}"
    assert [i["id"] for i in demo_world.items()] == [
        "S2A_32TQR_20210820_0_L2A", "S2B_32TQR_20240612_0_L2A", "S2B_32TQR_20240702_0_L2A",
        "S2A_33TTL_20240617_0_L2A", "S2A_33TTL_20240627_0_L2A", "S2B_33TTL_20240707_0_L2A",
    ]
    assert generate_world(layout=(2, 1)) == generate_world(layout=None) == demo_world


# ---------------------------------------------------------------------------- layout geometry


def test_a_3x2_layout_has_six_tiles_in_two_utm_zones_each_in_the_zone_of_its_centre():
    tiles = scenes.layout_tiles(1200, (3, 2))
    assert len(tiles) == 6 and len({t.mgrs for t in tiles}) == 6
    assert {t.epsg for t in tiles} == {32632, 32633}
    for tile in tiles:
        west, south, east, north = tile.bounds
        lon, _ = Transformer.from_crs(tile.epsg, 4326, always_xy=True).transform((west + east) / 2, (south + north) / 2)
        assert (lon < 12.0) == (tile.epsg == 32632), tile
        assert tile.mgrs.startswith(str(tile.epsg - 32600))


def test_neighbouring_tiles_overlap_by_about_a_tenth_like_mgrs_tiles():
    columns, rows = 3, 2
    shapes = footprints(1200, (columns, rows))
    area = shapes[0].area
    pairs = [(i, i + 1) for i in range(columns * rows) if (i + 1) % columns] + [(i, i + columns) for i in range(columns)]
    for a, b in pairs:
        shared = shapes[a].intersection(shapes[b]).area / area
        assert 0.05 < shared < 0.16, (a, b, shared)  # 10% nominal; the zone boundary turns tiles by ~4°


@pytest.mark.parametrize("layout", [(3, 2), (4, 3), (1, 1), (2, 1), (5, 1), (2, 4)])
@pytest.mark.parametrize("size_px", [SMALL_PX, 1200, 10_980])
def test_the_layout_aoi_spans_the_layout_and_no_point_of_it_lacks_a_tile(layout, size_px):
    tiles = scenes.layout_tiles(size_px, layout)
    covered = unary_union(footprints(size_px, layout))
    aoi = aoi_shape(layout_aoi(tiles, layout))
    assert aoi.difference(covered).area == 0.0
    assert aoi.area > 0.8 * covered.area / (1 + 0.5 * (layout[0] + layout[1]) * 0.1)  # the AOI is most of the layout
    if layout[0] > 1:
        assert aoi.bounds[0] < 12.0 < aoi.bounds[2]


def test_a_central_aoi_grows_4x_in_area_when_its_side_doubles():
    tiles = scenes.layout_tiles(1200, (3, 2))
    small, large = (aoi_shape(central_aoi(tiles, (3, 2), km)) for km in (5, 10))
    assert large.area / small.area == pytest.approx(4.0, rel=1e-4)  # corners rounded to 1e-6°
    assert large.contains(small) and aoi_shape(layout_aoi(tiles, (3, 2))).contains(large)
    with pytest.raises(DemoWorldError, match="does not fit"):
        central_aoi(tiles, (3, 2), 40)


def test_layouts_are_given_as_columns_x_rows():
    assert parse_layout("3x2") == (3, 2) and parse_layout("1X1") == (1, 1)
    for bad in ("3", "3x", "x2", "0x2", "3x11", "a x b"):
        with pytest.raises(DemoWorldError, match="layout"):
            parse_layout(bad)
    with pytest.raises(DemoWorldError, match="columns, rows"):
        generate_world(layout=(0, 2))


def test_map_takes_a_demo_layout_for_the_demo_world_only():
    from cli.map import _demo_layout

    assert _demo_layout("3x2", True, "local") == (3, 2)
    assert _demo_layout("3x2", False, "local") == (3, 2)  # an own AOI over the served demo world
    assert _demo_layout(None, True, "local") is None
    with pytest.raises(LandcoverError, match="--demo-layout applies to the offline demo world"):
        _demo_layout("3x2", False, "earth-search")


# ---------------------------------------------------------------------------- a generated 3 x 2 world


@pytest.fixture(scope="module")
def world_3x2(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("layout"), size_px=SMALL_PX, layout=(3, 2))


def test_a_3x2_world_has_every_tile_with_its_zone_scenes_and_unique_ids(world_3x2):
    items = world_3x2.items()
    assert world_3x2.root.name == f"world-{world_key(SMALL_PX, 0, (3, 2))}" and len(world_3x2.tiles) == 6
    assert len({i["id"] for i in items}) == len(items) == 18
    by_tile: dict[str, set[str]] = {}
    for item in items:
        by_tile.setdefault(item["properties"]["s2:mgrs_tile"], set()).add(item["properties"]["datetime"][:10])
    assert sorted(by_tile) == sorted(t.mgrs for t in world_3x2.tiles) and all(len(d) == 3 for d in by_tile.values())
    # The radiometry cases of the two-tile world are all still there.
    props = [i["properties"] for i in items]
    assert any(p["s2:processing_baseline"] < "04.00" for p in props)
    assert any(p["s2:processing_baseline"] >= "04.00" and "earthsearch:boa_offset_applied" not in p for p in props)
    assert any(p.get("earthsearch:boa_offset_applied") is True for p in props)
    assert any(p["s2:nodata_pixel_percentage"] > 1.0 for p in props)  # a swath edge


def test_a_3x2_world_aoi_is_the_layout_and_lies_inside_its_scenes(world_3x2):
    aoi = aoi_shape(world_3x2.aoi())
    assert aoi.equals(aoi_shape(world_3x2.layout_aoi()))
    assert unary_union([shape(i["geometry"]) for i in world_3x2.items()]).contains(aoi)
    assert world_3x2.collection()["description"].count("3 x 2")


def test_neighbours_of_one_zone_show_the_same_ground_and_clouds_in_their_overlap(world_3x2):
    """One acquisition over two tiles is one sky: the overlap agrees in truth and in SCL."""
    west, east = world_3x2.tile("32TPR"), world_3x2.tile("32TQR")
    items = {i["id"]: i for i in world_3x2.items()}
    day = "20240612"  # the cloudy zone-32 date
    with rasterio.open(west.truth_path) as w, rasterio.open(east.truth_path) as e, \
            rasterio.open(items[f"S2B_32TPR_{day}_0_L2A"]["assets"]["scl"]["href"]) as sw, \
            rasterio.open(items[f"S2B_32TQR_{day}_0_L2A"]["assets"]["scl"]["href"]) as se:
        cols = np.arange(0, e.width // 12)  # the western strip of the eastern tile
        rows, cols = np.meshgrid(np.arange(e.height), cols, indexing="ij")
        xs, ys = rasterio.transform.xy(e.transform, rows.ravel(), cols.ravel())
        wr, wc = rasterio.transform.rowcol(w.transform, xs, ys)
        truth_w, truth_e = w.read(1), e.read(1)
        scl_w, scl_e = sw.read(1), se.read(1)
    wr, wc = np.asarray(wr), np.asarray(wc)
    inside = (wr >= 0) & (wr < w.height) & (wc >= 0) & (wc < w.width)
    assert inside.sum() > 500
    r, c = rows.ravel()[inside], cols.ravel()[inside]
    assert (truth_w[wr[inside], wc[inside]] == truth_e[r, c]).mean() > 0.97
    assert (scl_w[wr[inside] // 2, wc[inside] // 2] == scl_e[r // 2, c // 2]).mean() > 0.9
