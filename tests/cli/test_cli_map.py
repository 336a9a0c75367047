"""`landcover map` on bad input: one line naming the problem and the fix, exit 2, no traceback,
nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli import main as cli
from landcover_here import run_landcover

POLYGON = {"type": "Polygon", "coordinates": [[[11.9, 45.4], [12.05, 45.4], [12.05, 45.45], [11.9, 45.45], [11.9, 45.4]]]}


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code, _, err = run_landcover(capsys, *args)
    return code, err

def write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert lines[-1].startswith("error:"), err
    text = " ".join(err.split())
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("{not json", ("is not JSON", "give a GeoJSON file")),
        ({"type": "Point", "coordinates": [12.0, 45.4]}, ("Point", "Polygon")),
        ({"type": "LineString", "coordinates": [[12.0, 45.4], [12.1, 45.5]]}, ("LineString",)),
        ({"type": "FeatureCollection", "features": []}, ("empty",)),
        ({"type": "Polygon", "coordinates": [[[700000, 5000000], [710000, 5000000], [710000, 5010000], [700000, 5000000]]]},
         ("EPSG:4326",)),
    ],
    ids=["not-json", "point", "linestring", "empty-collection", "projected-coordinates"],
)
def test_bad_aoi_is_refused_before_any_work(capsys, tmp_path, content, fragments):
    aoi = write(tmp_path / "aoi.geojson", content)
    code, err = run_cli(capsys, "map", str(aoi), "--out", str(tmp_path / "out"))
    one_line_error(code, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_missing_aoi_file(capsys, tmp_path):
    code, err = run_cli(capsys, "map", str(tmp_path / "nope.geojson"), "--out", str(tmp_path / "out"))
    one_line_error(code, err, "nope.geojson")


def test_a_previous_map_is_kept_unless_overwrite(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "landcover.tif").write_bytes(b"previous")
    code, err = run_cli(capsys, "map", str(write(tmp_path / "aoi.geojson", POLYGON)), "--out", str(out))
    one_line_error(code, err, "previous map", "--overwrite")
    assert (out / "landcover.tif").read_bytes() == b"previous"


def test_no_scenes_in_the_window(capsys, tmp_path, demo_world, tiny_model):
    code, err = run_cli(capsys, "map", "--demo", "--out", str(tmp_path / "out"), "--model", str(tiny_model),
                        "--start", "2019-01-01", "--end", "2019-02-01")
    one_line_error(code, err, "no Sentinel-2 scenes", "widen the dates")
    assert not (tmp_path / "out" / "landcover.tif").exists()


def test_an_unreachable_stac_api(capsys, tmp_path, tiny_model):
    code, err = run_cli(capsys, "map", str(write(tmp_path / "aoi.geojson", POLYGON)), "--out", str(tmp_path / "out"),
                        "--model", str(tiny_model), "--source", "earth-search", "--stac-url", "http://127.0.0.1:9/v1")
    one_line_error(code, err, "127.0.0.1:9")


def test_bad_dates_and_options(capsys, tmp_path):
    aoi = str(write(tmp_path / "aoi.geojson", POLYGON))
    one_line_error(*run_cli(capsys, "map", aoi, "--start", "June"), "YYYY-MM-DD")
    one_line_error(*run_cli(capsys, "map", aoi, "--start", "2024-06-02", "--end", "2024-06-01"), "after end")
    one_line_error(*run_cli(capsys, "map", aoi, "--max-cloud", "140"), "max_cloud")
    one_line_error(*run_cli(capsys, "map", aoi, "--demo"), "either an AOI")


@pytest.mark.parametrize("value", ["15", "5"])
def test_a_read_resolution_that_is_no_multiple_of_the_grid_is_refused(capsys, tmp_path, value):
    aoi = str(write(tmp_path / "aoi.geojson", POLYGON))
    one_line_error(*run_cli(capsys, "map", aoi, "--out", str(tmp_path / "out"), "--read-resolution", value),
                   "--read-resolution", "whole multiple")
    assert not (tmp_path / "out").exists()


def test_the_installed_console_script_prints_no_traceback(tmp_path):
    """The real entry point, as a user runs it."""
    aoi = write(tmp_path / "aoi.geojson", {"type": "Point", "coordinates": [12.0, 45.4]})
    exe = Path(sys.executable).parent / "landcover"
    proc = subprocess.run([exe, "map", str(aoi), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and "Point" in proc.stderr


@pytest.mark.parametrize(("args", "collection"), [((), "sentinel-2-l2a"), (("--collection", "sentinel-2-c1-l2a"), "sentinel-2-c1-l2a")])
def test_the_collection_option_reaches_the_map_run(capsys, tmp_path, monkeypatch, args, collection):
    seen = []

    def run_map(cfg, console):
        seen.append(cfg)
        raise cli.LandcoverError("stopped before any work")

    monkeypatch.setattr("pipeline.run.run_map", run_map)
    code, err = run_cli(capsys, "map", str(write(tmp_path / "aoi.geojson", POLYGON)), "--out", str(tmp_path / "out"), *args)
    one_line_error(code, err, "stopped before any work")
    assert [cfg.collection for cfg in seen] == [collection]


def test_an_earth_search_v0_collection_is_refused_naming_v1(capsys, tmp_path, tiny_model):
    code, err = run_cli(capsys, "map", str(write(tmp_path / "aoi.geojson", POLYGON)), "--out", str(tmp_path / "out"),
                        "--model", str(tiny_model), "--source", "earth-search", "--collection", "sentinel-s2-l2a-cogs")
    one_line_error(code, err, "Earth Search v0", "retired", "earth-search.aws.element84.com/v1")


def only_error_line(code: int, err: str, *fragments: str) -> str:
    """Exit 2 and exactly one line on stderr, the `error:` line holding every fragment."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize(
    ("crs", "fragments"),
    [
        ("EPSG:999999", ("--crs EPSG:999999 is not a CRS pyproj knows", "projected CRS in metres", "EPSG:32633",
                         "omit --crs")),
        ("EPSG:4326", ("--crs EPSG:4326 is a Geographic 2D CRS", "needs a 2D projected CRS in metres", "omit --crs")),
        ("EPSG:2263", ("--crs EPSG:2263 is in US survey foot", "needs a projected CRS in metres")),
    ],
    ids=["unknown", "geographic", "feet"],
)
def test_a_bad_crs_is_one_line_before_any_work(capsys, tmp_path, monkeypatch, crs, fragments):
    def run_map(cfg, console):
        raise AssertionError("the map run started")

    monkeypatch.setattr("pipeline.run.run_map", run_map)
    code, err = run_cli(capsys, "map", str(write(tmp_path / "aoi.geojson", POLYGON)), "--out", str(tmp_path / "out"),
                        "--crs", crs)
    line = only_error_line(code, err, *fragments)
    assert "invalid crs" not in line  # the message names --crs itself
    assert not (tmp_path / "out").exists()


def test_a_bad_crs_with_demo(capsys, tmp_path, demo_world):
    code, err = run_cli(capsys, "map", "--demo", "--crs", "EPSG:999999", "--out", str(tmp_path / "out"))
    only_error_line(code, err, "--crs EPSG:999999 is not a CRS pyproj knows")
    assert not (tmp_path / "out").exists()


def test_a_projected_metre_crs_is_accepted(capsys, tmp_path, monkeypatch):
    seen = []

    def run_map(cfg, console):
        seen.append(cfg.crs)
        raise cli.LandcoverError("stopped before any work")

    monkeypatch.setattr("pipeline.run.run_map", run_map)
    code, err = run_cli(capsys, "map", str(write(tmp_path / "aoi.geojson", POLYGON)), "--out", str(tmp_path / "out"),
                        "--crs", "EPSG:32633")
    only_error_line(code, err, "stopped before any work")
    assert seen == ["EPSG:32633"]


def test_an_aoi_directory_is_not_reported_as_missing(capsys, tmp_path):
    folder = tmp_path / "regions"
    folder.mkdir()
    code, err = run_cli(capsys, "map", str(folder), "--out", str(tmp_path / "out"))
    line = only_error_line(code, err, f"AOI path {folder} is a directory", "give a GeoJSON file")
    assert "does not exist" not in line


def test_an_unreadable_aoi_file(capsys, tmp_path, monkeypatch):
    aoi = write(tmp_path / "aoi.geojson", POLYGON)
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        if self == aoi:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)  # as root, chmod 000 would not stop us
    code, err = run_cli(capsys, "map", str(aoi), "--out", str(tmp_path / "out"))
    only_error_line(code, err, f"AOI file {aoi} is not readable", "fix its permissions")
