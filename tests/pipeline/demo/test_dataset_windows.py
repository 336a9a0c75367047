"""Multi-band labelled windows of the demo world: the data of `make weights-multiband`."""

from __future__ import annotations

import numpy as np
import rasterio

from models.classes import CLASS_NAMES
from models.reben import BANDS_V02
from pipeline.demo.dataset import demo_world_windows


def test_windows_hold_the_ten_bands_and_every_class_covering_a_tenth(demo_world):
    data = demo_world_windows(demo_world, BANDS_V02)
    n = len(data)
    assert data.windows.shape == (n, 10, 120, 120) and data.targets.shape == (n, 19) and n > 50
    assert np.nanmax(data.windows) < 1.5 and np.nanmin(data.windows) > -0.05
    water, nir = CLASS_NAMES.index("Inland waters"), BANDS_V02.index("nir")
    assert data.targets.sum(axis=1).min() >= 1 and (data.targets.sum(axis=1) > 1).any()  # multi-label

    # Recompute one window's labels from the truth raster itself.
    tile = demo_world.tiles[0]
    first = next(i for i, g in enumerate(data.ids) if g.startswith(f"world-s{demo_world.seed}-{demo_world.size_px}/{tile.mgrs}/"))
    r, c = (int(v[1:]) for v in data.ids[first].rsplit("/", 1)[1].split("_"))
    with rasterio.open(tile.truth_path) as src:
        codes = src.read(1)[r:r + 120, c:c + 120]
    shares = np.bincount(codes[codes > 0] - 1, minlength=19) / (codes > 0).sum()
    assert set(np.flatnonzero(data.targets[first])) == set(np.flatnonzero(shares >= 0.1)) | {int(shares.argmax())}

    # Water is dark in the near infrared, vegetation bright: the bands are where the card says.
    only_water = data.targets[:, water].astype(bool) & (data.targets.sum(axis=1) == 1)
    if only_water.any():
        assert np.nanmedian(data.windows[only_water, nir]) < np.nanmedian(data.windows[~data.targets[:, water].astype(bool), nir])
