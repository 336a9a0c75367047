import xml.etree.ElementTree as ET
import zipfile

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
