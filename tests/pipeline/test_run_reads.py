"""How a run reads: at the overview level the model card allows, classified from those pixels
when its windows are whole pixels of them, in blocks of as many of them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import shapely
from models.card import ModelCard
from pipeline.aoi import parse_aoi
from pipeline.settings import MapConfig
from pipeline.blocks import block_key, iter_blocks
from pipeline.plan import layout_line, plan_layout, read_resolution

# About 150 x 110 km inside one scene footprint: big enough that blocks are not shrunk for a small AOI.
AOI_RING = [[11.0, 45.0], [12.9, 45.0], [12.9, 46.0], [11.0, 46.0], [11.0, 45.0]]
AOI = parse_aoi({"type": "Polygon", "coordinates": [AOI_RING]})
ITEMS = [SimpleNamespace(id="scene", geometry=shapely.geometry.mapping(shapely.box(10.5, 44.5, 13.5, 46.5)))]
WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "weights"
SEED_CARD = ModelCard.read(WEIGHTS / "demo-compact-nosr.json")  # 1.2 km resized to 32 px: 37.5 m input pixels
REBEN_CARD = ModelCard.read(WEIGHTS / "demo-multiband-mobilenetv3.json")  # the window is the patch: 10 m


def plan(card, **options):
    cfg = MapConfig(aoi=Path("aoi.geojson"), out=Path("out"), **options)
    grid, detail, read_res = plan_layout(cfg, AOI, ITEMS, card)
    return grid, detail, layout_line(cfg, grid, detail, read_res)


def test_a_seed_family_model_is_read_and_classified_at_20m_in_blocks_of_twice_the_ground():
    for options, cells in (({"cell_size": 1200, "stride": 120, "dense": False}, 16), ({}, 192)):
        grid, spec, log = plan(SEED_CARD, **options)
        assert spec.read_factor == 2 and grid.cells_per_chunk == cells  # 19.2 km: 960 px of 20 m
        assert "read and classified at 20 m" in log
        first = next(iter_blocks(grid))
        assert all((s.start % 2, s.stop % 2) == (0, 0) for s in first.pixels)  # whole 20 m pixels
    grid, spec, _ = plan(REBEN_CARD)
    assert spec.read_factor == 1 and grid.cells_per_chunk == 96  # 9.6 km of 10 m pixels, as before


def test_a_read_at_the_grid_resolution_or_windows_between_coarse_pixels_keep_the_10m_planes():
    grid, spec, log = plan(SEED_CARD, read_resolution=10)
    assert spec.read_factor == 1 and "read at" not in log
    # 110 m cells are 5.5 pixels of 20 m: read at 20 m, but upsampled to the grid before classifying.
    grid, spec, log = plan(SEED_CARD, cell_size=110, stride=40)
    assert spec.read_factor == 1 and grid.cells_per_chunk == 87
    assert "read at 20 m, upsampled to 10 m" in log
    assert read_resolution(MapConfig(aoi=Path("a"), out=Path("o"), read_resolution=40), SEED_CARD) == 40.0


def test_blocks_classified_from_coarse_planes_have_their_own_keys():
    """A store of results made from 10 m planes must not answer for a run that classifies 20 m ones."""
    grid, fine, _ = plan(SEED_CARD, read_resolution=10, cells_per_chunk=8)
    _, coarse, _ = plan(SEED_CARD, cells_per_chunk=8)
    model = "ab" * 32  # sha256 of the weights
    block = next(iter_blocks(grid))
    keys = {block_key(block, grid, ["scene"], model, 0.5, spec) for spec in (fine, coarse)}
    assert len(keys) == 2
    # Runs that never coarsen keep the keys their stores already hold.
    assert block_key(block, grid, ["scene"], model, 0.5, fine) == block_key(
        block, grid, ["scene"], model, 0.5, dataclasses.replace(fine, read_factor=1))
