"""The ``to_label`` layer in QGIS: its style, its value-map form, and its place in the map's project.

``landcover active-learn`` writes the windows a model is least sure of as polygons; the user
opens the map's ``landcover.qgz``, finds ``to_label`` on top, and picks each window's class from
a drop-down of the model's class names (a QGIS value-map widget; the field stores the name).
Multi-label models get one drop-down per field (``class``, ``class_2``, ``class_3``). Outlines are
coloured by the model's guess, hollow, so the imagery under them stays visible.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from pyproj import CRS

from models.files import atomic_write
from pipeline.export import qgis

LAYER = "to_label"
PROJECT = "landcover.qgz"
PROJECT_LAYER_ID = "to_label_windows"  # fixed, so asking again replaces the layer in the project
_ALIASES = {
    "patch_id": "Window", "rank": "Rank", "guess": "Model's guess", "guess_code": "Guess (code)",
    "confidence": "Confidence", "branch": "Why picked", "score": "Score",
    "class": "Class", "class_2": "Second class", "class_3": "Third class",
}
_READ_ONLY = ("patch_id", "rank", "guess", "guess_code", "confidence", "branch", "score")

Entries = Sequence[tuple[int, str, tuple[int, int, int]]]


def to_label_style(classes: Entries, fields: Sequence[str]) -> ET.Element:
    """Hollow windows outlined in the colour of the model's guess (``guess_code``), with a value-map
    form listing ``classes`` (code, name, rgb) by name on every label field."""
    root = qgis._qgis_root()
    renderer = ET.SubElement(root, "renderer-v2", type="categorizedSymbol", attr="guess_code", symbollevels="0",
                             enableorderby="0", forceraster="0")
    categories = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for index, (code, name, rgb) in enumerate(classes):
        ET.SubElement(categories, "category", value=str(code), symbol=str(index), label=name, render="true")
        symbols.append(qgis._fill_symbol(str(index), "0,0,0,0", "{},{},{},255".format(*rgb), 0.8, style="no"))
    qgis._finish_vector_style(root, renderer)
    configuration = ET.SubElement(root, "fieldConfiguration")
    for field in fields:
        widget = ET.SubElement(ET.SubElement(configuration, "field", name=field, configurationFlags="None"),
                               "editWidget", type="ValueMap")
        value_map = ET.SubElement(ET.SubElement(ET.SubElement(widget, "config"), "Option", type="Map"),
                                  "Option", type="List", name="map")
        # An empty first entry: a row may stay unlabelled (and a multi-label row needs no second class).
        ET.SubElement(ET.SubElement(value_map, "Option", type="Map"), "Option", type="QString",
                      name="(not labelled)", value="")
        for _, name, _ in classes:
            ET.SubElement(ET.SubElement(value_map, "Option", type="Map"), "Option", type="QString", name=name, value=name)
    aliases = ET.SubElement(root, "aliases")
    for index, (field, alias) in enumerate(_ALIASES.items()):
        ET.SubElement(aliases, "alias", field=field, index=str(index), name=alias)
    editable = ET.SubElement(root, "editable")
    for field in _READ_ONLY:
        # What the model said and why the window was picked are facts, not for the labeller to change.
        ET.SubElement(editable, "field", name=field, editable="0")
    return root


def style_rows(classes: Entries, fields: Sequence[str]):
    """The layer_styles row of the ``to_label`` layer (the GeoPackage's default style for it)."""
    from pipeline.export import vector

    return vector.style_rows({LAYER: (to_label_style(classes, fields),
                                      "windows to label: outline = model's guess, value-map form on the class fields")})


def add_to_project(gpkg: Path, classes: Entries, fields: Sequence[str], crs: str) -> Path | None:
    """List ``to_label`` on top of the .qgz beside ``gpkg`` (replacing an earlier one); None when the
    folder has no project."""
    project = Path(gpkg).parent / PROJECT
    if not project.is_file():
        return None
    source = f"./{Path(gpkg).name}|layername={LAYER}"
    layer = qgis.ProjectLayer("to label", source, "ogr", to_label_style(classes, fields), "Polygon", True, PROJECT_LAYER_ID)
    text = qgis.read_qgz(project)
    extent = ET.fromstring(text).find("mapcanvas/extent")
    if extent is None:
        raise ValueError(f"{project} has no map canvas extent")
    bounds = tuple(float(extent.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    updated = qgis.with_project_layer(text, layer, CRS.from_user_input(crs), bounds)  # type: ignore[arg-type]
    atomic_write(project, lambda tmp: qgis.write_qgz(tmp, updated))
    return project
