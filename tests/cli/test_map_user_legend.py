"""A user's own model: 5 classes with their own codes, names and colours, trained here on the demo
world for a few seconds, flows through `landcover map` end to end: every output names and colours
the map by the card's legend, and a regional run's `changes` layer too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

from models.card import ModelCard, StandardNormalisation, TimmArchitecture, TrainingData
from models.classes import CLASS_NAMES
from models.legend import Legend

# The user's legend: their codes (not 1..5), names and colours, and which demo-world classes
# (BigEarthNet-19) each of their classes gathers for training.
LEGEND = {
    11: ("Water", "#2B83BA", ["Inland waters", "Marine waters", "Coastal wetlands", "Inland wetlands"]),
    22: ("Woodland", "#1A9641", ["Broad-leaved forest", "Coniferous forest", "Mixed forest",
                                 "Transitional woodland, shrub", "Agro-forestry areas"]),
    33: ("Open land", "#A6D96A", ["Pastures", "Natural grassland and sparsely vegetated areas",
                                  "Moors, heathland and sclerophyllous vegetation", "Beaches, dunes, sands"]),
    44: ("Built-up", "#D7191C", ["Urban fabric", "Industrial or commercial units"]),
    55: ("Farmland", "#FDAE61", ["Arable land", "Permanent crops", "Complex cultivation patterns",
                                 "Land principally occupied by agriculture, with significant areas of natural vegetation"]),
}
NAMES = [name for name, _, _ in LEGEND.values()]
BANDS = ["blue", "green", "red", "nir"]
INPUT_PX = 30  # the 120 px window resized for the network: a few seconds of training on 2 cores


def train_five_class_model(world, out: Path) -> Path:
    """A timm network trained for 60 steps on the demo world's windows, labelled with the user's 5
    classes (multi-label: a class is present when any of its demo classes is), saved with its card."""
    import torch
    import torch.nn.functional as F

    from models.preprocess import standardise_reflectance
    from models.reben import TimmClassifier
    from models.training.timm import dn_statistics, save_timm_model
    from pipeline.demo.dataset import demo_world_windows

    data = demo_world_windows(world, BANDS)
    targets = np.stack([data.targets[:, [CLASS_NAMES.index(n) for n in members]].max(axis=1)
                        for _, _, members in LEGEND.values()], axis=1)
    mean, std = dn_statistics(data.windows)
    x = standardise_reflectance(data.windows, mean, std, size=INPUT_PX)
    arch = TimmArchitecture(model_name="test_resnet", channels=len(BANDS), image_size=INPUT_PX)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: more threads only contend
    try:
        torch.manual_seed(0)
        model = TimmClassifier(arch, len(LEGEND))
        optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
        y = torch.from_numpy(targets)
        generator = torch.Generator().manual_seed(0)
        for _ in range(60):
            batch = torch.randint(0, len(x), (16,), generator=generator)
            loss = F.binary_cross_entropy_with_logits(model(x[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    legend = Legend.model_validate({"title": "my 5 classes", "classes": [
        {"code": code, "name": name, "colour": colour} for code, (name, colour, _) in LEGEND.items()]})
    card = ModelCard(
        family="timm", profile="my-5-classes", architecture=arch, task="multi-label", threshold=0.5,
        classes=NAMES, legend=legend, bands=BANDS, resampling="nearest",
        normalisation=StandardNormalisation(mean=mean, std=std, resize="bilinear"),
        patch_size=INPUT_PX, window_px=120, ground_footprint_m=1200.0,
        training_data=TrainingData(description="60 steps on the demo world, 5 user classes", synthetic=True),
    )
    return save_timm_model(model, card, out / "my-5-classes.safetensors")


@pytest.fixture(scope="module")
def mapped(demo_world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("user-legend")
    weights = train_five_class_model(demo_world, tmp)
    aoi = tmp / "aoi.geojson"
    aoi.write_text(json.dumps(demo_world.central_aoi(4.0)))
    out = tmp / "map"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("landcover")), "map", str(aoi), "--source", "local", "--out", str(out),
         "--model", str(weights), "--workers", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, tmp


def test_the_class_raster_and_its_sidecars_carry_the_users_codes_names_and_colours(mapped):
    out, _ = mapped
    with rasterio.open(out / "landcover.tif") as src:
        codes = src.read(1)
        colormap = src.colormap(1)
        assert src.tags()["CLASS_NAMES"] == "0=No data;" + ";".join(f"{c}={n}" for c, (n, _, _) in LEGEND.items())
    present = set(np.unique(codes[codes > 0]).tolist())
    assert present and present <= set(LEGEND)
    for code, (_, colour, _) in LEGEND.items():
        assert "#{:02X}{:02X}{:02X}".format(*colormap[code][:3]) == colour
    assert "<Category>Farmland</Category>" in (out / "landcover.tif.aux.xml").read_text()
    qml = (out / "landcover.qml").read_text()
    assert all(f'label="{name}"' in qml for name in NAMES) and "Urban fabric" not in qml
    with rasterio.open(out / "probabilities.tif") as src:
        assert list(src.descriptions) == NAMES


def test_polygons_styles_summary_item_and_project_follow_the_legend(mapped):
    out, _ = mapped
    polygons = pyogrio.read_dataframe(out / "landcover.gpkg", layer="landcover")
    assert set(zip(polygons["class_id"], polygons["class_name"])) <= {(c, n) for c, (n, _, _) in LEGEND.items()}
    styles = pyogrio.read_dataframe(out / "landcover.gpkg", layer="layer_styles", read_geometry=False)
    style = styles.loc[styles["f_table_name"] == "landcover", "styleQML"].item()
    assert 'label="Built-up"' in style and "215,25,28,255" in style and "Urban fabric" not in style  # #D7191C
    summary = json.loads((out / "summary.json").read_text())
    assert {c["name"] for c in summary["classes"]} <= set(NAMES)
    assert sum(c["percent"] for c in summary["classes"]) == pytest.approx(100)
    item = json.loads((out / "item.json").read_text())
    table = item["assets"]["landcover"]["classification:classes"]
    assert [(c["value"], c["title"], "#" + c["color_hint"]) for c in table[1:]] == \
        [(code, name, colour) for code, (name, colour, _) in LEGEND.items()]
    with zipfile.ZipFile(out / "landcover.qgz") as qgz:
        project = qgz.read(qgz.namelist()[0]).decode()
    assert 'label="Open land"' in project and "Urban fabric" not in project
    assert (out / "quicklook.png").stat().st_size > 0


def test_a_regional_runs_changes_layer_names_the_users_classes(mapped):
    """The `changes` layer a regional run adds, against an earlier run whose cells were all
    another class of the legend: every change is named and styled by the user's classes."""
    from workflows.changes import record_changes

    out, tmp = mapped
    run = tmp / "run"
    shutil.copytree(out, run)
    previous = tmp / "previous.tif"
    with rasterio.open(out / "landcover.tif") as src:
        profile, codes = src.profile, src.read(1)
    earlier = np.where(codes > 0, np.where(codes == 11, 22, 11), 0).astype(np.uint8)
    with rasterio.open(previous, "w", **{**profile, "driver": "GTiff"}) as dst:
        dst.write(earlier, 1)
    report = record_changes(run, previous, "2024-01-01")
    assert {c["class_name"] for c in report["classes"]} <= set(NAMES) and report["changed_ha"] > 0
    changes = pyogrio.read_dataframe(run / "landcover.gpkg", layer="changes")
    assert set(changes["from_name"]) <= {"Water", "Woodland"} and set(changes["to_name"]) <= set(NAMES)
    styles = pyogrio.read_dataframe(run / "landcover.gpkg", layer="layer_styles", read_geometry=False)
    assert 'label="Farmland"' in styles.loc[styles["f_table_name"] == "changes", "styleQML"].item()


def test_the_demo_truth_agreement_is_not_reported_for_another_legend(mapped, demo_world, capsys):
    """The demo world's truth is in BigEarthNet-19 classes: a map in the user's legend is not
    compared with it (a line says why) rather than compared code by code."""
    from types import SimpleNamespace

    from cli.map import _report_demo_agreement

    out, _ = mapped
    _report_demo_agreement(SimpleNamespace(out=out, grid=None), demo_world)
    said = " ".join(capsys.readouterr().err.split())
    assert "no agreement with the demo world's truth" in said and "%" not in said
