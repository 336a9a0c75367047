"""Dynamic World's published network, imported by `landcover model import`, maps the real Earth Search
desert scene end to end at 10 m (the scene's COGs are decimated to 100 m: this tests the plumbing,
not the network's quality). Same scene, AOI and servers as test_map_realdata.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from test_map_realdata import AOI, SCENE, localised, serve_files

from models.dynamicworld import CLASSES, PALETTE
from pipeline.demo.serve import start_stac_server

pytestmark = pytest.mark.slow
REVISION = "0dd288fae5fb5291d988e5ea3c12eb91df481ec5"  # google/dynamicworld, as the shared copy's NOTE.md records


@pytest.fixture(scope="module")
def desert(realdata: Path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dw-map")
    env = {**os.environ, "LANDCOVER_CACHE": str(tmp / "cache")}
    landcover = Path(sys.executable).parent / "landcover"
    imported = subprocess.run([landcover, "model", "import", realdata / "models" / "dynamicworld", "--revision", REVISION],
                              capture_output=True, text=True, timeout=120, env=env, check=False)
    assert imported.returncode == 0, imported.stderr[-2000:]
    pixels = realdata / "pixels" / f"rio-tiler-pds__{SCENE}"
    item = json.loads((pixels / f"{SCENE}.json").read_text())
    procs = []
    try:
        files_proc, files_url = serve_files(pixels, tmp)
        procs.append(files_proc)
        (tmp / "items.ndjson").write_text(json.dumps(localised(item, pixels, files_url)) + "\n")
        stac_proc, stac_url = start_stac_server([tmp / "items.ndjson"], tmp)
        procs.append(stac_proc)
        (tmp / "aoi.geojson").write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": AOI.__geo_interface__}))
        proc = subprocess.run(
            [landcover, "map", tmp / "aoi.geojson", "--source", "earth-search", "--stac-url", stac_url,
             "--start", "2020-02-01", "--end", "2020-02-28", "--out", tmp / "map", "--model", "google/dynamicworld",
             "--workers", "1"],
            capture_output=True, text=True, timeout=300, cwd=tmp, env=env, check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        yield tmp / "map", proc.stderr, imported.stdout.strip()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def test_the_import_installs_the_network_in_the_model_cache(desert):
    _, _, weights = desert
    assert weights.endswith("google/dynamicworld/main/model.safetensors")
    card = json.loads(Path(weights).with_suffix(".json").read_text())
    assert card["family"] == "per-pixel" and card["source"]["commit"] == REVISION and card["processing_level"] == "L1C"


def test_feeding_l2a_to_an_l1c_model_is_said_once_and_recorded(desert):
    out, stderr, _ = desert
    assert stderr.count("trained on Sentinel-2 L1C but the run feeds it L2A") == 1
    item = json.loads((out / "item.json").read_text())
    assert "L1C" in item["properties"]["landcover:notes"][0]


def test_a_10m_map_named_and_coloured_by_dynamic_world(desert):
    out, _, _ = desert
    with rasterio.open(out / "landcover.tif") as src:
        assert src.res == (10.0, 10.0) and src.crs.to_epsg() == 32629
        codes = src.read(1)
        colormap = src.colormap(1)
        assert src.tags()["CLASS_NAMES"].startswith("0=No data;1=water;2=trees;")
    for code, name in enumerate(CLASSES, start=1):
        assert "#{:02X}{:02X}{:02X}".format(*colormap[code][:3]) == PALETTE[name]
    assert (codes > 0).mean() > 0.95  # the lon/lat AOI is a slanted square in UTM: the grid's corners lie outside
    with rasterio.open(out / "probabilities.tif") as src:
        assert list(src.descriptions) == list(CLASSES) and src.res == (10.0, 10.0)
        probs = src.read(window=((100, 164), (100, 164)))
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)
    polygons = pyogrio.read_dataframe(out / "landcover.gpkg", layer="landcover")
    assert set(polygons["class_name"]) <= set(CLASSES)
    styles = pyogrio.read_dataframe(out / "landcover.gpkg", layer="layer_styles", read_geometry=False)
    assert "shrub_and_scrub" in styles.loc[styles["f_table_name"] == "landcover", "styleQML"].item()
    assert 'label="bare"' in (out / "landcover.qml").read_text()
    summary = json.loads((out / "summary.json").read_text())
    shares = {c["name"]: round(c["percent"], 1) for c in summary["classes"]}
    print("desert scene, share of mapped area per Dynamic World class:", shares)
    assert sum(shares.values()) == pytest.approx(100, abs=0.5)


@pytest.fixture(scope="module")
def demo_dw(desert, demo_world, tmp_path_factory):
    """The demo world mapped with the imported network over a 2 km square (10 m, one block)."""
    _, _, weights = desert
    tmp = tmp_path_factory.mktemp("dw-demo")
    (tmp / "aoi.geojson").write_text(json.dumps(demo_world.central_aoi(2.0)))
    proc = subprocess.run(
        [Path(sys.executable).parent / "landcover", "map", tmp / "aoi.geojson", "--source", "local", "--out", tmp / "map",
         "--model", weights, "--workers", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "map"


def test_the_demo_world_mapped_by_dynamic_world_at_10m_with_sieved_polygons(demo_dw):
    from pipeline.export.sieve import label_patches

    with rasterio.open(demo_dw / "landcover.tif") as src:
        assert src.res == (10.0, 10.0)
        codes = src.read(1)
    with rasterio.open(demo_dw / "probabilities.tif") as src:
        assert list(src.descriptions) == list(CLASSES)
    summary = json.loads((demo_dw / "summary.json").read_text())
    print("demo world, share of mapped area per Dynamic World class:",
          {c["name"]: round(c["percent"], 1) for c in summary["classes"]})
    assert {c["name"] for c in summary["classes"]} <= set(CLASSES) and summary["cells"]["valid"] > 30_000
    assert "sieved to a minimum mapping unit of 0.5 ha (50 cells)" in summary["areas"]
    polygons = pyogrio.read_dataframe(demo_dw / "landcover.gpkg", layer="landcover")
    parts = [p for g in polygons.geometry for p in g.geoms]
    _, patch_codes = label_patches(codes)
    assert len(parts) < len(patch_codes)  # the sieve merged the small patches
    # Only a patch with no neighbour of another class (an island in nodata) stays below the unit:
    # its whole outline is the mapped area's edge.
    edge = polygons.geometry.union_all().boundary.buffer(0.01)
    assert all(edge.contains(p.exterior) for p in parts if p.area < 5_000)
