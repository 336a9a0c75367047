"""models.files: a written file is whole or absent, and hashes are of the bytes on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from models.files import (
    atomic_copy,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    sha256_file,
)


def test_text_bytes_and_copy_land_under_the_final_name_only(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.json", "{}\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic_copy(tmp_path / "b.bin", tmp_path / "c.bin")
    assert (tmp_path / "a.json").read_text() == "{}\n"
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin", "c.bin"]


def test_an_existing_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    path.write_text("old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, error: BaseException) -> None:
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"old weights")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old weights"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


def test_the_temporary_name_keeps_the_suffix_writers_choose_formats_by(tmp_path: Path) -> None:
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_bytes(b"x")

    atomic_write(tmp_path / "set.npz", write)
    assert seen[0].suffix == ".npz" and seen[0].parent == tmp_path and seen[0].name.startswith(".")


def test_sha256_file_is_the_sha256_of_the_content(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10_000  # over two 1 MiB chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_hashing_needs_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, models.files; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_written_file_gets_the_mode_of_any_new_file(tmp_path: Path) -> None:
    import os

    from models.files import atomic_write_text

    mask = os.umask(0o022)
    try:
        os.umask(mask)
        atomic_write_text(tmp_path / "a.txt", "x")
        (tmp_path / "b.txt").write_text("x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == (tmp_path / "b.txt").stat().st_mode & 0o777
    finally:
        os.umask(mask)
