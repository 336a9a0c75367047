"""`landcover map` end to end over a real Earth Search scene, served on 127.0.0.1.

Real data (read in place, none of it made by this team; see its NOTE.md):
``realdata/pixels/rio-tiler-pds__S2A_29RKH_20200219_0_L2A`` - the Earth Search v1 item JSON of
scene S2A_29RKH_20200219_0_L2A (south Morocco / Western Sahara desert, baseline 02.14, EPSG:32629,
exactly as stored in the sentinel-cogs bucket: common-name asset keys, https COG hrefs, s3:// JP2
hrefs and self link) and its real COGs decimated 10x (B02 at 100 m, SCL at 200 m).

The item is copied to a temporary folder with the hrefs of the COGs that are here rewritten to a
Range-capable file server (symlinks to the real files); every other href stays as Earth Search
serves it. A real STAC API (``rustac serve``) serves the item and the installed ``landcover``
command maps a 6 x 6 km square inside the scene with the demo weights, as a user would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.windows
import shapely.ops
from pyproj import Transformer
from shapely.geometry import box, shape

from pipeline.demo.serve import start_file_server, start_stac_server

# One real map run (a CLI process, a dask worker, torch) for the whole module: 30-40 s on 2 cores.
pytestmark = pytest.mark.slow

SCENE = "S2A_29RKH_20200219_0_L2A"
REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "weights" / "demo-compact-nosr.safetensors"
# 6 x 6 km of open desert inside the tile (the scene has no nodata and 4 % cloud).
LON, LAT, HALF_LON, HALF_LAT = -11.40, 24.80, 0.0297, 0.027
AOI = box(LON - HALF_LON, LAT - HALF_LAT, LON + HALF_LON, LAT + HALF_LAT)


@dataclass(frozen=True)
class MapRun:
    out: Path
    item: dict  # the real item as stored in the bucket
    pixels: Path
    returncode: int
    stderr: str


def serve_files(pixels: Path, tmp: Path) -> tuple[subprocess.Popen, str]:
    """The real COGs (symlinked under one root) behind the pipeline's Range-capable file server."""
    root = tmp / "files"
    root.mkdir()
    for cog in pixels.glob("*.tif"):
        (root / cog.name).symlink_to(cog)
    return start_file_server(root, tmp)


def localised(item: dict, pixels: Path, files_url: str) -> dict:
    """A copy of ``item`` whose https COG hrefs point at the file server, where the file is here."""
    copy = json.loads(json.dumps(item))
    for asset in copy["assets"].values():
        name = asset["href"].rsplit("/", 1)[-1]
        if asset["href"].startswith("https://") and (pixels / name).is_file():
            asset["href"] = files_url + name
    return copy


@pytest.fixture(scope="module")
def run(realdata: Path, tmp_path_factory) -> Iterator[MapRun]:
    pixels = realdata / "pixels" / f"rio-tiler-pds__{SCENE}"
    item = json.loads((pixels / f"{SCENE}.json").read_text())
    tmp = tmp_path_factory.mktemp("real-map")
    procs = []
    try:
        files_proc, files_url = serve_files(pixels, tmp)
        procs.append(files_proc)
        served = localised(item, pixels, files_url)
        assert any(asset["href"].startswith("s3://") for asset in served["assets"].values())  # left as Earth Search has them
        (tmp / "items.ndjson").write_text(json.dumps(served) + "\n")
        stac_proc, stac_url = start_stac_server([tmp / "items.ndjson"], tmp)
        procs.append(stac_proc)
        assert shape(item["geometry"]).contains(AOI)
        (tmp / "aoi.geojson").write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": AOI.__geo_interface__}))
        out = tmp / "map"
        proc = subprocess.run(
            [Path(sys.executable).parent / "landcover", "map", tmp / "aoi.geojson", "--source", "earth-search",
             "--stac-url", stac_url, "--start", "2020-02-01", "--end", "2020-02-28", "--out", out,
             "--model", MODEL, "--workers", "1", "--save-composite", "--cell-size", "1200", "--stride", "120", "--no-dense"],
            capture_output=True, text=True, timeout=300, cwd=tmp,
        )
        yield MapRun(out, item, pixels, proc.returncode, proc.stderr)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def mapped(run: MapRun) -> MapRun:
    if run.returncode != 0:
        pytest.fail(f"landcover map exited {run.returncode}: {run.stderr[-2000:]}")
    return run


def test_the_map_run_succeeds_on_the_real_scene(run):
    assert run.returncode == 0, run.stderr[-2000:]
    assert SCENE in run.stderr and "02.14" in run.stderr  # the scene table
    assert "Traceback" not in run.stderr and "WARNING" not in run.stderr


def test_the_class_map_is_a_cog_in_the_scenes_utm_zone(mapped):
    with rasterio.open(mapped.out / "landcover.tif") as src:
        assert src.driver == "GTiff" and src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.crs.to_epsg() == mapped.item["properties"]["proj:epsg"] == 32629
        assert src.res == (1200.0, 1200.0) and src.dtypes == ("uint8",) and src.nodata == 0
        scene = rasterio.transform.array_bounds(10980, 10980, rasterio.Affine(*mapped.item["assets"]["red"]["proj:transform"][:6]))
        left, bottom, right, top = src.bounds
        assert scene[0] <= left < right <= scene[2] and scene[1] <= bottom < top <= scene[3]


def test_every_cell_inside_the_aoi_carries_a_class_code(mapped):
    """The scene is clear over the AOI: no cell there may be nodata; cells the AOI only clips may."""
    aoi = shapely.ops.transform(Transformer.from_crs(4326, 32629, always_xy=True).transform, AOI)
    with rasterio.open(mapped.out / "landcover.tif") as src:
        classes = src.read(1)
        transform = src.transform
    inside = np.array([[aoi.contains(box(*rasterio.windows.bounds(rasterio.windows.Window(c, r, 1, 1), transform)))
                        for c in range(classes.shape[1])] for r in range(classes.shape[0])])
    assert inside.sum() >= 9  # 6 km of 1.2 km cells, not aligned with the grid: at least 3 x 3 wholly inside
    assert set(np.unique(classes)) <= set(range(20))
    assert np.all((classes[inside] >= 1) & (classes[inside] <= 19))
    assert np.count_nonzero(classes) >= 0.75 * classes.size


def test_the_geopackage_has_the_map_layers_and_the_real_footprint(mapped):
    layers = {name for name, _ in pyogrio.list_layers(mapped.out / "landcover.gpkg")}
    assert {"landcover", "patches", "scenes"} <= layers
    scenes = pyogrio.read_dataframe(mapped.out / "landcover.gpkg", layer="scenes")
    assert scenes["item_id"].tolist() == [SCENE] and scenes["mgrs_tile"].tolist() == ["29RKH"]


def test_the_provenance_names_the_real_item(mapped):
    summary = json.loads((mapped.out / "summary.json").read_text())
    item = json.loads((mapped.out / "item.json").read_text())
    assert [s["item_id"] for s in summary["scenes"]] == [SCENE]
    assert item["properties"]["landcover:input_items"] == [SCENE]


def test_the_composite_keeps_the_02_14_scenes_reflectance_without_an_offset(mapped):
    """Baseline 02.14 carries no BOA offset: composite red (reflectance x 10,000) is B04's DN."""
    with rasterio.open(mapped.out / "composite.tif") as comp:
        red = comp.read(1).astype(float)
        bounds = comp.bounds
    with rasterio.open(mapped.pixels / "B04.tif") as src:
        dn = src.read(1, window=rasterio.windows.from_bounds(*bounds, transform=src.transform)).astype(float)
    red, dn = red[red > 0], dn[dn > 0]
    assert abs(np.median(red) - np.median(dn)) < 0.03 * np.median(dn)
