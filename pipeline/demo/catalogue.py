"""A metadata-only synthetic Sentinel-2 L2A catalogue over a country, for planning at scale.

Items sit on the real Sentinel-2 tiling: each MGRS 100 km square of a UTM zone carries a
109.8 km tile whose north-west corner is the square's (real tiles sit within 40 m of that), so a
tile reaches 9.8 km into its eastern and southern neighbours, and tiles of adjacent zones overlap
across the zone boundary. Names, ``mgrs:*``, ``grid:code``, ``proj:*``, asset keys and
``raster:bands`` follow Earth Search v1 ``sentinel-2-l2a``; asset hrefs point at a host under
``.invalid`` (RFC 6761: it never resolves), because there are no pixels, only metadata.

Simplifications: no Norway/Svalbard zone exceptions, one tile per square (real MGRS repeats a
square that straddles a latitude band in both bands), and the band letter is the one of the
square's centre; footprints are whole tiles (no swath edges).

``synthetic_catalogue(bbox)`` makes the Items; ``country_aoi(n)`` a lon/lat rectangle over
Europe touching about ``n`` tiles; ``pipeline.demo.serve.serve_items`` serves them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import transform

from pipeline.demo.stac import COG_TYPE, COLLECTION_ID, EO_BANDS

SQUARE_M = 100_000.0
TILE_M = 109_800.0
ASSET_HOST = "https://sentinel-cogs.synthetic.invalid"
FIRST_DAY = date(2024, 6, 1)
REVISIT_DAYS = 5  # Sentinel-2A and 2B together
PROCESSING_BASELINE = "05.10"
STAC_EXTENSIONS = [
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
]
_BAND_LETTERS = "CDEFGHJKLMNPQRSTUVWX"  # 8° latitude bands from 80°S; X spans 72-84°N
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
_COLUMN_SETS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")  # by zone % 3
# Where a country-sized AOI is centred: the middle of square 32UNA (near Frankfurt), so a small
# AOI there lies in exactly one tile.
_COUNTRY_CENTRE = (32632, 550_000.0, 5_550_000.0)
_EXTRA_BANDS: dict[str, tuple[str, float, float, str]] = {
    "coastal": ("B01", 0.443, 0.027, "Coastal aerosol (band 1)"),
    "nir09": ("B09", 0.945, 0.026, "NIR 3 (band 9)"),
}
_BAND_FILES: dict[str, tuple[str, int]] = {  # asset key -> (file stem, metres)
    "blue": ("B02", 10), "green": ("B03", 10), "red": ("B04", 10), "nir": ("B08", 10),
    "rededge1": ("B05", 20), "rededge2": ("B06", 20), "rededge3": ("B07", 20), "nir08": ("B8A", 20),
    "swir16": ("B11", 20), "swir22": ("B12", 20), "coastal": ("B01", 60), "nir09": ("B09", 60),
}


class CatalogueError(ValueError):
    """An AOI the synthetic catalogue cannot cover."""


@dataclass(frozen=True)
class MgrsTile:
    """One Sentinel-2 tile: an MGRS 100 km square of one UTM zone, grown to 109.8 km."""

    zone: int
    north: bool  # hemisphere (EPSG 326xx / 327xx)
    band: str
    square: str  # column and row letters, e.g. "NA"
    e0: float  # west edge of the 100 km square (UTM metres)
    n0: float  # south edge of the 100 km square

    @property
    def name(self) -> str:
        return f"{self.zone:02d}{self.band}{self.square}"

    @property
    def epsg(self) -> int:
        return (32600 if self.north else 32700) + self.zone

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the tile in its UTM zone."""
        top = self.n0 + SQUARE_M
        return self.e0, top - TILE_M, self.e0 + TILE_M, top


# ---------------------------------------------------------------------------- MGRS arithmetic


def utm_zone(lon: float) -> int:
    return min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))


def latitude_band(lat: float) -> str:
    if not -80.0 <= lat <= 84.0:
        raise CatalogueError(f"latitude {lat:.2f} is outside the UTM/MGRS area (80°S to 84°N)")
    return _BAND_LETTERS[min(int((lat + 80.0) // 8.0), len(_BAND_LETTERS) - 1)]


def square_letters(zone: int, e0: float, n0: float) -> str:
    """The MGRS 100 km square letters of the square whose south-west corner is (e0, n0)."""
    column = _COLUMN_SETS[zone % 3][int(e0 // SQUARE_M) - 1]
    # Even zones start their row letters at F: neighbouring zones never repeat a name side by side.
    row = _ROW_LETTERS[(int(n0 // SQUARE_M) + (5 if zone % 2 == 0 else 0)) % len(_ROW_LETTERS)]
    return column + row


@lru_cache(maxsize=256)
def _to_utm(epsg: int) -> Transformer:
    return Transformer.from_crs(4326, epsg, always_xy=True)


@lru_cache(maxsize=256)
def _to_lonlat(epsg: int) -> Transformer:
    return Transformer.from_crs(epsg, 4326, always_xy=True)


def _zone_parts(geometry: BaseGeometry) -> list[tuple[int, bool, BaseGeometry]]:
    """(zone, northern hemisphere, part of ``geometry`` in that zone strip and hemisphere) with area."""
    lon0, lat0, lon1, lat1 = geometry.bounds
    parts = []
    for zone in range(utm_zone(lon0), utm_zone(lon1) + 1):
        west = -180.0 + 6.0 * (zone - 1)
        for north, (s, n) in ((True, (0.0, 84.0)), (False, (-80.0, 0.0))):
            part = geometry.intersection(box(west, s, west + 6.0, n))
            if not part.is_empty and part.area > 0.0:
                parts.append((zone, north, part))
    return parts


def tiles_for(geometry: BaseGeometry) -> list[MgrsTile]:
    """Every tile whose 100 km square meets ``geometry`` (lon/lat) in the square's own zone.

    The squares of a zone tile its strip, so these tiles cover the geometry with no gap.
    """
    tiles = []
    for zone, north, part in _zone_parts(geometry):
        epsg = (32600 if north else 32700) + zone
        # Edges straight in lon/lat are curved in UTM: densify before projecting, and keep a
        # square the chords may just miss (an extra tile is harmless, a gap is not).
        utm = transform(_to_utm(epsg).transform, part.segmentize(0.05)).buffer(100.0)
        x0, y0, x1, y1 = utm.bounds
        for e0 in np.arange(math.floor(x0 / SQUARE_M), math.floor(x1 / SQUARE_M) + 1) * SQUARE_M:
            if not SQUARE_M <= e0 < 9 * SQUARE_M:
                continue  # beyond the eight columns a zone has
            for n0 in np.arange(math.floor(y0 / SQUARE_M), math.floor(y1 / SQUARE_M) + 1) * SQUARE_M:
                if not utm.intersects(box(e0, n0, e0 + SQUARE_M, n0 + SQUARE_M)):
                    continue
                _, lat = _to_lonlat(epsg).transform(e0 + SQUARE_M / 2, n0 + SQUARE_M / 2)
                tiles.append(MgrsTile(zone, north, latitude_band(lat), square_letters(zone, e0, n0), float(e0), float(n0)))
    return tiles


def footprint(tile: MgrsTile, points_per_edge: int = 5) -> dict[str, Any]:
    """The tile square in lon/lat, counter-clockwise, with a few points per edge (UTM edges bend)."""
    west, south, east, north = tile.bounds
    t = np.linspace(0.0, 1.0, points_per_edge, endpoint=False)
    xs = np.concatenate([west + (east - west) * t, np.full_like(t, east), east - (east - west) * t, np.full_like(t, west)])
    ys = np.concatenate([np.full_like(t, south), south + (north - south) * t, np.full_like(t, north), north - (north - south) * t])
    lon, lat = _to_lonlat(tile.epsg).transform(xs, ys)
    ring = [[round(float(a), 6), round(float(b), 6)] for a, b in zip(lon, lat, strict=True)]
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


# ---------------------------------------------------------------------------- items


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts`` (stable across processes, unlike hash())."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def acquisition_days(tile: MgrsTile, dates_per_tile: int, seed: int) -> list[date]:
    """Dates a tile is seen: every REVISIT_DAYS from a first day that follows the tile's orbit.

    Tiles of one column of squares share an orbit, so their first day is a function of the column.
    """
    first = FIRST_DAY + timedelta(days=int(_unit(seed, tile.zone, tile.e0) * REVISIT_DAYS))
    return [first + timedelta(days=REVISIT_DAYS * k) for k in range(dates_per_tile)]


def _platform(day: date) -> str:
    # The two satellites alternate on one orbit every five days.
    return "sentinel-2a" if (day.toordinal() // REVISIT_DAYS) % 2 == 0 else "sentinel-2b"


def _band_asset(base: str, key: str, tile: MgrsTile) -> dict[str, Any]:
    stem, res = _BAND_FILES[key]
    name, centre, fwhm, title = EO_BANDS.get(key) or _EXTRA_BANDS[key]
    n = int(round(TILE_M / res))
    west, _, _, north = tile.bounds
    return {
        "href": f"{base}/{stem}.tif",
        "type": COG_TYPE,
        "title": f"{title} - {res}m",
        "eo:bands": [{"name": key, "common_name": "rededge" if key.startswith("rededge") else key,
                      "description": title, "center_wavelength": centre, "full_width_half_max": fwhm}],
        "gsd": res,
        "proj:shape": [n, n],
        "proj:transform": [res, 0, west, 0, -res, north],
        "raster:bands": [{"nodata": 0, "data_type": "uint16", "bits_per_sample": 15, "spatial_resolution": res,
                          "scale": 0.0001, "offset": -0.1}],
        "roles": ["data", "reflectance"],
    }


def _aux_asset(base: str, file: str, title: str, tile: MgrsTile, *, res: int = 20, **raster: Any) -> dict[str, Any]:
    n = int(round(TILE_M / res))
    west, _, _, north = tile.bounds
    return {
        "href": f"{base}/{file}",
        "type": COG_TYPE,
        "title": title,
        "proj:shape": [n, n],
        "proj:transform": [res, 0, west, 0, -res, north],
        "raster:bands": [{"nodata": 0, "spatial_resolution": res, **raster}],
        "roles": ["data", "reflectance"],
    }


def _assets(base: str, tile: MgrsTile) -> dict[str, Any]:
    assets = {key: _band_asset(base, key, tile) for key in _BAND_FILES}
    assets["scl"] = _aux_asset(base, "SCL.tif", "Scene classification map (SCL)", tile, data_type="uint8")
    assets["aot"] = _aux_asset(base, "AOT.tif", "Aerosol optical thickness (AOT)", tile, data_type="uint16",
                               bits_per_sample=15, scale=0.001, offset=0)
    assets["wvp"] = _aux_asset(base, "WVP.tif", "Water vapour (WVP)", tile, data_type="uint16",
                               bits_per_sample=15, unit="cm", scale=0.001, offset=0)
    assets["visual"] = {**_aux_asset(base, "TCI.tif", "True color image", tile, res=10, data_type="uint8"),
                        "roles": ["visual"]}
    assets["thumbnail"] = {"href": f"{base}/thumbnail.jpg", "type": "image/jpeg", "title": "Thumbnail image",
                           "roles": ["thumbnail"]}
    for key, file in (("granule_metadata", "granule_metadata.xml"), ("tileinfo_metadata", "tileinfo_metadata.json")):
        kind = "application/xml" if file.endswith(".xml") else "application/json"
        assets[key] = {"href": f"{base}/{file}", "type": kind, "roles": ["metadata"]}
    return dict(sorted(assets.items()))


def synthetic_item(tile: MgrsTile, day: date, seed: int = 0) -> dict[str, Any]:
    """One Earth Search v1 shaped Item of ``tile`` seen on ``day`` (metadata only)."""
    geometry = footprint(tile)
    ring = np.asarray(geometry["coordinates"][0])
    centre_lon = float(ring[:, 0].mean())
    platform = _platform(day)
    item_id = f"S2{platform[-1].upper()}_{tile.name}_{day:%Y%m%d}_0_L2A"
    # Sentinel-2 crosses the equator at 10:30 local solar time: UTC follows the longitude.
    seconds = int((10.5 - centre_lon / 15.0) * 3600) % 86_400
    acquired = datetime.combine(day, time(tzinfo=timezone.utc)) + timedelta(seconds=seconds)
    stamp = acquired.strftime("%Y%m%dT%H%M%S")
    cloud = round(100.0 * _unit(seed, tile.name, day.toordinal(), "cloud") ** 2, 6)  # mostly clear-ish
    thin = round(cloud * 0.3, 6)
    path = f"{tile.zone}/{tile.band}/{tile.square}/{day.year}/{day.month}/{item_id}"
    created = (acquired + timedelta(hours=3)).isoformat().replace("+00:00", "Z")
    properties: dict[str, Any] = {
        "created": created,
        "platform": platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": cloud,
        "proj:epsg": tile.epsg,
        "proj:code": f"EPSG:{tile.epsg}",
        "mgrs:utm_zone": tile.zone,
        "mgrs:latitude_band": tile.band,
        "mgrs:grid_square": tile.square,
        "grid:code": f"MGRS-{tile.name}",
        "view:sun_azimuth": 150.0,
        "view:sun_elevation": 60.0,
        "s2:mgrs_tile": tile.name,
        "s2:nodata_pixel_percentage": 0.0,
        "s2:cloud_shadow_percentage": round(cloud * 0.05, 6),
        "s2:vegetation_percentage": round((100.0 - cloud) * 0.6, 6),
        "s2:not_vegetated_percentage": round((100.0 - cloud) * 0.3, 6),
        "s2:water_percentage": round((100.0 - cloud) * 0.1, 6),
        "s2:medium_proba_clouds_percentage": round((cloud - thin) * 0.5, 6),
        "s2:high_proba_clouds_percentage": round((cloud - thin) * 0.5, 6),
        "s2:thin_cirrus_percentage": thin,
        "s2:snow_ice_percentage": 0.0,
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": PROCESSING_BASELINE,
        "s2:product_uri": f"S2{platform[-1].upper()}_MSIL2A_{stamp}_N{PROCESSING_BASELINE.replace('.', '')}_T{tile.name}.SAFE",
        "s2:sequence": "0",
        "datetime": acquired.isoformat().replace("+00:00", ".000000Z"),
        "earthsearch:s3_path": f"s3://sentinel-cogs.synthetic.invalid/sentinel-s2-l2a-cogs/{path}",
        "earthsearch:boa_offset_applied": True,
        "processing:software": {"synthetic-catalogue": "1"},
        "updated": created,
        "demo:synthetic": True,
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": STAC_EXTENSIONS,
        "id": item_id,
        "collection": COLLECTION_ID,
        "geometry": geometry,
        "bbox": [float(ring[:, 0].min()), float(ring[:, 1].min()), float(ring[:, 0].max()), float(ring[:, 1].max())],
        "properties": properties,
        "links": [],
        "assets": _assets(f"{ASSET_HOST}/sentinel-s2-l2a-cogs/{path}", tile),
    }


def _as_geometry(area: Sequence[float] | dict[str, Any] | BaseGeometry) -> BaseGeometry:
    if isinstance(area, BaseGeometry):
        return area
    if isinstance(area, dict):
        if area.get("type") == "FeatureCollection":
            return shapely.union_all([shape(f["geometry"]) for f in area["features"]])
        return shape(area.get("geometry", area))
    west, south, east, north = area
    if not (west < east and south < north):
        raise CatalogueError(f"bbox {list(area)} is not west < east, south < north (the antimeridian is not supported)")
    return box(west, south, east, north)


def synthetic_catalogue(
    area: Sequence[float] | dict[str, Any] | BaseGeometry, dates_per_tile: int = 2, seed: int = 0
) -> list[dict[str, Any]]:
    """Items for every tile meeting ``area`` (a lon/lat bbox, GeoJSON or shapely geometry), each
    seen on ``dates_per_tile`` dates; ids are unique per tile and date, order is tile then date."""
    if dates_per_tile < 1:
        raise CatalogueError(f"dates per tile {dates_per_tile} must be at least 1")
    tiles = tiles_for(_as_geometry(area))
    return [synthetic_item(t, day, seed) for t in tiles for day in acquisition_days(t, dates_per_tile, seed)]


def catalogue_collection(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``sentinel-2-l2a`` Collection document for ``items``."""
    boxes = np.array([i["bbox"] for i in items])
    times = sorted(i["properties"]["datetime"] for i in items)
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": STAC_EXTENSIONS[1:2],
        "id": COLLECTION_ID,
        "title": "Sentinel-2 Level-2A (synthetic, metadata only)",
        "description": "Synthetic Earth Search v1 shaped sentinel-2-l2a Items on the real MGRS tiling; no pixels.",
        "license": "CC0-1.0",
        "extent": {
            "spatial": {"bbox": [[float(boxes[:, 0].min()), float(boxes[:, 1].min()),
                                  float(boxes[:, 2].max()), float(boxes[:, 3].max())]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "links": [],
    }


def items_intersecting(items: list[dict[str, Any]], area: Sequence[float] | dict[str, Any] | BaseGeometry) -> list[dict[str, Any]]:
    """The items whose footprint meets ``area``: what a search of the catalogue must return."""
    geometry = _as_geometry(area)
    return [i for i in items if shape(i["geometry"]).intersects(geometry)]


# ---------------------------------------------------------------------------- country-sized AOIs


def country_aoi(n_tiles: int) -> dict[str, Any]:
    """A lon/lat rectangle over Europe (centred near Frankfurt) touching about ``n_tiles`` tiles.

    A square of side L meets about ((L + 109.8 km) / 100 km)² tiles of one zone; every zone
    boundary it crosses adds a column of duplicates, which the width allows for. Within ±25% of
    ``n_tiles`` from 10 tiles on; 1 tile exactly.
    """
    if n_tiles < 1:
        raise CatalogueError(f"n_tiles {n_tiles} must be at least 1")
    epsg, x, y = _COUNTRY_CENTRE
    lon0, lat0 = _to_lonlat(epsg).transform(x, y)
    side_km = max(20.0, 100.0 * math.sqrt(n_tiles) - TILE_M / 1000.0)
    # Zone strips are ~430 km wide here and each adds a column of tiles at its edge: a wide AOI
    # is narrowed by that share so its tile count stays near n_tiles.
    zone_km = 6.0 * 111.32 * math.cos(math.radians(lat0))
    width_km = side_km * zone_km / (zone_km + SQUARE_M / 1000.0) if side_km > zone_km else side_km
    half_lat = side_km / 2 / 111.13
    half_lon = width_km / 2 / (111.32 * math.cos(math.radians(lat0)))
    ring = [[round(lon0 + dx * half_lon, 6), round(lat0 + dy * half_lat, 6)]
            for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1))]
    return {
        "type": "FeatureCollection",
        "features": [{
            "type": "Feature",
            "properties": {"name": f"country-{n_tiles}-tiles", "description": f"Synthetic AOI over about {n_tiles} MGRS tiles"},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }],
    }


def aoi_geometry(aoi: dict[str, Any]) -> BaseGeometry:
    """The shapely geometry of an AOI GeoJSON made here."""
    return _as_geometry(aoi)


__all__ = [
    "CatalogueError", "MgrsTile", "aoi_geometry", "catalogue_collection", "country_aoi", "footprint",
    "items_intersecting", "latitude_band", "square_letters", "synthetic_catalogue",
    "synthetic_item", "tiles_for", "utm_zone",
]
