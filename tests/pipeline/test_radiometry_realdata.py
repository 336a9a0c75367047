"""The +1000 DN BOA offset of baseline >= 04.00, decided on real catalogue metadata and real pixels.

Real data (read in place, none of it made by this team; see realdata/README.md):

* ``realdata/stac``: every Sentinel-2 L2A item of Earth Search v1 (``sentinel-2-l2a``, baselines
  02.14 and 05.09-05.11, ``earthsearch:boa_offset_applied``), Earth Search Collection 1
  (``sentinel-2-c1-l2a``, no flag) and Planetary Computer (no flag, baselines 02.12, 04.00, 05.10,
  05.11). The README's rule: the flag, when present, beats ``raster:bands``; without it the
  processing baseline decides.
* ``realdata/pixels/stactools-sentinel2__..._N0400_R023_T29UNU_...SAFE``: a real ESA L2A product
  of baseline 04.00 (west of Ireland, cloudy): its MTD_MSIL2A.xml (BOA_ADD_OFFSET) and the 60 m
  B04 and SCL JPEG 2000 rasters, read with rasterio's OpenJPEG driver.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.radiometry import (
    BOA_OFFSET_DN,
    DARK_SCL_CLASSES,
    OFFSET_FLAG,
    dn_to_reflectance,
    metadata_offset_dn,
    parse_baseline,
    pixel_checked_offset_dn,
)

SAFE = "stactools-sentinel2__S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
REFLECTANCE_BANDS = ("blue", "green", "red", "nir", "nir08", "swir16", "swir22")
SCL_VEGETATION, SCL_WATER = 4, 6


def l2a_items(stac_dir: Path) -> list[dict]:
    """Every Sentinel-2 L2A item (any catalogue) of every file in realdata/stac."""
    out = []
    for path in sorted(stac_dir.glob("*.*json")):
        doc = json.loads(path.read_text())
        raws = doc if isinstance(doc, list) else doc.get("features", [doc] if doc.get("type") == "Feature" else [])
        out += [raw for raw in raws if raw.get("collection") in ("sentinel-2-l2a", "sentinel-2-c1-l2a")]
    return out


def catalogue(raw: dict) -> str:
    href = raw["assets"]["SCL" if "SCL" in raw["assets"] else "scl"]["href"]
    if "blob.core.windows.net" in href:
        return "planetary-computer"
    return "earth-search-c1" if raw["collection"] == "sentinel-2-c1-l2a" else "earth-search-v1"


def expected_offset(raw: dict) -> int:
    """realdata/README.md's table, written out: what each catalogue's pixels carry."""
    props = raw["properties"]
    from_baseline = props["s2:processing_baseline"] >= "04.00"  # zero-padded "NN.NN" strings sort as numbers
    kind = catalogue(raw)
    if kind == "earth-search-v1":  # the flag says whether Earth Search removed the offset
        return 1000 if from_baseline and not props[OFFSET_FLAG] else 0
    return 1000 if from_baseline else 0  # Planetary Computer and Collection 1 keep ESA's pixels


@pytest.fixture(scope="module")
def items(realdata: Path) -> list[dict]:
    return l2a_items(realdata / "stac")


def test_every_real_item_gets_the_offset_its_catalogue_implies(items):
    seen = {(catalogue(raw), raw["properties"]["s2:processing_baseline"][:2], raw["properties"].get(OFFSET_FLAG)) for raw in items}
    # Every case of the README's table is present.
    assert {("earth-search-v1", "02", False), ("earth-search-v1", "05", True), ("planetary-computer", "02", None),
            ("planetary-computer", "04", None), ("planetary-computer", "05", None), ("earth-search-c1", "05", None)} <= seen
    wrong = [(raw["id"], metadata_offset_dn(raw["properties"])) for raw in items
             if metadata_offset_dn(raw["properties"]) != expected_offset(raw)]
    assert not wrong, wrong[:5]


def test_earth_search_v1_flag_beats_its_raster_bands_offset(items):
    flagged = [raw for raw in items if raw["properties"].get(OFFSET_FLAG) is True]
    assert flagged
    for raw in flagged:
        assert raw["assets"]["red"]["raster:bands"][0]["offset"] == -0.1  # still declared ...
        assert metadata_offset_dn(raw["properties"]) == 0  # ... but already removed from the pixels


def test_collection_1_raster_bands_declare_the_offset_the_metadata_decides(items):
    c1 = [raw for raw in items if catalogue(raw) == "earth-search-c1"]
    assert len(c1) >= 10
    for raw in c1:
        offset = metadata_offset_dn(raw["properties"])
        for key in REFLECTANCE_BANDS:
            band = raw["assets"][key]["raster:bands"][0]
            # reflectance = scale * DN + offset, so the pixels carry -offset / scale DN.
            assert round(-band["offset"] / band["scale"]) == offset == BOA_OFFSET_DN, (raw["id"], key)


# ---------------------------------------------------------------------------- the baseline-04.00 ESA product


@pytest.fixture(scope="module")
def safe(realdata: Path) -> Path:
    return realdata / "pixels" / SAFE


@pytest.fixture(scope="module")
def red_and_scl(safe: Path) -> tuple[np.ndarray, np.ndarray]:
    """B04 DN and SCL of the whole tile at 60 m (1830 x 1830 px, the same grid)."""
    (r60m,) = safe.glob("GRANULE/*/IMG_DATA/R60m")
    with rasterio.open(next(r60m.glob("*_B04_60m.jp2"))) as red, rasterio.open(next(r60m.glob("*_SCL_60m.jp2"))) as scl:
        assert red.driver == "JP2OpenJPEG" and red.crs.to_epsg() == 32629
        assert (red.shape, red.transform) == (scl.shape, scl.transform)
        return red.read(1), scl.read(1)


def test_the_products_metadata_declares_the_offset_its_baseline_implies(safe: Path):
    root = ET.parse(safe / "MTD_MSIL2A.xml").getroot()
    baseline = root.find(".//PROCESSING_BASELINE").text
    offsets = {int(e.text) for e in root.iter("BOA_ADD_OFFSET")}
    quantification = float(root.find(".//BOA_QUANTIFICATION_VALUE").text)
    assert parse_baseline(baseline) == (4, 0)
    assert offsets == {-1000} and quantification == 10000
    assert metadata_offset_dn({"s2:processing_baseline": baseline}) == -offsets.pop()


@pytest.mark.parametrize("claimed", [1000, 0], ids=["metadata-right", "catalogue-wrongly-claims-0"])
def test_clear_vegetation_and_water_pixels_carry_the_offset(red_and_scl, claimed):
    red, scl = red_and_scl
    dark = red[np.isin(scl, DARK_SCL_CLASSES) & (red != 0)]
    assert dark.size > 100_000  # a real sample, not the check's too-few-pixels fallback
    assert pixel_checked_offset_dn(claimed, dark) == BOA_OFFSET_DN


def test_removing_the_offset_gives_plausible_water_and_vegetation_reflectance(red_and_scl):
    red, scl = red_and_scl
    water = float(np.median(dn_to_reflectance(red[scl == SCL_WATER], BOA_OFFSET_DN)))
    vegetation = float(np.median(dn_to_reflectance(red[scl == SCL_VEGETATION], BOA_OFFSET_DN)))
    assert 0.0 < water < vegetation < 0.06  # red: water darkest, vegetation absorbs
    assert float(np.median(dn_to_reflectance(red[scl == SCL_WATER], 0))) > 0.1  # left in, water would look like soil
