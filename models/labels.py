"""BigEarthNet label sets: the 43 CORINE level-3 labels of BigEarthNet v1 and their
19-class grouping (Sumbul et al. 2020, "BigEarthNet Deep Learning Models with a New
Class-Nomenclature"), which the models predict.

Ten of the 43 labels have no 19-class counterpart (they are hard to see at 10 m: roads,
ports, airports, mines, dumps, construction sites, green urban areas, sport facilities,
bare rock, burnt areas) and are dropped, as in the paper. A patch carrying only dropped
labels has an all-zero multi-hot and no single label.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from models.classes import CLASS_NAMES, NUM_CLASSES
from models.errors import LandcoverError


class LabelError(LandcoverError):
    """A label name or code is not part of the BigEarthNet nomenclature."""


BEN43_NAMES: tuple[str, ...] = (
    "Continuous urban fabric",
    "Discontinuous urban fabric",
    "Industrial or commercial units",
    "Road and rail networks and associated land",
    "Port areas",
    "Airports",
    "Mineral extraction sites",
    "Dump sites",
    "Construction sites",
    "Green urban areas",
    "Sport and leisure facilities",
    "Non-irrigated arable land",
    "Permanently irrigated land",
    "Rice fields",
    "Vineyards",
    "Fruit trees and berry plantations",
    "Olive groves",
    "Pastures",
    "Annual crops associated with permanent crops",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland",
    "Moors and heathland",
    "Sclerophyllous vegetation",
    "Transitional woodland/shrub",
    "Beaches, dunes, sands",
    "Bare rock",
    "Sparsely vegetated areas",
    "Burnt areas",
    "Inland marshes",
    "Peatbogs",
    "Salt marshes",
    "Salines",
    "Intertidal flats",
    "Water courses",
    "Water bodies",
    "Coastal lagoons",
    "Estuaries",
    "Sea and ocean",
)

# For each of the 19 classes, the indices of the 43 labels it groups (the paper's table).
BEN19_FROM_43: tuple[tuple[int, ...], ...] = (
    (0, 1),
    (2,),
    (11, 12, 13),
    (14, 15, 16, 18),
    (17,),
    (19,),
    (20,),
    (21,),
    (22,),
    (23,),
    (24,),
    (25, 31),
    (26, 27),
    (28,),
    (29,),
    (33, 34),
    (35, 36, 37),
    (38, 39),
    (40, 41, 42),
)

BEN43_TO_19: dict[int, int] = {old: new for new, olds in enumerate(BEN19_FROM_43) for old in olds}
DROPPED_43: tuple[int, ...] = tuple(i for i in range(len(BEN43_NAMES)) if i not in BEN43_TO_19)


def _key(name: str) -> str:
    # reBEN and some tools spell "Transitional woodland/shrub" with ", " and vary case.
    return " ".join(name.replace("/", ", ").lower().split())


_NAME43 = {_key(n): i for i, n in enumerate(BEN43_NAMES)}
_NAME19 = {_key(n): i for i, n in enumerate(CLASS_NAMES)}


def index19(name: str) -> int | None:
    """19-class index of a label given in either nomenclature; None for a dropped 43 label.

    Names that are both a 43 and a 19 label (e.g. "Pastures") map to the same class.
    """
    key = _key(name)
    if key in _NAME19:
        return _NAME19[key]
    if key in _NAME43:
        return BEN43_TO_19.get(_NAME43[key])
    raise LabelError(
        f"unknown BigEarthNet label {name!r}: use one of the 43 CORINE or 19 BigEarthNet class names"
    )


def multi_hot(names: Iterable[str]) -> np.ndarray:
    """float32 (19,) multi-hot of the 19-class labels of a patch labelled with ``names``."""
    out = np.zeros(NUM_CLASSES, dtype=np.float32)
    for name in names:
        idx = index19(name)
        if idx is not None:
            out[idx] = 1.0
    return out


def single_label(target: np.ndarray) -> int:
    """The seed's single label of a multi-hot: argmax, so the lowest index wins ties.

    Returns -1 for an all-zero target (only dropped labels), which training skips.
    """
    target = np.asarray(target)
    return int(np.argmax(target)) if target.max() > 0 else -1


def class_index(value: str | int) -> int:
    """0-based class index from a class name (either nomenclature) or a 1-based raster code.

    Used for user-drawn labels, whose class field may hold names or map codes.
    """
    if isinstance(value, (int, np.integer)) or (isinstance(value, str) and value.strip().isdigit()):
        code = int(value)
        if not 1 <= code <= NUM_CLASSES:
            raise LabelError(f"class code {code} is outside 1..{NUM_CLASSES}: use a map code or a class name")
        return code - 1
    idx = index19(str(value))
    if idx is None:
        raise LabelError(f"label {value!r} has no 19-class counterpart: pick one of the 19 class names")
    return idx
