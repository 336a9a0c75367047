"""Runs that are disturbed still make the same map: killed and resumed, a dask worker lost
mid-run, a STAC API that fails every third request. Real processes, 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from workflow_helpers import FIRST_AS_OF, REPO, StacProxy, landcover_cli, write_region

from workflows.ledger import Ledger
from workflows.runner import RegionPaths

POLL_S = 0.005


def _wait_for(proc: subprocess.Popen, found: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not found():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n{err[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def _power_cut(proc: subprocess.Popen) -> None:
    """SIGKILL the run and every process it started (cluster workers, demo servers) at once."""
    assert proc.poll() is None, "the run had already ended"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _runs_started(ledger_path: Path) -> int:
    if not ledger_path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is being created
        return 0


def _inputs_recorded(ledger_path: Path) -> bool:
    if not ledger_path.exists():
        return False
    try:
        with sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute("SELECT inputs_key FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:  # the schema is being created
        return False
    return bool(row and row[0])


@pytest.mark.slow
def test_a_run_killed_at_any_point_resumes_to_the_same_class_raster(tmp_path, uninterrupted_classes):
    region_file = write_region(tmp_path / "regions", tmp_path / "maps")
    paths = RegionPaths(tmp_path / "maps", "testland")
    work, final = paths.work(FIRST_AS_OF), paths.final(FIRST_AS_OF)

    def start() -> subprocess.Popen:
        return landcover_cli("run", str(region_file), "--as-of", FIRST_AS_OF.isoformat(), start_new_session=True)

    kill_points = {
        "before inference (scenes searched, no chunk yet)": lambda: _inputs_recorded(paths.root / "ledger.sqlite"),
        "mid-inference (first chunk persisted)": lambda: paths.chunks.is_dir() and any(paths.chunks.glob("*.npy")),
        # A streamed run writes each block into scratch rasters as it lands (mid-inference), then the products.
        "mid-export (staged products)": lambda: work.is_dir() and any(work.glob("landcover.*.partial.*")),
    }
    chunks_before_kill = []
    for i, (what, found) in enumerate(kill_points.items()):
        proc = start()
        # This run's own files, not the leftovers of the run killed before it.
        _wait_for(proc, lambda: _runs_started(paths.root / "ledger.sqlite") > i and found(), what)
        _power_cut(proc)
        chunks_before_kill.append(len(list(paths.chunks.glob("*.npy"))) if paths.chunks.is_dir() else 0)
        assert not final.exists(), f"a map appeared at its final path although killed {what}"
        for chunk in paths.chunks.glob("*.npy"):  # every chunk at its final name is whole
            assert np.load(chunk).shape[0] == 20

    proc = start()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "took over the stale lock" in err
    assert (final / "landcover.tif").read_bytes() == uninterrupted_classes

    with Ledger.in_root(paths.root) as ledger:
        runs = ledger.runs("testland")
        assert [r.status for r in runs] == ["interrupted"] * len(kill_points) + ["finished"]
        last = runs[-1]
        chunks = ledger.chunks(last.id)
    assert chunks_before_kill[0] == 0 and chunks_before_kill[-1] > 0
    # The resumed run read back what the killed runs had finished instead of computing it again.
    assert sum(s == "reused" for s in chunks.values()) >= chunks_before_kill[-1]
    assert last.blocks_computed == last.blocks_total - sum(s == "reused" for s in chunks.values())


@pytest.fixture
def external_cluster(tmp_path) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """`dask scheduler` and two `dask worker` processes (no nanny: a killed worker stays dead)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    dask = str(Path(sys.executable).with_name("dask"))
    scheduler_file = tmp_path / "scheduler.json"
    common = {"cwd": REPO, "env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(scheduler_file)], **common)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        for name in ("w1", "w2"):
            procs.append(subprocess.Popen(
                [dask, "worker", address, "--name", name, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                 "--no-dashboard", "--memory-limit", "4GB"], **common))
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address, procs
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:  # a worker closing gracefully may wait on a scheduler that is going away too
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_worker_killed_mid_run_does_not_stop_the_map(tmp_path, external_cluster, uninterrupted_classes):
    address, procs = external_cluster
    region_file = write_region(tmp_path / "regions", tmp_path / "maps", cluster=address, workers=None)
    paths = RegionPaths(tmp_path / "maps", "testland")
    proc = landcover_cli("run", str(region_file), "--as-of", FIRST_AS_OF.isoformat())
    try:
        _wait_for(proc, lambda: paths.chunks.is_dir() and any(paths.chunks.glob("*.npy")), "the first chunk")
        n_done = len(list(paths.chunks.glob("*.npy")))
        worker = procs[1]
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    with Ledger.in_root(paths.root) as ledger:
        record = ledger.runs("testland")[-1]
    assert record.status == "finished" and n_done < record.blocks_total  # the kill came mid-run
    assert (paths.final(FIRST_AS_OF) / "landcover.tif").read_bytes() == uninterrupted_classes


def test_a_stac_api_failing_every_third_request_does_not_change_the_map(
    tmp_path, served_world, incremental_runs, uninterrupted_classes
):
    with StacProxy(served_world.stac_url, fail_every=3) as proxy:
        region_file = write_region(tmp_path / "regions", tmp_path / "maps", stac_url=proxy.url)
        proc = landcover_cli("run", str(region_file), "--as-of", FIRST_AS_OF.isoformat())
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert proxy.failed >= 1, "the proxy never failed a request: the test proved nothing"
    paths = RegionPaths(tmp_path / "maps", "testland")
    with Ledger.in_root(paths.root) as ledger:
        record = ledger.runs("testland")[-1]
        assert ledger.items(record.id) == incremental_runs.first.item_ids
    assert (paths.final(FIRST_AS_OF) / "landcover.tif").read_bytes() == uninterrupted_classes
