"""Detailed maps: windows placed on a map-wide lattice, evaluated densely, blended into small cells."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detail import DetailError, DetailPlan, classify_pixels

N_CLASSES = 2


def constant_model(p: np.ndarray, g: int):
    def predict(windows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(p[None, :, None, None], (len(windows), len(p), g, g)).copy()

    return predict


def oracle_model(g: int, seen: list[np.ndarray] | None = None):
    """Class 1's probability at each dense position = the share of band 0 > 0.5 in its sub-block:
    a perfect dense classifier, so what remains is the geometry under test."""
    def predict(windows: np.ndarray) -> np.ndarray:
        if seen is not None:
            seen.append(windows)
        n, _, w, _ = windows.shape
        s = w // g
        share = (windows[:, 0] > 0.5).reshape(n, g, s, g, s).mean(axis=(2, 4))
        return np.stack([1 - share, share], axis=1)

    return predict


def block(plan: DetailPlan, cells: int, field) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bands (1, H, W) from ``field(rows, cols)`` over the padded block, all clear, all cells inside."""
    h = plan.block_px(cells)
    rows, cols = np.mgrid[0:h, 0:h] - plan.margin_px  # interior coordinates
    bands = field(rows, cols).astype(np.float32)[None]
    return bands, np.ones((h, h), bool), np.ones((cells, cells), bool)


@pytest.mark.parametrize(("g", "weight"), [(1, "hann"), (3, "hann"), (3, "gaussian"), (3, "box")])
def test_a_constant_probability_field_comes_back_unchanged(g, weight):
    plan = DetailPlan(window_px=120, stride_px=40, cell_px=10, dense_grid=g, weight=weight)
    bands, clear, inside = block(plan, 6, lambda r, c: np.zeros(r.shape))
    p = np.array([0.3, 0.7], np.float32)
    out = classify_pixels(bands, clear, inside, plan, constant_model(p, g), n_classes=2, min_clear=0.5)
    assert out.shape == (3, 6, 6)
    np.testing.assert_allclose(out[:2], np.broadcast_to(p[:, None, None], (2, 6, 6)), atol=1e-6)
    np.testing.assert_array_equal(out[2], 1.0)  # the last plane: each cell's clear share


@pytest.mark.parametrize("stride", [20, 40])
def test_a_planted_boundary_is_found_within_one_cell(stride):
    plan = DetailPlan(window_px=120, stride_px=stride, cell_px=20, dense_grid=3, weight="hann")
    boundary = 257  # interior column where class 1 starts; on no lattice of the plan
    bands, clear, inside = block(plan, 24, lambda r, c: (c >= boundary).astype(float))
    out = classify_pixels(bands, clear, inside, plan, oracle_model(3), n_classes=2, min_clear=0.5)
    classes = out[:2].argmax(axis=0)
    assert (classes == classes[:1]).all()  # the field varies along columns only
    first = int(np.argmax(classes[0] == 1))  # first cell mapped as class 1
    assert abs(first * plan.cell_px - boundary) <= plan.cell_px
    assert (classes[0, :first] == 0).all() and (classes[0, first:] == 1).all()


def test_today_map_is_the_special_case_of_one_window_per_cell():
    # g = 1, flat weights, stride = cell = window: each cell is its own window classified whole.
    plan = DetailPlan(window_px=120, stride_px=120, cell_px=120, dense_grid=1, weight="box")
    bands, clear, inside = block(plan, 3, lambda r, c: ((r // 120) * 3 + (c // 120)) / 10.0)
    got = []

    def model(windows):
        got.append(windows)
        mean = windows[:, 0].mean(axis=(1, 2))
        return np.stack([1 - mean, mean], axis=1)[:, :, None, None]

    out = classify_pixels(bands, clear, inside, plan, model, n_classes=2, min_clear=0.5)
    np.testing.assert_allclose(out[1], np.arange(9).reshape(3, 3) / 10.0, atol=1e-6)
    assert sum(len(w) for w in got) == 9  # windows reaching only the margin are never classified


def test_cells_outside_the_aoi_or_without_clear_ground_are_nan_and_cloudy_windows_never_reach_the_model():
    plan = DetailPlan(window_px=120, stride_px=40, cell_px=10, dense_grid=3, weight="hann")
    bands, clear, inside = block(plan, 12, lambda r, c: np.zeros(r.shape))
    inside[:, :3] = False  # AOI edge
    m = plan.margin_px
    clear[:, m + 80:] = False  # clouds over the east of the block
    bands[:, ~clear] = np.nan
    seen: list[np.ndarray] = []
    out = classify_pixels(bands, clear, inside, plan, oracle_model(3, seen), n_classes=2, min_clear=0.5)
    assert np.isnan(out[:2, :, :3]).all()
    assert np.isnan(out[:2, :, 8:]).all() and (out[2, :, 8:] == 0).all()
    assert np.isfinite(out[:2, :, 3:8]).all()
    windows = np.concatenate(seen)
    assert (np.isnan(windows[:, 0]).mean(axis=(1, 2)) <= 0.5).all()


def test_neighbouring_blocks_blend_the_same_windows_as_one_big_block():
    plan = DetailPlan(window_px=120, stride_px=40, cell_px=10, dense_grid=3, weight="hann")
    rng = np.random.default_rng(0)
    coarse = rng.random((8, 8))
    field = lambda r, c: coarse[np.clip((r + 120) // 60, 0, 7), np.clip((c + 120) // 60, 0, 7)]  # noqa: E731
    bands, clear, inside = block(plan, 16, field)
    whole = classify_pixels(bands, clear, inside, plan, oracle_model(3), n_classes=2, min_clear=0.5)
    h = plan.block_px(8)
    for j, x0 in enumerate((0, 80)):  # two blocks of 16 x 8 cells, cut at cell column 8
        part = classify_pixels(bands[:, :, x0:x0 + h], clear[:, x0:x0 + h], inside[:, j * 8:(j + 1) * 8], plan,
                               oracle_model(3), n_classes=2, min_clear=0.5, origin_px=(0, x0))
        np.testing.assert_allclose(part, whole[:, :, j * 8:(j + 1) * 8], atol=1e-6)


def test_plans_are_made_from_the_card_window_and_a_cell_size_in_metres():
    plan = DetailPlan.from_card(120, 100.0, 10.0, dense_grid=3, weight="box")
    assert (plan.cell_px, plan.stride_px, plan.margin_px, plan.block_px(8)) == (10, 40, 120, 320)
    with pytest.raises(DetailError, match="whole number"):
        DetailPlan.from_card(120, 105.0, 10.0, weight="box")
    with pytest.raises(DetailError, match="gaps"):
        DetailPlan(window_px=120, stride_px=240, cell_px=10, weight="hann")


def test_a_block_of_the_wrong_shape_is_refused():
    plan = DetailPlan(window_px=120, stride_px=40, cell_px=10, weight="hann")
    with pytest.raises(DetailError, match="padded by 120 px"):
        classify_pixels(np.zeros((1, 100, 100), np.float32), np.ones((100, 100), bool), np.ones((4, 4), bool),
                        plan, constant_model(np.array([1.0, 0.0]), 1), n_classes=2, min_clear=0.5)


@pytest.mark.parametrize(("g", "weight", "cell_px", "stride"), [
    (3, "gaussian", 10, 40), (3, "hann", 20, 40), (1, "box", 120, 120), (3, "box", 10, 20),
])
def test_a_plan_on_pixels_twice_as_coarse_blends_the_same_windows_into_the_same_cells(g, weight, cell_px, stride):
    plan = DetailPlan(window_px=120, stride_px=stride, cell_px=cell_px, dense_grid=g, weight=weight)
    coarse_plan = plan.coarsened(2)
    assert (coarse_plan.window_px, coarse_plan.stride_px, coarse_plan.cell_px, coarse_plan.margin_px) == (
        60, stride // 2, cell_px // 2, plan.margin_px // 2)
    assert coarse_plan.samples_per_cell == plan.samples_per_cell
    cells = 360 // cell_px
    h = coarse_plan.block_px(cells)
    rng = np.random.default_rng(1)
    bands = (rng.random((1, h // 6, h // 6)) > 0.5).repeat(6, axis=1).repeat(6, axis=2).astype(np.float32)
    clear = np.ones((h, h), bool)
    clear[: h // 3, : h // 2] = False  # a cloud: the same clear shares at both resolutions
    inside = np.ones((cells, cells), bool)
    inside[-1, -1] = False
    origin = (3 * cell_px, 7 * cell_px)  # the block's place on the map-wide window lattice
    fine = classify_pixels(bands.repeat(2, axis=1).repeat(2, axis=2), clear.repeat(2, axis=0).repeat(2, axis=1),
                           inside, plan, oracle_model(g), n_classes=2, min_clear=0.5, origin_px=origin)
    coarse = classify_pixels(bands, clear, inside, coarse_plan, oracle_model(g), n_classes=2, min_clear=0.5,
                             origin_px=(origin[0] // 2, origin[1] // 2))
    assert np.isnan(fine[0]).sum() > 0  # some cells are cloudy or outside, and stay so
    np.testing.assert_allclose(coarse, fine, atol=1e-6)


def test_a_plan_coarsens_only_into_whole_pixels():
    assert DetailPlan(window_px=120, stride_px=40, cell_px=10, weight="hann").coarsened(1) == DetailPlan(window_px=120, stride_px=40, cell_px=10, weight="hann")
    assert DetailPlan(window_px=120, stride_px=40, cell_px=10, weight="hann").coarsened(4) is None  # 10 px cells are 2.5 pixels of 40 m
    assert DetailPlan(window_px=120, stride_px=30, cell_px=20, weight="hann").coarsened(4) is None
    assert DetailPlan(window_px=120, stride_px=40, cell_px=20, weight="hann").coarsened(4).window_px == 30
    with pytest.raises(DetailError, match="at least 1"):
        DetailPlan(window_px=120, stride_px=40, cell_px=10, weight="hann").coarsened(0)
