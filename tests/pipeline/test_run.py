"""A whole map run over the served demo world: real STAC API, COGs over HTTP, dask worker processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from rich.console import Console

from models.classes import CLASS_COLORS
from pipeline.settings import MapConfig
from pipeline.blocks import iter_blocks, read_group
from pipeline.plan import DEMO_WEIGHTS
from pipeline.run import run_map
from pipeline.store import DirectoryChunkStore

EXPECTED_FILES = {
    "landcover.tif", "landcover.tif.aux.xml", "confidence.tif", "probabilities.tif", "landcover.gpkg", "landcover.qml",
    "confidence.qml", "landcover.qgz", "item.json", "quicklook.png", "summary.json",
}


# One window per 1.2 km cell: these tests are about the run's machinery (tests/pipeline/
# test_map_detail.py maps with the default, detailed settings).
COARSE = {"cell_size": 1200, "stride": 120, "dense": False}


def _cfg(world, model, out, **kw) -> MapConfig:
    return MapConfig(aoi=world.aoi_path, out=out, source="local", model=model, **{"workers": 2, **COARSE, **kw})


@pytest.fixture(scope="module")
def demo_map(demo_world, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("maps") / "demo"
    result = run_map(_cfg(demo_world, tiny_model, out), Console(quiet=True))
    return result


def test_the_demo_aoi_spans_both_utm_zones_and_maps_onto_one_grid(demo_map):
    assert {it.properties["proj:code"] for it in demo_map.items} == {"EPSG:32632", "EPSG:32633"}
    with rasterio.open(demo_map.out / "landcover.tif") as src:
        assert src.crs.to_epsg() == 32632
        assert src.transform == demo_map.grid.cell_geobox.affine
        classes = src.read(1)
    # The whole AOI is classified: no gap or seam where the 33N tile was reprojected in.
    inside = demo_map.grid.inside_aoi
    assert (classes[inside] > 0).mean() > 0.9
    assert (classes[~inside] == 0).all()


def test_the_run_times_each_stage_and_keeps_the_workers_model_loading_out_of_the_block_work(demo_map):
    stages = list(demo_map.timings)
    assert stages[:3] == ["plan", "cluster", "offsets"]  # plan: the AOI, the model card and the search
    assert {"load+infer", "model", "export", "shutdown"} <= set(stages)
    assert all(seconds >= 0 for seconds in demo_map.timings.values())


def test_every_output_is_written_and_opens_correctly(demo_map):
    out = demo_map.out
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    with rasterio.open(out / "landcover.tif") as src:
        assert src.nodata == 0 and src.dtypes == ("uint8",)
        assert src.colormap(1)[3][:3] == CLASS_COLORS[2]
    with rasterio.open(out / "confidence.tif") as src:
        assert src.crs.to_epsg() == 32632
    layers = {name for name, _ in pyogrio.list_layers(out / "landcover.gpkg")}
    assert {"landcover", "patches", "scenes", "layer_styles"} <= layers
    item = json.loads((out / "item.json").read_text())
    props = item["properties"]
    assert props["landcover:input_items"] == [it.id for it in demo_map.items]
    assert props["landcover:model_sha256"] == demo_map.model_sha256
    assert props["landcover:synthetic_model"] is True
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cells"]["valid"] == demo_map.n_valid


def test_the_same_map_twice_gives_an_identical_class_raster_on_any_number_of_workers(demo_map, demo_world, tiny_model,
                                                                                   tmp_path):
    again = run_map(_cfg(demo_world, tiny_model, tmp_path / "again", workers=1), Console(quiet=True))
    assert (again.out / "landcover.tif").read_bytes() == (demo_map.out / "landcover.tif").read_bytes()


def test_a_chunk_store_skips_finished_blocks(demo_world, tiny_model, tmp_path):
    store = DirectoryChunkStore(tmp_path / "chunks")
    first = run_map(_cfg(demo_world, tiny_model, tmp_path / "a"), Console(quiet=True), chunks=store)
    assert first.blocks_computed == first.blocks_total > 0
    second = run_map(_cfg(demo_world, tiny_model, tmp_path / "b"), Console(quiet=True), chunks=store)
    assert second.blocks_computed == 0
    assert (first.out / "landcover.tif").read_bytes() == (second.out / "landcover.tif").read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_an_existing_scheduler_runs_the_same_job_and_gpu_workers_only_classify(demo_world, demo_map, tiny_model, tmp_path):
    """`dask scheduler` and two `dask worker` processes reached by --scheduler, one of them
    started with `--resources GPU=1` (running on the CPU here): the map is the same, every
    classification task ran on the GPU worker, and the blocks' reads and composites ran on both."""
    from distributed import Client

    port = _free_port()
    bindir = Path(sys.executable).parent
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([bindir / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", ":0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    try:
        for extra in (["--resources", "GPU=1", "--name", "gpu"], ["--name", "cpu"]):
            procs.append(subprocess.Popen([bindir / "dask", "worker", address, "--nthreads", "1",
                                           "--host", "127.0.0.1", *extra], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
        with Client(address, timeout="20s") as watcher:
            watcher.wait_for_workers(2, timeout=60)
            names = {addr: w["name"] for addr, w in watcher.scheduler_info()["workers"].items()}
            watcher.get_task_stream()  # installs the scheduler's task-stream plugin before the run
            result = run_map(
                MapConfig(aoi=demo_world.aoi_path, out=tmp_path / "remote", source="local", model=tiny_model,
                          scheduler=address, device="cpu", **COARSE),
                Console(quiet=True),
            )
            stream = watcher.get_task_stream()
        assert (result.out / "landcover.tif").read_bytes() == (demo_map.out / "landcover.tif").read_bytes()
        ran = {}
        for record in stream:
            key = record["key"][0] if isinstance(record["key"], tuple) else record["key"]
            ran.setdefault(key.split("-")[0], set()).add(names[record["worker"]])
        assert ran["classify"] == {"gpu"}
        assert ran["block"] == {"gpu", "cpu"}  # the reads and composite of a read group of blocks, one task
        groups = {read_group(b) for b in iter_blocks(result.grid)}
        assert len(groups) < result.blocks_total
        assert len({r["key"] for r in stream if str(r["key"][0] if isinstance(r["key"], tuple) else r["key"]).startswith("block-")}) == len(groups)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def test_save_composite_writes_the_imagery_that_active_learning_queries(demo_world, tiny_model, tmp_path):
    """--save-composite: the reflectance COG under the map, on its 10 m pixel grid over the map's
    extent, written block by block; DBSS then picks patches of it into a `to_label` layer of the
    map's own GeoPackage."""
    from models.active import write_to_label
    from cli.train import query_map

    result = run_map(_cfg(demo_world, tiny_model, tmp_path / "map", save_composite=True), Console(quiet=True))
    out = result.out
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES | {"composite.tif"}
    assert result.files.composite == out / "composite.tif"
    with rasterio.open(out / "composite.tif") as src:
        assert src.driver == "GTiff" and src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        cells = result.grid.cell_geobox
        assert src.crs.to_epsg() == 32632 and src.bounds == tuple(cells.boundingbox) and src.res == (10.0, 10.0)
        assert src.count == 3 and src.dtypes == ("uint16",) * 3 and src.nodata == 0
        assert src.scales == (1e-4,) * 3 and src.overviews(1)
        dn = src.read(out_shape=(3, src.height // 8, src.width // 8))
    clear = dn[0] > 0
    assert clear.mean() > 0.5  # the demo world is mostly clear once composited
    assert 50 < np.median(dn[:, clear]) < 3000  # plausible land reflectance x 1e4
    item = json.loads((out / "item.json").read_text())
    assert item["assets"]["composite"]["href"].endswith("composite.tif")

    frame = query_map(DEMO_WEIGHTS, out / "composite.tif", None, n=6, p_in=0.5).frame  # a trained embedding
    assert len(frame) == 6 and frame.crs.to_epsg() == 32632
    assert set(frame["branch"]) <= {"inner", "border"} and (frame["class"] == "").all()
    write_to_label(frame, out / "landcover.gpkg")
    layers = {name for name, _ in pyogrio.list_layers(out / "landcover.gpkg")}
    assert {"landcover", "patches", "scenes", "to_label"} <= layers

    # The user fills the class field in QGIS; training reads that layer over the same composite.
    from models.training.config import DataSpec
    from models.training.sources import load_source

    labelled = pyogrio.read_dataframe(out / "landcover.gpkg", layer="to_label")
    labelled["class"] = labelled["guess"]
    pyogrio.write_dataframe(labelled, out / "landcover.gpkg", layer="to_label", layer_options={"OVERWRITE": "YES"})
    spec = DataSpec(source="user-labels", path=out / "landcover.gpkg", layer="to_label", imagery=out / "composite.tif")
    patches = load_source(spec)
    assert len(patches) == 6 and patches.images.shape == (6, 3, 32, 32)
    assert sorted(patches.labels.tolist()) == sorted(int(c) - 1 for c in labelled["guess_code"])


def test_a_worker_that_cannot_load_the_model_is_a_one_line_error(tiny_model):
    from pipeline.cluster import connect
    from pipeline.errors import LandcoverError
    from pipeline.infer import ModelRef
    from pipeline.run import load_model_on_workers

    changed = ModelRef(str(tiny_model), "0" * 64)  # the weights differ from what the client recorded
    with connect(None, workers=1) as (client, _), pytest.raises(LandcoverError) as err:
        load_model_on_workers(client, changed)
    assert "could not load the model" in str(err.value) and "changed during the run" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_scene_that_cannot_be_read_is_skipped_and_the_map_says_so(demo_world, tiny_model, tmp_path, monkeypatch):
    """One scene's asset is gone: the map is made from the others, and item.json, summary.json and
    the done line say which scene was skipped and why. The map also records its search window, its
    AOI's area, the catalogue (by name: the demo's loopback URL dies with the run) and its model."""
    import pipeline.plan
    from cli.map import done_line

    real = pipeline.plan.search_items

    def search_items(params, aoi):
        items = real(params, aoi)
        items[0].assets["red"].href = items[0].assets["red"].href.replace(".tif", "-gone.tif")
        return items

    monkeypatch.setattr(pipeline.plan, "search_items", search_items)
    result = run_map(_cfg(demo_world, tiny_model, tmp_path / "map"), Console(quiet=True))
    (gone, why), = result.skipped.items()
    assert result.n_items == result.n_planned - 1 and gone not in [it.id for it in result.items]
    line = " ".join(done_line(result).split())
    assert f"{result.n_items} of {result.n_planned} scenes (skipped: {gone}: " in line
    item = json.loads((result.out / "item.json").read_text())["properties"]
    summary = json.loads((result.out / "summary.json").read_text())
    assert item["landcover:skipped_items"] == {gone: why} and summary["scenes_skipped"] == [{"item_id": gone, "why": why}]
    for record in (item["landcover:window"], summary["window"]):
        assert record["start"] == "2015-06-23" and record["end"]  # the demo: its whole archive
    assert item["landcover:aoi_km2"] == pytest.approx(summary["aoi_km2"]) and summary["aoi_km2"] > 50
    assert item["landcover:catalogue"] == summary["catalogue"] == "the offline demo catalogue (--source local)"
    assert item["landcover:model"]["sha256"] == result.model_sha256 and item["landcover:model"]["source"]
    links = json.loads((result.out / "item.json").read_text())["links"]
    assert not [link for link in links if "127.0.0.1" in link["href"]]  # nothing points at the dead server
