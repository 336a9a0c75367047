"""load.reader: the lazy composite of a block and of a whole grid, at the grid's resolution and
through COG overviews (issue #12, item 4), on tiny real COGs written here."""

import functools
import shutil
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback
from overview_scenes import BANDS, SIZE, cells_grid, fine_geobox, overview_composite
from tiny_scenes import EPSG, X0, Y0, expected_composite, small_grid

from pipeline.demo.serve import RangeRequestHandler
from pipeline.errors import LoadError
from pipeline.load import exact_coarse_geobox, item_offsets, load_block, load_composite
from pipeline.radiometry import BOA_OFFSET_DN


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
    expected = expected_composite(scenes, (slice(r0, r0 + h), slice(c0, c0 + w)))
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


def test_a_block_is_one_task_that_reads_and_composites_where_it_runs(scenes):
    """A streamed run builds one task per block, whatever the number of bands and dates: its reads
    never travel between workers to meet for the composite, and it carries nothing of the other blocks."""
    from pipeline.blocks import plan_blocks

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
    from pipeline.blocks import plan_blocks

    grid = small_grid(window_px=8, stride_px=4)
    offsets = item_offsets(scenes["items"])
    whole = load_composite(scenes["items"], grid, offsets=offsets)
    planes = np.stack([whole[b].values for b in ("red", "green", "blue")] + [whole["clear_count"].values.astype(np.float32)])
    for block in plan_blocks(grid):
        ys, xs = block.pixels
        part = load_block(scenes["items"], grid.pixel_geobox[ys, xs], offsets=offsets).compute()
        np.testing.assert_array_equal(part, planes[:, ys, xs])


def test_an_overview_read_has_the_10m_shape_and_equals_the_20m_level_upsampled(overview_scenes):
    items, offsets = overview_scenes
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


def test_a_block_of_whole_coarse_pixels_can_be_had_as_the_20m_composite_itself(overview_scenes):
    """What a model that resizes its window to fewer pixels gets: the coarse pixels the upsampling
    would start from, a quarter of the data, no interpolation."""
    items, offsets = overview_scenes
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


def test_blocks_read_through_overviews_equal_the_crops_of_a_larger_read(overview_scenes):
    """Blocks share one coarse lattice and read a coarse pixel beyond their edges, so bilinear
    upsampling at a block edge sees the same neighbours as in the middle of a larger read."""
    items, offsets = overview_scenes
    whole = load_block(items, fine_geobox(8, 8, 112, 112), offsets=offsets, read_resolution=20.0)
    with dask.config.set(scheduler="synchronous"):
        whole = whole.compute()
        for r, c, h, w in [(8, 8, 56, 56), (64, 64, 56, 56), (21, 40, 33, 17)]:
            part = load_block(items, fine_geobox(r, c, h, w), offsets=offsets, read_resolution=20.0).compute()
            np.testing.assert_array_equal(part, whole[:, r - 8:r - 8 + h, c - 8:c - 8 + w])


def test_a_read_resolution_equal_to_the_grid_changes_nothing_and_a_fraction_is_refused(overview_scenes):
    items, offsets = overview_scenes
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


def test_an_overview_read_fetches_fewer_bytes_over_http_than_the_full_resolution_one(overview_scenes, tmp_path):
    """What a run against Earth Search pays: bytes GDAL fetches over HTTP (/vsicurl/, Range requests).

    Each read gets its own copy of the files, so GDAL's in-process cache of fetched ranges cannot
    serve one read from the other's downloads."""
    items, offsets = overview_scenes
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


def test_a_whole_grid_composite_through_overviews_keeps_the_grid_and_equals_its_blocks(overview_scenes):
    from pipeline.blocks import plan_blocks

    items, offsets = overview_scenes
    grid = cells_grid()
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


@pytest.mark.parametrize("read_resolution, read_factor", [(None, 1), (20.0, 1), (20.0, 2)])
def test_blocks_read_as_a_group_get_the_planes_each_gets_read_alone(overview_scenes, read_resolution, read_factor):
    """A run reads 2 x 2 blocks with one task (fewer COG tiles decoded twice) and hands each block
    its window of them: at full resolution, upsampled from the overview, and as coarse planes."""
    from types import SimpleNamespace

    from pipeline.blocks import group_pixels, iter_blocks, read_group
    from pipeline.plan import Work
    from pipeline.run import group_planes

    items, offsets = overview_scenes
    grid = cells_grid()  # 2 x 2 cells per block, 2 x 2 blocks per group
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
