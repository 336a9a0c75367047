"""A model's legend: the classes its map shows, each with a map code, a name and a colour.

The card carries it (:attr:`models.card.ModelCard.legend`) and every output of a map follows it:
the colour table and category names of landcover.tif, probabilities.tif's band names, QGIS styles,
polygons, summary.json, the quicklook and the STAC item. Codes are what landcover.tif stores:
1..255, 0 stays no data. The planes of a map's probabilities are the legend's classes in legend
order. BigEarthNet-19 (:mod:`models.classes`, codes 1..19) is the default of the classifier
families.
"""

from __future__ import annotations

import re
from functools import cached_property

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.classes import CLASS_COLORS, CLASS_NAMES, NODATA_CODE

NODATA_NAME = "No data"
BIGEARTHNET_TITLE = "BigEarthNet 19 classes"
_HEX = re.compile(r"^#[0-9A-Fa-f]{6}$")

RGB = tuple[int, int, int]


def hex_colour(rgb: RGB) -> str:
    return "#{:02X}{:02X}{:02X}".format(*rgb)


class LegendClass(BaseModel):
    """One class of a legend."""

    model_config = ConfigDict(frozen=True)

    code: int = Field(ge=1, le=255, description="value in landcover.tif (0 is no data)")
    name: str = Field(min_length=1)
    colour: str = Field(description="#RRGGBB")
    description: str | None = None

    @field_validator("colour")
    @classmethod
    def _colour(cls, value: str) -> str:
        if not _HEX.match(value):
            raise ValueError(f"colour {value!r} is not #RRGGBB")
        return value.upper()

    @property
    def rgb(self) -> RGB:
        return tuple(int(self.colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


class Legend(BaseModel):
    """Classes in plane order (the order of a map's probability planes), with a title for
    band descriptions and item titles."""

    model_config = ConfigDict(frozen=True)

    title: str = BIGEARTHNET_TITLE
    classes: tuple[LegendClass, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Legend:
        for what, values in (("codes", self.codes), ("names", self.names)):
            if len(set(values)) != len(values):
                raise ValueError(f"legend {what} repeat: {list(values)}")
        return self

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def codes(self) -> tuple[int, ...]:
        return tuple(c.code for c in self.classes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def colours(self) -> tuple[RGB, ...]:
        return tuple(c.rgb for c in self.classes)

    def entries(self) -> list[tuple[int, str, RGB]]:
        """(code, name, rgb) per class in legend order (the form QGIS styles take)."""
        return [(c.code, c.name, c.rgb) for c in self.classes]

    def name(self, code: int) -> str:
        """Name of a map code ("No data" for 0)."""
        return NODATA_NAME if code == NODATA_CODE else self.classes[int(self.plane_of[code])].name

    def index(self, name: str) -> int:
        """Plane of a class name; ValueError when the legend has no such class."""
        return self.names.index(name)

    @cached_property
    def plane_of(self) -> np.ndarray:
        """int (256,) lookup: map code -> plane, -1 for codes the legend does not use (and 0)."""
        lut = np.full(256, -1, dtype=np.int64)
        lut[list(self.codes)] = np.arange(len(self.classes))
        return lut

    @property
    def max_code(self) -> int:
        return max(self.codes)

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...], colours: list[str], *, title: str,
                   first_code: int = 1, descriptions: list[str | None] | None = None) -> Legend:
        """Classes coded ``first_code``, ``first_code + 1``, ... in the given order."""
        descriptions = descriptions or [None] * len(names)
        return cls(title=title, classes=tuple(
            LegendClass(code=first_code + i, name=n, colour=c, description=d)
            for i, (n, c, d) in enumerate(zip(names, colours, descriptions, strict=True))))


def bigearthnet_legend() -> Legend:
    """The BigEarthNet 19-class legend: codes 1..19, CORINE-derived colours."""
    return _BIGEARTHNET


_BIGEARTHNET = Legend.from_names(CLASS_NAMES, [hex_colour(c) for c in CLASS_COLORS], title=BIGEARTHNET_TITLE)
