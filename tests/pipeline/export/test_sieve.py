"""The polygon layer's minimum mapping unit: small patches merged into a neighbour, decided on the
whole map, so the polygons are the same whatever windows the map is written and read in."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
from export_helpers import AOI, class_map_from, make_provenance, two_scenes, utm_grid

from pipeline.export import map_export
from pipeline.export.sieve import label_patches, mmu_cells, plan_sieve
from pipeline.export.summary import class_stats
from pipeline.export.vector import dissolved_classes
from pipeline.export.writer import MapRasters

MMU_HA = 0.12  # 12 cells of 10 m


def speckled(ny: int = 90, nx: int = 110) -> np.ndarray:
    """0-based classes: 3 x 3 cell squares of 4 classes with one cell in 12 flipped (patches of
    1 to a few hundred cells, many cut by any window edge), and nodata holes."""
    rng = np.random.default_rng(7)
    winners = np.kron(rng.integers(0, 4, (ny // 3 + 1, nx // 3 + 1)), np.ones((3, 3), int))[:ny, :nx]
    flip = rng.random((ny, nx)) < 1 / 12
    winners[flip] = rng.integers(0, 4, flip.sum())
    winners[:6, :9] = -1
    winners[50:61, 40:57] = -1
    return winners


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The speckled map written block by block (17 x 23 cells, not dividing the map) into the
    scratch rasters of a 10 m map, as a run writes its blocks."""
    winners = speckled()
    class_map = class_map_from(winners)
    geobox = utm_grid(*winners.shape, cell=10.0)
    rasters = MapRasters(tmp_path_factory.mktemp("sieve"), geobox, make_provenance(two_scenes()), multi_label=False,
                         threshold=0.5)
    for r0 in range(0, winners.shape[0], 17):
        for c0 in range(0, winners.shape[1], 23):
            cells = (slice(r0, min(r0 + 17, winners.shape[0])), slice(c0, min(c0 + 23, winners.shape[1])))
            rasters.write(cells, class_map_from(winners[cells]))
    rasters.close()
    yield rasters, class_map, geobox
    rasters.discard()


def sieved_polygons(rasters: MapRasters, geobox, window: int):
    from dataclasses import replace

    sieve = plan_sieve(rasters.class_windows(window), mmu_cells(MMU_HA, geobox))
    windows = ((replace(w.class_map, classes=sieve.apply(w.cells, w.class_map.classes)), w.geobox)
               for w in rasters.windows(window))
    return dissolved_classes(windows, geobox, class_stats(rasters.stats, geobox))


def test_the_unit_in_cells_keeps_single_cells_of_coarse_maps():
    assert mmu_cells(0.5, utm_grid(2, 2, cell=10.0)) == 50
    assert mmu_cells(0.5, utm_grid(2, 2, cell=100.0)) == 1  # a 1 ha cell is above the unit: nothing sieved
    assert mmu_cells(0.0, utm_grid(2, 2, cell=10.0)) == 1
    assert mmu_cells(0.12, utm_grid(2, 2, cell=10.0)) == 12  # a patch of exactly the unit stays


def test_sieved_polygons_are_the_same_from_one_window_or_many(written):
    rasters, class_map, geobox = written
    whole = sieved_polygons(rasters, geobox, 4096)
    for window in (16, 33):  # windows that cut patches, in both directions
        pieces = sieved_polygons(rasters, geobox, window)
        assert list(pieces["class_id"]) == list(whole["class_id"])
        assert list(pieces["cell_count"]) == list(whole["cell_count"])
        for a, b in zip(pieces.geometry, whole.geometry, strict=True):
            assert a.symmetric_difference(b).area == 0


def test_no_patch_below_the_unit_is_left_and_no_cell_changes_nodata(written):
    rasters, class_map, geobox = written
    min_cells = mmu_cells(MMU_HA, geobox)
    sieve = plan_sieve(rasters.class_windows(33), min_cells)
    sieved = np.zeros(class_map.shape, np.uint8)
    for cells, codes in rasters.class_windows(33):
        sieved[cells] = sieve.apply(cells, codes)
    assert ((sieved > 0) == class_map.valid).all()
    before, _ = label_patches(class_map.classes * class_map.valid)
    labels, _ = label_patches(sieved)
    sizes = np.bincount(labels.ravel())[1:]
    assert len(sizes) < np.bincount(before.ravel())[1:].size / 4
    small = np.flatnonzero(sizes < min_cells) + 1
    # What stays below the unit is an island with no neighbour of another class (here: none).
    assert len(small) == 0
    # The big patches keep their class: a cell changes only inside a patch smaller than the unit.
    original = np.bincount(before.ravel())
    changed = (sieved != class_map.classes) & class_map.valid
    assert (original[before[changed]] < min_cells).all()


def test_a_map_export_sieves_its_polygons_and_its_summary_says_what_its_areas_count(tmp_path):
    winners = speckled(40, 50)
    class_map = class_map_from(winners)
    geobox = utm_grid(40, 50, cell=10.0)
    scenes = two_scenes()
    layers = {}
    for mmu in (0.0, MMU_HA):
        with map_export(geobox, tmp_path / f"map-{mmu}", provenance=make_provenance(scenes), aoi=AOI, scenes=scenes,
                        mmu_ha=mmu) as export:
            export.write((slice(0, 40), slice(0, 50)), class_map)
        files = export.files
        layers[mmu] = pyogrio.read_dataframe(files.geopackage, layer="landcover")
        summary = json.loads(files.summary.read_text())
        assert summary["areas"].startswith("areas count the cells of landcover.tif, unsieved")
    assert "sieved to a minimum mapping unit of 0.12 ha (12 cells)" in summary["areas"]
    raw, sieved = layers[0.0], layers[MMU_HA]
    count = {mmu: sum(len(g.geoms) for g in frame.geometry) for mmu, frame in layers.items()}
    assert count[MMU_HA] < count[0.0] / 4
    # Both layers cover the same mapped ground; the raw one's areas are the summary's.
    assert raw.geometry.area.sum() == pytest.approx(sieved.geometry.area.sum())
    assert list(raw["area_ha"]) == pytest.approx([c["area_ha"] for c in summary["classes"]])
    assert list(sieved["area_ha"]) == pytest.approx(list(sieved.geometry.area / 1e4))
