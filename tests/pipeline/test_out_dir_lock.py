"""The output-folder lock: a second map into the same --out is refused at once, naming the
first; a dead run's lock is taken over with a warning; a finished map folder holds no lock file."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.errors import OutputError
from pipeline.export.staging import check_out_dir, sweep_partials
from pipeline.lock import OUT_DIR_LOCK, Lock, OutputLocked, out_dir_lock, read_holder

LANDCOVER = Path(sys.executable).parent / "landcover"


def _hold_in_another_process(out: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys
        from pipeline.lock import out_dir_lock
        with out_dir_lock({str(out)!r}):
            print("held", flush=True)
            sys.stdin.read()  # until the test closes our stdin
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def test_a_held_output_folder_refuses_a_second_run_naming_the_first(tmp_path):
    out = tmp_path / "out"
    holder = _hold_in_another_process(out)
    try:
        started = time.perf_counter()
        with pytest.raises(OutputLocked) as caught, out_dir_lock(out):
            pass
        assert time.perf_counter() - started < 1.0  # refused at once, not after a wait
        message = str(caught.value)
        for fragment in (f"PID {holder.pid} on {socket.gethostname()} since ", str(out / OUT_DIR_LOCK),
                         "wait for that run to finish", "choose another --out"):
            assert fragment in message, message
        assert "\n" not in message
        assert isinstance(caught.value, OutputError)  # callers catching output problems see it too
    finally:
        _release(holder)
    with out_dir_lock(out) as lock:  # released: free again, and nothing was stale
        assert lock.took_over is None
        assert read_holder(out / OUT_DIR_LOCK).pid == os.getpid()


def test_a_killed_run_leaves_a_lock_that_is_taken_over_with_a_warning(tmp_path, caplog):
    out = tmp_path / "out"
    holder = _hold_in_another_process(out)
    holder.kill()  # SIGKILL: no cleanup, the file still names it
    holder.wait(timeout=30)
    assert read_holder(out / OUT_DIR_LOCK).pid == holder.pid
    with caplog.at_level(logging.WARNING, logger="pipeline.lock"), out_dir_lock(out) as lock:
        assert lock.took_over is not None and lock.took_over.pid == holder.pid
        assert read_holder(out / OUT_DIR_LOCK).pid == os.getpid()
    assert f"PID {holder.pid}" in caplog.text and "stale lock" in caplog.text and str(out) in caplog.text
    assert not (out / OUT_DIR_LOCK).exists()


def test_a_lock_file_naming_a_dead_pid_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / OUT_DIR_LOCK).write_text(json.dumps({"pid": 999_999_999, "host": "elsewhere", "started": "2024-07-05T03:00:00+00:00"}))
    with out_dir_lock(out) as lock:
        assert lock.took_over.describe() == "PID 999999999 on elsewhere since 2024-07-05T03:00:00+00:00"


def test_the_lock_creates_the_folder_and_leaves_no_trace_of_itself(tmp_path):
    out = tmp_path / "new" / "out"
    with out_dir_lock(out):
        assert (out / OUT_DIR_LOCK).is_file()
        (out / "landcover.tif").write_bytes(b"map")
    assert [p.name for p in out.iterdir()] == ["landcover.tif"]  # a finished map: only its files


def test_a_folder_it_created_is_removed_when_nothing_was_written(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), out_dir_lock(out):
        raise RuntimeError("refused before writing anything")
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with out_dir_lock(existing):
        pass
    assert existing.is_dir()  # the user's folder is kept, empty or not


def test_the_lock_file_is_neither_a_partial_file_nor_a_previous_map(tmp_path):
    out = tmp_path / "out"
    with out_dir_lock(out):
        check_out_dir(out, marker="landcover.tif", overwrite=False)
        assert sweep_partials(out) == []
        assert (out / OUT_DIR_LOCK).is_file()


def test_an_out_that_is_a_file_is_refused(tmp_path):
    out = tmp_path / "out"
    out.write_text("not a folder")
    with pytest.raises(OutputError, match="is not a directory; choose another --out"), out_dir_lock(out):
        pass


def test_a_removed_lock_file_never_lets_two_holders_in(tmp_path):
    """Releasing unlinks the file: a process that opened it just before must not hold the lock
    of the unlinked file while a third holds the new one. Two processes race for it."""
    path = tmp_path / "race" / OUT_DIR_LOCK
    code = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from pipeline.lock import Lock, Locked
        inside = Path({str(tmp_path / "inside")!r})
        held = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                with Lock(Path({str(path)!r}), "the race", remove=True):
                    fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if the other is inside
                    os.close(fd)
                    os.unlink(inside)
                    held += 1
            except Locked:
                pass
        print(held)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [proc.communicate(timeout=60) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, results):
        assert proc.returncode == 0, stderr
        assert int(stdout) > 0
    with Lock(path, "the race", remove=True):
        pass  # still usable afterwards


# --- the real CLI: needs `with out_dir_lock(cfg.out):` around the whole run in pipeline/run.py ---


def _wait_for_lock_naming(proc: subprocess.Popen, lock: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = read_holder(lock)
        if holder is not None and holder.pid == proc.pid:
            return
        if proc.poll() is not None:
            pytest.fail(f"the first map exited ({proc.returncode}) before its lock file named it; "
                        "is `with out_dir_lock(cfg.out):` wired into pipeline/run.py?")
        time.sleep(0.02)
    pytest.fail(f"the first map's lock file {lock} did not name it within {timeout:.0f} s")


@pytest.mark.slow
def test_a_second_map_into_the_same_out_is_refused_while_the_first_runs(tmp_path, demo_world):
    out = tmp_path / "out"
    lock = out / OUT_DIR_LOCK
    # One window per 1.2 km cell: the lock is the point, not the map's detail.
    first = subprocess.Popen([LANDCOVER, "map", "--demo", "--out", str(out), "--cell-size", "1200", "--stride", "120", "--no-dense"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_lock_naming(first, lock)
        # Stopped while it holds the lock (kernel locks survive SIGSTOP), so the first is still
        # running however long the second takes to start; it holds no dask cluster yet.
        first.send_signal(signal.SIGSTOP)
        before = sorted(p.name for p in out.iterdir())
        started = time.monotonic()
        second = subprocess.run([LANDCOVER, "map", "--demo", "--out", str(out)],
                                capture_output=True, text=True, timeout=120)
        seconds = time.monotonic() - started
        assert sorted(p.name for p in out.iterdir()) == before  # the second touched nothing
        first.send_signal(signal.SIGCONT)

        assert second.returncode == 2, second.stderr
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), second.stderr
        assert "Traceback" not in second.stderr
        for fragment in (f"PID {first.pid} on {socket.gethostname()} since ", str(lock), "choose another --out"):
            assert fragment in lines[0], lines[0]
        assert seconds < 60, f"refused only after {seconds:.0f} s"

        stdout, stderr = first.communicate(timeout=900)
        assert first.returncode == 0, stderr
        assert "done" in stderr and (out / "landcover.tif").is_file()
        assert not lock.exists()
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
            first.wait(timeout=30)


def test_the_cli_takes_over_a_dead_runs_lock_with_a_warning(tmp_path, demo_world, tiny_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / OUT_DIR_LOCK).write_text(json.dumps({"pid": 999_999_999, "host": "elsewhere", "started": "2024-07-05T03:00:00+00:00"}))
    # A window without scenes: the run ends right after the lock is taken, before any inference.
    proc = subprocess.run([LANDCOVER, "map", "--demo", "--out", str(out), "--model", str(tiny_model),
                           "--start", "2019-01-01", "--end", "2019-02-01"], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr
    assert f"taking over the stale lock of output folder {out} left by PID 999999999 on elsewhere" in proc.stderr, (
        "is `with out_dir_lock(cfg.out):` wired into pipeline/run.py? stderr: " + proc.stderr
    )
    assert proc.returncode == 2 and "no Sentinel-2 scenes" in proc.stderr
    assert not (out / OUT_DIR_LOCK).exists()
