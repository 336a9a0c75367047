"""composite.tif written block by block: a valid COG holding exactly the DN written, described
band by band, with the overview levels GDAL's COG driver would give it, each level the average of
the full-resolution pixels it covers (nodata left out), written a tile at a time."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.enums import ColorInterp, Resampling
from rio_cogeo.cogeo import cog_validate

from pipeline.export.composite import DN_SCALE, NODATA, CompositeRaster, overview_sizes

# Odd sides and more than 1,024 px wide: two overview levels, neither a plain halving.
WIDTH, HEIGHT, BLOCK = 1101, 1031, 250
NAMES = ["B04", "B03", "B02"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A composite of random DN with no-data holes, written in reverse block order, finished."""
    rng = np.random.default_rng(7)
    dn = rng.integers(1, 12000, (len(NAMES), HEIGHT, WIDTH), dtype=np.uint16)
    dn[:, rng.random((HEIGHT, WIDTH)) < 0.15] = NODATA
    dn[:, :300, :200] = NODATA  # a corner no scene saw
    out = tmp_path_factory.mktemp("composite")
    geobox = GeoBox((HEIGHT, WIDTH), Affine(10, 0, 600000, 0, -10, 5200000), "EPSG:32633")
    raster = CompositeRaster(out, geobox, NAMES)
    corners = [(r, c) for r in range(0, HEIGHT, BLOCK) for c in range(0, WIDTH, BLOCK)]
    for r, c in reversed(corners):
        raster.write(r, c, dn[:, r:r + BLOCK, c:c + BLOCK])
    raster.finish(out / "composite.tif")
    raster.discard()
    return out, dn


def _levels(path):
    with rasterio.open(path) as src:
        count = len(src.overviews(1))
    for level in range(count):
        with rasterio.open(path, overview_level=level) as ovr:
            yield ovr.read()


def test_the_composite_is_a_valid_cog_of_the_dn_written_and_only_it_remains(written):
    out, dn = written
    assert [p.name for p in out.iterdir()] == ["composite.tif"]  # scratch rasters and levels removed
    valid, errors, _ = cog_validate(str(out / "composite.tif"))
    assert valid, errors
    with rasterio.open(out / "composite.tif") as src:
        np.testing.assert_array_equal(src.read(), dn)
        assert src.nodata == NODATA and src.dtypes == ("uint16",) * 3
        assert src.descriptions[0] == "B04 surface reflectance x 10000 (median of clear observations)"
        assert src.scales == (DN_SCALE,) * 3
        assert src.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert src.tags()["source"] == "landcover map --save-composite"
        assert src.profile["compress"] == "deflate" and src.profile["blockxsize"] == 512


def test_overviews_have_the_cog_driver_s_sizes_and_average_the_full_resolution(written, tmp_path):
    out, dn = written
    # What the COG driver makes of the same raster on its own (sizes; its values come from the
    # level above at this size, by a rule of its own: see CompositeRaster.finish).
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=WIDTH, height=HEIGHT, count=3, dtype="uint16",
                       nodata=NODATA, crs="EPSG:32633", transform=Affine(10, 0, 600000, 0, -10, 5200000),
                       tiled=True, blockxsize=512, blockysize=512) as dst:
        dst.write(dn)
    rasterio.shutil.copy(plain, tmp_path / "gdal.tif", driver="COG", blocksize="512", overview_resampling="AVERAGE")
    gdal_sizes = [(lvl.shape[2], lvl.shape[1]) for lvl in _levels(tmp_path / "gdal.tif")]
    assert overview_sizes(WIDTH, HEIGHT) == gdal_sizes == [(550, 515), (275, 257)]

    with rasterio.open(plain) as src:  # GDAL's average of the full resolution, no-data left out
        expected = [src.read(out_shape=(3, h, w), resampling=Resampling.average) for w, h in gdal_sizes]
    got = list(_levels(out / "composite.tif"))
    assert len(got) == len(expected)
    for level, want in zip(got, expected):
        np.testing.assert_array_equal(level, want)
    assert (got[0][:, :100, :60] == NODATA).all()  # the unseen corner stays no-data, never a 0 averaged in


def test_overview_levels_halve_until_both_sides_fit_one_tile():
    assert overview_sizes(512, 512) == []
    assert overview_sizes(600, 600) == [(300, 300)]
    assert overview_sizes(2100, 2100) == [(1050, 1050), (525, 525), (262, 262)]
    assert overview_sizes(4000, 300) == [(2000, 150), (1000, 75), (500, 37)]
