"""`landcover run-due FOLDER`: every region whose schedule fired since its last run, one after
another; one region's failure is recorded and does not stop the others."""

from __future__ import annotations

import shutil

from workflow_helpers import landcover_cli, write_region

from workflows.ledger import Ledger


def test_run_due_runs_due_regions_records_failures_and_skips_what_ran(tmp_path, incremental_runs):
    regions = tmp_path / "regions"
    # Ran moments ago (the session's runs): its daily schedule has not fired since.
    regions.mkdir()
    shutil.copy(incremental_runs.region_file, regions / "testland.yaml")
    # Never ran, so due; but the demo world has no scenes in the last 30 days: a permanent failure.
    write_region(regions, tmp_path / "maps", file_name="empty.yaml", name="empty-window")
    # Unusable file: reported, and the other regions still run.
    write_region(regions, tmp_path / "maps", file_name="broken.yaml", colour="red")

    proc = landcover_cli("run-due", str(regions))
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err  # a region failed
    status = dict(line.split("\t")[:2] for line in out.splitlines())
    assert status == {"broken": "failed", "empty-window": "failed", "testland": "not-due"}
    assert err.count("unknown key 'colour'") == 1 and "unknown key" not in out  # said once
    failed = [line for line in out.splitlines() if line.startswith("empty-window")][0]
    assert "next attempt" in failed and "no Sentinel-2 scenes" not in out

    with Ledger.in_root(tmp_path / "maps") as ledger:
        (record,) = ledger.runs("empty-window")
    assert record.status == "failed" and record.trigger == "schedule"
    assert "no Sentinel-2 scenes" in record.error
    assert not (tmp_path / "maps" / "empty-window" / record.as_of.isoformat()).exists()

    # A failure is retried, but not at once: the next check moments later leaves the region alone
    # and says when it will try again (15 minutes after the failure).
    again = landcover_cli("run-due", str(regions))
    out, _ = again.communicate(timeout=180)
    line = [line for line in out.splitlines() if line.startswith("empty-window")][0]
    assert line.split("\t")[1] == "not-due" and "next attempt" in line
