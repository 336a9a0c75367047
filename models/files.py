"""Writing files so that a killed process never leaves half of one, and hashing them.

Every file the project writes goes through :func:`atomic_write`: the content is written to a
hidden temporary file in the destination's folder (the same filesystem, so the final
``os.replace`` is atomic), flushed to disk, then renamed over the destination. A reader sees the
old file or the new one, never a mix; on any failure (KeyboardInterrupt included) the temporary
file is removed and the destination is untouched.

This module imports nothing heavy (no torch, no numpy): processes that only record which weights
a run uses hash them through here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

_CHUNK = 1 << 20  # checkpoints run to hundreds of MB: read them 1 MiB at a time
# mkstemp makes its file 0600; a finished file gets the mode any new file of this process gets.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None], *, keep_suffix: bool = True) -> None:
    """Make ``path`` by calling ``write(tmp)`` on a temporary path beside it, then renaming.

    The temporary name keeps ``path``'s suffix because some writers choose the format by it
    (``np.savez`` appends ``.npz`` to any other name, GDAL picks the driver, matplotlib the
    image type); ``keep_suffix=False`` for folders whose readers glob by suffix (a half-written
    chunk must never look like one). ``write`` may open and write ``tmp`` itself, or hand it to a
    library.
    """
    path = Path(path)
    suffix = f".tmp{path.suffix}" if keep_suffix else ".tmp"
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy the content of ``src`` to ``dst`` atomically (``dst`` is whole or untouched)."""
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    # Without it a power cut after the rename can leave an empty file under the final name
    # (the rename reaches the disk before the data on ext4/xfs with delayed allocation).
    with open(path, "rb") as f:
        os.fsync(f.fileno())
