"""Scenes written as real COGs for the load tests: function-scoped tiny ones (tests may break
their assets) and module-scoped noisy ones with overviews (read only)."""

from __future__ import annotations

import numpy as np
import pytest
from overview_scenes import make_item
from tiny_scenes import three_scenes


@pytest.fixture
def scenes(tmp_path):
    """Three scenes of one tile: one harmonised, one carrying +1000 DN, one whose flag lies."""
    return three_scenes(tmp_path)


@pytest.fixture(scope="module")
def overview_scenes(tmp_path_factory):
    """Three noisy scenes with 20 m and 40 m overviews, all with a 0 DN offset: (items, offsets)."""
    tmp = tmp_path_factory.mktemp("overviews")
    rng = np.random.default_rng(7)
    items = [make_item(tmp, f"scene{i}", rng) for i in range(3)]
    return items, {item.id: 0 for item in items}
