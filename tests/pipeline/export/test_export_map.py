"""export_map as a whole: all files or none, and never over a previous map by accident."""

import os

import numpy as np
import pytest
import rasterio
from export_helpers import blocks_map, class_map_from, make_provenance, utm_grid

from pipeline.errors import OutputError
from pipeline.export import export_map, vector

EXPECTED = {
    "landcover.tif", "landcover.tif.aux.xml", "confidence.tif", "probabilities.tif", "landcover.gpkg", "landcover.qml",
    "confidence.qml", "landcover.qgz", "item.json", "quicklook.png", "summary.json",
}


def run(out, cmap=None, grid=None, scenes=(), **kwargs):
    cmap = blocks_map() if cmap is None else cmap
    grid = utm_grid(*cmap.shape) if grid is None else grid
    return export_map(cmap, grid, out, scenes=scenes, provenance=make_provenance(scenes), **kwargs)


def test_writes_exactly_the_expected_files_and_no_temporaries(exported):
    files, _, _ = exported
    assert {p.name for p in files.out_dir.iterdir()} == EXPECTED
    assert {p.name for p in files.paths()} == EXPECTED


def test_reports_each_file_through_the_progress_callback(tmp_path):
    seen = []
    run(tmp_path / "out", progress=seen.append)
    assert seen[0] == "landcover.tif" and "item.json" in seen and len(seen) >= 6


def test_refuses_to_overwrite_a_previous_map_without_overwrite(tmp_path):
    out = tmp_path / "out"
    run(out)
    before = (out / "landcover.tif").read_bytes()
    with pytest.raises(OutputError, match="holds a previous map; pass --overwrite"):
        run(out, cmap=class_map_from(np.zeros((40, 50), int)))
    assert (out / "landcover.tif").read_bytes() == before


def test_overwrite_replaces_the_previous_map(tmp_path):
    out = tmp_path / "out"
    run(out)
    run(out, cmap=class_map_from(np.zeros((40, 50), int)), overwrite=True)
    with rasterio.open(out / "landcover.tif") as src:
        assert (src.read(1) == 1).all()
    assert {p.name for p in out.iterdir()} == EXPECTED


def test_same_inputs_give_byte_identical_class_rasters(tmp_path):
    run(tmp_path / "a")
    run(tmp_path / "b")
    assert (tmp_path / "a" / "landcover.tif").read_bytes() == (tmp_path / "b" / "landcover.tif").read_bytes()


def test_a_failure_midway_leaves_no_final_file_and_no_temporaries(tmp_path, monkeypatch):
    def write_half_then_fail(path, layers, styles):
        path.write_bytes(b"SQLite format 3\x00 half a geopackage")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vector, "write_geopackage", write_half_then_fail)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="could not write landcover.gpkg .*No space left on device"):
        run(out)
    assert list(out.iterdir()) == []


def test_a_failure_during_overwrite_keeps_the_previous_map_intact(tmp_path, monkeypatch):
    out = tmp_path / "out"
    run(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def fail(*args, **kwargs):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr("pipeline.export.render_quicklook", fail)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        run(out, cmap=class_map_from(np.zeros((40, 50), int)), overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_leftovers_of_a_killed_export_are_swept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / "landcover.0123456789ab.partial.tif"
    stale.write_bytes(b"half a tiff")
    keep = out / "notes.txt"
    keep.write_text("the user's own file")
    run(out)
    assert not stale.exists() and keep.exists()


def test_an_out_dir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "out"
    target.write_text("not a directory")
    with pytest.raises(OutputError, match="not a directory"):
        run(target)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_out_dir_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="cannot write to"):
            run(locked / "out")
    finally:
        locked.chmod(0o700)


def test_an_out_dir_that_cannot_be_created_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write to"):
        run(blocker / "sub" / "out")


def test_a_grid_that_does_not_match_the_map_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        run(tmp_path / "out", grid=utm_grid(10, 10))
    assert not (tmp_path / "out").exists()
