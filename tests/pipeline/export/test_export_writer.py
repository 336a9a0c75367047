"""A map written block by block and read back window by window gives the products of one
whole write: the streamed run's exports equal the in-memory export's."""

from __future__ import annotations

import numpy as np
import rasterio
import shapely
from export_helpers import blocks_map, make_provenance, two_scenes, utm_grid

from pipeline.export import map_export
from pipeline.export import vector
from pipeline.export.summary import class_stats
from pipeline.export.writer import MapRasters
from pipeline.mosaic import ClassMap


def _part(cmap: ClassMap, rows: slice, cols: slice) -> ClassMap:
    return ClassMap(
        classes=cmap.classes[rows, cols], confidence=cmap.confidence[rows, cols],
        top_codes=cmap.top_codes[:, rows, cols], top_probs=cmap.top_probs[:, rows, cols],
        clear_fraction=cmap.clear_fraction[rows, cols], valid=cmap.valid[rows, cols],
        multi_label=cmap.multi_label, probs=None if cmap.probs is None else cmap.probs[:, rows, cols],
        threshold=cmap.threshold,
    )


def test_blocks_in_any_order_give_the_rasters_of_one_write(tmp_path, exported):
    files, cmap, grid = exported
    scenes = two_scenes()
    out = tmp_path / "streamed"
    blocks = [(slice(r, min(r + 7, 40)), slice(c, min(c + 9, 50))) for r in range(0, 40, 7) for c in range(0, 50, 9)]
    with map_export(grid, out, provenance=make_provenance(scenes), scenes=scenes) as export:
        for rows, cols in reversed(blocks):  # as they land, not in grid order
            export.write((rows, cols), _part(cmap, rows, cols))
    for name in ("landcover.tif", "confidence.tif", "probabilities.tif"):
        with rasterio.open(out / name) as a, rasterio.open(files.out_dir / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())
    assert export.stats.valid == int(cmap.valid.sum())


def test_polygons_read_back_in_small_windows_are_merged_across_the_window_edges(tmp_path):
    grid = utm_grid(40, 50)
    cmap = blocks_map()
    rasters = MapRasters(tmp_path, grid, make_provenance(two_scenes()), multi_label=False, threshold=0.5)
    try:
        rasters.write((slice(0, 40), slice(0, 50)), cmap)
        stats = class_stats(rasters.stats, grid)
        small = vector.dissolved_classes(((w.class_map, w.geobox) for w in rasters.windows(size=6)), grid, stats)
        whole = vector.class_polygons(cmap, grid)
    finally:
        rasters.discard()
    assert list(small["class_id"]) == list(whole["class_id"])
    for a, b in zip(small.geometry, whole.geometry, strict=True):
        assert shapely.equals(a, b) and len(shapely.get_parts(a)) == len(shapely.get_parts(b))
    assert not list(tmp_path.iterdir())  # the scratch rasters are gone
