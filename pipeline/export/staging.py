"""All-or-nothing output: files are written under temporary names beside their final
names and renamed into place only when every file of the map has been written.

A crash or an exception midway leaves the directory as it was (a previous map included);
a killed process leaves only ``*.partial.*`` files, which the next export sweeps away.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import OutputError

_PARTIAL = re.compile(r"^.+\.[0-9a-f]{12}\.partial(\.[^.]+)?(-journal|-wal|-shm)?$")


class Staging:
    """Hands out temporary paths in ``out_dir`` and later renames them to their final names."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._staged: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        """A fresh temporary path that will become ``out_dir / name``; keeps the extension
        so drivers that check it (GPKG) stay quiet."""
        if name in self._staged:
            raise ValueError(f"{name} is already staged")
        final = Path(name)
        temp = self.out_dir / f"{final.stem}.{secrets.token_hex(6)}.partial{final.suffix}"
        self._staged[name] = temp
        return temp

    def commit(self, last: str | None = None) -> dict[str, Path]:
        """Rename every staged file into place, ``last`` at the end (its presence then marks a
        complete map). Returns final paths by name."""
        missing = [name for name, temp in self._staged.items() if not temp.is_file()]
        if missing:
            raise OutputError(f"export did not write {', '.join(missing)}; this is a bug, please report it")
        names = sorted(self._staged, key=lambda n: n == last)
        finals = {}
        for name in names:
            final = self.out_dir / name
            os.replace(self._staged[name], final)
            finals[name] = final
        self._staged.clear()
        return finals

    def discard(self) -> None:
        """Remove every temporary file, including side files a driver left beside one."""
        for temp in self._staged.values():
            for leftover in self.out_dir.glob(f"{glob_escape(temp.name)}*"):
                leftover.unlink(missing_ok=True)
        self._staged.clear()


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def sweep_partials(out_dir: Path) -> list[Path]:
    """Delete temporary files a killed export left behind; returns what was removed."""
    removed = []
    for path in out_dir.iterdir():
        if path.is_file() and _PARTIAL.match(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def probe_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be made in it (raises OSError if not)."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-test.{secrets.token_hex(6)}.partial"
    probe.touch()
    probe.unlink()


def check_out_dir(out_dir: Path, *, marker: str, overwrite: bool) -> None:
    """Refuse, without touching anything, an ``out_dir`` that is a file or holds a previous map."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} exists and is not a directory; choose another --out")
    if (out_dir / marker).exists() and not overwrite:
        raise OutputError(f"{out_dir} holds a previous map; pass --overwrite or choose another --out")


def prepare_out_dir(out_dir: Path, *, marker: str, overwrite: bool) -> None:
    """Create ``out_dir`` and check it can take a new map (refusing to clobber an old one)."""
    check_out_dir(out_dir, marker=marker, overwrite=overwrite)
    try:
        probe_writable(out_dir)
    except OSError as exc:
        raise OutputError(f"cannot write to {out_dir} ({exc.strerror or exc}); choose another --out") from exc


@contextmanager
def staged(out_dir: Path) -> Iterator[Staging]:
    """Stage files in ``out_dir``; on any exception remove them all and re-raise."""
    staging = Staging(out_dir)
    try:
        yield staging
    except BaseException:
        staging.discard()
        raise
