"""One run per region at a time: an advisory lock file naming its holder.

The kernel holds the lock (``fcntl.flock``) for as long as the holding process lives, so a run
killed with SIGKILL or by a power cut never leaves a lock that blocks the next run. The file's
content (PID, host, start time) is only there to name the holder to the run that is refused, and
to tell that a previous holder died without releasing it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from pipeline.errors import LandcoverError

log = logging.getLogger(__name__)


class RegionLocked(LandcoverError):
    """Another run of the same region holds its lock."""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    started: str

    @classmethod
    def me(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), datetime.now(UTC).isoformat(timespec="seconds"))

    def describe(self) -> str:
        return f"PID {self.pid} on {self.host} since {self.started}"


def read_holder(path: Path) -> Holder | None:
    """Who wrote the lock file last (None when empty or unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8") or "null")
        return Holder(int(data["pid"]), str(data["host"]), str(data["started"])) if data else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RegionLock:
    """``with RegionLock(path, "lagoon"):`` holds the region's lock or raises RegionLocked at once."""

    def __init__(self, path: Path, region: str) -> None:
        self.path = Path(path)
        self.region = region
        self._fd: int | None = None
        self.took_over: Holder | None = None

    def acquire(self) -> RegionLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path)
            who = holder.describe() if holder else "another process"
            raise RegionLocked(
                f"region {self.region!r} is being run by {who} (lock {self.path}); wait for it to finish"
            ) from None
        # We hold the lock: any holder still named in the file died without releasing it.
        previous = read_holder(self.path)
        if previous is not None:
            self.took_over = previous
            log.warning(
                "taking over the stale lock of region %r left by %s (that run died; it is resumed)",
                self.region, previous.describe(),
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(Holder.me())).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty file: released cleanly, nothing stale
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RegionLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
