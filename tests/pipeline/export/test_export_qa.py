"""The `patches` QA layer stays bounded: squares of about a kilometre summarise the cells inside."""

from __future__ import annotations

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox

from pipeline.export.qa import qa_factor, qa_squares
from pipeline.mosaic import mosaic


def test_a_square_summarises_its_cells_majority_mean_and_top_classes():
    probs = np.zeros((3, 4, 6), np.float32)
    probs[0] = 0.7
    probs[1] = 0.3
    probs[:, :, 4:] = np.array([0.1, 0.2, 0.7], np.float32)[:, None, None]  # the right-hand square: class 3
    inside = np.ones((4, 6), bool)
    inside[3, 5] = False  # one cell outside the map
    cmap = mosaic(probs, np.ones((4, 6), np.float32), inside, min_clear=0.5)
    geobox = GeoBox((4, 6), Affine(100.0, 0, 500000.0, 0, -100.0, 5000000.0), "EPSG:32633")
    frame = qa_squares(cmap, geobox, 2)
    assert len(frame) == 6 and frame["cells"].sum() == 23
    right = frame[(frame["row"] == 2) & (frame["col"] == 4)].iloc[0]
    assert right["cells"] == 3 and right["class_id"] == 3 and right["class_share"] == 1.0
    assert right["top1_prob"] == np.float64(np.float32(0.7)) and right["top1_class"] == "Arable land"
    assert frame.geometry.area.sum() == 24 * 100.0 * 100.0  # whole squares: 2 x 2 cells of 100 m


def test_the_qa_grid_is_whole_cells():
    assert qa_factor(100.0, 1000.0) == 10 and qa_factor(1200.0, 1000.0) == 1 and qa_factor(10.0, 0.0) == 1
