"""A map stopped by the user or by a full disk: one line, a non-zero exit, nothing half-written, and
no process of the run left behind (its dask workers included)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

LANDCOVER = str(Path(sys.executable).with_name("landcover"))


def session_processes(sid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def test_ctrl_c_mid_classification_is_one_line_and_leaves_nothing(tmp_path, demo_world):
    out = tmp_path / "map"
    proc = subprocess.Popen([LANDCOVER, "map", "--demo", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    # The scratch rasters appear as the first blocks are classified.
    while not any(out.glob("*scratch*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal sends it: to the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == "interrupted; nothing was written to the final paths", err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "ERROR" not in err, err[-3000:]
    assert not (out / "landcover.tif").exists() and not [n for n in leftovers(out) if "partial" in n or "scratch" in n]
    for _ in range(50):  # the workers are gone once the client has closed the cluster
        if not session_processes(proc.pid):
            break
        time.sleep(0.1)
    assert session_processes(proc.pid) == []


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None,
                    reason="mounting a small tmpfs as the output needs root (CI runs as root)")
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, demo_world):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        out = disk / "map"
        proc = subprocess.run([LANDCOVER, "map", "--demo", "--out", str(out)], capture_output=True, text=True, timeout=300)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr and lines[-1].startswith("error: could not write"), proc.stderr[-3000:]
        assert "free space" in lines[-1] and len(lines[-1]) < 300
        assert not (out / "landcover.tif").exists()
        assert [n for n in leftovers(out) if "partial" in n or "scratch" in n or n.startswith(".")] == []
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
