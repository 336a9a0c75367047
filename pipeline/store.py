"""Chunk stores: where finished block results persist, keyed by :func:`pipeline.blocks.block_key`,
so a killed or repeated run does not redo them."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from models.files import atomic_write


class ChunkStore(Protocol):
    """Where finished block results persist, so a killed or repeated run does not redo them."""

    def get(self, key: str) -> np.ndarray | None: ...

    def put(self, key: str, values: np.ndarray) -> None: ...

    def __contains__(self, key: str) -> bool: ...


class DirectoryChunkStore:
    """One ``<key>.npy`` per finished block, written to a temporary name and renamed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):  # a foreign or damaged file: recompute rather than trust it
            return None

    def put(self, key: str, values: np.ndarray) -> None:
        array = np.ascontiguousarray(values, dtype=np.float32)

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save adds no suffix to it
                np.save(f, array, allow_pickle=False)

        # The temporary name does not end in .npy: a store's readers see whole chunks or none.
        atomic_write(self._path(key), save, keep_suffix=False)

    def __contains__(self, key: str) -> bool:
        return self._path(key).exists()


class EmptyChunkStore:
    """The store of a region that has never run: nothing stored yet, nothing written."""

    def get(self, key: str) -> None:
        return None

    def put(self, key: str, values: np.ndarray) -> None:
        raise TypeError("an empty chunk store takes no results")

    def __contains__(self, key: str) -> bool:
        return False
