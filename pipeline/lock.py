"""One holder at a time: an advisory lock file naming its holder.

The kernel holds the lock (``fcntl.flock``) for as long as the holding process lives, so a run
killed with SIGKILL or by a power cut never leaves a lock that blocks the next run. The file's
content (PID, host, start time) is only there to name the holder to the process that is refused,
and to tell that a previous holder died without releasing it.

:class:`Lock` is the generic core; :func:`out_dir_lock` guards a map's output folder (and
``workflows.lock.RegionLock`` a region's runs).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from pipeline.errors import LandcoverError, OutputError

log = logging.getLogger(__name__)

OUT_DIR_LOCK = ".landcover.lock"
# A lock file unlinked by its releasing holder between our open() and flock() leaves us holding
# an orphan inode; we then retry on the fresh file. More than a few rounds means a bug.
_ACQUIRE_ROUNDS = 5


class Locked(LandcoverError):
    """Another process holds the lock."""


class OutputLocked(Locked, OutputError):
    """Another map run is writing into the same output folder."""


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
    """Who wrote the lock file last (None when empty, missing or unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8") or "null")
        return Holder(int(data["pid"]), str(data["host"]), str(data["started"])) if data else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Lock:
    """``with Lock(path, "output folder maps/demo"):`` holds the lock or raises at once.

    ``what`` names the locked thing in messages; ``busy`` and ``fix`` complete the refusal
    ("<what> <busy> <holder> (lock <path>); <fix>"). ``remove`` deletes the file on release
    (for lock files inside a product folder, where a leftover would look like an output);
    otherwise it is emptied and kept.
    """

    error: type[Locked] = Locked

    def __init__(
        self,
        path: Path,
        what: str,
        *,
        busy: str = "is in use by",
        fix: str = "wait for it to finish",
        stale_note: str = "that process died",
        remove: bool = False,
        logger: logging.Logger = log,
    ) -> None:
        self.path = Path(path)
        self.what = what
        self.busy = busy
        self.fix = fix
        self.stale_note = stale_note
        self.remove = remove
        self.log = logger
        self._fd: int | None = None
        self.took_over: Holder | None = None

    def acquire(self) -> Lock:
        for _ in range(_ACQUIRE_ROUNDS):
            fd = self._open_and_lock()
            if fd is None:
                continue  # the folder was removed between mkdir and open: make it again
            if _same_file(fd, self.path):
                self._claim(fd)
                return self
            os.close(fd)  # we locked a file its holder unlinked on release: lock the new one
        raise self.error(f"the lock {self.path} of {self.what} keeps being replaced; this is a bug, please report it")

    def _open_and_lock(self) -> int | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._refusal() from None
        return fd

    def _refusal(self) -> Locked:
        holder = read_holder(self.path)
        who = holder.describe() if holder else "another process"
        return self.error(f"{self.what} {self.busy} {who} (lock {self.path}); {self.fix}")

    def _claim(self, fd: int) -> None:
        # We hold the lock: any holder still named in the file died without releasing it.
        previous = read_holder(self.path)
        if previous is not None:
            self.took_over = previous
            self.log.warning(
                "taking over the stale lock of %s left by %s (%s)", self.what, previous.describe(), self.stale_note
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(Holder.me())).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if self.remove:
                # Unlinked while still locked: a process that opened it meanwhile finds, once it
                # gets the lock, that it is not the file at the path any more, and retries.
                self.path.unlink(missing_ok=True)
            else:
                os.ftruncate(self._fd, 0)  # an empty file: released cleanly, nothing stale
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


class OutDirLock(Lock):
    error = OutputLocked


@contextmanager
def out_dir_lock(out: Path) -> Iterator[Lock]:
    """Hold ``out/.landcover.lock`` for a whole map run into ``out`` (creating ``out`` if needed).

    A second run into the same folder is refused at once with :class:`OutputLocked`; the lock of
    a run that died is taken over with a warning. The file is removed on release, so a finished
    map folder holds only the map's files.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a directory; choose another --out")
    created = not out.exists()
    lock = OutDirLock(
        out / OUT_DIR_LOCK,
        f"output folder {out}",
        busy="is being written by the map run of",
        fix="wait for that run to finish, or choose another --out",
        stale_note="that run died; its partial files are swept when this map is written",
        remove=True,
    )
    try:
        lock.acquire()
    except OSError as exc:
        raise OutputError(f"cannot write to {out} ({exc.strerror or exc}); choose another --out") from exc
    try:
        yield lock
    finally:
        lock.release()
        if created:
            _remove_if_empty(out)


def _remove_if_empty(folder: Path) -> None:
    # A run refused before writing anything leaves no empty folder behind (as before the lock).
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (a map, partial files, another run's lock) or already gone
