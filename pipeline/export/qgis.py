"""QGIS styles (QML) and a small QGIS project for the map's layers.

Written from the QGIS 3.22 file formats (the oldest supported LTR that Debian bookworm ships):
QGIS applies ``<stem>.qml`` beside a raster and the default row of a GeoPackage's
``layer_styles`` table when a layer is opened; ``landcover.qgz`` opens every layer at once.
"""

from __future__ import annotations

import uuid
import warnings
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyproj import CRS

from models.legend import Legend, bigearthnet_legend

QGIS_VERSION = "3.22.0-Białowieża"
DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"

# Stops of matplotlib's viridis: perceptually uniform and readable by colour-blind users.
CONFIDENCE_RAMP: tuple[tuple[float, str], ...] = (
    (0.0, "#440154"),
    (0.25, "#3b528b"),
    (0.5, "#21918c"),
    (0.75, "#5ec962"),
    (1.0, "#fde725"),
)


def hex_color(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def to_text(root: ET.Element) -> str:
    ET.indent(root)
    return DOCTYPE + "\n" + ET.tostring(root, encoding="unicode") + "\n"


def _qgis_root(**attrs: str) -> ET.Element:
    return ET.Element("qgis", version=QGIS_VERSION, styleCategories="AllStyleCategories", **attrs)


# --- raster styles ------------------------------------------------------------------------


def _raster_pipe(renderer: ET.Element) -> ET.Element:
    pipe = ET.Element("pipe")
    provider = ET.SubElement(pipe, "provider")
    # Class codes must never be interpolated when zoomed.
    ET.SubElement(
        provider, "resampling", enabled="false", maxOversampling="2",
        zoomedInResamplingMethod="nearestNeighbour", zoomedOutResamplingMethod="nearestNeighbour",
    )
    pipe.append(renderer)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(
        pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0",
        colorizeRed="255", colorizeGreen="128", colorizeBlue="128", colorizeStrength="100",
    )
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    return pipe


def _min_max_origin(parent: ET.Element) -> None:
    origin = ET.SubElement(parent, "minMaxOrigin")
    for tag, text in (
        ("limits", "None"), ("extent", "WholeRaster"), ("statAccuracy", "Estimated"),
        ("cumulativeCutLower", "0.02"), ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2"),
    ):
        ET.SubElement(origin, tag).text = text


def _renderer(kind: str, **attrs: str) -> ET.Element:
    """A raster renderer with the parts every kind carries (transparency, min/max origin)."""
    renderer = ET.Element("rasterrenderer", type=kind, opacity="1", alphaBand="-1", nodataColor="", **attrs)
    ET.SubElement(renderer, "rasterTransparency")
    _min_max_origin(renderer)
    return renderer


def _raster_qml(renderer: ET.Element, *, smooth: bool = False) -> ET.Element:
    """The QML document around a renderer; ``smooth`` lets QGIS resample bilinearly on zoom."""
    root = _qgis_root()
    pipe = _raster_pipe(renderer)
    if smooth:
        pipe.find("provider/resampling").attrib.update(
            enabled="true", zoomedInResamplingMethod="bilinear", zoomedOutResamplingMethod="bilinear"
        )
    root.append(pipe)
    ET.SubElement(root, "blendMode").text = "0"
    return root


def landcover_raster_style(legend: Legend | None = None) -> ET.Element:
    """Paletted renderer: one entry per class code with its colour and name."""
    renderer = _renderer("paletted", band="1")
    palette = ET.SubElement(renderer, "colorPalette")
    for code, name, rgb in (legend or bigearthnet_legend()).entries():
        ET.SubElement(palette, "paletteEntry", value=str(code), color=hex_color(rgb), alpha="255", label=name)
    return _raster_qml(renderer)


def confidence_raster_style() -> ET.Element:
    """Single-band pseudocolour ramp over the fixed range 0..1."""
    renderer = _renderer("singlebandpseudocolor", band="1", classificationMin="0", classificationMax="1")
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader")
    shader.attrib.update(
        colorRampType="INTERPOLATED", classificationMode="1", clip="0",
        minimumValue="0", maximumValue="1", labelPrecision="2",
    )
    ramp = ET.SubElement(shader, "colorramp", type="gradient", name="[source]")
    _options(ramp, {
        "color1": _rgba(CONFIDENCE_RAMP[0][1]),
        "color2": _rgba(CONFIDENCE_RAMP[-1][1]),
        "discrete": "0",
        "rampType": "gradient",
        "stops": ":".join(f"{v};{_rgba(c)}" for v, c in CONFIDENCE_RAMP[1:-1]),
    })
    for value, color in CONFIDENCE_RAMP:
        ET.SubElement(shader, "item", value=f"{value:g}", color=color, alpha="255", label=f"{value:.2f}")
    return _raster_qml(renderer)


def rgb_composite_style(max_dn: int = 3000) -> ET.Element:
    """True colour for a 3-band reflectance composite: each band stretched 0..max_dn (0.3)."""
    renderer = _renderer("multibandcolor", redBand="1", greenBand="2", blueBand="3")
    for colour in ("red", "green", "blue"):
        enhancement = ET.SubElement(renderer, f"{colour}ContrastEnhancement")
        ET.SubElement(enhancement, "minValue").text = "0"
        ET.SubElement(enhancement, "maxValue").text = str(max_dn)
        ET.SubElement(enhancement, "algorithm").text = "StretchToMinimumMaximum"
    # Reflectance may be smoothed when zoomed, unlike class codes.
    return _raster_qml(renderer, smooth=True)


def _rgba(hex_value: str) -> str:
    rgb = tuple(int(hex_value[i : i + 2], 16) for i in (1, 3, 5))
    return "{},{},{},255".format(*rgb)


# --- vector styles ------------------------------------------------------------------------


def _options(parent: ET.Element, values: dict[str, str]) -> None:
    """Symbol properties as QGIS 3 writes them (<Option> map), plus the legacy <prop> form."""
    option_map = ET.SubElement(parent, "Option", type="Map")
    for key, value in values.items():
        ET.SubElement(option_map, "Option", type="QString", name=key, value=value)
    for key, value in values.items():
        ET.SubElement(parent, "prop", k=key, v=value)


def _fill_symbol(name: str, fill: str, outline: str, outline_width: float, style: str = "solid") -> ET.Element:
    symbol = ET.Element("symbol", type="fill", name=name, alpha="1", clip_to_extent="1", force_rhr="0")
    layer = ET.SubElement(symbol, "layer", attrib={"class": "SimpleFill", "enabled": "1", "pass": "0", "locked": "0"})
    _options(layer, {
        "color": fill,
        "style": style,
        "outline_color": outline,
        "outline_style": "solid",
        "outline_width": f"{outline_width:g}",
        "outline_width_unit": "MM",
        "joinstyle": "bevel",
        "offset": "0,0",
        "offset_unit": "MM",
    })
    return symbol


def categorized_style(attr: str = "class_id", outline: str = "35,35,35,255", outline_width: float = 0.1,
                      legend: Legend | None = None) -> ET.Element:
    """Fill polygons by class code with the legend's colours and names."""
    root = _qgis_root()
    renderer = ET.SubElement(
        root, "renderer-v2", type="categorizedSymbol", attr=attr,
        symbollevels="0", enableorderby="0", forceraster="0",
    )
    categories = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for index, (code, name, rgb) in enumerate((legend or bigearthnet_legend()).entries()):
        ET.SubElement(categories, "category", value=str(code), symbol=str(index), label=name, render="true")
        symbols.append(_fill_symbol(str(index), "{},{},{},255".format(*rgb), outline, outline_width))
    return _finish_vector_style(root, renderer)


def _finish_vector_style(root: ET.Element, renderer: ET.Element) -> ET.Element:
    """The elements QGIS expects after a vector renderer: rotation, size scale, blending, opacity."""
    ET.SubElement(renderer, "rotation")
    ET.SubElement(renderer, "sizescale")
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerOpacity").text = "1"
    return root


def outline_style(outline: str = "20,20,20,255", outline_width: float = 0.4) -> ET.Element:
    """Hollow polygons: scene footprints drawn over the map without hiding it."""
    root = _qgis_root()
    renderer = ET.SubElement(
        root, "renderer-v2", type="singleSymbol", symbollevels="0", enableorderby="0", forceraster="0"
    )
    symbols = ET.SubElement(renderer, "symbols")
    symbols.append(_fill_symbol("0", "0,0,0,0", outline, outline_width, style="no"))
    return _finish_vector_style(root, renderer)


# A legend as the styles below take it: (code, name, (r, g, b)) per class, in legend order.
LegendEntries = Sequence[tuple[int, str, tuple[int, int, int]]]


def _marker_symbol(name: str, fill: str, outline: str = "35,35,35,255", size: float = 2.6) -> ET.Element:
    symbol = ET.Element("symbol", type="marker", name=name, alpha="1", clip_to_extent="1", force_rhr="0")
    layer = ET.SubElement(symbol, "layer", attrib={"class": "SimpleMarker", "enabled": "1", "pass": "0", "locked": "0"})
    _options(layer, {
        "name": "circle",
        "color": fill,
        "outline_color": outline,
        "outline_style": "solid",
        "outline_width": "0.3",
        "outline_width_unit": "MM",
        "size": f"{size:g}",
        "size_unit": "MM",
        "scale_method": "diameter",
        "joinstyle": "bevel",
        "offset": "0,0",
        "offset_unit": "MM",
    })
    return symbol


def sample_points_style(
    classes: LegendEntries, *, attr: str = "map_class", label_field: str = "reference",
    aliases: dict[str, str] | None = None, read_only: Sequence[str] = (),
) -> ET.Element:
    """Sample points coloured by their map class, with a value-map form on ``label_field``: the
    interpreter picks a class by name from the legend and the field stores its code."""
    root = _qgis_root()
    renderer = ET.SubElement(
        root, "renderer-v2", type="categorizedSymbol", attr=attr, symbollevels="0", enableorderby="0", forceraster="0",
    )
    categories = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for index, (code, name, rgb) in enumerate(classes):
        ET.SubElement(categories, "category", value=str(code), symbol=str(index), label=name, render="true")
        symbols.append(_marker_symbol(str(index), "{},{},{},255".format(*rgb)))
    _finish_vector_style(root, renderer)

    fields = ET.SubElement(root, "fieldConfiguration")
    widget = ET.SubElement(ET.SubElement(fields, "field", name=label_field, configurationFlags="None"), "editWidget", type="ValueMap")
    config = ET.SubElement(ET.SubElement(widget, "config"), "Option", type="Map")
    value_map = ET.SubElement(config, "Option", type="List", name="map")
    for code, name, _ in classes:
        ET.SubElement(ET.SubElement(value_map, "Option", type="Map"), "Option", type="QString", name=name, value=str(code))
    alias_element = ET.SubElement(root, "aliases")
    for index, (field_name, alias) in enumerate((aliases or {}).items()):
        ET.SubElement(alias_element, "alias", field=field_name, index=str(index), name=alias)
    editable = ET.SubElement(root, "editable")
    for field_name in read_only:
        # The design's fields are facts of the sample, not for the interpreter to change.
        ET.SubElement(editable, "field", name=field_name, editable="0")
    return root


def categorized_sld(layer: str, attr: str = "class_id", legend: Legend | None = None) -> str:
    """The same class colours as SLD 1.1 (for tools that read styleSLD rather than QML)."""
    sld = "http://www.opengis.net/sld"
    se = "http://www.opengis.net/se"
    ogc = "http://www.opengis.net/ogc"
    ET.register_namespace("sld", sld)
    ET.register_namespace("se", se)
    ET.register_namespace("ogc", ogc)
    root = ET.Element(f"{{{sld}}}StyledLayerDescriptor", version="1.1.0")
    named = ET.SubElement(root, f"{{{sld}}}NamedLayer")
    ET.SubElement(named, f"{{{se}}}Name").text = layer
    style = ET.SubElement(ET.SubElement(named, f"{{{sld}}}UserStyle"), f"{{{se}}}FeatureTypeStyle")
    for code, name, rgb in (legend or bigearthnet_legend()).entries():
        rule = ET.SubElement(style, f"{{{se}}}Rule")
        ET.SubElement(rule, f"{{{se}}}Name").text = name
        equal = ET.SubElement(ET.SubElement(rule, f"{{{ogc}}}Filter"), f"{{{ogc}}}PropertyIsEqualTo")
        ET.SubElement(equal, f"{{{ogc}}}PropertyName").text = attr
        ET.SubElement(equal, f"{{{ogc}}}Literal").text = str(code)
        fill = ET.SubElement(ET.SubElement(rule, f"{{{se}}}PolygonSymbolizer"), f"{{{se}}}Fill")
        ET.SubElement(fill, f"{{{se}}}SvgParameter", name="fill").text = hex_color(rgb)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=False)


# --- project ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectLayer:
    """One layer of the project: a datasource relative to the project file, and its style."""

    name: str
    source: str
    provider: str  # "gdal" for rasters, "ogr" for GeoPackage layers
    style: ET.Element
    geometry: str | None = None  # "Polygon" for vector layers, None for rasters
    visible: bool = True
    layer_id: str = field(default_factory=lambda: f"layer_{uuid.uuid4().hex}")

    @property
    def kind(self) -> str:
        return "raster" if self.geometry is None else "vector"


def spatialrefsys(crs: CRS) -> ET.Element:
    """A CRS as QGIS stores it; QGIS reads the WKT first and falls back to the authority id."""
    element = ET.Element("spatialrefsys", nativeFormat="Wkt")
    authority = crs.to_authority()
    ET.SubElement(element, "wkt").text = crs.to_wkt("WKT2_2019")
    with warnings.catch_warnings():
        # QGIS only shows the PROJ string; the WKT above is the definition it uses.
        warnings.simplefilter("ignore", UserWarning)
        ET.SubElement(element, "proj4").text = crs.to_proj4()
    if authority:
        ET.SubElement(element, "srid").text = authority[1]
        ET.SubElement(element, "authid").text = ":".join(authority)
    ET.SubElement(element, "description").text = crs.name
    ET.SubElement(element, "geographicflag").text = "true" if crs.is_geographic else "false"
    return element


def _extent(parent: ET.Element, tag: str, bounds: tuple[float, float, float, float]) -> None:
    extent = ET.SubElement(parent, tag)
    for key, value in zip(("xmin", "ymin", "xmax", "ymax"), bounds, strict=True):
        ET.SubElement(extent, key).text = repr(float(value))


def project_qgs(title: str, layers: list[ProjectLayer], crs: CRS, bounds: tuple[float, float, float, float]) -> str:
    """A .qgs document: the layers (first = top of the legend), map CRS and extent, relative paths."""
    root = ET.Element("qgis", projectname=title, version=QGIS_VERSION)
    ET.SubElement(root, "homePath", path="")
    ET.SubElement(root, "title").text = title
    ET.SubElement(root, "projectCrs").append(spatialrefsys(crs))

    tree = ET.SubElement(root, "layer-tree-group")
    ET.SubElement(tree, "customproperties")
    for layer in layers:
        node = ET.SubElement(
            tree, "layer-tree-layer", id=layer.layer_id, name=layer.name, source=layer.source,
            providerKey=layer.provider, checked="Qt::Checked" if layer.visible else "Qt::Unchecked", expanded="1",
        )
        ET.SubElement(node, "customproperties")

    canvas = ET.SubElement(root, "mapcanvas", name="theMapCanvas", annotationsVisible="1")
    ET.SubElement(canvas, "units").text = "meters" if not crs.is_geographic else "degrees"
    _extent(canvas, "extent", bounds)
    ET.SubElement(canvas, "rotation").text = "0"
    ET.SubElement(canvas, "destinationsrs").append(spatialrefsys(crs))

    project_layers = ET.SubElement(root, "projectlayers")
    for layer in layers:
        project_layers.append(_maplayer(layer, crs, bounds))

    order = ET.SubElement(root, "layerorder")
    for layer in layers:
        ET.SubElement(order, "layer", id=layer.layer_id)
    properties = ET.SubElement(root, "properties")
    ET.SubElement(ET.SubElement(properties, "Paths"), "Absolute", type="bool").text = "false"
    # QGIS 3.22 reads <projectCrs> only when this legacy switch is on.
    ET.SubElement(ET.SubElement(properties, "SpatialRefSys"), "ProjectionsEnabled", type="int").text = "1"
    return to_text(root)


def _maplayer(layer: ProjectLayer, crs: CRS, bounds: tuple[float, float, float, float]) -> ET.Element:
    """A layer's <maplayer>: where its data is, its CRS and extent, and its style."""
    attrs = {"type": layer.kind, "hasScaleBasedVisibilityFlag": "0", "styleCategories": "AllStyleCategories"}
    if layer.geometry:
        # Polygons are written as multipolygons; sample points stay single points.
        attrs.update(geometry=layer.geometry, wkbType=layer.geometry if layer.geometry == "Point" else f"Multi{layer.geometry}")
    maplayer = ET.Element("maplayer", attrs)
    _extent(maplayer, "extent", bounds)
    ET.SubElement(maplayer, "id").text = layer.layer_id
    ET.SubElement(maplayer, "datasource").text = layer.source
    ET.SubElement(maplayer, "layername").text = layer.name
    ET.SubElement(maplayer, "srs").append(spatialrefsys(crs))
    provider = ET.SubElement(maplayer, "provider")
    provider.text = layer.provider
    if layer.provider == "ogr":
        provider.set("encoding", "UTF-8")
    maplayer.extend(list(layer.style))
    return maplayer


def with_project_layer(qgs_text: str, layer: ProjectLayer, crs: CRS, bounds: tuple[float, float, float, float]) -> str:
    """The .qgs document with ``layer`` on top of the legend, replacing a layer of the same id
    (so adding a layer again, as a redrawn sample, leaves one copy)."""
    root = ET.fromstring(qgs_text)
    for parent_path, tag in (("layer-tree-group", "layer-tree-layer"), ("layerorder", "layer"), ("projectlayers", "maplayer")):
        parent = root.find(parent_path)
        if parent is None:
            raise ValueError(f"not a QGIS project: no <{parent_path}>")
        for old in list(parent):
            if old.tag == tag and layer.layer_id in (old.get("id"), old.findtext("id")):
                parent.remove(old)
    tree = root.find("layer-tree-group")
    node = ET.Element(
        "layer-tree-layer", id=layer.layer_id, name=layer.name, source=layer.source, providerKey=layer.provider,
        checked="Qt::Checked" if layer.visible else "Qt::Unchecked", expanded="1",
    )
    ET.SubElement(node, "customproperties")
    # After the group's <customproperties>: the first layer is the top of the legend.
    tree.insert(1 if tree.find("customproperties") is not None else 0, node)
    root.find("layerorder").insert(0, ET.Element("layer", id=layer.layer_id))
    root.find("projectlayers").insert(0, _maplayer(layer, crs, bounds))
    return to_text(root)


def read_qgz(path: Path) -> str:
    """The .qgs document inside a .qgz (its one .qgs member)."""
    with zipfile.ZipFile(path) as archive:
        members = [n for n in archive.namelist() if n.endswith(".qgs")]
        if len(members) != 1:
            raise ValueError(f"{path} holds {len(members)} .qgs documents, not one")
        return archive.read(members[0]).decode("utf-8")


def write_qgz(path: Path, qgs_text: str, member: str = "landcover.qgs") -> None:
    """A .qgz is a zip holding the .qgs document."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, qgs_text.encode("utf-8"))
