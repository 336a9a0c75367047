"""Sentinel-2 L2A bands by the names model cards use: Earth Search v1 common-name asset keys.

Cards name bands the way the pipeline loads them (``red``, ``nir08``, ``swir16``, ...), in the
order the network takes them; checkpoints published with band ids (B04, B8A, B11) are translated
here, once.
"""

from __future__ import annotations

from models.errors import LandcoverError

# Band id -> Earth Search v1 common-name asset key, and the band's native resolution in metres.
BAND_IDS: dict[str, str] = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B11": "swir16",
    "B12": "swir22",
}
COMMON_NAMES: tuple[str, ...] = tuple(BAND_IDS.values())
RESOLUTION_M: dict[str, int] = {
    "coastal": 60, "blue": 10, "green": 10, "red": 10, "rededge1": 20, "rededge2": 20, "rededge3": 20,
    "nir": 10, "nir08": 20, "nir09": 60, "swir16": 20, "swir22": 20,
}
_ID_OF = {name: band_id for band_id, name in BAND_IDS.items()}


class BandError(LandcoverError):
    """A band name that is not a Sentinel-2 L2A band."""


def common_name(band: str) -> str:
    """'B8A', 'b8a', 'B8a' or 'nir08' -> 'nir08'; anything else is an error naming the choices."""
    if band in _ID_OF:
        return band
    key = band.strip().upper()
    if key in BAND_IDS:
        return BAND_IDS[key]
    if len(key) == 2 and key[0] == "B" and key[1].isdigit():  # B2 -> B02
        return common_name(f"B0{key[1]}")
    raise BandError(f"unknown Sentinel-2 band {band!r}; use a band id (B02..B12, B8A) or one of {', '.join(COMMON_NAMES)}")


def band_id(name: str) -> str:
    """'nir08' -> 'B8A' (for labels people read)."""
    return _ID_OF[common_name(name)]
