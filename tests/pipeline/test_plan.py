"""`--plan`: what a run would do, from catalogue metadata alone."""

from __future__ import annotations

import json
from pathlib import Path

import shapely
from landcover_here import run_landcover

from pipeline.aoi import parse_aoi
from pipeline.blocks import block_footprint, block_key, iter_blocks
from pipeline.patches import plan_grid
from pipeline.plan_summary import count_work, utm_zone

AOI = parse_aoi({"type": "Polygon", "coordinates": [[[11.80, 45.30], [12.10, 45.30], [12.10, 45.42], [11.80, 45.42], [11.80, 45.30]]]})
MODEL = "ab" * 32  # sha256 of the weights


class Item:
    def __init__(self, id, geometry, tile):
        self.id, self.geometry = id, shapely.geometry.mapping(geometry)
        self.properties = {"s2:mgrs_tile": tile}


def test_a_plan_counts_cells_and_blocks_of_the_covered_part_only():
    west = Item("a", shapely.box(11.0, 45.0, 11.95, 46.0), "32TQR")
    grid = plan_grid(AOI, cells_per_chunk=4, coverage=shapely.box(11.0, 45.0, 11.95, 46.0))
    plan = count_work(AOI, [west], grid, model_sha256=MODEL, min_clear=0.5)
    assert plan.cells == int(grid.inside_aoi.sum()) > 0
    assert plan.windows == plan.cells and plan.blocks_done is None
    assert plan.tiles == ("32TQR",) and plan.zones == (32,)
    assert plan.estimate_s is None  # no speed measured: no estimate rather than a made-up one


def test_blocks_a_store_holds_are_done_and_need_no_windows():
    class Store:
        def __init__(self, keys):
            self.keys = keys

        def get(self, key):
            return None

        def __contains__(self, key):
            return key in self.keys

    item = Item("a", shapely.box(11.0, 45.0, 13.0, 46.0), "32TQR")
    grid = plan_grid(AOI, cells_per_chunk=4)
    everything = count_work(AOI, [item], grid, model_sha256=MODEL, min_clear=0.5, chunks=Store(set()))
    assert everything.blocks_done == 0 and everything.windows == everything.cells


    first = next(iter_blocks(grid))
    key = block_key(first, grid, ["a"], MODEL, 0.5)
    assert block_footprint(first, grid).intersects(shapely.box(11.0, 45.0, 13.0, 46.0))
    partly = count_work(AOI, [item], grid, model_sha256=MODEL, min_clear=0.5, chunks=Store({key}), speed=lambda: 100.0)
    assert partly.blocks_done == 1 and partly.windows == everything.windows - first.n_inside
    assert partly.estimate_s == partly.windows / 100.0


def test_utm_zones_come_from_the_tile_names():
    assert utm_zone("32TQR") == 32 and utm_zone("9UXA") == 9 and utm_zone("S2A_x") is None


def test_map_plan_over_a_continent_reads_no_pixel_and_writes_nothing(capsys, demo_world, tiny_model, tmp_path):
    """The issue's continent AOI over the demo world: the plan names the two demo tiles and
    their zones and clips the grid to them; no output folder appears."""
    aoi = tmp_path / "continent.geojson"
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [[[-10, 35], [30, 35], [30, 70], [-10, 70], [-10, 35]]]}))
    out = tmp_path / "map"
    code, _, err = run_landcover(capsys, "map", aoi, "--source", "local", "--out", out, "--model", tiny_model, "--plan")
    assert code == 0, err
    text = " ".join(err.split())
    assert "the scenes cover less than 0.1% of the AOI" in text and "clipped to the covered part" in text
    assert "on 2 MGRS tiles (32TQR, 33TTL)" in text and "UTM zones │ 32, 33" in text
    assert "patches to classify" in text and "estimate" in text
    assert not out.exists()


def test_the_plan_lists_its_scenes_and_prints_whole_as_json(capsys, demo_world, tiny_model, tmp_path):
    """`--plan` names each scene with its tile and date; `--plan --json` is the whole plan, every
    scene, the settings, the model and the grid, on stdout."""
    args = ["map", "--demo", "--out", tmp_path / "map", "--model", tiny_model, "--plan", "--cell-size", "200"]
    code, _, table = run_landcover(capsys, *args)
    assert code == 0, table
    code, as_json, err = run_landcover(capsys, *args, "--json")
    assert code == 0, err
    plan = json.loads(as_json)
    scenes = plan["scenes"]
    assert len(scenes) >= 2 and all(s["id"] and s["tile"] and s["datetime"] for s in scenes)
    text = " ".join(table.split())
    for scene in scenes:
        assert f"{scene['tile']} {scene['datetime'][:10]} {scene['id']}" in text
    assert "cell_size=200.0" in text  # the settings that differ from their defaults
    assert plan["settings"]["cell_size"] == 200.0 and plan["model"]["sha256"] and plan["grid"]["cell_m"] == 200.0
    assert plan["blocks"] >= 1 and plan["cells"] > 0 and plan["window"]["start"] <= plan["window"]["end"]
    assert not (tmp_path / "map").exists()


def test_the_plan_says_how_large_the_outputs_will_be(capsys, demo_world, tiny_model, tmp_path):
    code, out, err = run_landcover(capsys, "map", "--demo", "--out", tmp_path / "m", "--model", tiny_model, "--plan",
                                   "--json", "--qa-grid", "500")
    assert code == 0, err
    outputs = json.loads(out)["outputs"]
    assert outputs["qa_side_m"] == 500.0 and 0 < outputs["qa_squares"] < outputs["grid_cells"]
    assert outputs["raster_mib"] > 0


def test_the_block_path_plans_blocks_of_19_km_each_read_alone_and_windows_keep_9_6_km_in_pairs():
    """The backbone once per block pays its halo per block: bigger blocks for the block path only
    (1.44x the block's pixels computed instead of 1.96x), each read by its own task so a worker's
    read stays bounded; a windows model keeps 9.6 km blocks read 2 x 2."""
    from models.reben import card_from_config
    from pipeline.blocks import read_group, read_group_side
    from pipeline.plan import plan_layout
    from pipeline.settings import MapConfig

    square = parse_aoi({"type": "Polygon", "coordinates": [[[11.3, 45.0], [12.1, 45.0], [12.1, 45.6], [11.3, 45.6],
                                                           [11.3, 45.0]]]})  # ~63 x 67 km: 4 x 4 blocks of 19.2 km
    items = [Item("a", shapely.box(11.0, 44.5, 12.5, 46.0), "32TQR")]
    cfg = MapConfig(aoi=shapely.geometry.mapping(square.geometry), out=Path("unused"))
    sides = {}
    for name in ("resnet50", "mobilenetv3_large_100"):
        card = card_from_config({"timm_model_name": name, "channels": 10, "classes": 19},
                                repo_id="BIFOLD-BigEarthNetv2-0/resnet50-s2-v0.2.0")
        grid, detail, _ = plan_layout(cfg, square, items, card)
        side = read_group_side(grid, detail.read_factor)
        blocks = list(iter_blocks(grid, side))
        sides[detail.path] = (grid.cells_per_chunk, side, len({read_group(b) for b in blocks}) < len(blocks))
    assert sides == {"block": (192, 1, False), "windows": (96, 2, True)}
