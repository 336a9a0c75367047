"""`landcover model info|predict` on random small-profile weights saved in a temporary folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from PIL import Image
from affine import Affine
from typer.testing import CliRunner

from models.checkpoint import load_model
from models.classes import CLASS_NAMES
from models.classifier import count_parameters
from cli.model import model_app
from models.predictor import Predictor
from models.preprocess import reflectance_to_uint8, resize_windows

runner = CliRunner()


def write_tif(path, data: np.ndarray, descriptions: tuple[str, ...] | None = None) -> None:
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype,
                   crs="EPSG:32632", transform=Affine(10, 0, 500000, 0, -10, 5000000))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = descriptions


@pytest.fixture(scope="module")
def reflectance() -> np.ndarray:
    return np.random.default_rng(5).uniform(0.0, 0.35, size=(3, 120, 120)).astype(np.float32)


def expected_probs(weights, patch_uint8: np.ndarray) -> np.ndarray:
    model, card = load_model(weights)
    return Predictor(model, card, device="cpu").predict(patch_uint8).probs[0]


def test_info_prints_the_card_and_parameter_counts(small_weights):
    result = runner.invoke(model_app, ["info", str(small_weights)])
    assert result.exit_code == 0, result.output
    model, card = load_model(small_weights)
    counts = count_parameters(model)
    for text in ("small", "seed-classifier", "single-label", card.sha256[:20], "SYNTHETIC",
                 f"{counts['sr']:,}", f"{counts['backbone']:,}", f"{counts['head']:,}", f"{counts['total']:,}"):
        assert text in result.output


def test_predict_json_lists_every_class_in_class_order(small_weights, tmp_path, reflectance):
    tif = tmp_path / "patch.tif"
    write_tif(tif, reflectance)
    result = runner.invoke(model_app, ["predict", str(small_weights), str(tif), "--json"])
    assert result.exit_code == 0, result.output
    probs = json.loads(result.output)
    assert list(probs) == list(CLASS_NAMES)
    patch = resize_windows(reflectance_to_uint8(reflectance[None]), 32)
    np.testing.assert_allclose(list(probs.values()), expected_probs(small_weights, patch), atol=1e-6)


def test_l2a_digital_numbers_with_named_bands_read_as_reflectance(small_weights, tmp_path, reflectance):
    # Bands out of order, plus NIR: the descriptions say which is which.
    dn = np.round(reflectance * 10000).astype(np.uint16)
    nir = np.full((1, 120, 120), 3000, np.uint16)
    tif = tmp_path / "l2a.tif"
    write_tif(tif, np.concatenate([dn[2:3], dn[1:2], dn[0:1], nir]), descriptions=("B02", "B03", "B04", "B08"))
    result = runner.invoke(model_app, ["predict", str(small_weights), str(tif), "--json"])
    assert result.exit_code == 0, result.output
    patch = resize_windows(reflectance_to_uint8((dn / 10000.0).astype(np.float32)[None]), 32)
    np.testing.assert_allclose(list(json.loads(result.output).values()), expected_probs(small_weights, patch), atol=1e-6)


def test_predict_png_prints_top_five_and_saves_the_sr_image(small_weights, tmp_path):
    rgb = np.random.default_rng(6).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    png, sr = tmp_path / "patch.png", tmp_path / "sr.png"
    Image.fromarray(rgb).save(png)
    result = runner.invoke(model_app, ["predict", str(small_weights), str(png), "--save-sr", str(sr)])
    assert result.exit_code == 0, result.output
    probs = expected_probs(small_weights, rgb.transpose(2, 0, 1)[None])
    top5 = np.argsort(-probs)[:5]
    lines = [line for line in result.output.splitlines() if line.strip().startswith("│")]
    assert len([line for line in lines if line.split("│")[1].strip().isdigit()]) == 5
    assert f"│ {top5[0] + 1:>4} │" in result.output  # the most probable class code comes first
    assert "DEMO weights" in result.output
    with Image.open(sr) as im:
        assert im.size == (256, 256) and im.mode == "RGB"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: None, "image not found"),
        (lambda p: Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(p), "smaller than the model's 32 px"),
        (lambda p: p.write_bytes(b"no image"), "cannot read"),
    ],
)
def test_bad_images_are_one_line_errors_with_exit_code_2(small_weights, tmp_path, make, match):
    image = tmp_path / "bad.png"
    make(image)
    result = runner.invoke(model_app, ["predict", str(small_weights), str(image)])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and match in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_multiband_geotiff_without_band_names_is_refused(small_weights, tmp_path):
    tif = tmp_path / "four.tif"
    write_tif(tif, np.zeros((4, 40, 40), np.float32))
    result = runner.invoke(model_app, ["predict", str(small_weights), str(tif)])
    assert result.exit_code == 2 and "red, green, blue" in result.output


def test_missing_weights_are_a_one_line_error(tmp_path):
    result = runner.invoke(model_app, ["info", str(tmp_path / "nope.safetensors")])
    assert result.exit_code == 2 and result.output.strip() == f"error: weights file not found: {tmp_path / 'nope.safetensors'}"


def test_model_info_takes_the_repo_id_of_an_installed_model(tmp_path, monkeypatch, tiny_model):
    """As `landcover map --model` does: a repo id finds the weights in the model cache."""
    import shutil

    from models.card import card_path

    cache = tmp_path / "cache"
    installed = cache / "models" / "someone" / "tiny" / "main"
    installed.mkdir(parents=True)
    shutil.copy(tiny_model, installed / "model.safetensors")
    shutil.copy(card_path(tiny_model), installed / "model.json")
    monkeypatch.setenv("LANDCOVER_CACHE", str(cache))
    result = CliRunner().invoke(model_app, ["info", "someone/tiny"])
    assert result.exit_code == 0, result.output
    assert "total" in result.output
