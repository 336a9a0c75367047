"""The demo-world training source: composites on the truth grid, labelled windows, and the
loader the command line hands to models/ (which never imports pipeline/)."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pystac
import pytest
import rasterio

from pipeline.demo import DemoWorld
from pipeline.demo.dataset import demo_world_patches, demo_world_source, tile_composite
from pipeline.load import MASK_SCL

ALL_BANDS = ("blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22")
BANDS_20M = ("rededge1", "rededge2", "rededge3", "nir08", "swir16", "swir22")


def _tile_items(world: DemoWorld, mgrs: str) -> list[pystac.Item]:
    items = [pystac.Item.from_dict(d) for d in world.items()]
    return [it for it in items if it.properties.get("s2:mgrs_tile") == mgrs]


def _on_grid(item: pystac.Item, key: str, shape: tuple[int, int]) -> np.ndarray:
    """An asset at its own resolution, each pixel repeated onto the 10 m grid (20 m: 2 x 2)."""
    with rasterio.open(item.assets[key].href) as src:
        values = src.read(1)
    factor = shape[0] // values.shape[0]
    assert values.shape[0] * factor == shape[0] and values.shape[1] * factor == shape[1]
    return np.repeat(np.repeat(values, factor, axis=0), factor, axis=1)


def _ever_clear(items: list[pystac.Item], shape: tuple[int, int], bands: tuple[str, ...]) -> np.ndarray:
    """Pixels some date sees with the SCL clear and a value in every band, read independently."""
    seen = np.zeros(shape, dtype=bool)
    for item in items:
        clear = ~np.isin(_on_grid(item, "scl", shape), MASK_SCL)
        for band in bands:
            clear &= _on_grid(item, band, shape) != 0
        seen |= clear
    return seen


@pytest.fixture(scope="module")
def west(demo_world):
    tile = demo_world.tiles[0]
    return _tile_items(demo_world, tile.mgrs), tile.truth_path


def test_ten_band_composite_on_the_truth_grid(west):
    items, truth_path = west
    first = tile_composite(items, truth_path)
    refl, transform, crs = tile_composite(items, truth_path, bands=ALL_BANDS)
    with rasterio.open(truth_path) as src:
        shape = (src.height, src.width)
        assert transform == src.transform and crs == src.crs
    assert refl.shape == (10, *shape) and refl.dtype == np.float32
    missing = np.isnan(refl)
    assert (missing == missing[0]).all()  # one clear mask for every band
    assert np.array_equal(~missing[0], _ever_clear(items, shape, ALL_BANDS))  # NaN only where never clear
    assert 0.0 < missing[0].mean() < 0.05
    values = refl[:, ~missing[0]]
    assert values.min() >= 0.0 and values.max() <= 1.0  # harmonised reflectance, no +1000 DN left
    median = dict(zip(ALL_BANDS, np.median(values, axis=1), strict=True))
    assert all(0.005 < m < 0.6 for m in median.values()), median
    assert median["nir"] > 2 * median["red"] and median["nir08"] > median["rededge1"]  # a vegetated world
    # 20 m bands arrive by NEAREST: each 20 m pixel fills its 2 x 2 10 m pixels with one value.
    # (A 10 m pixel may still differ where a single date is masked at 10 m, e.g. the nodata wedge.)
    for i, band in enumerate(ALL_BANDS):
        quads = refl[i].reshape(shape[0] // 2, 2, shape[1] // 2, 2)
        flat = (quads == quads[:, :1, :, :1]).all(axis=(1, 3)).mean()
        assert flat > 0.99 if band in BANDS_20M else flat < 0.5, (band, flat)
    # the 3-band default, asked for by name, is the first call's result exactly
    rgb, _, _ = tile_composite(items, truth_path, bands=("red", "green", "blue"))
    assert first[0].shape == (3, *shape) and first[0].dtype == rgb.dtype
    assert np.array_equal(first[0], rgb, equal_nan=True)
    assert first[1] == transform and first[2] == crs


def test_windows_carry_world_and_tile_and_blocks_never_mix_worlds(demo_world):
    plain = demo_world_patches(demo_world)
    tag = f"world-s{demo_world.seed}-{demo_world.size_px}"
    assert len(plain) > 0 and plain.images.shape[1:] == (3, 32, 32) and plain.images.dtype == np.uint8
    assert set(plain.groups) == {f"{tag}/{t.mgrs}" for t in demo_world.tiles}
    assert all(i.startswith(f"{tag}/") and "@" in i for i in plain.ids)  # ...@<first date>-<last date>
    assert plain.windows is None
    blocks = demo_world_patches(demo_world, block_m=2400, keep_windows=True)
    assert blocks.ids == plain.ids and np.array_equal(blocks.images, plain.images)
    assert all(g.startswith(f"{tag}/blk") for g in blocks.groups)
    assert blocks.windows is not None and blocks.windows.shape[0] == len(blocks)


def test_the_demo_config_validation_set_reproduces_the_committed_card(tmp_path, capsys, demo_world):
    """Through the real command line (its loader injection): `landcover evaluate --config` on the
    demo config's validation world gives the committed card's validation numbers again."""
    from models.card import ModelCard
    from models.training.config import load_config
    from cli import main as cli

    cfg = load_config("models/configs/demo.yaml")
    stem = cfg.output_dir / cfg.name
    committed = ModelCard.read(stem.with_suffix(".json"))
    for suffix in (".safetensors", ".json", ".split.json", ".metrics.json"):
        shutil.copy(f"{stem}{suffix}", tmp_path / f"{cfg.name}{suffix}")
    weights = tmp_path / f"{cfg.name}.safetensors"

    old = sys.argv
    sys.argv = ["landcover", "evaluate", str(weights), "--config", "models/configs/demo.yaml", "--out", str(tmp_path / "fig")]
    try:
        with pytest.raises(SystemExit) as done:
            cli.main()
    finally:
        sys.argv = old
    assert done.value.code in (0, None), capsys.readouterr().err
    assert "validation: n=194" in " ".join(capsys.readouterr().err.split())
    card = json.loads((tmp_path / f"{cfg.name}.json").read_text())["metrics"]
    assert card["validation_n"] == committed.metrics["validation_n"] == committed.metrics["n_validation"]
    assert card["validation_dominant_n"] == committed.metrics["validation_dominant_n"]
    assert card["validation_accuracy"] == pytest.approx(committed.metrics["validation_accuracy"], abs=1.5 / 194)


def test_the_loader_reads_the_world_the_spec_names(demo_world):
    from models.training.config import DataSpec

    data = demo_world_source(DataSpec(source="demo-world", stride=240), False)
    tag = f"world-s{demo_world.seed}-{demo_world.size_px}"  # the default spec names the default world
    assert set(data.groups) == {f"{tag}/{t.mgrs}" for t in demo_world.tiles}
    assert all("/r" in i and int(i.split("/r")[1].split("c")[0]) % 240 == 0 for i in data.ids)
