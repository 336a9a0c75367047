"""The legend of a map folder (class codes, names, colours), read from the folder itself.

A map carries its model card's legend: ``item.json``'s STAC ``classification:classes`` (on the
``landcover`` asset, or the item) comes first; a folder without one falls back to landcover.tif's
colour table and category names (the ``.aux.xml`` sidecar, or the ``CLASS_NAMES`` tag). So an
assessment speaks the map's own classes, whatever model made it.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio

from pipeline.errors import LandcoverError

ITEM = "item.json"
LANDCOVER_TIF = "landcover.tif"
_GREY = (128, 128, 128)  # a class whose legend gives no colour


class LegendError(LandcoverError):
    """The map folder's legend cannot be read."""


@dataclass(frozen=True)
class LegendClass:
    code: int
    name: str
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Legend:
    """The map's classes in code order (no-data excluded) and the code that means no data."""

    classes: tuple[LegendClass, ...]
    nodata: int = 0

    @property
    def codes(self) -> tuple[int, ...]:
        return tuple(c.code for c in self.classes)

    def name(self, code: int) -> str:
        return self._by_code()[code].name

    def get(self, code: int) -> LegendClass | None:
        return self._by_code().get(code)

    def _by_code(self) -> dict[int, LegendClass]:
        return {c.code: c for c in self.classes}

    def code_of(self, label: Any) -> int | None:
        """The class code a label names: a code (int, or text such as "3" or "3.0"), or a class
        name in any case, spacing or punctuation ("Arable land", "arable_land"); None if none."""
        if label is None or (isinstance(label, float) and math.isnan(label)):  # None or NaN (an empty cell): no label
            return None
        if isinstance(label, (int, float)) and not isinstance(label, bool):
            return int(label) if float(label).is_integer() and int(label) in self._by_code() else None
        text = str(label).strip()
        if not text:
            return None
        try:
            return self.code_of(float(text))
        except ValueError:
            pass
        key = _key(text)
        return next((c.code for c in self.classes if _key(c.name) == key), None)


def _key(name: str) -> str:
    """Names compare without case, spaces or punctuation: "Arable land" == "arable_land"."""
    return re.sub(r"[^0-9a-z]+", "", name.lower())


def read_legend(map_dir: Path) -> Legend:
    """The legend of the map in ``map_dir``: item.json's classification classes, else landcover.tif's."""
    item_path = map_dir / ITEM
    if item_path.is_file():
        classes = _stac_classes(_read_json(item_path))
        if classes is not None:
            return legend_from_stac(classes)
    tif = map_dir / LANDCOVER_TIF
    if not tif.is_file():
        raise LegendError(f"{map_dir} holds no landcover.tif; give the folder of a map made by `landcover map`")
    return legend_from_raster(tif)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LegendError(f"cannot read {path} ({exc}); restore it from the map run or remove it") from None


def _stac_classes(item: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """classification:classes of the landcover asset, else of the item, else of any asset."""
    assets = item.get("assets", {})
    candidates = [assets.get("landcover", {}), item.get("properties", {}), *assets.values()]
    return next((c["classification:classes"] for c in candidates if c.get("classification:classes")), None)


def legend_from_stac(classes: Iterable[Mapping[str, Any]]) -> Legend:
    """STAC classification v2 classes: value, title/description/name, color_hint, nodata."""
    entries, nodata = [], 0
    for entry in classes:
        code = int(entry["value"])
        if entry.get("nodata"):
            nodata = code
            continue
        name = entry.get("title") or entry.get("description") or entry.get("name") or f"class {code}"
        entries.append(LegendClass(code, str(name), _rgb(entry.get("color_hint"))))
    if not entries:
        raise LegendError("item.json lists no land-cover class; remake the map or fix its classification:classes")
    return Legend(tuple(sorted(entries, key=lambda c: c.code)), nodata)


def _rgb(hint: str | None) -> tuple[int, int, int]:
    if not hint or not re.fullmatch(r"[0-9A-Fa-f]{6}", hint):
        return _GREY
    return tuple(int(hint[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def legend_from_raster(tif: Path) -> Legend:
    """The codes with a category name (sidecar, else the CLASS_NAMES tag), coloured by the palette.

    Without names, the palette's opaque entries other than black: GDAL fills the entries a
    writer left out with opaque black, so those cannot be told from classes.
    """
    with rasterio.open(tif) as src:
        nodata = 0 if src.nodata is None else int(src.nodata)
        try:
            palette = {k: v[:3] for k, v in src.colormap(1).items() if v[3] > 0}
        except ValueError:  # no colour table
            palette = {}
        names = _category_names(tif) or _tag_names(src.tags().get("CLASS_NAMES", ""))
    codes = sorted(set(names or {k for k, v in palette.items() if tuple(v) != (0, 0, 0)}) - {nodata})
    if not codes:
        raise LegendError(f"{tif} has neither item.json classes nor a colour table or category names; cannot name its classes")
    return Legend(tuple(LegendClass(c, names.get(c, f"class {c}"), tuple(palette.get(c, _GREY))) for c in codes), nodata)


def _category_names(tif: Path) -> dict[int, str]:
    """GDAL's PAM sidecar CategoryNames (index = code); empty entries are unnamed codes."""
    aux = tif.with_name(tif.name + ".aux.xml")
    if not aux.is_file():
        return {}
    try:
        root = ET.parse(aux).getroot()
    except ET.ParseError:
        return {}
    categories: Sequence[ET.Element] = root.findall("PAMRasterBand[@band='1']/CategoryNames/Category")
    return {code: (e.text or "").strip() for code, e in enumerate(categories) if (e.text or "").strip()}


def _tag_names(text: str) -> dict[int, str]:
    """The ``CLASS_NAMES`` GeoTIFF tag: "0=No data;1=Urban fabric;..."."""
    names = {}
    for part in text.split(";"):
        code, _, name = part.partition("=")
        if code.strip().isdigit() and name.strip():
            names[int(code)] = name.strip()
    return names
