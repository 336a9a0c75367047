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


def test_model_predict_reads_a_per_pixel_models_bands_from_a_wider_composite_by_name(per_pixel_model, tmp_path):
    """A composite of ten named bands (the default model's) holds Dynamic World's nine: predict finds them."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from typer.testing import CliRunner

    from cli.model import model_app

    names = ["blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22"]
    path = tmp_path / "composite.tif"
    with rasterio.open(path, "w", driver="GTiff", width=32, height=30, count=10, dtype="uint16", nodata=0,
                       crs="EPSG:32632", transform=from_origin(700000, 5000000, 10, 10)) as dst:
        dst.write(np.random.default_rng(0).integers(200, 3000, (10, 30, 32)).astype("uint16"))
        for k, name in enumerate(names, start=1):
            dst.set_band_description(k, f"{name} surface reflectance x 10000 (median of clear observations)")
    result = CliRunner().invoke(model_app, ["predict", str(per_pixel_model), str(path), "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    answer = json.loads(result.output)
    assert answer["pixels"] == 30 * 32 and sum(answer["share"].values()) == pytest.approx(1.0)
