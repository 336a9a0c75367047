"""Area of interest: GeoJSON in EPSG:4326 -> one validated lon/lat (multi)polygon.

Accepted: a bare Polygon/MultiPolygon geometry, a Feature holding one, or a FeatureCollection
(the union of its polygons). Anything else is refused with an :class:`~pipeline.errors.AOIError`
whose one-line message names the problem and the fix. A self-intersecting polygon is repaired
with :func:`shapely.make_valid` (logged as a warning) unless the repair leaves no area.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely
from pyproj import CRS, Geod
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from pipeline.errors import AOIError

log = logging.getLogger(__name__)

_GEOD = Geod(ellps="WGS84")
_POLYGONAL = ("Polygon", "MultiPolygon")
_LONLAT_CRS = CRS.from_epsg(4326)
_BUFFER_HINT = "give a Polygon or MultiPolygon (you could buffer it, e.g. shapely's .buffer())"


@dataclass(frozen=True)
class AOI:
    """A validated area of interest in lon/lat (EPSG:4326, x = longitude)."""

    geometry: BaseGeometry
    bounds: tuple[float, float, float, float]
    area_km2: float
    utm_epsgs: tuple[int, ...]
    centre_utm_epsg: int


def read_aoi(path: Path | str) -> AOI:
    """Read a GeoJSON file into an :class:`AOI`."""
    path = Path(path)
    if path.is_dir():
        raise AOIError(f"AOI path {path} is a directory; give a GeoJSON file (e.g. {path / 'region.geojson'})")
    if not path.is_file():
        raise AOIError(f"AOI file {path} does not exist; give the path of a GeoJSON file")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AOIError(f"AOI file {path} is not JSON ({err}); give a GeoJSON file") from None
    except PermissionError:
        raise AOIError(
            f"AOI file {path} is not readable (permission denied); fix its permissions (chmod +r) or give a copy you can read"
        ) from None
    except OSError as err:
        raise AOIError(f"AOI file {path} cannot be read ({err.strerror or err}); give a readable GeoJSON file") from None
    return parse_aoi(obj)


def parse_aoi(obj: Any) -> AOI:
    """Validate a parsed GeoJSON object (Feature, FeatureCollection or geometry) into an :class:`AOI`."""
    if not isinstance(obj, Mapping) or "type" not in obj:
        raise AOIError("AOI is not GeoJSON (no 'type' member); give a GeoJSON Feature, FeatureCollection or Polygon")
    _check_crs_member(obj)
    geometry = _union(_polygons(obj))
    _check_lonlat_range(geometry)
    _check_antimeridian(geometry)
    geometry = _repair(geometry)
    # Counter-clockwise shells give positive geodesic areas; make_valid output may mix orientations.
    area_km2 = _GEOD.geometry_area_perimeter(shapely.orient_polygons(geometry))[0] / 1e6
    centre = geometry.centroid
    return AOI(
        geometry=geometry,
        bounds=tuple(float(v) for v in geometry.bounds),
        area_km2=area_km2,
        utm_epsgs=utm_epsgs_touched(geometry),
        centre_utm_epsg=utm_epsg(centre.x, centre.y),
    )


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the standard UTM zone holding a lon/lat point (326xx north, 327xx south).

    The Norway/Svalbard zone exceptions are not applied: the output grid only needs a
    well-conditioned projection, and Sentinel-2 tiles there are delivered in the standard zones.
    """
    zone = min(max(int(math.floor((lon + 180.0) / 6.0)) + 1, 1), 60)
    return (32600 if lat >= 0 else 32700) + zone


def utm_epsgs_touched(geometry: BaseGeometry) -> tuple[int, ...]:
    """Sorted EPSG codes of every UTM zone (and hemisphere) the lon/lat geometry intersects."""
    minx, miny, maxx, maxy = geometry.bounds
    first = min(max(int(math.floor((minx + 180.0) / 6.0)) + 1, 1), 60)
    last = min(max(int(math.floor((maxx + 180.0) / 6.0)) + 1, 1), 60)
    codes = []
    for zone in range(first, last + 1):
        west = -180.0 + (zone - 1) * 6.0
        for base, lat0, lat1 in ((32600, 0.0, 90.0), (32700, -90.0, 0.0)):
            strip = shapely.box(west, lat0, west + 6.0, lat1)
            # A shared edge alone (an AOI ending exactly on 12°E) does not put the AOI in a zone.
            if geometry.intersection(strip).area > 0.0:
                codes.append(base + zone)
    return tuple(sorted(codes))


def _check_crs_member(obj: Mapping[str, Any]) -> None:
    # RFC 7946 dropped "crs"; old files still carry it. Accept only lon/lat ones.
    crs = obj.get("crs")
    if crs is None:
        return
    name = str((crs.get("properties") or {}).get("name", "")) if isinstance(crs, Mapping) else str(crs)
    if name.upper().endswith("CRS84"):
        return
    try:
        if CRS.from_user_input(name).equals(_LONLAT_CRS, ignore_axis_order=True):
            return
    except Exception:  # noqa: BLE001 - pyproj raises several types for unknown names
        pass
    raise AOIError(f"AOI declares CRS {name or crs!r}; reproject it to EPSG:4326 (lon/lat) and drop the 'crs' member")


def _polygons(obj: Mapping[str, Any]) -> list[BaseGeometry]:
    kind = obj.get("type")
    if kind == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise AOIError("AOI FeatureCollection has no 'features' list; give a valid GeoJSON FeatureCollection")
        if not features:
            raise AOIError("AOI FeatureCollection is empty; add at least one Polygon feature")
        return [poly for feature in features for poly in _polygons(feature)]
    if kind == "Feature":
        geometry = obj.get("geometry")
        if geometry is None:
            raise AOIError(f"AOI Feature has no geometry; {_BUFFER_HINT}")
        return _polygons(geometry)
    if kind == "GeometryCollection":
        members = obj.get("geometries") or []
        if not members:
            raise AOIError("AOI GeometryCollection is empty; add at least one Polygon")
        return [poly for member in members for poly in _polygons(member)]
    if kind in ("Point", "MultiPoint", "LineString", "MultiLineString"):
        raise AOIError(f"AOI is a {kind}, which has no area; {_BUFFER_HINT}")
    if kind not in _POLYGONAL:
        raise AOIError(f"AOI has GeoJSON type {kind!r}; give a Feature, FeatureCollection, Polygon or MultiPolygon")
    try:
        geometry = shape(obj)
    except Exception as err:  # noqa: BLE001 - shapely raises several types for malformed coordinates
        raise AOIError(f"AOI {kind} has malformed coordinates ({err}); fix the GeoJSON") from None
    if geometry.is_empty:
        raise AOIError(f"AOI {kind} is empty; give a polygon with coordinates")
    return [geometry]


def _union(polygons: list[BaseGeometry]) -> BaseGeometry:
    if len(polygons) == 1:
        return polygons[0]
    # Repair members first: unary_union refuses invalid input.
    return shapely.unary_union([p if p.is_valid else shapely.make_valid(p) for p in polygons])


def _repair(geometry: BaseGeometry) -> BaseGeometry:
    """make_valid an invalid (e.g. self-intersecting) polygon; refuse one without area."""
    if geometry.is_valid:
        return geometry
    reason = shapely.is_valid_reason(geometry)
    repaired = _polygonal_part(shapely.make_valid(geometry))
    if repaired.is_empty or repaired.area == 0.0:
        # Collinear or back-tracking rings are invalid too: repairing them leaves only lines.
        raise AOIError(
            f"AOI polygon has zero area (invalid: {reason}; repairing it leaves no area); "
            "give a polygon that encloses an area"
        )
    log.warning("AOI polygon was invalid (%s); repaired it with shapely.make_valid", reason)
    return repaired


def _polygonal_part(geometry: BaseGeometry) -> BaseGeometry:
    """Drop the lines and points make_valid may leave beside the polygons."""
    if geometry.geom_type in _POLYGONAL:
        return geometry
    parts = [g for g in shapely.get_parts(geometry) if g.geom_type in _POLYGONAL]
    return shapely.unary_union(parts) if parts else shapely.Polygon()


def _check_antimeridian(geometry: BaseGeometry) -> None:
    """An AOI wider than 180° of longitude crosses the antimeridian: either one polygon whose
    lon jumps from +180 to -180 (read literally it wraps the other way round the globe) or parts
    either side of it, whose centre would land near 0° and pick a UTM zone half a world away."""
    minx, _, maxx, _ = geometry.bounds
    if maxx - minx > 180.0:
        raise AOIError(
            f"the AOI spans {maxx - minx:.1f}° of longitude, so it crosses the antimeridian (180°), which is "
            "not supported; map the parts east and west of 180° as two AOIs"
        )


def _check_lonlat_range(geometry: BaseGeometry) -> None:
    minx, miny, maxx, maxy = geometry.bounds
    if minx < -180.0 or maxx > 180.0 or miny < -90.0 or maxy > 90.0:
        raise AOIError(
            f"AOI coordinates {tuple(round(v, 3) for v in geometry.bounds)} are outside lon/lat range "
            "(likely projected coordinates); reproject the AOI to EPSG:4326"
        )
