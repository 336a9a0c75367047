"""load.warp: how odc-stac's reads reproject (pinned kernel scale, aligned pastes, in-memory
warps), and that only reads see it: the process keeps rasterio's own reproject."""

import datetime as dt
import threading

import dask
import numpy as np
import pytest
import rasterio
import rasterio.warp
from overview_scenes import EPSG, X0, Y0, fine_geobox
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.transform import from_origin

import pipeline.load.warp
from pipeline.load import configure_gdal, item_offsets, load_block, load_composite, pinned_warp
from pipeline.load.warp import _paste_aligned, _warp_window
from pipeline.patches import plan_grid

# GDAL's reproject: outside a read the process has rasterio's own.
GDAL_WARP = rasterio.warp.reproject


def test_the_composite_does_not_depend_on_the_chunking_across_utm_zones(demo_world, served_world):
    """Scenes of the neighbouring zone are reprojected chunk by chunk; with GDAL's per-window
    kernel scale two chunkings differed by up to 0.05 reflectance (see pipeline.load.warp)."""
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
    assert rasterio.warp.reproject is GDAL_WARP  # threads of dask's pool read, and put it back


@pytest.mark.parametrize("resampling", ["bilinear", "nearest", "cubic"])
def test_a_scene_of_the_neighbouring_zone_is_warped_from_memory_with_gdals_pixels(tmp_path, resampling):
    """A warp across UTM zones reads the source window it needs and warps it in memory, without a
    nodata value when the window has none and the kernel cannot overshoot (GDAL's fast kernels):
    the pixels are GDAL's own masked warp's, over clean ground, over nodata pixels and off the
    raster's edge."""
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
        return GDAL_WARP(*args, **kwargs)

    corners = {"clean": (x + 1000, y - 1000), "nodata": (x + 5000, y - 5000), "off the edge": (x - 1000, y + 1000)}
    with rasterio.open(path) as src:
        for where, (left, top) in corners.items():
            kwargs = dict(src_nodata=0, dst_nodata=0, dst_crs="EPSG:32632", resampling=Resampling[resampling],
                          dst_transform=from_origin(round(left, -1), round(top, -1), 20, 20), XSCALE=1, YSCALE=1)
            ours, gdals = np.full((100, 120), 7, np.uint16), np.zeros((100, 120), np.uint16)
            assert _warp_window(rasterio.band(src, 1), ours, dict(kwargs), spy), where
            GDAL_WARP(rasterio.band(src, 1), gdals, **kwargs)
            np.testing.assert_array_equal(ours, gdals, err_msg=where)
            assert (ours > 0).any() and ((ours == 0).any() == (where != "clean")), where
            # The fast kernels wherever no source pixel is nodata (the raster's edge is no reason not
            # to), but never for a kernel that can overshoot onto the nodata value.
            assert ("src_nodata" in calls[-1]) == (where == "nodata" or resampling == "cubic"), where


def aligned_warp(resampling: str = "bilinear") -> dict:
    """reproject's options for the 20 m overview level onto its own grid, 3 px off the west edge."""
    return dict(src_nodata=0, dst_nodata=0, dst_crs=f"EPSG:{EPSG}", resampling=Resampling[resampling],
                dst_transform=from_origin(X0 - 3 * 20, Y0 - 5 * 20, 20, 20))


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_a_warp_onto_the_sources_own_grid_is_pasted_with_the_warpers_pixels(overview_scenes, resampling):
    """odc-loader warps an overview level onto a grid that is that level's own; the paste that
    replaces it (during a read) must give what GDAL's warp gives, edges off the raster included."""
    items, _ = overview_scenes
    with rasterio.open(items[0].assets["red"].href, overview_level=0) as src:
        kwargs = aligned_warp(resampling)
        pasted, warped = np.full((40, 70), 7, np.uint16), np.zeros((40, 70), np.uint16)
        assert _paste_aligned(rasterio.band(src, 1), pasted, kwargs)
        GDAL_WARP(rasterio.band(src, 1), warped, **kwargs)
        np.testing.assert_array_equal(pasted, warped)
        assert (pasted[:, :3] == 0).all() and (pasted[:, 3:67] > 0).all()
        half_pixel = {**kwargs, "dst_transform": from_origin(X0 + 10, Y0, 20, 20)}
        assert not _paste_aligned(rasterio.band(src, 1), pasted, half_pixel)  # left to the warper


@pytest.fixture
def pastes(monkeypatch):
    """The threads whose reproject calls reached the paste, one entry per call."""
    seen = []

    def spy(source, destination, kwargs):
        seen.append(threading.current_thread().name)
        return _paste_aligned(source, destination, kwargs)

    monkeypatch.setattr(pipeline.load.warp, "_paste_aligned", spy)
    return seen


def test_a_read_warps_its_way_and_leaves_rasterios_reproject_as_it_found_it(overview_scenes, pastes):
    """odc-stac's overview reads go through ``rasterio.warp.reproject``: inside the read they are
    pasted; after it, the process has GDAL's own function back, also when the read fails."""
    items, offsets = overview_scenes
    planes = load_block(items, fine_geobox(0, 0, 32, 32), offsets=offsets, read_resolution=20.0)
    assert rasterio.warp.reproject is GDAL_WARP  # building the graph installs nothing
    planes.compute(scheduler="synchronous")
    assert pastes  # the read's warps went through the wrapper
    assert rasterio.warp.reproject is GDAL_WARP
    with pytest.raises(RuntimeError, match="a read failed"), pinned_warp():
        assert rasterio.warp.reproject is not GDAL_WARP
        raise RuntimeError("a read failed")
    assert rasterio.warp.reproject is GDAL_WARP


def test_only_threads_inside_a_read_see_it_and_the_last_one_out_restores_gdals(overview_scenes, pastes):
    """dask workers read in threads: a thread that is not reading meanwhile gets GDAL's warp, and
    the original comes back when the last of overlapping reads ends, whichever started first."""
    items, _ = overview_scenes
    first_in, second_in, first_out, bystander_done = (threading.Event() for _ in range(4))
    seen: dict[str, object] = {}

    def warp_once() -> None:
        with rasterio.open(items[0].assets["red"].href, overview_level=0) as src:
            rasterio.warp.reproject(rasterio.band(src, 1), np.zeros((40, 70), np.uint16), **aligned_warp())

    def first() -> None:
        with pinned_warp():
            first_in.set()
            second_in.wait(10)
            warp_once()
        first_out.set()

    def second() -> None:
        first_in.wait(10)
        with pinned_warp():
            second_in.set()
            first_out.wait(10)
            seen["after the first left"] = rasterio.warp.reproject
            warp_once()
            bystander_done.wait(10)

    def bystander() -> None:
        second_in.wait(10)
        seen["the bystander's"] = rasterio.warp.reproject
        warp_once()  # not reading: no paste, GDAL's warp through the wrapper
        bystander_done.set()

    threads = [threading.Thread(target=f, name=f.__name__) for f in (first, second, bystander)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(pastes) == ["first", "second"]
    assert seen["after the first left"] is not GDAL_WARP  # the second read was still on
    assert seen["the bystander's"] is not GDAL_WARP  # it called the wrapper, and got GDAL's warp
    assert rasterio.warp.reproject is GDAL_WARP
