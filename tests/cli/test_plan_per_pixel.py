"""`--plan` of a per-pixel model: cells and pixels counted, the network's speed measured in Mpx/s
(Dynamic World's architecture with random weights: the plan needs its shape and speed, not skill)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def per_pixel_model(tmp_path_factory) -> Path:
    import torch
    from safetensors.torch import save_file

    from models.card import card_path
    from models.dynamicworld import build_network, model_card
    from models.files import sha256_file

    torch.manual_seed(0)
    weights = tmp_path_factory.mktemp("per-pixel") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in build_network().state_dict().items()}, str(weights))
    card = model_card("random weights for tests", None, sha256_file(weights), {})
    card_path(weights).write_text(card.model_dump_json(indent=1) + "\n")
    return weights


def test_a_per_pixel_plan_counts_pixels_and_estimates_from_the_networks_speed(demo_world, per_pixel_model, tmp_path):
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps(demo_world.central_aoi(3.0)))
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("landcover")), "map", str(aoi), "--source", "local", "--out",
         str(tmp_path / "map"), "--model", str(per_pixel_model), "--plan", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    plan = json.loads(proc.stdout)
    assert plan["grid"]["cell_m"] == 10.0 and plan["detail"] == {
        "per_pixel": True, "cell_px": 1, "halo_px": plan["detail"]["halo_px"], "multiple": 2, "tile_px": 512,
        "read_factor": 1}
    # 3 x 3 km at 10 m: about 90,000 cells; the network answers for every pixel of the blocks' cores.
    assert 85_000 < plan["cells"] <= plan["pixels"] and plan["windows"] == 0
    assert plan["estimate_s"] > 0
    assert not (tmp_path / "map").exists()
