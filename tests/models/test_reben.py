"""The BigEarthNet v2 (reBEN) classifiers: published layout in, a land-cover map out.

Checkpoints are built here in the published layout (``config.json`` + ``model.safetensors`` with
``model.vision_encoder.<timm key>``), served by a Hub stand-in on 127.0.0.1 (hub_stub.py) and
fetched with ``landcover model fetch``; nothing comes from anywhere else.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import timm
import torch
from safetensors.torch import load_file, save_file

from hub_stub import publish, serve_hub
from models.classes import CLASS_NAMES
from models.reben import BANDS_V01, BANDS_V02, REBEN_CLASSES, RebenError, card_from_config
from landcover_here import run_landcover

ORG = "BIFOLD-BigEarthNetv2-0"
RESNET = f"{ORG}/resnet50-s2-v0.2.0"
CONVNEXT = f"{ORG}/convnextv2_atto-s2-v0.2.0"  # a non-ResNet architecture, small enough for CI
PLANTED = f"{ORG}/convnextv2_atto-coniferous-s2-v0.2.0"  # its head says Coniferous forest whatever it sees
CONIFEROUS = REBEN_CLASSES.index("Coniferous forest")  # 6 in reBEN's alphabetical order; map code 10


def config(model_name: str = "resnet50", channels: int = 10) -> dict:
    return {"timm_model_name": model_name, "channels": channels, "classes": 19, "image_size": 120,
            "drop_rate": 0.15, "drop_path_rate": 0.15, "class_names": [str(i) for i in range(19)]}


def published_files(net: torch.nn.Module, folder: Path, cfg: dict) -> dict[str, Path]:
    """What the Hub repo holds: the timm weights behind ConfigILM's prefix, and config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({f"model.vision_encoder.{k}": v.contiguous() for k, v in net.state_dict().items()},
              folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(cfg))
    return {"config.json": folder / "config.json", "model.safetensors": folder / "model.safetensors"}


def random_net(model_name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(model_name, pretrained=False, num_classes=19, in_chans=10)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    return run_landcover(capsys, *args)

@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A Hub stand-in serving a random resnet50 and ConvNeXt V2, a ConvNeXt V2 whose head favours
    Coniferous forest, an s1 model, weights published with a config of another width, and a v0.1.1
    checkpoint."""
    root = tmp_path_factory.mktemp("hub")
    build = tmp_path_factory.mktemp("build")
    resnet = random_net("resnet50")
    publish(root, RESNET, published_files(resnet, build / "resnet", config("resnet50")))
    publish(root, CONVNEXT, published_files(random_net("convnextv2_atto"), build / "convnext", config("convnextv2_atto")))
    planted = random_net("convnextv2_atto", seed=1)
    with torch.no_grad():  # every window is Coniferous forest, nothing else
        planted.head.fc.weight.zero_()
        planted.head.fc.bias.fill_(-6.0)
        planted.head.fc.bias[CONIFEROUS] = 6.0
    publish(root, PLANTED, published_files(planted, build / "planted", config("convnextv2_atto")))
    s1 = timm.create_model("resnet18", pretrained=False, num_classes=19, in_chans=2)
    publish(root, f"{ORG}/resnet18-s1-v0.2.0", published_files(s1, build / "s1", config("resnet18", channels=2)))
    # Weights of 10 channels published with the config of a 12-channel ("all") checkpoint.
    publish(root, f"{ORG}/resnet18-s2-v0.2.0", published_files(random_net("resnet18"), build / "r18", config("resnet18", 12)))
    publish(root, f"{ORG}/resnet18-s2-v0.1.1", published_files(random_net("resnet18"), build / "r18v1", config("resnet18")))
    with serve_hub(root) as url:
        yield url, {"resnet50": resnet}


@pytest.fixture(scope="module")
def cache(tmp_path_factory, demo_world) -> Path:
    """A model cache of the module's own, holding the session's demo world (not a second one, 26 s)."""
    cache = tmp_path_factory.mktemp("model-cache")
    (cache / "demo").symlink_to(demo_world.root.parent, target_is_directory=True)
    return cache


@pytest.fixture
def env(hub, cache, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub[0])
    monkeypatch.setenv("LANDCOVER_CACHE", str(cache))
    return hub[0]


def fetch(capsys, repo_id: str, *extra: str) -> Path:
    code, out, err = run_cli(capsys, "model", "fetch", repo_id, *extra)
    assert code == 0, err
    return Path(out.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------- the card


def test_card_from_config_follows_the_published_conventions():
    card = card_from_config(config(), repo_id=RESNET, revision="main", commit="a" * 40)
    assert card.family == "timm" and card.task == "multi-label" and card.threshold == 0.5
    assert card.bands == list(BANDS_V02) == ["blue", "green", "red", "rededge1", "rededge2", "rededge3",
                                             "nir", "nir08", "swir16", "swir22"]
    assert card.classes[0] == "Agro-forestry areas" and card.classes[-1] == "Urban fabric"
    # Map codes come from the names, not the output index.
    assert card.class_codes[CONIFEROUS] == CLASS_NAMES.index("Coniferous forest") + 1 == 10
    assert (card.window_px, card.patch_size, card.resampling) == (120, 120, "nearest")
    assert card.normalisation.boa_offset == "removed" and card.normalisation.mean[0] == pytest.approx(438.37)
    assert card.normalisation.std[-1] == pytest.approx(813.53)
    assert card.licence == "MIT" and card.source.repo_id == RESNET and card.source.commit == "a" * 40
    assert [(m.name, m.value) for m in card.published_metrics] == [("mAP (macro)", 71.4)]
    assert "reBEN" in card.published_metrics[0].source


def test_v01_checkpoints_take_their_own_band_order_and_statistics():
    card = card_from_config(config(), repo_id=f"{ORG}/resnet50-s2-v0.1.1")
    assert card.bands == list(BANDS_V01)
    nir = card.bands.index("nir")  # B08 is 4th in v0.1, 7th in v0.2: its statistics travel with it
    assert card.normalisation.mean[nir] == pytest.approx(2193.29)


def test_to_map_order_places_each_output_at_its_class_code():
    card = card_from_config(config(), repo_id=RESNET)
    probs = np.zeros((1, 19), np.float32)
    probs[0, CONIFEROUS] = 1.0
    assert np.flatnonzero(card.to_map_order(probs)[0]).tolist() == [CLASS_NAMES.index("Coniferous forest")]


# ------------------------------------------------------------------------- fetch, load, predict


@pytest.mark.parametrize("repo_id, model_name", [(RESNET, "resnet50"), (CONVNEXT, "convnextv2_atto")])
def test_fetched_checkpoint_loads_exactly_and_predicts_as_timm_does(capsys, env, cache, repo_id, model_name):
    from models.predictor import Predictor

    weights = fetch(capsys, repo_id)
    assert weights == cache / "models" / repo_id / "main" / "model.safetensors"
    assert (weights.parent / "model.json").is_file()

    predictor = Predictor.from_path(weights, device="cpu")
    keys = predictor.model.load_state_dict(load_file(weights), strict=False)
    assert keys.missing_keys == [] and keys.unexpected_keys == []

    # The same weights through timm alone, on the same 10-band input, standardised by hand.
    net = timm.create_model(model_name, pretrained=False, num_classes=19, in_chans=10)
    net.load_state_dict({k.removeprefix("model.vision_encoder."): v for k, v in load_file(weights).items()})
    refl = np.random.default_rng(1).uniform(0.0, 0.5, (3, 10, 120, 120)).astype(np.float32)
    norm = predictor.card.normalisation
    x = (torch.from_numpy(refl) * 10000 - torch.tensor(norm.mean)[:, None, None]) / torch.tensor(norm.std)[:, None, None]
    with torch.no_grad():
        expected = torch.sigmoid(net.eval()(x)).numpy()
    np.testing.assert_allclose(predictor.predict_reflectance(refl).probs, expected, atol=1e-5)


def test_model_info_describes_a_fetched_model(capsys, env):
    weights = fetch(capsys, RESNET)
    code, out, err = run_cli(capsys, "model", "info", str(weights))
    assert code == 0, err
    assert "multi-label" in out and "MIT" in out and "resnet50" in out


def test_import_installs_a_folder_downloaded_elsewhere(capsys, tmp_path, hub):
    folder = tmp_path / "resnet50-s2-v0.2.0"
    published_files(hub[1]["resnet50"], folder, config("resnet50"))
    code, out, err = run_cli(capsys, "model", "import", str(folder), "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    weights = Path(out.strip())
    assert weights == tmp_path / "cache" / RESNET / "main" / "model.safetensors"
    assert json.loads((weights.parent / "model.json").read_text())["source"]["repo_id"] == RESNET


# -------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("repo_id, extra, expected", [
    (f"{ORG}/no-such-model-s2-v0.2.0", (), "404"),
    (f"{ORG}/resnet18-s1-v0.2.0", (), "Sentinel-1"),
    (f"{ORG}/resnet18-s2-v0.2.0", (), "config.json belongs to another checkpoint"),
    (f"{ORG}/resnet18-s2-v0.1.1", ("--band-order", "v0.2"), "drop --band-order or pass v0.1"),
])
def test_unusable_checkpoints_are_refused_in_one_line_and_nothing_is_installed(capsys, env, cache, repo_id, extra, expected):
    code, out, err = run_cli(capsys, "model", "fetch", repo_id, *extra)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], err
    assert "Traceback" not in err and out == ""
    assert not (cache / "models" / repo_id).exists()


def test_a_card_whose_bands_and_channels_disagree_does_not_validate():
    from pydantic import ValidationError

    card = card_from_config(config(), repo_id=RESNET)
    with pytest.raises(ValidationError, match="10 channels"):
        type(card).model_validate(card.model_dump() | {"bands": ["red", "green", "blue"]})
    with pytest.raises(RebenError, match="Sentinel-2"):
        card_from_config(config(channels=12), repo_id=f"{ORG}/vit_base_patch8_224-all-v0.2.0")


# ------------------------------------------------------------------------- a whole map with it


@pytest.mark.slow
def test_demo_map_with_a_fetched_model_maps_its_planted_class_everywhere(capsys, env, tmp_path):
    import geopandas as gpd

    weights = fetch(capsys, PLANTED)
    out_dir = tmp_path / "map"
    code, _, err = run_cli(capsys, "map", "--demo", "--model", PLANTED, "--out", str(out_dir), "--workers", "2",
                           "--cell-size", "1200", "--stride", "120", "--no-dense")
    assert code == 0, err
    assert PLANTED in err

    with rasterio.open(out_dir / "landcover.tif") as src:
        classes = src.read(1)
    mapped = classes[classes > 0]
    assert mapped.size > 50 and set(np.unique(mapped)) == {10}  # Coniferous forest, by name from index 6

    with rasterio.open(out_dir / "probabilities.tif") as src:
        assert src.count == 19 and src.descriptions[9] == "Coniferous forest"
        probs = src.read()
    valid = classes > 0
    assert np.all(probs[9][valid] > 0.99) and np.all(probs[np.arange(19) != 9][:, valid] < 0.01)

    patches = gpd.read_file(out_dir / "landcover.gpkg", layer="patches")
    assert set(patches["class_name"]) == {"Coniferous forest"} and set(patches["labels"]) == {"Coniferous forest"}
    polygons = gpd.read_file(out_dir / "landcover.gpkg", layer="landcover")
    assert polygons["class_name"].tolist() == ["Coniferous forest"]

    summary = json.loads((out_dir / "summary.json").read_text())
    assert [c["name"] for c in summary["classes"]] == ["Coniferous forest"]
    assert summary["model"]["id"] == PLANTED and summary["labels"]["classes"][0]["code"] == 10
    item = json.loads((out_dir / "item.json").read_text())
    assert "probabilities" in item["assets"]
    assert weights.is_file()
