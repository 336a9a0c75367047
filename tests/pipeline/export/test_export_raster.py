import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from export_helpers import class_map_from, make_provenance, utm_grid
from rio_cogeo.cogeo import cog_validate

from models.classes import CLASS_COLORS, CLASS_NAMES
from pipeline.export import export_map
from pipeline.export.raster import block_size


def gdal_band_xml(path, tmp_path) -> ET.Element:
    """What GDAL itself reads for band 1 (palette, category names, RAT), via a VRT copy."""
    vrt = tmp_path / "read_back.vrt"
    rasterio.shutil.copy(path, vrt, driver="VRT")
    return ET.parse(vrt).getroot().find("VRTRasterBand")


def test_class_raster_is_georeferenced_on_the_cell_grid(exported):
    files, cmap, grid = exported
    with rasterio.open(files.landcover) as src:
        assert src.crs.to_epsg() == 32633
        assert src.transform == grid.affine
        assert (src.height, src.width) == cmap.shape
        assert src.dtypes == ("uint8",)
        assert src.nodata == 0
        np.testing.assert_array_equal(src.read(1), cmap.classes)


def test_class_raster_is_a_valid_deflate_cog(exported):
    files, _, _ = exported
    valid, errors, _ = cog_validate(str(files.landcover), strict=True)
    assert valid, errors
    with rasterio.open(files.landcover) as src:
        assert src.compression.name == "deflate"
        assert src.profile["tiled"]


def test_colour_table_has_all_entries_with_class_colours_and_transparent_nodata(exported):
    files, _, _ = exported
    with rasterio.open(files.landcover) as src:
        table = src.colormap(1)
    assert len(table) == 256
    assert table[0][3] == 0
    for code, rgb in enumerate(CLASS_COLORS, start=1):
        assert table[code] == (*rgb, 255)


def test_gdal_reads_category_names_and_attribute_table_from_the_sidecar(exported, tmp_path):
    files, _, _ = exported
    assert files.landcover_aux.name == "landcover.tif.aux.xml"
    band = gdal_band_xml(files.landcover, tmp_path)
    names = [c.text for c in band.find("CategoryNames")]
    assert names == ["No data", *CLASS_NAMES]
    rows = band.find("GDALRasterAttributeTable").findall("Row")
    assert [(r[0].text, r[1].text) for r in rows[:2]] == [("1", CLASS_NAMES[0]), ("2", CLASS_NAMES[1])]
    assert len(rows) == len(CLASS_NAMES)


def test_tags_name_the_classes_model_and_synthetic_flag(exported):
    files, _, _ = exported
    with rasterio.open(files.landcover) as src:
        tags = src.tags()
        assert "land-cover class code" in src.descriptions[0]
    assert tags["MODEL_ID"] == "small/demo"
    assert tags["SYNTHETIC_MODEL"] == "true"
    assert "1=Urban fabric" in tags["CLASS_NAMES"] and "19=Marine waters" in tags["CLASS_NAMES"]


def test_confidence_raster_is_a_float_cog_with_nan_nodata(exported):
    files, cmap, grid = exported
    assert cog_validate(str(files.confidence), strict=True)[0]
    with rasterio.open(files.confidence) as src:
        assert src.dtypes == ("float32",)
        assert np.isnan(src.nodata)
        assert src.transform == grid.affine
        np.testing.assert_array_equal(np.isnan(src.read(1)), ~cmap.valid)


def test_overviews_keep_class_codes_and_average_confidence(tmp_path, scenes):
    # A checkerboard of two classes: averaging codes 3 and 10 would invent codes 6 and 7.
    rows, cols = np.mgrid[0:256, 0:256]
    checker = (rows + cols) % 2 == 0
    cmap = class_map_from(np.where(checker, 2, 9), winner_prob=np.where(checker, 0.6, 0.8))
    grid = utm_grid(256, 256)
    files = export_map(cmap, grid, tmp_path / "out", scenes=scenes, provenance=make_provenance(scenes))
    with rasterio.open(files.landcover) as src:
        assert src.overviews(1), "a 256 px map gets overviews"
    with rasterio.open(files.landcover, overview_level=0) as overview:
        assert set(np.unique(overview.read(1))) <= {3, 10}

    # Confidence alternates 0.6 / 0.8: an averaged overview is 0.7, a sampled one is not.
    with rasterio.open(files.confidence, overview_level=0) as overview:
        np.testing.assert_allclose(overview.read(1), 0.7, rtol=1e-6)


@pytest.mark.parametrize(("shape", "expected"), [((10980, 10980), 512), ((600, 400), 256), ((50, 40), 128), ((3, 2), 128)])
def test_block_size_shrinks_for_small_maps(shape, expected):
    assert block_size(shape) == expected
