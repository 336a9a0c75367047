"""One run of a region: outputs per as-of date, a `latest` pointer, the ledger, reuse, new scenes,
changes between runs, and the refusals that come before any work."""

from __future__ import annotations

import json
import os
import time

import pyogrio
import pytest
import rasterio

from workflows.ledger import Ledger
from workflows.region import load_region
from workflows.runner import RegionPaths, checksums, run_region

from workflow_helpers import FIRST_AS_OF, NEW_SCENE, NEW_SCENE_AS_OF, landcover_cli, quiet, write_region


def test_a_run_writes_its_map_under_the_region_and_date_and_points_latest_at_it(incremental_runs):
    first = incremental_runs.first
    assert first.status == "finished"
    assert first.out_dir == incremental_runs.root / "testland" / FIRST_AS_OF.isoformat()
    assert {"landcover.tif", "landcover.gpkg", "summary.json", "item.json", "changes.json"} <= {
        p.name for p in first.out_dir.iterdir()
    }
    latest = incremental_runs.root / "testland" / "latest"
    assert latest.is_symlink() and os.readlink(latest) == NEW_SCENE_AS_OF.isoformat()
    assert not list((incremental_runs.root / "testland").glob(".work-*"))


def test_the_ledger_records_items_model_chunks_and_output_checksums(incremental_runs):
    first = incremental_runs.first
    with Ledger.in_root(incremental_runs.root) as ledger:
        record = ledger.run(first.run_id)
        assert record.status == "finished" and record.as_of == FIRST_AS_OF
        assert ledger.items(first.run_id) == first.item_ids and NEW_SCENE not in first.item_ids
        assert len(record.model_sha256) == 64
        chunks = ledger.chunks(first.run_id)
        assert len(chunks) == first.blocks_total and set(chunks.values()) == {"computed"}
        assert first.blocks_computed == first.blocks_total > 1
        recorded = ledger.outputs(first.run_id)
    assert recorded == checksums(first.out_dir)


def test_a_repeated_run_reuses_the_map_without_inference_in_a_fraction_of_the_time(incremental_runs):
    first, repeat = incremental_runs.first, incremental_runs.repeat
    assert repeat.status == "reused" and repeat.reused_from == first.run_id
    assert repeat.out_dir == first.out_dir and repeat.blocks_computed == 0
    with Ledger.in_root(incremental_runs.root) as ledger:
        assert ledger.chunks(repeat.run_id) == {}  # not a single chunk computed, nor even read
        assert ledger.run(repeat.run_id).status == "reused"
        assert ledger.outputs(repeat.run_id) == ledger.outputs(first.run_id)
    assert repeat.seconds < first.seconds / 2


def test_one_new_scene_recomputes_only_the_chunks_it_touches(incremental_runs):
    first, new = incremental_runs.first, incremental_runs.new_scene
    assert NEW_SCENE in new.item_ids and set(first.item_ids) < set(new.item_ids)
    assert new.status == "finished" and new.blocks_total == first.blocks_total
    assert 0 < new.blocks_computed < new.blocks_total
    with Ledger.in_root(incremental_runs.root) as ledger:
        chunks = ledger.chunks(new.run_id)
    assert sum(s == "computed" for s in chunks.values()) == new.blocks_computed
    assert sum(s == "reused" for s in chunks.values()) == new.blocks_total - new.blocks_computed


def test_changes_since_the_previous_run_are_a_geopackage_layer_and_areas_in_the_summary(incremental_runs):
    first_dir, new_dir = incremental_runs.first.out_dir, incremental_runs.new_scene.out_dir
    with rasterio.open(first_dir / "landcover.tif") as a, rasterio.open(new_dir / "landcover.tif") as b:
        before, after = a.read(1), b.read(1)
        cell_ha = abs(b.transform.a * b.transform.e) / 10_000
    changed = (before > 0) & (after > 0) & (before != after)

    summary = json.loads((new_dir / "summary.json").read_text())
    assert summary["changes"] == json.loads((new_dir / "changes.json").read_text())
    assert summary["changes"]["previous"] == FIRST_AS_OF.isoformat()
    assert summary["changes"]["changed_ha"] == pytest.approx(changed.sum() * cell_ha)
    gained = sum(c["gained_ha"] for c in summary["changes"]["classes"])
    assert gained == pytest.approx(changed.sum() * cell_ha)

    layer = pyogrio.read_dataframe(new_dir / "landcover.gpkg", layer="changes")
    assert int(layer["cell_count"].sum()) == int(changed.sum())
    assert (layer["from_class"] != layer["to_class"]).all()
    styles = pyogrio.read_dataframe(new_dir / "landcover.gpkg", layer="layer_styles", read_geometry=False)
    assert "changes" in set(styles["f_table_name"])
    # The first run of the region had nothing to compare with: an empty layer, and a note.
    assert len(pyogrio.read_dataframe(first_dir / "landcover.gpkg", layer="changes")) == 0
    assert json.loads((first_dir / "changes.json").read_text())["previous"] is None


def test_a_later_date_with_the_same_scenes_shares_the_earlier_map(incremental_runs):
    # One day later than the first run, the window still holds the same four scenes.
    region = load_region(incremental_runs.region_file)
    later = run_region(region, as_of=FIRST_AS_OF.replace(day=6), root=incremental_runs.root, console=quiet())
    assert later.status == "reused" and later.blocks_computed == 0
    assert later.out_dir != incremental_runs.first.out_dir
    a, b = later.out_dir / "landcover.tif", incremental_runs.first.out_dir / "landcover.tif"
    assert a.read_bytes() == b.read_bytes()
    assert json.loads((later.out_dir / "changes.json").read_text())["changed_ha"] == 0.0


def test_bad_regions_and_roots_are_refused_in_one_line_before_any_work(tmp_path):
    unwritable = tmp_path / "readonly"
    unwritable.mkdir()
    unwritable.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: put the root below a plain file instead
        unwritable = tmp_path / "a-file"
        unwritable.write_text("")
    maps = tmp_path / "maps"
    cases = {
        "unknown key": ({"colour": "red"}, maps, "unknown key 'colour'"),
        "bad cron": ({"schedule": "every day"}, maps, "not a cron expression"),
        "missing AOI file": ({"aoi": "nowhere.geojson"}, maps, "does not exist"),
        "unwritable root": ({}, unwritable / "maps", "not writable"),
    }
    for name, (override, root, message) in cases.items():
        region_file = write_region(tmp_path / name.replace(" ", "-"), root, **override)
        proc = landcover_cli("run", str(region_file), "--as-of", "2024-07-05")
        out, err = proc.communicate(timeout=60)
        lines = [line for line in err.splitlines() if line.strip()]
        assert proc.returncode == 2, (name, err)
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (name, err)
    assert not maps.exists()


def test_a_second_concurrent_run_is_refused_at_once_naming_the_holder(tmp_path):
    region_file = write_region(tmp_path / "regions", tmp_path / "maps")
    first = landcover_cli("run", str(region_file), "--as-of", FIRST_AS_OF.isoformat())
    try:
        lock = RegionPaths(tmp_path / "maps", "testland").lock
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the test could overlap it"
        started = time.monotonic()
        second = landcover_cli("run", str(region_file), "--as-of", FIRST_AS_OF.isoformat())
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2
        assert f"PID {first.pid}" in err and "being run by" in err
        assert time.monotonic() - started < 30  # refused at once, not after waiting for the first
        assert first.poll() is None  # and the first one goes on
    finally:
        first.kill()
        first.communicate()


def test_run_through_the_cli_reports_the_reuse(incremental_runs):
    proc = landcover_cli("run", str(incremental_runs.region_file), "--as-of", FIRST_AS_OF.isoformat())
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    # Reused either from the FIRST_AS_OF run or from a later-dated run with the same scenes
    # (another test adds one), so only the reuse itself is asserted.
    assert "reused" in err
    with Ledger.in_root(incremental_runs.root) as ledger:
        last = ledger.runs("testland")[-1]
    assert last.status == "reused" and last.blocks_computed == 0
