import numpy as np
import pytest

from pipeline.radiometry import (
    BOA_OFFSET_DN,
    dn_to_reflectance,
    metadata_offset_dn,
    parse_baseline,
    pixel_checked_offset_dn,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("04.00", (4, 0)), ("05.11", (5, 11)), ("03.01", (3, 1)), ("N0400", (4, 0)), (None, None), ("x", None)],
)
def test_parse_baseline(value, expected):
    assert parse_baseline(value) == expected


def test_old_baseline_carries_no_offset():
    assert metadata_offset_dn({"s2:processing_baseline": "03.01"}) == 0


def test_new_baseline_without_flag_carries_offset_like_planetary_computer():
    assert metadata_offset_dn({"s2:processing_baseline": "05.10"}) == BOA_OFFSET_DN


def test_earth_search_flag_beats_baseline():
    props = {"s2:processing_baseline": "05.10", "earthsearch:boa_offset_applied": True}
    assert metadata_offset_dn(props) == 0
    props["earthsearch:boa_offset_applied"] = False
    assert metadata_offset_dn(props) == BOA_OFFSET_DN


def test_pixel_check_overrules_a_wrong_flag():
    rng = np.random.default_rng(0)
    dark_without_offset = rng.integers(150, 700, 5000)
    dark_with_offset = dark_without_offset + BOA_OFFSET_DN
    assert pixel_checked_offset_dn(BOA_OFFSET_DN, dark_without_offset) == 0
    assert pixel_checked_offset_dn(0, dark_with_offset) == BOA_OFFSET_DN
    # Too few samples: trust the metadata.
    assert pixel_checked_offset_dn(BOA_OFFSET_DN, dark_without_offset[:10]) == BOA_OFFSET_DN


def test_dn_to_reflectance_maps_nodata_to_nan_and_removes_offset():
    dn = np.array([0, 1000, 1500, 11000], dtype=np.uint16)
    refl = dn_to_reflectance(dn, BOA_OFFSET_DN)
    assert np.isnan(refl[0])
    np.testing.assert_allclose(refl[1:], [0.0, 0.05, 1.0], atol=1e-6)
    assert refl.dtype == np.float32
