import json
import os
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from models.classes import CLASS_COLORS, CLASS_NAMES
from pipeline.export.qgis import hex_color


def parse_qml(path) -> ET.Element:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE qgis")
    return ET.fromstring(text.split("\n", 1)[1])


def test_landcover_qml_is_a_paletted_renderer_with_named_class_colours(exported):
    files, _, _ = exported
    assert files.landcover_qml.name == "landcover.qml"  # same stem as landcover.tif: QGIS picks it up
    renderer = parse_qml(files.landcover_qml).find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = renderer.findall("colorPalette/paletteEntry")
    assert len(entries) == 19
    assert [e.get("value") for e in entries] == [str(code) for code in range(1, 20)]
    assert [e.get("label") for e in entries] == list(CLASS_NAMES)
    assert [e.get("color") for e in entries] == [hex_color(rgb) for rgb in CLASS_COLORS]


def test_confidence_qml_is_a_pseudocolour_ramp_from_0_to_1(exported):
    files, _, _ = exported
    renderer = parse_qml(files.confidence_qml).find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor"
    shader = renderer.find("rastershader/colorrampshader")
    values = [float(item.get("value")) for item in shader.findall("item")]
    assert values[0] == 0.0 and values[-1] == 1.0 and values == sorted(values)


def test_project_holds_every_layer_by_relative_path_in_the_map_crs(exported):
    files, _, _ = exported
    with zipfile.ZipFile(files.project) as archive:
        members = archive.namelist()
        assert len(members) == 1 and members[0].endswith(".qgs")
        qgs = ET.fromstring(archive.read(members[0]).decode("utf-8").split("\n", 1)[1])

    assert qgs.find("projectCrs/spatialrefsys/authid").text == "EPSG:32633"
    assert qgs.find("properties/Paths/Absolute").text == "false"
    layers = qgs.findall("projectlayers/maplayer")
    sources = {layer.find("layername").text: layer.find("datasource").text for layer in layers}
    assert sources == {
        "landcover": "./landcover.tif",
        "confidence": "./confidence.tif",
        "landcover polygons": "./landcover.gpkg|layername=landcover",
        "patches": "./landcover.gpkg|layername=patches",
        "scenes": "./landcover.gpkg|layername=scenes",
    }
    for source in sources.values():  # every datasource resolves beside the project
        assert (files.out_dir / source.split("|")[0]).is_file()

    providers = {layer.find("layername").text: layer.find("provider").text for layer in layers}
    assert providers["landcover"] == "gdal" and providers["scenes"] == "ogr"
    for layer in layers:
        assert layer.find("srs/spatialrefsys/authid").text == "EPSG:32633"
        assert layer.find("pipe/rasterrenderer") is not None or layer.find("renderer-v2") is not None

    tree_ids = [node.get("id") for node in qgs.findall("layer-tree-group/layer-tree-layer")]
    assert sorted(tree_ids) == sorted(layer.find("id").text for layer in layers)
    assert len(set(tree_ids)) == len(tree_ids)


SYSTEM_PYTHON = "/usr/bin/python3"


def qgis_available() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.mark.skipif(not qgis_available(), reason="QGIS (Debian python3-qgis) is not installed")
def test_qgis_opens_every_layer_styled(exported):
    files, _, _ = exported
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run(
        [SYSTEM_PYTHON, str(Path(__file__).with_name("qgis_check.py")), str(files.out_dir)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    expected_palette = [[float(code), name] for code, name in enumerate(CLASS_NAMES, start=1)]

    # GDAL's colour table and category names alone already give QGIS a named palette.
    assert seen["raster_alone"]["valid"] and seen["raster_alone"]["crs"] == "EPSG:32633"
    assert [c[:2] for c in seen["raster_alone"]["classes"]] == expected_palette
    assert [c[:2] for c in seen["raster_with_qml"]["classes"]] == expected_palette

    gpkg = seen["gpkg_landcover"]
    assert gpkg["valid"] and gpkg["default_style"] and gpkg["type"] == "categorizedSymbol"
    assert gpkg["attr"] == "class_id" and len(gpkg["classes"]) == 19
    assert gpkg["classes"][0] == ["1", CLASS_NAMES[0], hex_color(CLASS_COLORS[0])]

    assert seen["project_read"] and seen["project_crs"] == "EPSG:32633"
    layers = seen["project_layers"]
    assert set(layers) == {"landcover", "confidence", "landcover polygons", "patches", "scenes"}
    assert all(layer["valid"] for layer in layers.values())
    assert layers["landcover"]["type"] == "paletted"
    assert layers["confidence"]["type"] == "singlebandpseudocolor"
    assert layers["patches"]["type"] == "categorizedSymbol"


def test_the_composite_style_is_true_colour_stretched_to_0_3_reflectance_and_smooth():
    from pipeline.export.qgis import rgb_composite_style

    style = rgb_composite_style()
    renderer = style.find("pipe/rasterrenderer")
    assert renderer.get("type") == "multibandcolor"
    assert [renderer.get(f"{c}Band") for c in ("red", "green", "blue")] == ["1", "2", "3"]
    for colour in ("red", "green", "blue"):
        stretch = renderer.find(f"{colour}ContrastEnhancement")
        assert (stretch.findtext("minValue"), stretch.findtext("maxValue")) == ("0", "3000")
    assert style.find("pipe/provider/resampling").get("zoomedInResamplingMethod") == "bilinear"
    # Class codes, by contrast, are never interpolated.
    from pipeline.export.qgis import landcover_raster_style

    assert landcover_raster_style().find("pipe/provider/resampling").get("enabled") == "false"
