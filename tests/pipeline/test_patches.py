import dask.array as da
import numpy as np
import pytest
from pyproj import Transformer

from pipeline.aoi import parse_aoi
from pipeline.patches import GridError, block_cells, clear_fraction, cut_windows, plan_grid, project_aoi


def lonlat_box(lon0, lat0, lon1, lat1):
    ring = [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]
    return {"type": "Polygon", "coordinates": [ring]}


def utm_box_aoi(epsg, left, bottom, right, top):
    """An AOI whose projection in ``epsg`` is (nearly) the given rectangle."""
    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
    ring = [to_lonlat.transform(x, y) for x, y in [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]]
    return parse_aoi({"type": "Polygon", "coordinates": [ring]})


@pytest.fixture
def aoi():
    return parse_aoi(lonlat_box(11.8, 46.0, 12.2, 46.2))  # spans 12°E; centre in zone 33


def test_default_grid_is_utm_of_the_centre_with_1200m_cells_snapped_to_multiples(aoi):
    grid = plan_grid(aoi)
    assert grid.crs.epsg == 32633
    t = grid.cell_geobox.affine
    assert (t.a, t.e) == (1200.0, -1200.0)
    assert t.c % 1200 == 0 and t.f % 1200 == 0
    # The cells cover the projected AOI, with less than one cell to spare on each side.
    left, bottom, right, top = grid.cell_geobox.extent.boundingbox
    aleft, abottom, aright, atop = aoi_bounds_in(aoi, "EPSG:32633")
    assert left <= aleft < left + 1200 and right - 1200 < aright <= right
    assert bottom <= abottom < bottom + 1200 and top - 1200 < atop <= top


def aoi_bounds_in(aoi, crs):
    return project_aoi(aoi, crs).bounds


def test_without_overlap_the_pixel_grid_is_the_cell_grid_at_10m(aoi):
    grid = plan_grid(aoi)
    assert grid.margin_px == 0
    assert grid.pixel_geobox.shape == (grid.shape[0] * 120, grid.shape[1] * 120)
    assert grid.pixel_geobox.extent.boundingbox == grid.cell_geobox.extent.boundingbox
    assert grid.pixel_geobox.resolution.x == 10.0


def test_overlapping_aois_share_cell_edges():
    a = plan_grid(utm_box_aoi(32632, 600_100, 5_000_100, 615_000, 5_010_000), crs="EPSG:32632")
    b = plan_grid(utm_box_aoi(32632, 607_777, 5_004_321, 620_000, 5_020_000), crs="EPSG:32632")
    dx = b.cell_geobox.affine.c - a.cell_geobox.affine.c
    dy = b.cell_geobox.affine.f - a.cell_geobox.affine.f
    assert dx % 1200 == 0 and dy % 1200 == 0
    assert a.cell_geobox.affine.c == 600_000 - 1200 * 0  # 600 100 snaps down to 600 000


def test_stride_smaller_than_window_pads_the_pixel_grid_by_the_margin(aoi):
    grid = plan_grid(aoi, stride_px=60)
    assert grid.margin_px == 30
    assert grid.cell_geobox.resolution.x == 600.0
    ny, nx = grid.shape
    assert grid.pixel_geobox.shape == (ny * 60 + 60, nx * 60 + 60)
    cell_left, _, _, cell_top = grid.cell_geobox.extent.boundingbox
    pix_left, _, _, pix_top = grid.pixel_geobox.extent.boundingbox
    assert (cell_left - pix_left, pix_top - cell_top) == (300.0, 300.0)


def test_chunks_hold_whole_cells_and_the_margins(aoi):
    grid = plan_grid(aoi, stride_px=60, cells_per_chunk=5)
    cy, cx = grid.cell_chunks()
    py, px = grid.pixel_chunks()
    assert sum(cy) == grid.shape[0] and sum(cx) == grid.shape[1]
    assert (sum(py), sum(px)) == tuple(grid.pixel_geobox.shape)
    assert set(cy[:-1]) == {5} and 0 < cy[-1] <= 5
    for cells, pixels in ((cy, py), (cx, px)):
        inner = [p - (30 if k == 0 else 0) - (30 if k == len(pixels) - 1 else 0) for k, p in enumerate(pixels)]
        assert inner == [c * 60 for c in cells]


def test_explicit_crs_overrides_the_centre_zone(aoi):
    assert plan_grid(aoi, crs="EPSG:32632").crs.epsg == 32632


def test_inside_aoi_marks_cells_touching_the_polygons_only():
    west = utm_box_aoi(32632, 600_000, 5_000_000, 606_000, 5_006_000).geometry
    east = utm_box_aoi(32632, 624_000, 5_000_000, 630_000, 5_006_000).geometry
    aoi = parse_aoi({"type": "GeometryCollection", "geometries": [west.__geo_interface__, east.__geo_interface__]})
    grid = plan_grid(aoi, crs="EPSG:32632")
    assert grid.inside_aoi.dtype == bool and grid.inside_aoi.shape == grid.shape
    t = grid.cell_geobox.affine

    def cell_at(x, y):
        return int((y - t.f) // t.e), int((x - t.c) // t.a)

    assert grid.inside_aoi[cell_at(603_000, 5_003_000)] and grid.inside_aoi[cell_at(627_000, 5_003_000)]
    # Cells a full cell away from both squares (lon/lat edges bow by tens of metres in UTM).
    left_edges = t.c + t.a * np.arange(grid.shape[1])
    gap = (left_edges >= 607_200) & (left_edges + 1200 <= 622_800)
    assert gap.sum() >= 10
    assert not grid.inside_aoi[:, gap].any()
    # Two 6 km squares: 5 x 5 cells each, plus at most a ring of boundary cells.
    assert 2 * 25 <= grid.inside_aoi.sum() <= 2 * 49


@pytest.mark.parametrize(("window", "stride", "match"), [(120, 61, "odd"), (120, 130, "gaps"), (0, 0, "positive")])
def test_bad_stride_is_refused(aoi, window, stride, match):
    with pytest.raises(GridError, match=match):
        plan_grid(aoi, window_px=window, stride_px=stride)


def coordinates_block(h, w):
    """Channel 0 holds row*1000 + col, channel 1 its negative: every pixel says where it is."""
    rows, cols = np.mgrid[0:h, 0:w]
    code = (rows * 1000 + cols).astype(np.float32)
    return np.stack([code, -code])


def test_cut_windows_without_margin_tiles_the_block_in_row_major_order():
    block = coordinates_block(2 * 4, 3 * 4)  # 2 x 3 cells of 4 px
    windows = cut_windows(block, window_px=4, stride_px=4, margin_px=0)
    assert windows.shape == (6, 2, 4, 4)
    top_left = windows[:, 0, 0, 0]
    assert top_left.tolist() == [0, 4, 8, 4000, 4004, 4008]
    np.testing.assert_array_equal(windows[4], block[:, 4:8, 4:8])
    np.testing.assert_array_equal(windows[:, 1], -windows[:, 0])


def test_cut_windows_with_margin_centres_each_window_on_its_cell():
    stride, margin = 2, 3
    window = stride + 2 * margin
    block = coordinates_block(2 * stride + 2 * margin, 3 * stride + 2 * margin)
    windows = cut_windows(block, window, stride, margin)
    assert windows.shape == (6, 2, 8, 8)
    for n, (i, j) in enumerate([(i, j) for i in range(2) for j in range(3)]):
        np.testing.assert_array_equal(windows[n], block[:, i * stride : i * stride + window, j * stride : j * stride + window])
        # The cell's own pixels sit in the middle of its window.
        cell = block[0, margin + i * stride : margin + (i + 1) * stride, margin + j * stride : margin + (j + 1) * stride]
        np.testing.assert_array_equal(windows[n, 0, margin : margin + stride, margin : margin + stride], cell)


def test_a_block_with_partial_cells_is_refused():
    with pytest.raises(GridError, match="whole cells"):
        cut_windows(np.zeros((1, 10, 12)), window_px=4, stride_px=4, margin_px=0)
    with pytest.raises(GridError, match="one PatchGrid"):
        block_cells((12, 12), window_px=5, stride_px=4, margin_px=0)


def test_clear_fraction_is_the_clear_share_of_each_window():
    clear = np.zeros((8, 8), dtype=bool)
    clear[:, :2] = True  # left half of the first cell column
    clear[4:, 4:] = True  # the whole bottom-right cell
    fractions = clear_fraction(clear, window_px=4, stride_px=4, margin_px=0)
    assert fractions.dtype == np.float32
    np.testing.assert_allclose(fractions, [[0.5, 0.0], [0.5, 1.0]])


def test_clear_fraction_with_margin_counts_the_whole_window():
    clear = np.zeros((2 * 2 + 4, 2 * 2 + 4), dtype=bool)  # 2 x 2 cells of 2 px, margin 2
    clear[0, 0] = True  # only in the margin corner: inside cell (0, 0)'s 6 x 6 window only
    np.testing.assert_allclose(clear_fraction(clear, 6, 2, 2), [[1 / 36, 0.0], [0.0, 0.0]])


def test_pixel_chunks_feed_map_overlap_with_whole_windows(aoi):
    """How infer uses the grid: map_overlap(depth=margin) over pixel_chunks yields cell_chunks."""
    grid = plan_grid(aoi, stride_px=60, cells_per_chunk=6)
    h, w = grid.pixel_geobox.shape
    image = np.random.default_rng(0).random((1, h, w), dtype=np.float32)
    pixels = da.from_array(image, chunks=((1,), *grid.pixel_chunks()))
    m = grid.margin_px

    def window_means(block):
        cells = block_cells(block.shape[1:], grid.window_px, grid.stride_px, m)
        return cut_windows(block, grid.window_px, grid.stride_px, m).mean(axis=(1, 2, 3)).reshape(cells)

    cells = da.map_overlap(
        window_means, pixels, depth={0: 0, 1: m, 2: m}, boundary="none", trim=False,
        chunks=grid.cell_chunks(), drop_axis=0, dtype=np.float32,
    )
    assert cells.chunks == grid.cell_chunks()
    direct = window_means(image)  # the whole grid as one block
    np.testing.assert_allclose(cells.compute(), direct, rtol=1e-6)


def test_small_grids_get_smaller_blocks_so_every_worker_has_work():
    from pipeline.patches import balanced_cells_per_chunk

    assert balanced_cells_per_chunk((92, 92), 8, min_blocks=16) == 8  # a tile: the configured size
    assert balanced_cells_per_chunk((10, 9), 8, min_blocks=16) == 3  # the demo AOI: 4 x 3 blocks
    assert balanced_cells_per_chunk((2, 2), 8, min_blocks=16) == 1
    assert balanced_cells_per_chunk((10, 9), 8) == 8  # min_blocks=1: as configured
