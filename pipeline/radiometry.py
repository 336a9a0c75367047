"""Sentinel-2 L2A digital numbers -> surface reflectance, harmonised across processing baselines.

Since processing baseline 04.00 (25 Jan 2022) ESA adds a +1000 DN offset to L2A bands
(BOA_ADD_OFFSET). Catalogues disagree on how they report it:

* Earth Search v1 usually removes the offset from the pixels and says so with
  ``earthsearch:boa_offset_applied: true`` while its ``raster:bands`` still declare
  ``offset: -0.1``; applying that offset again drives water negative.
* Planetary Computer keeps the offset in the pixels and has no flag.
* A few items are reported with the flag wrong.

So the flag, when present, beats ``raster:bands``; without a flag the processing baseline
decides; and a pixel check on clear, dark surfaces (which cannot carry +1000) catches the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

BOA_OFFSET_DN = 1000
REFLECTANCE_SCALE = 1e-4
NODATA_DN = 0
OFFSET_FLAG = "earthsearch:boa_offset_applied"
# SCL classes whose surfaces are dark in the visible bands: vegetation (4), water (6).
DARK_SCL_CLASSES = (4, 6)
# Clear dark pixels without the offset sit far below 1000 DN in red; with it, at or above.
_DARK_LIMIT_DN = 900
_MIN_SAMPLE = 200


def parse_baseline(value: Any) -> tuple[int, int] | None:
    """'04.00' or 4.0 or 'N0400' -> (4, 0); None when absent or unreadable."""
    if value is None:
        return None
    text = str(value).strip().upper().lstrip("N")
    if "." not in text and len(text) == 4 and text.isdigit():
        text = f"{text[:2]}.{text[2:]}"
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return None


def metadata_offset_dn(properties: Mapping[str, Any]) -> int:
    """The DN offset the pixels carry according to item metadata alone (0 or 1000)."""
    flag = properties.get(OFFSET_FLAG)
    baseline = parse_baseline(properties.get("s2:processing_baseline"))
    from_baseline = baseline is not None and baseline >= (4, 0)
    if flag is not None:
        # The flag says whether the catalogue already removed an offset the baseline added.
        return BOA_OFFSET_DN if (from_baseline and not bool(flag)) else 0
    return BOA_OFFSET_DN if from_baseline else 0


def pixel_checked_offset_dn(metadata_offset: int, dark_dn: np.ndarray) -> int:
    """Confirm or correct the metadata offset with the red-band DN of clear, dark pixels.

    ``dark_dn`` holds DN samples of pixels the SCL calls vegetation or water (nodata removed).
    With fewer than a few hundred samples the metadata is trusted as is.
    """
    sample = np.asarray(dark_dn).ravel()
    sample = sample[sample != NODATA_DN]
    if sample.size < _MIN_SAMPLE:
        return metadata_offset
    low = float(np.percentile(sample, 5))
    if low < _DARK_LIMIT_DN:
        return 0  # dark surfaces this dark cannot carry +1000
    return BOA_OFFSET_DN  # clear water and vegetation all above 0.09 in red: an offset is there


def dn_to_reflectance(dn: np.ndarray, offset_dn: int, scale: float = REFLECTANCE_SCALE) -> np.ndarray:
    """float32 reflectance; nodata (DN 0) becomes NaN. Values may exceed 1 (clouds) or dip below 0."""
    dn = np.asarray(dn)
    out = (dn.astype(np.float32) - np.float32(offset_dn)) * np.float32(scale)
    return np.where(dn == NODATA_DN, np.float32(np.nan), out)
