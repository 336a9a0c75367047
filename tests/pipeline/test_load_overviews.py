"""load: reading COG overviews when the model sees the window coarser than the grid (issue #12, item 4)."""

import datetime as dt
import functools
import shutil
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import dask
import numpy as np
import pystac
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from rasterio.transform import from_origin

from pipeline.demo.serve import RangeRequestHandler
from pipeline.errors import LoadError
from pipeline.load import composite_block, exact_coarse_geobox, load_block, read_resolution_for, upsample_planes

EPSG = 32632
X0, Y0 = 600_000.0, 5_100_000.0  # on the 40 m lattice, as Sentinel-2 tile corners are on the 20 m one
SIZE = 128  # 10 m pixels: COGs of 32 px blocks get 2x and 4x overviews; the SCL is 64 x 64 of 20 m
BANDS = ("red", "green", "blue")


def write_cog(path: Path, array: np.ndarray, resolution: float, overview_resampling: str) -> None:
    profile = dict(
        driver="COG", width=array.shape[1], height=array.shape[0], count=1, dtype=array.dtype, crs=f"EPSG:{EPSG}",
        transform=from_origin(X0, Y0, resolution, resolution), nodata=0, blocksize=32, compress="deflate",
        overview_resampling=overview_resampling,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def make_item(tmp_path: Path, item_id: str, rng: np.random.Generator) -> pystac.Item:
    """Noisy DN (so an AVERAGE overview differs from any other way of getting 20 m) and an SCL with clouds."""
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    xs, ys = to_lonlat.transform([X0, X0 + SIZE * 10, X0 + SIZE * 10, X0], [Y0, Y0, Y0 - SIZE * 10, Y0 - SIZE * 10])
    ring = [list(p) for p in zip(xs, ys, strict=True)]
    item = pystac.Item(item_id, {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
                       [min(xs), min(ys), max(xs), max(ys)], dt.datetime(2023, 6, 1, 10),
                       {"proj:epsg": EPSG, "s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True})
    scl = rng.choice(np.array([4, 4, 4, 5, 6, 9, 3], np.uint8), (SIZE // 2, SIZE // 2))
    assets = {band: (rng.integers(200, 4000, (SIZE, SIZE)).astype(np.uint16), 10, "average") for band in BANDS}
    assets["scl"] = (scl, 20, "nearest")
    for key, (array, res, ovr) in assets.items():
        path = tmp_path / f"{item_id}_{key}.tif"
        write_cog(path, array, res, ovr)
        n = SIZE * 10 // res
        item.add_asset(key, pystac.Asset(str(path), media_type=pystac.MediaType.COG, extra_fields={
            "proj:shape": [n, n], "proj:transform": list(from_origin(X0, Y0, res, res))[:6],
            "raster:bands": [{"data_type": str(array.dtype), "scale": 1e-4, "nodata": 0}],
        }))
    return item


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("overviews")
    rng = np.random.default_rng(7)
    items = [make_item(tmp, f"scene{i}", rng) for i in range(3)]
    return items, {item.id: 0 for item in items}


def fine_geobox(row: int, col: int, height: int, width: int) -> GeoBox:
    """A 10 m geobox ``row``, ``col`` pixels into the scenes."""
    return GeoBox((height, width), from_origin(X0 + col * 10, Y0 - row * 10, 10, 10), f"EPSG:{EPSG}")


def overview_composite(items) -> np.ndarray:
    """The (4, 64, 64) composite of the scenes' 20 m overview level (SCL at its own 20 m), by hand."""
    stacks = []
    for key in (*BANDS, "scl"):
        level = {} if key == "scl" else {"overview_level": 0}
        frames = []
        for item in items:
            with rasterio.open(item.assets[key].href, **level) as src:
                frames.append(src.read(1))
        stacks.append(np.stack(frames))
    return composite_block(*stacks, offset_dn=np.zeros(len(items), np.float32),
                           scales=np.full((len(BANDS), len(items)), 1e-4, np.float32))


@pytest.mark.parametrize(
    ("window", "patch", "resolution", "expected"),
    [
        (120, 32, 10.0, 20.0),   # the seed/compact card: 37.5 m input pixels
        (120, 120, 10.0, 10.0),  # reBEN: the window is the patch, no change
        (120, 30, 10.0, 40.0),   # exactly 40 m: that level is still fine enough
        (120, 31, 10.0, 20.0),   # 38.7 m
        (120, 12, 10.0, 80.0),   # 100 m: the coarsest level there is
        (120, 240, 10.0, 10.0),  # finer than the grid: never read finer than the grid itself
        (120, 32, 20.0, 40.0),   # a 20 m grid: 75 m input pixels
    ],
)
def test_read_resolution_for_picks_the_coarsest_level_finer_than_the_model_input(window, patch, resolution, expected):
    assert read_resolution_for(window, patch, resolution) == expected


def test_read_resolution_for_takes_other_levels_and_refuses_nonsense():
    assert read_resolution_for(120, 32, levels=(10.0, 30.0, 60.0)) == 30.0
    assert read_resolution_for(120, 32, levels=(60.0,)) == 10.0
    with pytest.raises(ValueError):
        read_resolution_for(0, 32)


def test_upsampling_repeats_counts_and_interpolates_reflectance_between_pixel_centres():
    ramp = np.arange(4, dtype=np.float32)
    coarse = np.stack([np.tile(ramp, (3, 1)), np.full((3, 4), 2, np.float32)])  # reflectance rises eastwards
    near = upsample_planes(coarse, factor=2, resampling="nearest")
    np.testing.assert_array_equal(near, np.kron(coarse, np.ones((1, 2, 2), np.float32)))
    bil = upsample_planes(coarse, factor=2, resampling="bilinear")
    # Fine centres sit a quarter of a coarse pixel either side of each coarse centre; edges clamp.
    np.testing.assert_allclose(bil[0, 0], [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])
    np.testing.assert_array_equal(bil[1], near[1])
    # An offset window of odd size is the same pixels cropped.
    part = upsample_planes(coarse, factor=2, offset=(1, 3), shape=(3, 5), resampling="bilinear")
    np.testing.assert_array_equal(part, bil[:, 1:4, 3:8])


def test_bilinear_upsampling_skips_never_clear_neighbours_and_blanks_only_count_zero_pixels():
    coarse = np.stack([np.full((3, 3), 0.4, np.float32), np.full((3, 3), 2, np.float32)])
    coarse[0, 1, 1], coarse[1, 1, 1] = np.nan, 0  # the centre was never clear
    fine = upsample_planes(coarse, factor=2, resampling="bilinear")
    never = fine[1] == 0
    assert never.sum() == 4 and np.isnan(fine[0][never]).all()
    np.testing.assert_allclose(fine[0][~never], 0.4)  # its neighbours keep their own value, not NaN


def test_an_overview_read_has_the_10m_shape_and_equals_the_20m_level_upsampled(scenes):
    items, offsets = scenes
    # An odd origin and odd sides: the 20 m grid covers the geobox and the crop takes what it needs.
    row, col, height, width = 5, 7, 45, 51
    geobox = fine_geobox(row, col, height, width)
    planes = load_block(items, geobox, offsets=offsets, resampling="nearest", read_resolution=20.0)
    assert planes.shape == (4, height, width) and planes.dtype == np.float32
    with dask.config.set(scheduler="synchronous"):
        got = planes.compute()
    expected = np.kron(overview_composite(items), np.ones((1, 2, 2), np.float32))[:, row:row + height, col:col + width]
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)
    assert np.isnan(got[0]).any() and (got[-1] == 0).any()  # the clouds are there, masked alike
    # And it is not the full-resolution composite (that one differs pixel by pixel: noise).
    full = load_block(items, geobox, offsets=offsets, resampling="nearest").compute(scheduler="synchronous")
    assert full.shape == got.shape
    assert np.nanmean(np.abs(full[0] - got[0])) > 1e-2


def test_a_block_of_whole_coarse_pixels_can_be_had_as_the_20m_composite_itself(scenes):
    """What a model that resizes its window to fewer pixels gets: the coarse pixels the upsampling
    would start from, a quarter of the data, no interpolation."""
    items, offsets = scenes
    row, col, height, width = 6, 10, 44, 52  # even: on the 20 m lattice of the scenes
    planes = load_block(items, fine_geobox(row, col, height, width), offsets=offsets, resampling="bilinear",
                        read_resolution=20.0, upsample=False)
    assert planes.shape == (4, height // 2, width // 2) and planes.dtype == np.float32
    with dask.config.set(scheduler="synchronous"):
        got = planes.compute()
    expected = overview_composite(items)[:, row // 2:(row + height) // 2, col // 2:(col + width) // 2]
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)
    assert exact_coarse_geobox(fine_geobox(row, col, height, width), 2).shape == (height // 2, width // 2)
    # Between coarse pixels (an odd corner or side) there is no such block: upsample, or ask for another one.
    for odd in (fine_geobox(5, 10, 44, 52), fine_geobox(6, 10, 45, 52)):
        assert exact_coarse_geobox(odd, 2) is None
        with pytest.raises(LoadError, match="upsample=True"):
            load_block(items, odd, offsets=offsets, read_resolution=20.0, upsample=False)
    # At the grid's own resolution nothing is coarse: the block is read as it is.
    same = load_block(items, fine_geobox(5, 7, 9, 9), offsets=offsets, read_resolution=10.0, upsample=False)
    assert same.shape == (4, 9, 9)


def test_blocks_read_through_overviews_equal_the_crops_of_a_larger_read(scenes):
    """Blocks share one coarse lattice and read a coarse pixel beyond their edges, so bilinear
    upsampling at a block edge sees the same neighbours as in the middle of a larger read."""
    items, offsets = scenes
    whole = load_block(items, fine_geobox(8, 8, 112, 112), offsets=offsets, read_resolution=20.0)
    with dask.config.set(scheduler="synchronous"):
        whole = whole.compute()
        for r, c, h, w in [(8, 8, 56, 56), (64, 64, 56, 56), (21, 40, 33, 17)]:
            part = load_block(items, fine_geobox(r, c, h, w), offsets=offsets, read_resolution=20.0).compute()
            np.testing.assert_array_equal(part, whole[:, r - 8:r - 8 + h, c - 8:c - 8 + w])


def test_a_read_resolution_equal_to_the_grid_changes_nothing_and_a_fraction_is_refused(scenes):
    items, offsets = scenes
    geobox = fine_geobox(0, 0, 32, 32)
    with dask.config.set(scheduler="synchronous"):
        same = load_block(items, geobox, offsets=offsets, read_resolution=10.0).compute()
        plain = load_block(items, geobox, offsets=offsets).compute()
    np.testing.assert_array_equal(same, plain)
    with pytest.raises(LoadError, match="whole multiple"):
        load_block(items, geobox, offsets=offsets, read_resolution=25.0)


class _CountingHandler(RangeRequestHandler):
    served = 0  # bytes of file content sent, over every request

    def copyfile(self, source, outputfile) -> None:
        type(self).served += self._remaining or 0
        super().copyfile(source, outputfile)


def test_an_overview_read_fetches_fewer_bytes_over_http_than_the_full_resolution_one(scenes, tmp_path):
    """What a run against Earth Search pays: bytes GDAL fetches over HTTP (/vsicurl/, Range requests).

    Each read gets its own copy of the files, so GDAL's in-process cache of fetched ranges cannot
    serve one read from the other's downloads."""
    items, offsets = scenes
    root = Path(items[0].assets["red"].href).parent
    for copy in ("full", "overview"):
        shutil.copytree(root, tmp_path / copy)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_CountingHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def bytes_fetched(copy, read_resolution):
        remote = [item.clone() for item in items]
        for item in remote:
            for asset in item.assets.values():
                asset.href = f"{base}/{copy}/{Path(asset.href).name}"
        planes = load_block(remote, fine_geobox(0, 0, SIZE, SIZE), offsets=offsets, read_resolution=read_resolution)
        before = _CountingHandler.served
        planes.compute(scheduler="synchronous")
        return _CountingHandler.served - before

    try:
        full, overview = bytes_fetched("full", None), bytes_fetched("overview", 20.0)
    finally:
        server.shutdown()
    # The noisy 10 m bands dominate the full read; their 20 m level holds a quarter of the pixels.
    assert 0 < overview < 0.6 * full, f"{overview:,} bytes via the overviews vs {full:,} at full resolution"


def test_a_whole_grid_composite_through_overviews_keeps_the_grid_and_equals_its_blocks(scenes):
    from pipeline.aoi import parse_aoi
    from pipeline.infer import plan_blocks
    from pipeline.load import load_composite
    from pipeline.patches import plan_grid

    items, offsets = scenes
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    left, top = X0 + 200, Y0 - 200  # 6 x 6 cells of 80 m well inside the scenes
    right, bottom = left + 480 - 20, top - 480 + 20
    ring = [to_lonlat.transform(x, y) for x, y in [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]]
    grid = plan_grid(parse_aoi({"type": "Polygon", "coordinates": [ring]}), crs=f"EPSG:{EPSG}", window_px=12,
                     stride_px=8, cells_per_chunk=2)
    ds = load_composite(items, grid, offsets=offsets, read_resolution=20.0)
    assert ds.odc.geobox == grid.pixel_geobox and ds.red.chunks == grid.pixel_chunks()
    assert ds.attrs["read_resolution"] == 20.0
    with dask.config.set(scheduler="synchronous"):
        ds = ds.compute()
        whole = np.stack([ds[b].values for b in BANDS] + [ds["clear_count"].values.astype(np.float32)])
        blocks = plan_blocks(grid)
        for block in (blocks[0], blocks[-1]):  # a corner block and the opposite one: edges on every side
            ys, xs = block.pixels
            part = load_block(items, grid.pixel_geobox[ys, xs], offsets=offsets, read_resolution=20.0).compute()
            np.testing.assert_array_equal(part, whole[:, ys, xs])


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_a_warp_onto_the_sources_own_grid_is_pasted_with_the_warpers_pixels(scenes, resampling):
    """odc-loader warps an overview level onto a grid that is that level's own; the paste that
    replaces it (pin_warp_scale) must give what GDAL's warp gives, edges off the raster included."""
    import rasterio.warp
    from rasterio.enums import Resampling

    from pipeline.load import _paste_aligned

    warp = getattr(rasterio.warp.reproject, "__wrapped__", rasterio.warp.reproject)  # GDAL's, unwrapped
    items, _ = scenes
    with rasterio.open(items[0].assets["red"].href, overview_level=0) as src:
        kwargs = dict(src_nodata=0, dst_nodata=0, dst_crs=f"EPSG:{EPSG}", resampling=Resampling[resampling],
                      dst_transform=from_origin(X0 - 3 * 20, Y0 - 5 * 20, 20, 20))  # 3 px off the west edge
        pasted, warped = np.full((40, 70), 7, np.uint16), np.zeros((40, 70), np.uint16)
        assert _paste_aligned(rasterio.band(src, 1), pasted, kwargs)
        warp(rasterio.band(src, 1), warped, **kwargs)
        np.testing.assert_array_equal(pasted, warped)
        assert (pasted[:, :3] == 0).all() and (pasted[:, 3:67] > 0).all()
        half_pixel = {**kwargs, "dst_transform": from_origin(X0 + 10, Y0, 20, 20)}
        assert not _paste_aligned(rasterio.band(src, 1), pasted, half_pixel)  # left to the warper


@pytest.mark.parametrize("read_resolution, read_factor", [(None, 1), (20.0, 1), (20.0, 2)])
def test_blocks_read_as_a_group_get_the_planes_each_gets_read_alone(scenes, read_resolution, read_factor):
    """A run reads 2 x 2 blocks with one task (fewer COG tiles decoded twice) and hands each block
    its window of them: at full resolution, upsampled from the overview, and as coarse planes."""
    from types import SimpleNamespace

    from pipeline.aoi import parse_aoi
    from pipeline.infer import group_pixels, iter_blocks, read_group
    from pipeline.patches import plan_grid
    from pipeline.run import Work, group_planes

    items, offsets = scenes
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    left, top = X0 + 200, Y0 - 200  # 2 x 2 cells per block, 2 x 2 blocks per group
    right, bottom = left + 480 - 20, top - 480 + 20
    ring = [to_lonlat.transform(x, y) for x, y in [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]]
    grid = plan_grid(parse_aoi({"type": "Polygon", "coordinates": [ring]}), crs=f"EPSG:{EPSG}", window_px=12,
                     stride_px=8, cells_per_chunk=2)
    card = SimpleNamespace(bands=BANDS, resampling="bilinear")
    res = read_resolution or 10.0
    groups: dict[tuple[int, int], list[Work]] = {}
    for block in iter_blocks(grid):
        groups.setdefault(read_group(block), []).append(Work(block, items, "", read=group_pixels(grid, block),
                                                             read_items=items))
    assert len(groups) > 1 and max(len(g) for g in groups.values()) == 4
    with dask.config.set(scheduler="synchronous"):
        for works in groups.values():
            together = dask.compute(*group_planes(works, grid, offsets, card, res, read_factor))
            for work, planes in zip(works, together, strict=True):
                (alone,) = dask.compute(*group_planes([Work(work.block, items, "")], grid, offsets, card, res, read_factor))
                ys, xs = work.block.pixels
                assert planes.shape == alone.shape == (4, (ys.stop - ys.start) // read_factor, (xs.stop - xs.start) // read_factor)
                np.testing.assert_array_equal(planes, alone)
