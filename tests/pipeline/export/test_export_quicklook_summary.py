import json

import numpy as np
import pytest
from export_helpers import blocks_map, utm_grid
from PIL import Image

from pipeline.export.quicklook import SYNTHETIC_NOTE, render_quicklook
from pipeline.export.summary import class_stats

CELL_HA = 144.0


def test_quicklook_is_a_png_of_readable_size(exported):
    files, _, _ = exported
    assert files.quicklook.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(files.quicklook) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    assert 600 <= width <= 2000 and 400 <= height <= 1500
    # The urban class colour is drawn (the map is in class colours, not a greyscale ramp).
    assert (np.abs(pixels.astype(int) - (230, 0, 77)).sum(axis=2) == 0).any()


def test_summary_reports_area_per_class_matching_the_raster(exported):
    files, cmap, _ = exported
    summary = json.loads(files.summary.read_text())
    assert summary["crs"] == "EPSG:32633"
    assert summary["cell_size_m"] == [1200.0, 1200.0]
    assert summary["cells"] == {"total": 2000, "valid": int(cmap.valid.sum()), "nodata": int((~cmap.valid).sum())}
    codes, counts = np.unique(cmap.classes[cmap.valid], return_counts=True)
    assert [c["code"] for c in summary["classes"]] == codes.tolist()
    assert [c["area_ha"] for c in summary["classes"]] == pytest.approx((counts * CELL_HA).tolist())
    assert sum(c["percent"] for c in summary["classes"]) == pytest.approx(100.0)
    assert summary["mean_confidence"] == pytest.approx(0.7, rel=1e-6)
    assert summary["model"] == {"id": "small/demo", "sha256": "ab" * 32, "synthetic": True}
    assert [s["item_id"] for s in summary["scenes"]] == ["S2A_33TWL_20240601_0_L2A", "S2B_33TWL_20240611_0_L2A"]


def test_quicklook_says_when_the_model_was_trained_on_synthetic_data(exported, tmp_path):
    files, _, _ = exported
    with Image.open(files.quicklook) as image:
        assert image.info["Description"] == SYNTHETIC_NOTE

    cmap, grid = blocks_map(), utm_grid(40, 50)
    real = tmp_path / "real.png"
    render_quicklook(real, cmap, grid, class_stats(cmap, grid), title="t", synthetic_model=False)
    with Image.open(real) as image:
        assert "synthetic" not in image.info["Description"]
