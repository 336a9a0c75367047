"""load.composite: the median of clear reflectance and the clear count of a block's dates."""

import warnings

import numpy as np
import pytest

import pipeline.load.composite
from pipeline.load import band_scale, composite_block, median_composite


def test_band_scale_comes_from_raster_bands_with_a_default(scenes):
    item = scenes["items"][0]
    assert band_scale(item, "red") == 1e-4
    item.assets["red"].extra_fields["raster:bands"] = [{"scale": 2e-4}]
    assert band_scale(item, "red") == 2e-4
    del item.assets["red"].extra_fields["raster:bands"]
    assert band_scale(item, "red") == 1e-4


@pytest.mark.parametrize("dates", [1, 2, 3, 4, 7, 8, 9, 15])
def test_the_median_equals_numpys_nanmedian_for_any_number_of_dates(dates):
    """Short stacks take the min/max sorting network, long ones np.sort: both must agree with numpy."""
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


def test_composite_block_masks_the_scl_classes_it_is_given_and_none_when_given_none():
    red = np.array([[[1000, 1000]], [[3000, 3000]]], dtype=np.uint16)  # (T=2, H=1, W=2)
    scl = np.array([[[4, 9]], [[4, 4]]], dtype=np.uint16)  # pixel 2 is cloud (9) on date 1
    kwargs = dict(offset_dn=np.zeros(2, np.float32), scales=np.full((1, 2), 1e-4, np.float32))
    masked = composite_block(red, scl, mask_scl=(9,), **kwargs)
    np.testing.assert_allclose(masked[0, 0], [0.2, 0.3])
    np.testing.assert_array_equal(masked[1, 0], [2, 1])
    unmasked = composite_block(red, scl, mask_scl=(), **kwargs)
    np.testing.assert_allclose(unmasked[0, 0], [0.2, 0.2])
    np.testing.assert_array_equal(unmasked[1, 0], [2, 2])


def test_composite_block_in_strips_equals_it_in_one_piece(monkeypatch):
    """A large block is composited a strip of rows at a time (small temporaries); the pixels do not change."""
    rng = np.random.default_rng(5)
    dn = [rng.integers(0, 4000, (3, 23, 17)).astype(np.uint16) for _ in range(2)]  # 0: nodata here and there
    scl = rng.choice(np.array([4, 5, 8, 9, 3, 0], np.uint16), (3, 23, 17))
    kwargs = dict(offset_dn=np.array([0, 1000, 1000], np.float32), scales=np.full((2, 3), 1e-4, np.float32))
    whole = composite_block(*dn, scl, **kwargs)
    monkeypatch.setattr(pipeline.load.composite, "_STRIP_PIXELS", 40)  # 2 rows of 17 px per strip, the last one short
    np.testing.assert_array_equal(composite_block(*dn, scl, **kwargs), whole)
    assert np.isnan(whole[0]).any() and (whole[-1] == 3).any()
