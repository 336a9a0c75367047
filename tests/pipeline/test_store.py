"""The chunk store that makes runs resumable: whole results or none, damaged files recomputed."""

from __future__ import annotations

import numpy as np

from models.card import ModelCard
from pipeline.infer import n_planes
from pipeline.store import DirectoryChunkStore

N_PLANES = n_planes(ModelCard.for_profile("small"))  # BigEarthNet's 19 classes + the clear share


def test_the_chunk_store_round_trips_and_leaves_no_partial_files(tmp_path):
    store = DirectoryChunkStore(tmp_path)
    values = np.arange(N_PLANES * 4, dtype=np.float32).reshape(N_PLANES, 2, 2)
    assert store.get("k") is None
    store.put("k", values)
    np.testing.assert_array_equal(store.get("k"), values)
    assert [p.name for p in tmp_path.iterdir()] == ["k.npy"]


def test_a_damaged_chunk_is_recomputed_not_trusted(tmp_path):
    store = DirectoryChunkStore(tmp_path)
    (tmp_path / "k.npy").write_bytes(b"\x93NUMPY garbage")
    assert store.get("k") is None


def test_a_chunk_being_written_never_looks_like_a_chunk(tmp_path, monkeypatch):
    """Runs and tests glob a store for ``*.npy``: a half-written chunk must not match."""
    store = DirectoryChunkStore(tmp_path)
    seen = []
    real_save = np.save

    def save(file, array, **kwargs):
        seen.append(sorted(p.name for p in tmp_path.glob("*.npy")))
        real_save(file, array, **kwargs)

    monkeypatch.setattr(np, "save", save)
    store.put("k", np.zeros((N_PLANES, 1, 1), np.float32))
    assert seen == [[]] and [p.name for p in tmp_path.glob("*.npy")] == ["k.npy"]
