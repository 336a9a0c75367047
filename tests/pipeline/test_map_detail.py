"""The default map is detailed: judged against the demo world's 10 m truth from the truth rasters
and the written landcover.tif alone, not from anything the pipeline reports about itself."""

from __future__ import annotations

import pytest
import rasterio
from rich.console import Console

from pipeline.settings import MapConfig
from pipeline.demo.truth import map_agreement, pixel_agreement
from pipeline.run import run_map


@pytest.mark.slow
def test_the_default_map_follows_the_truth_at_10_m(demo_world, tmp_path):
    """`make map`'s settings (default model, cells, windows, blending): at least 80% of the
    truth pixels agree (1.2 km cells got 62.6%), and cells one class dominates agree no worse
    than the 1.2 km map's 91.3%."""
    result = run_map(MapConfig(aoi=demo_world.aoi_path, out=tmp_path / "map", source="local", workers=2),
                     Console(quiet=True))
    landcover = result.out / "landcover.tif"
    with rasterio.open(landcover) as src:
        assert abs(src.res[0]) == 100.0  # the default cell
        classes = src.read(1)
    pixels = pixel_agreement(demo_world, landcover)
    assert pixels.pixels > 900_000
    assert pixels.fraction >= 0.80
    cells = map_agreement(classes, result.grid.cell_geobox, demo_world, cell_px=10)
    assert cells.dominated > 5_000 and cells.accuracy >= 0.913
