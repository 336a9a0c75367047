"""The first hour of a new user: the README's commands rerun, say where they searched, stay quiet
when they succeed, and fail in one line that says where to go."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli.map import default_out, is_demo_map

LANDCOVER = str(Path(sys.executable).with_name("landcover"))
REPO = Path(__file__).resolve().parents[2]
PARIS = {"type": "Polygon", "coordinates": [[[2.30, 48.85], [2.36, 48.85], [2.36, 48.88], [2.30, 48.88], [2.30, 48.85]]]}


def landcover(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([LANDCOVER, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def quiet_success(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ERROR" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith("error: ") and len(lines[-1]) < 200, lines[-1]
    return lines[-1]


def test_the_demo_map_runs_twice_in_a_row_quietly(tmp_path, demo_world):
    out = tmp_path / "demo"
    first = landcover("map", "--demo", "--out", str(out))
    quiet_success(first)
    second = landcover("map", "--demo", "--out", str(out))
    quiet_success(second)
    assert f"replacing the earlier demo map in {out}/" in " ".join(second.stderr.split())
    done = [line for line in second.stderr.splitlines() if line.startswith("done")][0]
    assert "model loading on the workers (once)" in " ".join(second.stderr.split()) and "4 scenes" in done
    summary = json.loads((out / "summary.json").read_text())  # a multi-label model: shares add up past 100%
    assert sum(label["cells"] for label in summary["labels"]["classes"]) > summary["cells"]["valid"]
    assert "more than 100%" in summary["labels_note"]
    # A user's own map in that folder is not the demo's to replace.
    item = out / "item.json"
    record = json.loads(item.read_text())
    record["properties"]["landcover:parameters"]["aoi"] = str(tmp_path / "mine.geojson")
    item.write_text(json.dumps(record))
    assert "holds a previous map" in one_line_error(landcover("map", "--demo", "--out", str(out)))


def test_a_demo_map_is_recognised_by_its_provenance_not_its_folder(tmp_path, demo_world):
    def map_in(folder: Path, aoi: Path, source: str = "local") -> Path:
        folder.mkdir(parents=True)
        (folder / "item.json").write_text(json.dumps(
            {"properties": {"landcover:parameters": {"aoi": str(aoi), "source": source, "stac_url": None}}}))
        return folder

    assert is_demo_map(map_in(tmp_path / "a", demo_world.aoi_path))
    assert not is_demo_map(map_in(tmp_path / "demo", tmp_path / "region.geojson"))
    assert not is_demo_map(map_in(tmp_path / "b", demo_world.aoi_path, source="earth-search"))
    assert not is_demo_map(tmp_path / "nothing-here")


def test_a_users_aoi_maps_into_a_folder_named_after_it():
    assert default_out(Path("areas/lagoon.geojson"), demo=False) == Path("maps/lagoon")
    assert default_out(Path("/x/aoi.geojson"), demo=True) == Path("maps/demo")


def test_an_aoi_outside_the_demo_world_says_which_catalogue_was_searched(tmp_path, demo_world):
    aoi = tmp_path / "paris.geojson"
    aoi.write_text(json.dumps(PARIS))
    line = one_line_error(landcover("map", str(aoi), "--out", str(tmp_path / "paris")))
    assert "offline demo world" in line and "--source local" in line and "--source earth-search" in line
    west, south, east, north = demo_world.extent()
    assert f"lon {west:.2f}..{east:.2f}, lat {south:.2f}..{north:.2f}" in line


def test_a_host_that_does_not_resolve_is_one_line_without_retries(tmp_path):
    aoi = tmp_path / "paris.geojson"
    aoi.write_text(json.dumps(PARIS))
    proc = landcover("map", str(aoi), "--out", str(tmp_path / "p"), "--source", "earth-search",
                     "--stac-url", "http://stac.example.invalid/v1")
    line = one_line_error(proc)
    assert "stac.example.invalid" in line and "not found" in line and "--stac-url" in line
    assert "retry" not in proc.stderr and "urllib3" not in proc.stderr


def test_the_version_option():
    proc = landcover("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("landcover ")


@pytest.mark.slow
def test_run_due_on_the_shipped_regions_runs_the_demo_quietly_and_writes_only_under_its_root(tmp_path, demo_world):
    """The shipped folder as a user gets it: the demo region runs (no ERROR, no traceback), the
    Earth Search example is disabled and touches nothing (it would write under /srv), and
    `landcover runs` lists the run."""
    import shutil

    regions = tmp_path / "repo" / "workflows" / "regions"  # the demo's root is ../../maps/regions from here
    shutil.copytree(REPO / "workflows" / "regions", regions)
    srv_before = Path("/srv/landcover").exists()
    shipped = {p for p in (tmp_path / "repo").rglob("*") if p.is_file()}
    proc = landcover("run-due", str(regions), "--now", "2024-07-10T05:00")
    quiet_success(proc)
    lines = dict(line.split("\t", 1) for line in proc.stdout.strip().splitlines())
    assert lines["demo"].startswith("finished") and lines["venice-lagoon"].startswith("disabled")
    assert Path("/srv/landcover").exists() == srv_before
    written = {p for p in (tmp_path / "repo").rglob("*") if p.is_file()} - shipped
    assert written and all(tmp_path / "repo" / "maps" / "regions" in p.parents for p in written)
    listing = landcover("runs", str(regions / "demo.yaml"))
    assert listing.returncode == 0 and "finished" in listing.stdout and "2024-07-10" in listing.stdout
