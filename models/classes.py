"""The 19-class BigEarthNet nomenclature (Sumbul et al. 2020) and its colours.

Class *codes* in map products are 1..19 (index + 1) so that 0 stays free for nodata.
Colours follow the CORINE Land Cover palette of the level-3 classes each class groups.
"""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)

NUM_CLASSES = len(CLASS_NAMES)
NODATA_CODE = 0

# RGB per class, CORINE-derived.
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 0, 77),     # Urban fabric
    (204, 77, 242),   # Industrial or commercial units
    (255, 255, 168),  # Arable land
    (242, 166, 77),   # Permanent crops
    (230, 230, 77),   # Pastures
    (255, 230, 77),   # Complex cultivation patterns
    (230, 204, 77),   # Agriculture with natural vegetation
    (242, 204, 166),  # Agro-forestry areas
    (128, 255, 0),    # Broad-leaved forest
    (0, 166, 0),      # Coniferous forest
    (77, 255, 0),     # Mixed forest
    (204, 242, 77),   # Natural grassland and sparsely vegetated areas
    (166, 255, 128),  # Moors, heathland and sclerophyllous vegetation
    (166, 242, 0),    # Transitional woodland, shrub
    (230, 230, 230),  # Beaches, dunes, sands
    (166, 166, 255),  # Inland wetlands
    (204, 204, 255),  # Coastal wetlands
    (0, 204, 242),    # Inland waters
    (230, 242, 255),  # Marine waters
)


def class_code(index: int) -> int:
    """Map a 0-based model output index to the 1-based code written in rasters."""
    return index + 1


def class_name(code: int) -> str:
    """Name of a 1-based raster code (0 is nodata)."""
    return "No data" if code == NODATA_CODE else CLASS_NAMES[code - 1]
