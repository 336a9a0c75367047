"""A model with its own legend: a user's 5 classes, with their codes, names and colours, in every output."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pyogrio
import pytest
import rasterio
from export_helpers import AOI, make_provenance, two_scenes, utm_grid

from models.card import ModelCard, StandardNormalisation, TimmArchitecture
from models.legend import Legend
from pipeline.export import export_map
from pipeline.infer import to_legend_planes
from pipeline.mosaic import mosaic

NAMES = ["Water", "Forest", "Meadow", "Town", "Bare rock"]
COLOURS = ["#1F78B4", "#33A02C", "#B2DF8A", "#E31A1C", "#B15928"]
CODES = [10, 20, 30, 40, 50]  # a user's own codes, not 1..5


def five_class_card() -> ModelCard:
    legend = Legend.from_names(NAMES, COLOURS, title="my 5 classes")
    legend = Legend(title=legend.title, classes=tuple(c.model_copy(update={"code": code})
                                                      for c, code in zip(legend.classes, CODES)))
    bands = ["red", "green", "blue", "nir"]
    # The network's outputs in another order than the legend's: the card maps them by name.
    return ModelCard(family="timm", profile="mine", legend=legend, classes=list(reversed(NAMES)), bands=bands,
                     architecture=TimmArchitecture(model_name="resnet10t", channels=4),
                     normalisation=StandardNormalisation(mean=[0.1] * 4, std=[0.05] * 4))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    card = five_class_card()
    ny, nx = 20, 25
    cols = np.mgrid[0:ny, 0:nx][1]
    winner = (cols // 5) % 5  # network output index per cell (reversed legend order)
    outputs = np.full((5, ny, nx), 0.05, np.float32)
    np.put_along_axis(outputs, winner[None], 0.8, axis=0)
    cells = np.concatenate([outputs, np.ones((1, ny, nx), np.float32)])
    planes = to_legend_planes(card, cells)
    class_map = mosaic(planes[:5], planes[5], np.ones((ny, nx), bool), codes=card.legend.codes)
    scenes = two_scenes()
    provenance = make_provenance(scenes).model_copy(update={"model_card": card.model_dump(mode="json")})
    out = tmp_path_factory.mktemp("five") / "map"
    files = export_map(class_map, utm_grid(ny, nx), out, provenance=provenance, aoi=AOI, scenes=scenes,
                       legend=card.legend)
    return files, card, winner


def test_the_network_outputs_land_on_their_legend_codes(exported):
    files, _, winner = exported
    with rasterio.open(files.landcover) as src:
        codes = src.read(1)
    expected = np.array(CODES)[::-1][winner]  # output k is legend class 4 - k
    np.testing.assert_array_equal(codes, expected)


def test_the_class_raster_carries_the_legends_colours_and_names(exported):
    files = exported[0]
    with rasterio.open(files.landcover) as src:
        colormap = src.colormap(1)
        tags = src.tags()
        assert src.descriptions[0] == "land-cover class code (my 5 classes; 0 = no data)"
    for code, colour in zip(CODES, COLOURS):
        assert colormap[code][:3] == tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    assert tags["CLASS_NAMES"] == "0=No data;10=Water;20=Forest;30=Meadow;40=Town;50=Bare rock"
    aux = files.landcover_aux.read_text()
    assert aux.count("<Category>") == 6 and "<Category>Bare rock</Category>" in aux  # 0, then codes 10..50 by index
    with rasterio.open(files.probabilities) as src:
        assert src.count == 5 and list(src.descriptions) == NAMES
        assert [src.tags(b)["CLASS_CODE"] for b in range(1, 6)] == [str(c) for c in CODES]


def test_the_styles_polygons_summary_item_and_quicklook_follow_the_legend(exported):
    files = exported[0]
    qml = files.landcover_qml.read_text()
    for code, name, colour in zip(CODES, NAMES, COLOURS):
        assert f'value="{code}" color="{colour.lower()}"' in qml and f'label="{name}"' in qml
    polygons = pyogrio.read_dataframe(files.geopackage, layer="landcover")
    assert sorted(zip(polygons["class_id"], polygons["class_name"])) == list(zip(CODES, NAMES))
    patches = pyogrio.read_dataframe(files.geopackage, layer="patches")
    assert set(patches["top1_class"]) == set(NAMES)
    styles = pyogrio.read_dataframe(files.geopackage, layer="layer_styles", read_geometry=False)
    landcover_style = styles.loc[styles["f_table_name"] == "landcover", "styleQML"].item()
    assert 'value="50"' in landcover_style and 'label="Bare rock"' in landcover_style and "Urban fabric" not in landcover_style
    summary = json.loads(files.summary.read_text())
    assert [(c["code"], c["name"]) for c in summary["classes"]] == list(zip(CODES, NAMES))
    item = json.loads(files.item.read_text())
    table = item["assets"]["landcover"]["classification:classes"]
    assert [(c["value"], c["title"], c["color_hint"]) for c in table[1:]] == \
        [(code, name, colour[1:]) for code, name, colour in zip(CODES, NAMES, COLOURS)]
    assert item["properties"]["title"] == "Land-cover map (my 5 classes)"
    with zipfile.ZipFile(files.project) as qgz:
        project = qgz.read(qgz.namelist()[0]).decode()
    assert 'label="Meadow"' in project and "Urban fabric" not in project
    assert files.quicklook.stat().st_size > 0


def test_an_accuracy_assessment_of_the_map_reports_in_the_cards_classes(exported, tmp_path):
    """`landcover assess` on a map with the card's own legend (codes 10..50): the sample is stratified
    by those classes and the report names them (a reference equal to the map: every estimate exact)."""
    import shutil

    from typer.testing import CliRunner

    from cli.assess import assess_app

    files, _, _ = exported
    folder = tmp_path / "map"
    shutil.copytree(files.out_dir, folder)
    runner = CliRunner()
    for args in (["design", str(folder), "--per-class", "4", "--seed", "3", "--unit", "100"],
                 ["label", str(folder), "--reference", str(folder / "landcover.tif")],
                 ["report", str(folder)]):
        result = runner.invoke(assess_app, args)
        assert result.exit_code == 0, (args, result.output, result.exception)
    report = json.loads((folder / "assessment.json").read_text())
    assert [c["code"] for c in report["per_class"]] == CODES
    assert [c["name"] for c in report["per_class"]] == NAMES
    assert report["overall_accuracy"]["estimate"] == pytest.approx(1.0)
