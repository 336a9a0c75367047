"""The generated demo world: geometry, truth, scenes, radiometry cases, STAC Items and the cache."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import shape
from shapely.ops import unary_union

from models.classes import NUM_CLASSES
from pipeline import radiometry
from pipeline.demo import DemoWorld, DemoWorldError, generate_world
from pipeline.demo.world import MARKER

BAND_KEYS = {"blue", "green", "red", "nir", "rededge1", "rededge2", "rededge3", "nir08", "swir16", "swir22", "scl"}
CLEAR_SCL = (4, 5, 6)


def _items(world: DemoWorld) -> dict[str, dict]:
    return {item["id"]: item for item in world.items()}


def _read(item: dict, key: str) -> np.ndarray:
    with rasterio.open(item["assets"][key]["href"]) as src:
        return src.read(1)


def _scl_10m(item: dict) -> np.ndarray:
    scl = _read(item, "scl")
    return np.repeat(np.repeat(scl, 2, axis=0), 2, axis=1)


def _harmonised(item: dict, key: str) -> np.ndarray:
    """Reflectance the way the pipeline harmonises it: metadata first, then the dark-pixel check."""
    red = _read(item, "red")
    scl = _scl_10m(item)
    dark = red[np.isin(scl, radiometry.DARK_SCL_CLASSES)]
    offset = radiometry.pixel_checked_offset_dn(radiometry.metadata_offset_dn(item["properties"]), dark)
    return radiometry.dn_to_reflectance(_read(item, key), offset)


# ---------------------------------------------------------------------------- geometry and truth


def test_tiles_lie_in_adjacent_utm_zones_and_overlap_across_12e(demo_world):
    west, east = demo_world.tiles
    assert (west.epsg, east.epsg) == (32632, 32633)
    to_lon_west = Transformer.from_crs(west.epsg, 4326, always_xy=True)
    to_lon_east = Transformer.from_crs(east.epsg, 4326, always_xy=True)
    east_edge_of_west_tile, _ = to_lon_west.transform(west.bounds[2], (west.bounds[1] + west.bounds[3]) / 2)
    west_edge_of_east_tile, _ = to_lon_east.transform(east.bounds[0], (east.bounds[1] + east.bounds[3]) / 2)
    assert east_edge_of_west_tile > 12.0 > west_edge_of_east_tile


def test_both_tiles_show_the_same_ground_where_they_overlap(demo_world):
    west, east = demo_world.tiles
    with rasterio.open(west.truth_path) as w, rasterio.open(east.truth_path) as e:
        truth_w, truth_e = w.read(1), e.read(1)
        rows, cols = np.mgrid[0 : e.height : 7, 0 : e.width // 5 : 3]  # the western strip of the east tile
        xs, ys = rasterio.transform.xy(e.transform, rows.ravel(), cols.ravel())
        wx, wy = Transformer.from_crs(east.epsg, west.epsg, always_xy=True).transform(xs, ys)
        wr, wc = rasterio.transform.rowcol(w.transform, wx, wy)
    wr, wc = np.asarray(wr), np.asarray(wc)
    inside = (wr >= 0) & (wr < w.height) & (wc >= 0) & (wc < w.width)
    assert inside.sum() > 1000
    agree = truth_w[wr[inside], wc[inside]] == truth_e[rows.ravel()[inside], cols.ravel()[inside]]
    assert agree.mean() > 0.97  # nearest-neighbour sampling may differ on class borders only


def test_every_class_dominates_some_classifier_cells_in_both_tiles(demo_world):
    """Units are large: many 1.2 km cells are >= 70% one class, and all 19 classes have such cells."""
    for tile in demo_world.tiles:
        with rasterio.open(tile.truth_path) as src:
            truth = src.read(1)
        n = truth.shape[0] // 120
        cells = truth[: n * 120, : n * 120].reshape(n, 120, n, 120).transpose(0, 2, 1, 3).reshape(n * n, -1)
        counts = np.stack([np.bincount(c, minlength=NUM_CLASSES + 1) for c in cells])
        dominated = counts.max(axis=1) >= 0.7 * cells.shape[1]
        assert dominated.mean() > 0.4, tile.mgrs
        assert set(counts[dominated].argmax(axis=1)) == set(range(1, NUM_CLASSES + 1)), tile.mgrs


def test_demo_aoi_spans_both_zones_inside_the_tiles(demo_world):
    aoi = shape(demo_world.aoi()["features"][0]["geometry"])
    footprints = unary_union([shape(i["geometry"]) for i in demo_world.items()])
    west, _, east, _ = aoi.bounds
    assert west < 12.0 < east
    assert footprints.contains(aoi)


# ---------------------------------------------------------------------------- STAC items


def test_items_look_like_earth_search_v1(demo_world):
    items = demo_world.items()
    for raw in items:
        item = pystac.Item.from_dict(raw)
        p = raw["properties"]
        for name in ("datetime", "platform", "constellation", "eo:cloud_cover", "s2:mgrs_tile", "mgrs:utm_zone",
                     "mgrs:latitude_band", "mgrs:grid_square", "s2:processing_baseline", "proj:code", "proj:epsg"):
            assert name in p, (raw["id"], name)
        assert p["proj:code"] == f"EPSG:{p['proj:epsg']}"
        assert raw["id"] == f"S2{p['platform'][-1].upper()}_{p['s2:mgrs_tile']}_{item.datetime:%Y%m%d}_0_L2A"
        assert set(raw["assets"]) == BAND_KEYS
        for key, asset in raw["assets"].items():
            band = asset["raster:bands"][0]
            assert band["nodata"] == 0 and band["data_type"] == ("uint8" if key == "scl" else "uint16")
            with rasterio.open(asset["href"]) as src:
                assert [src.height, src.width] == asset["proj:shape"]
                assert list(src.transform)[:6] == asset["proj:transform"]
                assert src.crs.to_epsg() == p["proj:epsg"]
                assert src.res[0] == band["spatial_resolution"]
    per_tile = {}
    for raw in items:
        per_tile.setdefault(raw["properties"]["s2:mgrs_tile"], set()).add(raw["properties"]["datetime"][:10])
    assert len(per_tile) == 2 and all(len(days) >= 3 for days in per_tile.values())


def test_relative_hrefs_on_disk_resolve_against_the_world_folder(demo_world):
    first = json.loads(demo_world.items_path.read_text().splitlines()[0])
    href = first["assets"]["red"]["href"]
    assert not href.startswith(("/", "http"))
    assert (demo_world.root / href).is_file()


def test_cloud_cover_is_what_the_scl_says_and_dates_range_from_clear_to_cloudy(demo_world):
    by_tile: dict[str, list[float]] = {}
    for item in demo_world.items():
        scl = _read(item, "scl")
        valid = scl != 0
        cloudy = np.isin(scl, (8, 9, 10)) & valid
        expected = 100.0 * cloudy.sum() / valid.sum()
        assert item["properties"]["eo:cloud_cover"] == pytest.approx(expected, abs=0.01)
        by_tile.setdefault(item["properties"]["s2:mgrs_tile"], []).append(expected)
    for covers in by_tile.values():
        assert min(covers) < 5.0 and max(covers) > 50.0


def test_swath_edge_wedge_is_nodata_in_every_band_and_in_the_scl(demo_world):
    wedges = 0
    for item in demo_world.items():
        scl = _read(item, "scl")
        swir = _read(item, "swir16")
        np.testing.assert_array_equal(scl == 0, swir == 0)
        blue_nodata = _read(item, "blue") == 0
        quads = blue_nodata.reshape(scl.shape[0], 2, scl.shape[1], 2)
        np.testing.assert_array_equal(quads.any(axis=(1, 3)), scl == 0)  # 20 m: any 10 m pixel missing
        wedges += bool((scl == 0).any())
    assert wedges >= 1


# ---------------------------------------------------------------------------- pixels agree with the SCL


def test_scl_clouds_are_bright(demo_world):
    item = _items(demo_world)["S2B_33TTL_20240707_0_L2A"]
    scl = _scl_10m(item)
    blue = _harmonised(item, "blue")
    assert np.median(blue[scl == 9]) > 0.3
    assert np.median(blue[np.isin(scl, (8, 9))]) > 2 * np.median(blue[np.isin(scl, CLEAR_SCL)])
    assert np.median(blue[np.isin(scl, CLEAR_SCL)]) < 0.1


def test_scl_shadows_are_dark_in_nir_against_the_same_ground_in_the_clear(demo_world):
    item = _items(demo_world)["S2A_33TTL_20240627_0_L2A"]  # shadows without cirrus over them
    scl = _scl_10m(item)
    nir = _harmonised(item, "nir")
    with rasterio.open(demo_world.tile(item["properties"]["s2:mgrs_tile"]).truth_path) as src:
        truth = src.read(1)
    compared = 0
    for code in np.unique(truth):
        shadow = nir[(scl == 3) & (truth == code)]
        clear = nir[np.isin(scl, CLEAR_SCL) & (truth == code)]
        if shadow.size >= 400 and clear.size >= 400:
            assert np.median(shadow) < 0.6 * np.median(clear), code
            compared += 1
    assert compared >= 5


# ---------------------------------------------------------------------------- radiometry cases


def _clear_in_both(a: dict, b: dict) -> np.ndarray:
    return np.isin(_scl_10m(a), CLEAR_SCL) & np.isin(_scl_10m(b), CLEAR_SCL)


@pytest.mark.parametrize(
    ("no_offset_id", "offset_id"),
    [
        ("S2A_32TQR_20210820_0_L2A", "S2B_32TQR_20240612_0_L2A"),  # baseline 03.01 vs 05.10 without flag
        ("S2A_33TTL_20240627_0_L2A", "S2A_33TTL_20240617_0_L2A"),  # Earth Search flag vs no flag
    ],
)
def test_offset_and_no_offset_scenes_agree_after_harmonisation(demo_world, no_offset_id, offset_id):
    items = _items(demo_world)
    a, b = items[no_offset_id], items[offset_id]
    clear = _clear_in_both(a, b)
    assert clear.sum() > 100_000
    ra, rb = _harmonised(a, "red")[clear], _harmonised(b, "red")[clear]
    diff = ra - rb
    assert abs(float(np.median(diff))) < 0.003
    assert float(np.median(np.abs(diff))) < 0.01
    raw = (_read(a, "red")[clear].astype(float) - _read(b, "red")[clear]) * 1e-4
    assert float(np.median(raw)) < -0.09  # the raw DN really differ by the +1000 offset
    assert float(np.percentile(ra, 1)) > 0.0  # nothing harmonised below zero


def test_scene_cases_cover_every_way_catalogues_report_the_offset(demo_world):
    cases = set()
    for item in demo_world.items():
        p = item["properties"]
        declared = item["assets"]["red"]["raster:bands"][0]["offset"]
        pixels_offset = np.percentile(_read(item, "red")[np.isin(_read(item, "scl")[..., None].repeat(2, 1).repeat(2, 0)[:, :, 0], (4, 6))], 5) >= 900
        cases.add((p["s2:processing_baseline"] >= "04.00", p.get("earthsearch:boa_offset_applied"), declared, bool(pixels_offset)))
    assert cases >= {
        (False, None, 0.0, False),  # baseline 03.xx
        (True, None, -0.1, True),  # Planetary-Computer-like
        (True, True, -0.1, False),  # Earth Search v1, offset removed
        (True, True, -0.1, True),  # Earth Search v1 with a wrong flag
    }


def test_a_wrong_offset_flag_is_caught_by_the_pixel_check(demo_world):
    item = _items(demo_world)["S2B_32TQR_20240702_0_L2A"]
    assert radiometry.metadata_offset_dn(item["properties"]) == 0  # the flag claims it is removed
    red, scl = _read(item, "red"), _scl_10m(item)
    dark = red[np.isin(scl, radiometry.DARK_SCL_CLASSES)]
    assert radiometry.pixel_checked_offset_dn(0, dark) == radiometry.BOA_OFFSET_DN


# ---------------------------------------------------------------------------- files


@pytest.mark.parametrize("key", ["red", "swir16", "scl"])
def test_assets_and_truth_are_valid_cogs(demo_world, key):
    item = demo_world.items()[0]
    for path in (item["assets"][key]["href"], demo_world.tiles[0].truth_path):
        valid, errors, _ = cog_validate(str(path))
        assert valid, errors
        with rasterio.open(path) as src:
            assert src.block_shapes[0] == (512, 512) or src.height < 512
            assert src.nodata == 0
            assert src.compression.name.lower() == "deflate"
    with rasterio.open(demo_world.tiles[0].truth_path) as src:
        assert src.overviews(1) and src.colormap(1)[3][:3] == (255, 255, 168)  # Arable land


# ---------------------------------------------------------------------------- cache and determinism


def test_same_seed_gives_the_same_world_and_another_seed_another(tmp_path):
    a = generate_world(tmp_path / "a", size_px=240, seed=3)
    b = generate_world(tmp_path / "b", size_px=240, seed=3)
    c = generate_world(tmp_path / "c", size_px=240, seed=4)
    assert a.items_path.read_text() != "" and a.items(base="x") == b.items(base="x")
    with rasterio.open(a.items()[1]["assets"]["red"]["href"]) as ra, rasterio.open(b.items()[1]["assets"]["red"]["href"]) as rb:
        np.testing.assert_array_equal(ra.read(1), rb.read(1))
    with rasterio.open(a.tiles[1].truth_path) as ta, rasterio.open(c.tiles[1].truth_path) as tc:
        assert (ta.read(1) != tc.read(1)).mean() > 0.05


def test_a_complete_world_is_reused_and_a_half_written_one_regenerated(tmp_path):
    world = generate_world(tmp_path, size_px=240)
    marker = world.root / MARKER
    band = world.root / json.loads(world.items_path.read_text().splitlines()[0])["assets"]["red"]["href"]
    first = (marker.stat().st_mtime_ns, band.stat().st_ino)
    again = generate_world(tmp_path, size_px=240)
    assert again == world
    assert (marker.stat().st_mtime_ns, band.stat().st_ino) == first
    marker.unlink()
    regenerated = generate_world(tmp_path, size_px=240)
    assert regenerated.root == world.root and marker.is_file()
    assert band.stat().st_ino != first[1]
    assert not list(tmp_path.glob("demo/*.partial-*"))


def test_other_parameters_make_another_folder(tmp_path):
    assert generate_world(tmp_path, size_px=240).root != generate_world(tmp_path, size_px=240, seed=1).root


@pytest.mark.parametrize("size", [241, 100, 0])
def test_unusable_tile_sizes_are_refused_with_the_fix(tmp_path, size):
    with pytest.raises(DemoWorldError, match="even number of pixels"):
        generate_world(tmp_path, size_px=size)


def test_old_version_worlds_a_day_old_and_abandoned_partials_are_pruned(tmp_path):
    def old_world(name: str, age_s: float) -> Path:
        folder = tmp_path / "demo" / name
        folder.mkdir(parents=True)
        (folder / MARKER).write_text(json.dumps({"version": "0", "key": name}))
        os.utime(folder / MARKER, (time.time() - age_s,) * 2)
        return folder

    stale = old_world("world-0123456789abcdef", 2 * 86400)
    recent = old_world("world-fedcba9876543210", 60)  # a run may still be reading it
    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = tmp_path / "demo" / f"world-0123456789abcdef.partial-{dead.pid}"
    abandoned.mkdir()
    world = generate_world(tmp_path, size_px=240)
    assert not stale.exists() and recent.is_dir() and world.root.is_dir()
    assert not abandoned.exists()
