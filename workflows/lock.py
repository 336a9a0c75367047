"""One run per region at a time: an advisory lock file naming its holder.

The flock-based core (a SIGKILLed holder never leaves a blocking lock; the file only names the
holder) lives in :mod:`pipeline.lock`; this module keeps the region-flavoured names and messages.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.lock import Holder, Lock, Locked, read_holder

__all__ = ["Holder", "RegionLock", "RegionLocked", "read_holder"]

log = logging.getLogger(__name__)


class RegionLocked(Locked):
    """Another run of the same region holds its lock."""


class RegionLock(Lock):
    """``with RegionLock(path, "lagoon"):`` holds the region's lock or raises RegionLocked at once."""

    error = RegionLocked

    def __init__(self, path: Path, region: str) -> None:
        super().__init__(
            path,
            f"region {region!r}",
            busy="is being run by",
            fix="wait for it to finish",
            stale_note="that run died; it is resumed",
            logger=log,
        )
        self.region = region

    def acquire(self) -> RegionLock:
        super().acquire()
        return self

    def __enter__(self) -> RegionLock:
        return self.acquire()
