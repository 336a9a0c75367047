"""load.offsets: each scene's BOA offset from metadata + pixels, and unreadable scenes dropped, on tiny real COGs."""

import logging
import shutil

import numpy as np
import pystac
import pytest
from tiny_scenes import SIZE, write_cog

from pipeline.errors import LoadError
from pipeline.load import item_offsets
from pipeline.radiometry import BOA_OFFSET_DN


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
