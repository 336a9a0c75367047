"""load.geometry: which overview level a model's window allows, the coarse lattice, and upsampling back to the grid."""

import numpy as np
import pytest
from overview_scenes import fine_geobox

from pipeline.load import exact_coarse_geobox, read_resolution_for, upsample_planes


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


def test_a_block_is_whole_coarse_pixels_only_on_the_lattice():
    assert exact_coarse_geobox(fine_geobox(6, 10, 44, 52), 2).shape == (22, 26)
    # Between coarse pixels (an odd corner or side) there is no such block.
    for odd in (fine_geobox(5, 10, 44, 52), fine_geobox(6, 10, 45, 52)):
        assert exact_coarse_geobox(odd, 2) is None


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
