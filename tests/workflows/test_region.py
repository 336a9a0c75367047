"""Region files: what a valid one gives, and one-line refusals of everything else."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml
from workflow_helpers import REPO, SMALL_AOI, region_dict

from workflows.region import RegionError, Season, Window, load_region, region_files


def _write(tmp_path: Path, data: dict, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_the_shipped_regions_are_valid():
    files = region_files(REPO / "workflows" / "regions")
    assert {p.name for p in files} == {"demo.yaml", "example-earth-search.yaml"}
    demo = load_region(REPO / "workflows" / "regions" / "demo.yaml")
    assert demo.source == "local" and isinstance(demo.aoi, dict)
    example = load_region(REPO / "workflows" / "regions" / "example-earth-search.yaml")
    assert example.source == "earth-search" and example.aoi.is_file()


def test_paths_are_relative_to_the_region_file(tmp_path):
    (tmp_path / "aois").mkdir()
    (tmp_path / "aois" / "a.geojson").write_text("{}")
    region = load_region(_write(tmp_path, {**region_dict(Path("out")), "aoi": "aois/a.geojson"}))
    assert region.aoi == (tmp_path / "aois" / "a.geojson").resolve()
    assert region.root == (tmp_path / "out").resolve()


def test_the_map_config_of_a_run_date_carries_the_window_and_settings(tmp_path):
    region = load_region(_write(tmp_path, region_dict(tmp_path / "maps", cluster="tcp://127.0.0.1:8786")))
    cfg = region.map_config(tmp_path / "out", date(2024, 7, 5))
    assert (cfg.start, cfg.end) == (date(2024, 6, 6), date(2024, 7, 5))  # the last 30 days, inclusive
    assert cfg.scheduler == "tcp://127.0.0.1:8786" and cfg.max_cloud == 70 and cfg.cells_per_chunk == 2
    assert cfg.collection == "sentinel-2-l2a"  # the default


def test_the_read_resolution_of_a_region_reaches_its_map_runs(tmp_path):
    region = load_region(_write(tmp_path, {**region_dict(tmp_path / "maps"), "read_resolution": 10}))
    assert region.map_config(tmp_path / "out", date(2024, 7, 5)).read_resolution == 10
    default = load_region(_write(tmp_path, region_dict(tmp_path / "maps")))
    assert default.map_config(tmp_path / "out", date(2024, 7, 5)).read_resolution is None


def test_the_collection_of_a_region_reaches_its_map_runs(tmp_path):
    region = load_region(_write(tmp_path, {**region_dict(tmp_path / "maps"), "collection": "sentinel-2-c1-l2a"}))
    assert region.map_config(tmp_path / "out", date(2024, 7, 5)).collection == "sentinel-2-c1-l2a"


@pytest.mark.parametrize(
    ("season", "as_of", "window"),
    [
        (("06-01", "08-31"), date(2024, 7, 10), (date(2024, 6, 1), date(2024, 7, 10))),  # in season: up to today
        (("06-01", "08-31"), date(2024, 11, 2), (date(2024, 6, 1), date(2024, 8, 31))),  # after: this year's
        (("06-01", "08-31"), date(2024, 3, 1), (date(2023, 6, 1), date(2023, 8, 31))),  # before: last year's
        (("12-01", "02-28"), date(2025, 1, 15), (date(2024, 12, 1), date(2025, 1, 15))),  # over new year
        (("02-29", "03-31"), date(2025, 3, 10), (date(2025, 2, 28), date(2025, 3, 10))),  # no 29th in 2025
    ],
)
def test_a_season_window_is_its_latest_occurrence_up_to_the_run_date(season, as_of, window):
    assert Window(season=Season(start=season[0], end=season[1])).dates(as_of) == window


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"window": {"last_days": 30, "next_days": 3}}, "unknown key 'window.next_days'"),
        ({"schedule": "61 * * * *"}, "schedule: '61 * * * *' is not a cron expression"),
        ({"aoi": "missing.geojson"}, "does not exist"),
        ({"aoi": {"type": "Point", "coordinates": [12, 45]}}, "inline GeoJSON must be"),
        ({"window": {"last_days": 30, "season": {"start": "06-01", "end": "08-31"}}}, "exactly one of last_days or season"),
        ({"window": {"season": {"start": "6/1", "end": "08-31"}}}, "not a day of the year"),
        ({"name": "Big Region"}, "lower-case letters"),
        ({"max_cloud": 120}, "max_cloud"),
        ({"cluster": "scheduler:8786"}, "not an address"),
        ({"collection": "sentinel-s2-l2a-cogs"}, "collection: collection 'sentinel-s2-l2a-cogs' is Earth Search v0"),
        ({"schedule": None}, "missing key 'schedule'"),
        ({"read_resolution": 15}, "read_resolution: 15 is not a whole multiple of the grid's 10 m"),
    ],
)
def test_a_bad_region_is_one_line_naming_the_file_and_the_problem(tmp_path, change, message):
    data = {**region_dict(tmp_path / "maps"), **change}
    path = _write(tmp_path, {k: v for k, v in data.items() if v is not None})
    with pytest.raises(RegionError) as caught:
        load_region(path)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(str(path)) and message in text


def test_unreadable_region_files_are_refused_in_one_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(RegionError, match="not valid YAML at line"):
        load_region(broken)
    listed = _write(tmp_path, ["not", "a", "mapping"], "list.yaml")
    with pytest.raises(RegionError, match="must be a YAML mapping"):
        load_region(listed)
    with pytest.raises(RegionError, match="not found"):
        load_region(tmp_path / "absent.yaml")
    with pytest.raises(RegionError, match="not a folder"):
        region_files(tmp_path / "absent")


def test_inline_aoi_is_kept_as_geojson(tmp_path):
    region = load_region(_write(tmp_path, region_dict(tmp_path / "maps")))
    assert region.aoi == SMALL_AOI
    assert yaml.safe_load(region.aoi_geojson()) == SMALL_AOI
