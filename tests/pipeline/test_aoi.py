import json
import logging
import os

import pytest
import shapely

from pipeline.aoi import AOI, parse_aoi, read_aoi, utm_epsg
from pipeline.errors import AOIError


def square(lon0, lat0, size=0.5):
    ring = [[lon0, lat0], [lon0 + size, lat0], [lon0 + size, lat0 + size], [lon0, lat0 + size], [lon0, lat0]]
    return {"type": "Polygon", "coordinates": [ring]}


def feature(geometry, **properties):
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def write(tmp_path, obj, name="aoi.geojson"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_read_aoi_of_a_feature_reports_bounds_area_and_zone(tmp_path):
    aoi = read_aoi(write(tmp_path, feature(square(9.0, 45.0))))
    assert isinstance(aoi, AOI)
    assert aoi.bounds == (9.0, 45.0, 9.5, 45.5)
    # 0.5° x 0.5° at 45°N: about 55.6 km x 39.3 km.
    assert aoi.area_km2 == pytest.approx(2186, rel=0.01)
    assert aoi.utm_epsgs == (32632,)
    assert aoi.centre_utm_epsg == 32632


def test_an_aoi_spanning_12_east_touches_zones_32_and_33():
    aoi = parse_aoi(square(11.7, 46.0, size=0.6))
    assert aoi.utm_epsgs == (32632, 32633)
    assert aoi.centre_utm_epsg == 32633  # centroid at 12.0°E falls in zone 33


def test_an_aoi_ending_exactly_on_a_zone_edge_touches_one_zone():
    assert parse_aoi(square(11.5, 46.0)).utm_epsgs == (32632,)


def test_southern_hemisphere_zones():
    assert parse_aoi(square(150.0, -34.0)).utm_epsgs == (32756,)
    assert utm_epsg(-70.6, -33.4) == 32719


def test_feature_collection_is_the_union_of_its_polygons():
    collection = {
        "type": "FeatureCollection",
        "features": [feature(square(9.0, 45.0)), feature(square(9.25, 45.0)), feature(square(20.0, 50.0))],
    }
    aoi = parse_aoi(collection)
    assert aoi.geometry.geom_type == "MultiPolygon"
    assert aoi.geometry.area == pytest.approx(0.75 * 0.5 + 0.25)
    assert aoi.utm_epsgs == (32632, 32634)


def test_bare_multipolygon_is_accepted():
    multi = {"type": "MultiPolygon", "coordinates": [square(9.0, 45.0)["coordinates"], square(10.0, 45.0)["coordinates"]]}
    assert parse_aoi(multi).geometry.area == pytest.approx(0.5)


def test_crs84_member_is_accepted_and_a_projected_one_refused():
    ok = {**feature(square(9.0, 45.0)), "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}}
    assert parse_aoi(ok).utm_epsgs == (32632,)
    bad = {**ok, "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}}}
    with pytest.raises(AOIError, match="reproject it to EPSG:4326"):
        parse_aoi(bad)


def test_missing_file(tmp_path):
    with pytest.raises(AOIError, match="does not exist; give the path of a GeoJSON file"):
        read_aoi(tmp_path / "nowhere.geojson")


def test_a_directory_is_not_reported_as_missing(tmp_path):
    with pytest.raises(AOIError) as info:
        read_aoi(tmp_path)
    message = str(info.value)
    assert f"AOI path {tmp_path} is a directory; give a GeoJSON file" in message
    assert "does not exist" not in message and "\n" not in message


def test_an_unreadable_file_is_named_as_such(tmp_path, monkeypatch):
    path = write(tmp_path, square(9.0, 45.0))

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(path), "read_text", denied)  # as root, chmod 000 would not stop us
    with pytest.raises(AOIError, match=r"is not readable \(permission denied\); fix its permissions"):
        read_aoi(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission(tmp_path):
    path = write(tmp_path, square(9.0, 45.0))
    path.chmod(0)
    try:
        with pytest.raises(AOIError, match="is not readable"):
            read_aoi(path)
    finally:
        path.chmod(0o644)


def test_not_json(tmp_path):
    with pytest.raises(AOIError, match="is not JSON .*; give a GeoJSON file"):
        read_aoi(write(tmp_path, "POLYGON((0 0, 1 0, 1 1, 0 0))"))


def test_not_utf8(tmp_path):
    path = tmp_path / "aoi.geojson"
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(AOIError, match="is not JSON"):
        read_aoi(path)


@pytest.mark.parametrize("obj", [[1, 2, 3], {"features": []}, {"type": "Topology"}])
def test_not_geojson(obj):
    with pytest.raises(AOIError, match="GeoJSON"):
        parse_aoi(obj)


@pytest.mark.parametrize(
    "geometry",
    [{"type": "Point", "coordinates": [9.0, 45.0]}, {"type": "LineString", "coordinates": [[9.0, 45.0], [9.5, 45.5]]}],
)
def test_points_and_lines_are_refused_with_a_buffer_hint(geometry):
    with pytest.raises(AOIError, match=f"is a {geometry['type']}, which has no area; give a Polygon.*buffer"):
        parse_aoi(feature(geometry))


def test_a_point_inside_a_collection_is_refused_too():
    point = {"type": "Point", "coordinates": [9, 45]}
    collection = {"type": "FeatureCollection", "features": [feature(square(9.0, 45.0)), feature(point)]}
    with pytest.raises(AOIError, match="give a Polygon"):
        parse_aoi(collection)


def test_empty_collection():
    with pytest.raises(AOIError, match="FeatureCollection is empty; add at least one Polygon"):
        parse_aoi({"type": "FeatureCollection", "features": []})


def test_projected_coordinates_are_refused():
    with pytest.raises(AOIError, match="outside lon/lat range .*projected coordinates.*reproject the AOI to EPSG:4326"):
        parse_aoi(square(500000.0, 5000000.0, size=1000.0))


@pytest.mark.parametrize("geometry", [
    # one polygon whose longitude jumps from +180 to -180
    {"type": "Polygon", "coordinates": [[[179.5, -17.0], [-179.5, -17.0], [-179.5, -16.0], [179.5, -16.0], [179.5, -17.0]]]},
    # split at 180 as RFC 7946 asks: still one map across zones 60 and 1
    {"type": "MultiPolygon", "coordinates": [
        [[[179.5, -17.0], [180.0, -17.0], [180.0, -16.0], [179.5, -16.0], [179.5, -17.0]]],
        [[[-180.0, -17.0], [-179.5, -17.0], [-179.5, -16.0], [-180.0, -16.0], [-180.0, -17.0]]],
    ]},
])
def test_an_aoi_across_the_antimeridian_is_refused_with_the_fix(geometry):
    with pytest.raises(AOIError, match="crosses the antimeridian.*map the parts east and west of 180° as two AOIs"):
        parse_aoi(geometry)
    west_part = {"type": "Polygon", "coordinates": [[[179.5, -17.0], [180.0, -17.0], [180.0, -16.0], [179.5, -16.0], [179.5, -17.0]]]}
    assert parse_aoi(west_part).centre_utm_epsg == 32760


def test_self_intersecting_polygon_is_repaired_with_a_warning(caplog):
    bowtie = {"type": "Polygon", "coordinates": [[[9.0, 45.0], [9.5, 45.5], [9.5, 45.0], [9.0, 45.5], [9.0, 45.0]]]}
    with caplog.at_level(logging.WARNING, logger="pipeline.aoi"):
        aoi = parse_aoi(bowtie)
    assert "repaired" in caplog.text and "Self-intersection" in caplog.text
    assert aoi.geometry.is_valid
    # The two triangles of the bow tie: half of the square, not the zero the raw ring gives.
    assert aoi.geometry.area == pytest.approx(0.125)
    assert aoi.area_km2 > 0


def test_a_valid_polygon_is_not_reported_as_repaired(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.aoi"):
        parse_aoi(square(9.0, 45.0))
    assert caplog.text == ""


@pytest.mark.parametrize(
    "ring",
    [
        [[9.0, 45.0], [9.5, 45.5], [10.0, 46.0], [9.0, 45.0]],  # collinear
        [[9.0, 45.0], [9.5, 45.0], [10.0, 45.0], [9.5, 45.0], [9.0, 45.0]],  # back-tracking
    ],
)
def test_zero_area_polygon_is_refused(ring):
    with pytest.raises(AOIError, match="zero area.*give a polygon that encloses an area"):
        parse_aoi({"type": "Polygon", "coordinates": [ring]})


def test_errors_are_one_line():
    for bad in ({"type": "Point", "coordinates": [0, 0]}, {"type": "FeatureCollection", "features": []}, square(1e6, 1e6)):
        with pytest.raises(AOIError) as info:
            parse_aoi(bad)
        assert "\n" not in str(info.value)


def test_aoi_geometry_is_lonlat_shapely():
    aoi = parse_aoi(feature(square(9.0, 45.0)))
    assert isinstance(aoi.geometry, shapely.Polygon)
    with pytest.raises(AttributeError):
        aoi.area_km2 = 1.0  # frozen
