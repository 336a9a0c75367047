"""A regional run is planned once: one search of the STAC API, one hash of the weights, and a
block lattice fixed by the region's AOI and settings, so a new tile at the AOI's edge recomputes
only the blocks its scenes touch."""

from __future__ import annotations

from pathlib import Path

from workflow_helpers import FIRST_AS_OF, MODEL, StacProxy, quiet, write_region

import models.files
from pipeline.blocks import ItemIndex, block_footprint, iter_blocks
from workflows.region import load_region
from workflows.runner import plan_region, run_region


def test_a_regional_run_searches_once_and_hashes_the_weights_once(tmp_path, served_world, monkeypatch):
    hashed: list[Path] = []
    real = models.files.sha256_file

    def counting(path):
        hashed.append(Path(path).resolve())
        return real(path)

    monkeypatch.setattr(models.files, "sha256_file", counting)
    with StacProxy(served_world.stac_url) as proxy:
        region = load_region(write_region(tmp_path / "regions", tmp_path / "maps", stac_url=proxy.url))
        outcome = run_region(region, as_of=FIRST_AS_OF, console=quiet())
    assert outcome.status == "finished"
    assert proxy.searches() == 1, proxy.paths
    assert hashed.count(Path(MODEL["path"]).resolve()) == 1  # the workers verify it once each, on their side


def test_a_new_tile_at_the_aoi_edge_recomputes_only_the_blocks_its_scenes_touch(tmp_path, served_world):
    """The catalogue first lacks the western tile (32TQR), then gains it: the grid's origin would
    move west with the scenes' coverage; the region's lattice stays where its AOI puts it."""
    west = "_32TQR_"
    with StacProxy(served_world.stac_url, hide=lambda feature: west in feature["id"]) as proxy:
        region = load_region(write_region(tmp_path / "regions", tmp_path / "maps", stac_url=proxy.url))
        first = run_region(region, as_of=FIRST_AS_OF, console=quiet())
        proxy.hide = None
        plan, _ = plan_region(region, as_of=FIRST_AS_OF, console=quiet())
        second = run_region(region, as_of=FIRST_AS_OF, console=quiet())
    new_scenes = ItemIndex([it for it in plan.items if west in it.id])
    touched = sum(1 for block in iter_blocks(plan.grid) if new_scenes.touching(block_footprint(block, plan.grid)))
    assert not any(west in i for i in first.item_ids) and any(west in i for i in second.item_ids)
    assert second.blocks_total > first.blocks_total  # the new tile maps ground the first run could not
    assert 0 < second.blocks_computed == touched < second.blocks_total
