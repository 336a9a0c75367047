"""The per-region lock: one holder at a time, named to whoever is refused; a dead holder's lock
is taken over with a warning."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from workflows.lock import RegionLock, RegionLocked, read_holder


def _hold_in_another_process(path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        from workflows.lock import RegionLock
        with RegionLock({str(path)!r}, "lagoon"):
            print("held", flush=True)
            sys.stdin.read()  # until the test closes our stdin
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    path = tmp_path / "run.lock"
    holder = _hold_in_another_process(path)
    try:
        with pytest.raises(RegionLocked) as caught:
            RegionLock(path, "lagoon").acquire()
        message = str(caught.value)
        assert f"PID {holder.pid} on " in message and "'lagoon'" in message and "\n" not in message
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with RegionLock(path, "lagoon") as lock:  # released: free again, and nothing was stale
        assert lock.took_over is None
        assert read_holder(path).pid == os.getpid()


def test_a_lock_released_cleanly_is_empty(tmp_path):
    path = tmp_path / "run.lock"
    with RegionLock(path, "lagoon"):
        assert read_holder(path).pid == os.getpid()
    assert path.read_text() == "" and read_holder(path) is None


def test_a_killed_holder_leaves_a_lock_that_is_taken_over_with_a_warning(tmp_path, caplog):
    path = tmp_path / "run.lock"
    holder = _hold_in_another_process(path)
    holder.kill()  # SIGKILL: no cleanup, the file still names it
    holder.wait(timeout=30)
    assert read_holder(path).pid == holder.pid
    with caplog.at_level(logging.WARNING, logger="workflows.lock"), RegionLock(path, "lagoon") as lock:
        assert lock.took_over is not None and lock.took_over.pid == holder.pid
        assert read_holder(path).pid == os.getpid()
    assert f"PID {holder.pid}" in caplog.text and "stale lock" in caplog.text


def test_a_lock_file_naming_a_dead_pid_is_taken_over(tmp_path):
    path = tmp_path / "run.lock"
    path.write_text(json.dumps({"pid": 999_999_999, "host": "elsewhere", "started": "2024-07-05T03:00:00+00:00"}))
    with RegionLock(path, "lagoon") as lock:
        assert lock.took_over.describe() == "PID 999999999 on elsewhere since 2024-07-05T03:00:00+00:00"
