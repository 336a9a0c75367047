"""load: offsets from metadata + pixels, and the lazy composite, on tiny real COGs written here."""

import datetime as dt
import logging
import shutil

import dask
import dask.array as da
import numpy as np
import pystac
import pytest
import rasterio
from dask.callbacks import Callback
from pyproj import Transformer
from rasterio.transform import from_origin

from pipeline.aoi import parse_aoi
from pipeline.errors import LoadError
from pipeline.load import GDAL_OPTIONS, band_scale, configure_gdal, item_offsets, load_block, load_composite, median_composite
from pipeline.patches import plan_grid
from pipeline.radiometry import BOA_OFFSET_DN

EPSG = 32632
X0, Y0 = 599_900.0, 5_100_100.0  # upper-left of every scene raster (on the 20 m SCL grid too)
SIZE = 64  # 10 m pixels; SCL has 32 x 32 of 20 m
BASE_DN = {"red": 500, "green": 600, "blue": 700}  # reflectance x 1e4 before each scene's delta


def write_cog(path, array, resolution):
    profile = dict(
        driver="COG", width=array.shape[1], height=array.shape[0], count=1, dtype=array.dtype, crs=f"EPSG:{EPSG}",
        transform=from_origin(X0, Y0, resolution, resolution), nodata=0, blocksize=32, compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def footprint():
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    xs, ys = to_lonlat.transform([X0, X0 + SIZE * 10, X0 + SIZE * 10, X0], [Y0, Y0, Y0 - SIZE * 10, Y0 - SIZE * 10])
    ring = [list(p) for p in zip(xs, ys, strict=True)]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}, [min(xs), min(ys), max(xs), max(ys)]


def make_scene(tmp_path, item_id, *, delta, pixel_offset, properties, scl20, zero_bands=None):
    """A scene whose band DN are BASE_DN + delta + pixel_offset (0 where scl is 0 or zero_bands says)."""
    geometry, bbox = footprint()
    item = pystac.Item(item_id, geometry, bbox, dt.datetime(2023, 6, 1, 10), {"proj:epsg": EPSG, **properties})
    scl10 = np.kron(scl20, np.ones((2, 2), dtype=np.uint8))
    for band, base in BASE_DN.items():
        dn = np.full((SIZE, SIZE), base + delta + pixel_offset, dtype=np.uint16)
        dn[scl10 == 0] = 0
        if zero_bands is not None and band in zero_bands:
            dn[zero_bands[band]] = 0
        write_cog(tmp_path / f"{item_id}_{band}.tif", dn, 10)
        add_asset(item, band, tmp_path / f"{item_id}_{band}.tif", 10, {"scale": 1e-4, "offset": -0.1, "nodata": 0})
    write_cog(tmp_path / f"{item_id}_scl.tif", scl20, 20)
    add_asset(item, "scl", tmp_path / f"{item_id}_scl.tif", 20, {"nodata": 0})
    return item, scl10


def add_asset(item, key, path, resolution, raster_band):
    n = SIZE * 10 // resolution
    item.add_asset(key, pystac.Asset(str(path), media_type=pystac.MediaType.COG, extra_fields={
        "proj:shape": [n, n],
        "proj:transform": list(from_origin(X0, Y0, resolution, resolution))[:6],
        "raster:bands": [{"data_type": "uint16" if key != "scl" else "uint8", **raster_band}],
    }))


@pytest.fixture
def scenes(tmp_path):
    """Three scenes of one tile: one harmonised, one carrying +1000 DN, one whose flag lies."""
    new_baseline = {"s2:processing_baseline": "05.09"}
    scl_a = np.full((32, 32), 4, np.uint8)
    scl_a[0:10, 0:16] = 9  # cloud high
    scl_b = np.full((32, 32), 6, np.uint8)
    scl_b[0:10, 5:20] = 3  # cloud shadow
    scl_c = np.full((32, 32), 4, np.uint8)
    scl_c[5:7, 10:15] = 8  # cloud medium: with a and b, 10 m rows 10-13 / cols 20-29 are never clear
    rows, cols = np.mgrid[0:32, 0:32]
    scl_c[cols < rows - 20] = 0  # a swath-edge nodata wedge
    blue_gap = np.zeros((SIZE, SIZE), dtype=bool)
    blue_gap[30:34, 50:54] = True  # blue DN 0 although the SCL calls it clear
    a, scl10_a = make_scene(tmp_path, "a_harmonised", delta=0, pixel_offset=0, scl20=scl_a,
                            properties={**new_baseline, "earthsearch:boa_offset_applied": True})
    b, scl10_b = make_scene(tmp_path, "b_offset", delta=200, pixel_offset=BOA_OFFSET_DN, scl20=scl_b, properties=new_baseline)
    c, scl10_c = make_scene(tmp_path, "c_wrong_flag", delta=100, pixel_offset=BOA_OFFSET_DN, scl20=scl_c,
                            properties={**new_baseline, "earthsearch:boa_offset_applied": True}, zero_bands={"blue": blue_gap})
    return {"items": [a, b, c], "scl10": [scl10_a, scl10_b, scl10_c], "deltas": [0, 200, 100], "blue_gap": blue_gap}


def small_grid(window_px=12, stride_px=8):
    """6 x 6 cells of stride_px x 10 m inside the scenes, in the scenes' own CRS."""
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    # Inset by 20 m so the bowed lon/lat edges stay inside the 6 x 6 cells.
    left, top = 600_000.0 + 20, 5_100_000.0 - 20
    right, bottom = left + 6 * stride_px * 10 - 40, top - 6 * stride_px * 10 + 40
    ring = [to_lonlat.transform(x, y) for x, y in [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]]
    aoi = parse_aoi({"type": "Polygon", "coordinates": [ring]})
    return plan_grid(aoi, crs=f"EPSG:{EPSG}", window_px=window_px, stride_px=stride_px, cells_per_chunk=2)


def test_item_offsets_trust_consistent_metadata_and_overrule_a_wrong_flag(scenes, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.load"):
        offsets = item_offsets(scenes["items"])
    assert offsets == {"a_harmonised": 0, "b_offset": BOA_OFFSET_DN, "c_wrong_flag": BOA_OFFSET_DN}
    assert "c_wrong_flag" in caplog.text and "a_harmonised" not in caplog.text and "b_offset" not in caplog.text


def test_an_item_whose_asset_is_missing_is_dropped_with_a_warning(scenes, tmp_path, caplog):
    a, b, c = scenes["items"]
    b.assets["green"].href = str(tmp_path / "gone.tif")  # a 404, locally
    with caplog.at_level(logging.WARNING, logger="pipeline.load"):
        offsets = item_offsets([a, b, c])
    assert set(offsets) == {"a_harmonised", "c_wrong_flag"}
    assert "skipping scene b_offset" in caplog.text and "404" in caplog.text


def test_an_item_whose_asset_is_truncated_is_dropped(scenes, tmp_path, caplog):
    a, b, c = scenes["items"]
    noisy = np.random.default_rng(1).integers(1, 10_000, (SIZE, SIZE), dtype=np.uint16)  # incompressible tiles
    write_cog(tmp_path / "noisy.tif", noisy, 10)
    data = (tmp_path / "noisy.tif").read_bytes()
    (tmp_path / "truncated.tif").write_bytes(data[: len(data) - 2000])  # the last full-resolution tiles are cut
    shutil.copy(tmp_path / "noisy.tif", tmp_path / "intact.tif")
    a.assets["red"].href = str(tmp_path / "truncated.tif")
    c.assets["red"].href = str(tmp_path / "intact.tif")
    with caplog.at_level(logging.WARNING, logger="pipeline.load"):
        offsets = item_offsets([a, c])
    assert set(offsets) == {"c_wrong_flag"}
    assert "skipping scene a_harmonised" in caplog.text and "truncated" in caplog.text


def test_no_readable_item_left_is_a_load_error(scenes, tmp_path):
    a = scenes["items"][0]
    a.assets["scl"].href = str(tmp_path / "gone.tif")
    with pytest.raises(LoadError, match="none of the 1 scenes could be read"):
        item_offsets([a])


def expected_composite(scenes, offsets, window):
    """The composite computed directly from how the scenes were built, on the loaded window."""
    reflectance = {band: [] for band in BASE_DN}
    clear_all = []
    for item, scl10, delta in zip(scenes["items"], scenes["scl10"], scenes["deltas"], strict=True):
        clear = ~np.isin(scl10, (0, 1, 3, 8, 9, 10))
        if item.id == "c_wrong_flag":
            clear &= ~scenes["blue_gap"]
        clear_all.append(clear)
        for band, base in BASE_DN.items():
            reflectance[band].append(np.where(clear, (base + delta) * 1e-4, np.nan))
    rows, cols = window
    out = {band: median_composite(np.stack(stack), axis=0)[rows, cols] for band, stack in reflectance.items()}
    out["clear_count"] = np.sum(clear_all, axis=0)[rows, cols]
    return out


def test_load_composite_removes_offsets_masks_scl_and_takes_the_median(scenes):
    grid = small_grid()
    offsets = item_offsets(scenes["items"])
    ds = load_composite(scenes["items"], grid, offsets=offsets)

    # The grid: the padded pixel grid, in the output CRS, chunked for whole cells.
    assert ds.odc.geobox == grid.pixel_geobox
    assert ds.odc.crs.epsg == EPSG
    assert ds.red.chunks == grid.pixel_chunks()
    assert set(ds.data_vars) == {"red", "green", "blue", "clear_count"}
    assert ds.red.dtype == np.float32 and ds.clear_count.dtype == np.uint8

    computed = ds.compute()
    # Pixel grid origin relative to the scene rasters (both on the 10 m grid).
    t = grid.pixel_geobox.affine
    r0, c0 = int((Y0 - t.f) / 10), int((t.c - X0) / 10)
    h, w = grid.pixel_geobox.shape
    expected = expected_composite(scenes, offsets, (slice(r0, r0 + h), slice(c0, c0 + w)))
    for band in ("red", "green", "blue"):
        np.testing.assert_allclose(computed[band].values, expected[band], atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(computed.clear_count.values, expected["clear_count"])

    # Spot checks in plain numbers: all three clear -> median of +0, +100, +200 is +100.
    assert computed.red.values[-1, -1] == pytest.approx((500 + 100) * 1e-4)
    assert computed.clear_count.values[-1, -1] == 3
    never_clear = computed.clear_count.values == 0
    assert never_clear.any() and np.isnan(computed.red.values[never_clear]).all()
    # No reflectance went negative: the +1000 was removed once, never twice.
    assert np.nanmin(computed.blue.values) > 0


def test_load_composite_is_lazy(scenes):
    grid = small_grid(window_px=8, stride_px=8)
    offsets = item_offsets(scenes["items"])

    class CountTasks(Callback):
        ran = 0

        def _pretask(self, key, dsk, state):
            type(self).ran += 1

    with CountTasks():
        ds = load_composite(scenes["items"], grid, offsets=offsets)
    assert CountTasks.ran == 0  # building the composite read no pixels
    assert isinstance(ds.red.data, da.Array) and isinstance(ds.clear_count.data, da.Array)
    assert ds.red.chunks == grid.pixel_chunks() == ((16, 16, 16), (16, 16, 16))
    # Computing one block runs only that block's reads and maths: memory follows the chunk size.
    total_tasks = len(ds.red.data.__dask_graph__())
    CountTasks.ran = 0
    with CountTasks(), dask.config.set(scheduler="synchronous"):
        block = ds.red.data.blocks[0, 0].compute()
    assert block.shape == (16, 16)
    assert 0 < CountTasks.ran < total_tasks / 3


def test_items_without_an_offset_are_skipped_and_none_left_is_an_error(scenes):
    grid = small_grid(window_px=8, stride_px=8)
    a, b, c = scenes["items"]
    ds = load_composite([a, b, c], grid, offsets={"a_harmonised": 0, "b_offset": BOA_OFFSET_DN})
    assert ds.attrs["items"] == ["a_harmonised", "b_offset"]
    with pytest.raises(LoadError, match="no readable scenes left"):
        load_composite([a], grid, offsets={})


def test_band_scale_comes_from_raster_bands_with_a_default(scenes):
    item = scenes["items"][0]
    assert band_scale(item, "red") == 1e-4
    item.assets["red"].extra_fields["raster:bands"] = [{"scale": 2e-4}]
    assert band_scale(item, "red") == 2e-4
    del item.assets["red"].extra_fields["raster:bands"]
    assert band_scale(item, "red") == 1e-4


def test_configure_gdal_sets_the_http_settings_in_worker_processes():
    from distributed import Client, LocalCluster

    from odc.loader._rio import capture_rio_env

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:
        before = next(iter(client.run(capture_rio_env).values()))
        assert "CPL_VSIL_CURL_ALLOWED_EXTENSIONS" not in before
        assert configure_gdal(client) == GDAL_OPTIONS
        after = next(iter(client.run(capture_rio_env).values()))
    for key, value in GDAL_OPTIONS.items():
        assert after[key] == value


def test_gdal_http_settings_travel_inside_the_graph_to_any_worker(scenes, monkeypatch):
    """odc-stac captures the rasterio environment into its read tasks; workers restore it per read."""
    import cloudpickle

    import pipeline.load

    marker = "landcover-test-7f3a"  # a value no global configuration could have put there
    monkeypatch.setattr(pipeline.load, "GDAL_OPTIONS", {**GDAL_OPTIONS, "GDAL_HTTP_USERAGENT": marker})
    grid = small_grid(window_px=8, stride_px=8)
    ds = load_composite(scenes["items"], grid, offsets=item_offsets(scenes["items"]))
    shipped = cloudpickle.dumps(dict(ds.red.data.__dask_graph__()))
    assert marker.encode() in shipped
    assert b"CPL_VSIL_CURL_ALLOWED_EXTENSIONS" in shipped


def test_item_offsets_over_http_match_the_demo_world_truth_and_skip_a_404(served_world, caplog):
    from pipeline.demo.scenes import make_scenes, make_tiles

    truth = {s.id: BOA_OFFSET_DN if s.pixels_carry_offset else 0 for s in make_scenes(make_tiles(served_world.world.size_px))}
    items = [pystac.Item.from_dict(d) for d in served_world.items]
    broken = items[0]
    broken.assets["blue"].href = broken.assets["blue"].href.replace("blue.tif", "no-such-band.tif")
    with caplog.at_level(logging.WARNING, logger="pipeline.load"):
        offsets = item_offsets(items)
    assert f"skipping scene {broken.id}" in caplog.text
    assert offsets == {item.id: truth[item.id] for item in items[1:]}


def test_a_block_is_one_task_that_reads_and_composites_where_it_runs(scenes):
    """A streamed run builds one task per block, whatever the number of bands and dates: its reads
    never travel between workers to meet for the composite, and it carries nothing of the other blocks."""
    from pipeline.infer import plan_blocks

    grid = small_grid(window_px=8, stride_px=8)
    blocks = plan_blocks(grid)
    offsets = item_offsets(scenes["items"])

    def graph(block):
        ys, xs = block.pixels
        planes = load_block(scenes["items"], grid.pixel_geobox[ys, xs], offsets=offsets)
        return dict(dask.base.collections_to_expr([planes], optimize_graph=True).__dask_graph__())  # as client.compute does

    first, second = graph(blocks[0]), graph(blocks[1])
    assert len(first) == 1
    assert not first.keys() & second.keys()
    assert graph(blocks[0]).keys() == first.keys()  # the same block, the same key: a store or a retry finds it


def test_a_blocks_pixels_equal_the_whole_grids(scenes):
    """Loading block by block changes nothing: every block equals its window of the whole-grid composite."""
    from pipeline.infer import plan_blocks

    grid = small_grid(window_px=8, stride_px=4)
    offsets = item_offsets(scenes["items"])
    whole = load_composite(scenes["items"], grid, offsets=offsets)
    planes = np.stack([whole[b].values for b in ("red", "green", "blue")] + [whole["clear_count"].values.astype(np.float32)])
    for block in plan_blocks(grid):
        ys, xs = block.pixels
        part = load_block(scenes["items"], grid.pixel_geobox[ys, xs], offsets=offsets).compute()
        np.testing.assert_array_equal(part, planes[:, ys, xs])


@pytest.mark.parametrize("dates", [1, 2, 3, 4, 7, 8, 9, 15])
def test_the_median_equals_numpys_nanmedian_for_any_number_of_dates(dates):
    """Short stacks take the min/max sorting network, long ones np.sort: both must agree with numpy."""
    import warnings

    rng = np.random.default_rng(dates)
    stack = rng.random((dates, 40, 50), dtype=np.float32)
    stack[rng.random(stack.shape) < 0.4] = np.nan
    stack[:, :3, :3] = np.nan  # never clear
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(stack, axis=0).astype(np.float32)
    got = median_composite(stack, axis=0)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(median_composite(np.moveaxis(stack, 0, -1)), expected)


def test_the_composite_does_not_depend_on_the_chunking_across_utm_zones(demo_world, served_world):
    """Scenes of the neighbouring zone are reprojected chunk by chunk; with GDAL's per-window
    kernel scale two chunkings differed by up to 0.05 reflectance (see pin_warp_scale)."""
    from pipeline.aoi import read_aoi
    from pipeline.search import SearchParams, search_items

    aoi = read_aoi(demo_world.aoi_path)
    params = SearchParams(source="local", stac_url=served_world.stac_url, start=dt.date(2015, 1, 1), end=dt.date(2030, 1, 1))
    items = search_items(params, aoi)
    assert {it.properties["proj:code"] for it in items} == {"EPSG:32632", "EPSG:32633"}
    configure_gdal()
    offsets = item_offsets(items)
    with dask.config.set(scheduler="threads"):
        big = load_composite(items, plan_grid(aoi, cells_per_chunk=8), offsets=offsets).compute()
        small = load_composite(items, plan_grid(aoi, cells_per_chunk=3), offsets=offsets).compute()
    for band in ("red", "green", "blue"):
        assert np.isnan(big[band].values).sum() == np.isnan(small[band].values).sum()
        assert np.nanmax(np.abs(big[band].values - small[band].values)) < 0.005


def test_composite_block_masks_the_scl_classes_it_is_given_and_none_when_given_none():
    from pipeline.load import composite_block

    red = np.array([[[1000, 1000]], [[3000, 3000]]], dtype=np.uint16)  # (T=2, H=1, W=2)
    scl = np.array([[[4, 9]], [[4, 4]]], dtype=np.uint16)  # pixel 2 is cloud (9) on date 1
    kwargs = dict(offset_dn=np.zeros(2, np.float32), scales=np.full((1, 2), 1e-4, np.float32))
    masked = composite_block(red, scl, mask_scl=(9,), **kwargs)
    np.testing.assert_allclose(masked[0, 0], [0.2, 0.3])
    np.testing.assert_array_equal(masked[1, 0], [2, 1])
    unmasked = composite_block(red, scl, mask_scl=(), **kwargs)
    np.testing.assert_allclose(unmasked[0, 0], [0.2, 0.2])
    np.testing.assert_array_equal(unmasked[1, 0], [2, 2])


@pytest.mark.parametrize("resampling", ["bilinear", "nearest", "cubic"])
def test_a_scene_of_the_neighbouring_zone_is_warped_from_memory_with_gdals_pixels(tmp_path, resampling):
    """A warp across UTM zones reads the source window it needs and warps it in memory, without a
    nodata value when the window has none and the kernel cannot overshoot (GDAL's fast kernels):
    the pixels are GDAL's own masked warp's, over clean ground, over nodata pixels and off the
    raster's edge."""
    import rasterio.warp
    from rasterio.enums import Resampling

    from pipeline.load import _warp_window

    warp = getattr(rasterio.warp.reproject, "__wrapped__", rasterio.warp.reproject)  # GDAL's, unwrapped
    rng = np.random.default_rng(3)
    dn = rng.integers(200, 4000, (400, 400)).astype(np.uint16)
    dn[300:, 300:] = 0  # a nodata corner, as at a swath edge
    path = tmp_path / "zone33.tif"
    profile = dict(driver="COG", width=400, height=400, count=1, dtype="uint16", crs="EPSG:32633", nodata=0,
                   transform=from_origin(250_000, 5_050_000, 20, 20), blocksize=128, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(dn, 1)
    x, y = Transformer.from_crs(32633, 32632, always_xy=True).transform(250_000, 5_050_000)
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return warp(*args, **kwargs)

    corners = {"clean": (x + 1000, y - 1000), "nodata": (x + 5000, y - 5000), "off the edge": (x - 1000, y + 1000)}
    with rasterio.open(path) as src:
        for where, (left, top) in corners.items():
            kwargs = dict(src_nodata=0, dst_nodata=0, dst_crs="EPSG:32632", resampling=Resampling[resampling],
                          dst_transform=from_origin(round(left, -1), round(top, -1), 20, 20), XSCALE=1, YSCALE=1)
            ours, gdals = np.full((100, 120), 7, np.uint16), np.zeros((100, 120), np.uint16)
            assert _warp_window(rasterio.band(src, 1), ours, dict(kwargs), spy), where
            warp(rasterio.band(src, 1), gdals, **kwargs)
            np.testing.assert_array_equal(ours, gdals, err_msg=where)
            assert (ours > 0).any() and ((ours == 0).any() == (where != "clean")), where
            # The fast kernels wherever no source pixel is nodata (the raster's edge is no reason not
            # to), but never for a kernel that can overshoot onto the nodata value.
            assert ("src_nodata" in calls[-1]) == (where == "nodata" or resampling == "cubic"), where


def test_composite_block_in_strips_equals_it_in_one_piece(monkeypatch):
    """A large block is composited a strip of rows at a time (small temporaries); the pixels do not change."""
    import pipeline.load
    from pipeline.load import composite_block

    rng = np.random.default_rng(5)
    dn = [rng.integers(0, 4000, (3, 23, 17)).astype(np.uint16) for _ in range(2)]  # 0: nodata here and there
    scl = rng.choice(np.array([4, 5, 8, 9, 3, 0], np.uint16), (3, 23, 17))
    kwargs = dict(offset_dn=np.array([0, 1000, 1000], np.float32), scales=np.full((2, 3), 1e-4, np.float32))
    whole = composite_block(*dn, scl, **kwargs)
    monkeypatch.setattr(pipeline.load, "_STRIP_PIXELS", 40)  # 2 rows of 17 px per strip, the last one short
    np.testing.assert_array_equal(composite_block(*dn, scl, **kwargs), whole)
    assert np.isnan(whole[0]).any() and (whole[-1] == 3).any()
