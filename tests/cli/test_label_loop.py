"""The analyst's loop with every model: `model predict` on the map's own composite, `active-learn`
into the map's GeoPackage and project, labels written as QGIS writes them, `finetune`, and a map
with the new weights.

One demo map (default model, --save-composite) serves every test: its 10-band composite names
its bands, so the RGB model and a random timm resnet18 in the reBEN layout read their bands from
it by band description.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from landcover_here import run_landcover
from rasterio.windows import Window

from cli import main as cli
from models.checkpoint import read_card
from models.classes import CLASS_NAMES
from pipeline.plan import DEFAULT_WEIGHTS, DEMO_WEIGHTS

MODELS = ("default", "rgb", "resnet18")


def run(capsys, *args: str) -> tuple[int, str, str]:
    """`landcover ARGS` in this process: (exit code, stdout, stderr), never a traceback."""
    code, out, err = run_landcover(capsys, *args)
    assert "Traceback" not in err, err
    return code, out, err


def cli_succeeds(*args) -> None:
    """Run `landcover ARGS` in this process and require success (fixtures wider than a test cannot
    take capsys, so the CLI runs directly)."""
    old = sys.argv
    sys.argv = ["landcover", *map(str, args)]
    try:
        cli.main()
    except SystemExit as exc:
        assert exc.code in (0, None)
    finally:
        sys.argv = old


@pytest.fixture(scope="session")
def demo_map(tmp_path_factory, demo_world) -> Path:
    """`landcover map --demo --save-composite` with the default model (~20 s), made once."""
    out = tmp_path_factory.mktemp("loop") / "map"
    cli_succeeds("map", "--demo", "--out", out, "--save-composite", "--workers", "1")
    assert (out / "composite.tif").is_file() and (out / "landcover.qgz").is_file()
    return out


@pytest.fixture(scope="session")
def resnet18_reben(tmp_path_factory) -> Path:
    """Random-weight timm resnet18 in the reBEN layout: ten bands, multi-label, reBEN's statistics."""
    import torch

    from models.card import (
        ModelCard,
        StandardNormalisation,
        TimmArchitecture,
        TrainingData,
    )
    from models.reben import BANDS_V02, MEANS, REBEN_CLASSES, STDS, TimmClassifier
    from models.training.timm import save_timm_model

    torch.manual_seed(0)
    arch = TimmArchitecture(model_name="resnet18", channels=10, image_size=120)
    card = ModelCard(
        family="timm", profile="random-resnet18-reben", architecture=arch, task="multi-label",
        classes=list(REBEN_CLASSES), bands=list(BANDS_V02), resampling="nearest",
        normalisation=StandardNormalisation(mean=[MEANS[b] for b in BANDS_V02], std=[STDS[b] for b in BANDS_V02]),
        patch_size=120, window_px=120, ground_footprint_m=1200.0,
        training_data=TrainingData(description="random weights for tests", synthetic=True),
    )
    path = tmp_path_factory.mktemp("resnet18") / "random-resnet18-reben.safetensors"
    return save_timm_model(TimmClassifier(arch, len(REBEN_CLASSES)), card, path)


@pytest.fixture
def weights(request, resnet18_reben) -> Path:
    return {"default": DEFAULT_WEIGHTS, "rgb": DEMO_WEIGHTS, "resnet18": resnet18_reben}[request.param]


def map_copy(demo_map: Path, dest: Path) -> Path:
    """The map's GeoPackage and project (and its composite, linked) in a folder of the test's own."""
    dest.mkdir(exist_ok=True)
    for name in ("landcover.gpkg", "landcover.qgz"):
        shutil.copyfile(demo_map / name, dest / name)
    (dest / "composite.tif").symlink_to(demo_map / "composite.tif")
    return dest


def label_from_truth(gpkg: Path, composite: Path, demo_world, *, multi: bool) -> None:
    """Fill the to_label layer from the demo truth as a user would in QGIS: each window's majority
    class in `class` (multi-label models: classes covering a fifth of it in class_2, class_3)."""
    from odc.geo.geobox import GeoBox

    from pipeline.demo.truth import truth_on_grid

    with rasterio.open(composite) as src:
        geobox = GeoBox((src.height, src.width), src.transform, src.crs)
    truth = truth_on_grid(demo_world, geobox)
    frame = pyogrio.read_dataframe(gpkg, layer="to_label")
    inverse = ~geobox.affine
    for i, row in frame.iterrows():
        x0, y0, x1, y1 = row.geometry.bounds
        (c0, r0), (c1, r1) = inverse * (x0, y1), inverse * (x1, y0)
        codes = truth[round(r0):round(r1), round(c0):round(c1)].ravel()
        counts = np.bincount(codes[codes > 0], minlength=len(CLASS_NAMES) + 1)[1:]
        order = np.argsort(-counts, kind="stable")
        frame.loc[i, "class"] = CLASS_NAMES[order[0]]
        if multi:
            for k, field in zip(order[1:3], ("class_2", "class_3")):
                if counts[k] >= 0.2 * counts.sum():
                    frame.loc[i, field] = CLASS_NAMES[k]
    pyogrio.write_dataframe(frame, gpkg, layer="to_label", driver="GPKG", layer_options={"OVERWRITE": "YES"})


def window_of(composite: Path, dest: Path, row: int, col: int, size: int = 120) -> Path:
    """A window of the composite as its own GeoTIFF, band names and scales kept."""
    with rasterio.open(composite) as src:
        window = Window(col, row, size, size)
        profile = src.profile | {"width": size, "height": size, "transform": src.window_transform(window),
                                 "tiled": False, "driver": "GTiff"}
        for key in ("blockxsize", "blockysize", "compress", "interleave"):
            profile.pop(key, None)
        with rasterio.open(dest, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.descriptions, dst.scales = src.descriptions, src.scales
    return dest


@pytest.mark.parametrize("weights", MODELS, indirect=True)
def test_model_predict_classifies_a_window_of_the_models_own_composite(capsys, demo_map, weights, tmp_path):
    from models.imagery import classify, cut_windows, read_imagery
    from models.predictor import Predictor

    window = window_of(demo_map / "composite.tif", tmp_path / "window.tif", 400, 400)
    code, out, err = run(capsys, "model", "predict", weights, window, "--json")
    assert code == 0, err
    probs = json.loads(out)
    predictor = Predictor.from_path(weights, device="cpu")
    assert list(probs) == predictor.card.classes
    # The same bands, found by description, through the same interface active learning uses.
    expected = classify(predictor, cut_windows(read_imagery(window, predictor.card), predictor.card).data).probs[0]
    np.testing.assert_allclose(list(probs.values()), expected, atol=1e-5)


def test_model_predict_tiles_a_whole_composite_into_windows(capsys, demo_map, tmp_path):
    code, out, err = run(capsys, "model", "predict", DEMO_WEIGHTS, demo_map / "composite.tif", "--json",
                         "--raster", tmp_path / "top.tif")
    assert code == 0, err
    windows = json.loads(out)["windows"]
    with rasterio.open(demo_map / "composite.tif") as src:
        lattice = (src.height // 120) * (src.width // 120)
    assert 0.8 * lattice <= len(windows) <= lattice  # 1.2 km windows, not one shrunk patch
    with rasterio.open(tmp_path / "top.tif") as src:
        assert src.res == (1200.0, 1200.0) and (src.read(1) > 0).sum() == len(windows)


@pytest.mark.parametrize("weights", MODELS, indirect=True)
def test_active_learn_writes_exactly_the_windows_asked_for_into_the_maps_project(capsys, demo_map, weights, tmp_path):
    folder = map_copy(demo_map, tmp_path / "map")
    code, _, err = run(capsys, "active-learn", weights, "--imagery", folder / "composite.tif",
                       "--out", folder / "landcover.gpkg", "--n", "20")
    assert code == 0, err
    card = read_card(weights)
    frame = pyogrio.read_dataframe(folder / "landcover.gpkg", layer="to_label")
    fields = ["class", "class_2", "class_3"] if card.task == "multi-label" else ["class"]
    assert len(frame) == 20 and frame["patch_id"].is_unique
    assert set(frame["guess"]) <= set(card.classes) and all((frame[f].fillna("") == "").all() for f in fields)
    assert {"landcover", "patches", "scenes", "to_label"} <= {name for name, _ in pyogrio.list_layers(folder / "landcover.gpkg")}

    # QGIS opens the layer from the map's project, with a drop-down of the model's classes per field.
    from pipeline.export.qgis import read_qgz

    project = read_qgz(folder / "landcover.qgz")
    assert "./landcover.gpkg|layername=to_label" in project and "landcover.tif" in project
    with sqlite3.connect(folder / "landcover.gpkg") as db:
        styles = dict(db.execute("SELECT f_table_name, styleQML FROM layer_styles").fetchall())
    assert {"landcover", "to_label"} <= set(styles)  # the map's own styles are kept
    for field in fields:
        assert f'<field name="{field}" configurationFlags="None">' in styles["to_label"]
    assert styles["to_label"].count('type="ValueMap"') == len(fields)
    assert all(f'name="{name}" value="{name}"' in styles["to_label"] for name in card.classes)
    assert not list(folder.glob("*.tmp*"))


def test_asking_for_more_windows_than_the_map_has_says_why_in_one_line(capsys, demo_map, tmp_path):
    folder = map_copy(demo_map, tmp_path / "map")
    code, _, err = run(capsys, "active-learn", DEMO_WEIGHTS, "--imagery", folder / "composite.tif",
                       "--out", tmp_path / "queries.gpkg", "--n", "5000")
    assert code == 0, err
    written = len(pyogrio.read_dataframe(tmp_path / "queries.gpkg", layer="to_label"))
    assert f"{written} of the 5000 windows asked for" in " ".join(err.split())
    assert "windows with at least 90% clear pixels" in " ".join(err.split())


def test_finetune_refuses_fewer_than_ten_labels_naming_the_count(capsys, demo_map, tmp_path):
    folder = map_copy(demo_map, tmp_path / "map")
    assert run(capsys, "active-learn", DEMO_WEIGHTS, "--imagery", folder / "composite.tif",
               "--out", folder / "landcover.gpkg", "--n", "12")[0] == 0
    frame = pyogrio.read_dataframe(folder / "landcover.gpkg", layer="to_label")
    frame.loc[:8, "class"] = frame.loc[:8, "guess"]
    pyogrio.write_dataframe(frame, folder / "landcover.gpkg", layer="to_label", layer_options={"OVERWRITE": "YES"})
    code, _, err = run(capsys, "finetune", DEMO_WEIGHTS, "--labels", folder / "landcover.gpkg",
                       "--imagery", folder / "composite.tif")
    assert code == 2 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1
    assert "only 9 rows of 'to_label'" in err and "at least 10" in err
    assert not list(folder.glob("*.safetensors"))


@pytest.fixture(scope="module")
def labelled_map(demo_map, demo_world, tmp_path_factory) -> Path:
    """The map's folder with 20 windows the default model picked, labelled from the demo truth as a
    user would (own class in `class`, others covering a fifth of a window in class_2/class_3)."""
    folder = map_copy(demo_map, tmp_path_factory.mktemp("labelled") / "map")
    cli_succeeds("active-learn", DEFAULT_WEIGHTS, "--imagery", folder / "composite.tif",
                 "--out", folder / "landcover.gpkg", "--n", "20")
    label_from_truth(folder / "landcover.gpkg", folder / "composite.tif", demo_world, multi=True)
    return folder


@pytest.mark.parametrize("weights", MODELS, indirect=True)
def test_evaluate_measures_any_model_on_the_users_own_labels(capsys, labelled_map, weights, tmp_path):
    card_before = read_card(weights)
    code, _, err = run(capsys, "evaluate", weights, "--labels", labelled_map / "landcover.gpkg",
                       "--imagery", labelled_map / "composite.tif", "--out", tmp_path)
    assert code == 0, err
    m = json.loads((tmp_path / f"{weights.stem}.labels.json").read_text())
    assert m["split"] == "labels" and m["n"] == 20 and m["layer"] == "to_label"
    # agreement: the share of windows whose own class (first field) is the model's top class
    assert m["agreement"] == pytest.approx(np.trace(np.array(m["confusion"])) / 20)
    assert f"labels: n=20 agreement {m['agreement']:.1%}" in " ".join(err.split())
    assert (tmp_path / f"{weights.stem}-labels-confusion.png").is_file()
    if card_before.task == "multi-label":  # a row's unlisted classes are unknown: recall on what it lists
        assert m["scored"] is not None and m["scores"] is None
    else:
        assert m["scores"]["accuracy"] == pytest.approx(m["agreement"])
        assert (tmp_path / f"{weights.stem}-labels-roc-pr.png").is_file()
    assert read_card(weights) == card_before  # the user's labels never go into the card


def test_evaluate_on_the_config_that_trained_the_default_model_reproduces_its_card(capsys, tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(DEFAULT_WEIGHTS.with_suffix(suffix), tmp_path / DEFAULT_WEIGHTS.with_suffix(suffix).name)
    weights = tmp_path / DEFAULT_WEIGHTS.name
    code, _, err = run(capsys, "evaluate", weights, "--config", "models/configs/demo-multiband.yaml")
    assert code == 0, err
    shipped, measured = read_card(DEFAULT_WEIGHTS).metrics, read_card(weights).metrics
    assert measured["validation_n"] == shipped["validation_n"] == 194
    # the shipped weights are stored in half precision; the card was measured before that
    assert measured["validation_macro_map"] == pytest.approx(shipped["validation_macro_map"], abs=0.01)
    assert (tmp_path / f"{weights.stem}-roc-pr.png").is_file() and (tmp_path / f"{weights.stem}.validation.json").is_file()


def test_evaluate_refuses_a_config_whose_patches_the_model_cannot_read_in_one_line(capsys, resnet18_reben):
    code, _, err = run(capsys, "evaluate", resnet18_reben, "--data", "nowhere.npz")
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "evaluate", resnet18_reben, "--labels", "nowhere.gpkg")
    assert code == 2 and "--labels needs --imagery" in err and len(err.strip().splitlines()) == 1


def _learn_from_sixty(capsys, demo_map, demo_world, weights: Path, folder: Path, name: str,
                      *options: str) -> tuple[Path, dict]:
    """active-learn 60 -> labels from the truth -> finetune (20 held out); the new weights and report."""
    folder = map_copy(demo_map, folder)
    gpkg = folder / "landcover.gpkg"
    assert run(capsys, "active-learn", weights, "--imagery", folder / "composite.tif", "--out", gpkg, "--n", "60")[0] == 0
    label_from_truth(gpkg, folder / "composite.tif", demo_world, multi=read_card(weights).task == "multi-label")
    code, out, err = run(capsys, "finetune", weights, "--labels", gpkg, "--imagery", folder / "composite.tif",
                         "--name", name, *options)
    assert code == 0, err
    new = Path(out.strip().splitlines()[-1])
    assert new == folder / f"{name}.safetensors" and "held-out labels (n=20)" in " ".join(err.split())
    return new, json.loads((folder / f"{name}.finetune.json").read_text())


def _learned_without_forgetting(report: dict) -> None:
    before, after = report["before"], report["after"]
    assert report["metrics"]["finetune_held_out_n"] == 20
    assert after["held_out"] > before["held_out"], report
    assert after["replay_validation"] >= before["replay_validation"] - 0.02, report


def test_the_loop_end_to_end_with_the_default_model(capsys, demo_map, demo_world, tmp_path):
    """map --save-composite -> active-learn -> labels written with pyogrio -> finetune --ssas -> evaluate
    -> map --model: every step exits 0 without a traceback, and the new model learned the hard windows."""
    new, report = _learn_from_sixty(capsys, demo_map, demo_world, DEFAULT_WEIGHTS, tmp_path / "map", "mine", "--ssas")
    _learned_without_forgetting(report)
    # SSAS: unlabelled windows the parent and the fine-tuned model agree on, at most 4 per label learned from
    assert 0 < report["ssas"]["pseudo_labels"] <= min(4 * 40, report["ssas"]["agreeing"])
    assert read_card(new).metrics["finetune_ssas_pseudo_labels"] == report["ssas"]["pseudo_labels"]
    card, parent = read_card(new), read_card(DEFAULT_WEIGHTS)
    assert card.model_id == "mine" and card.training_data.synthetic == parent.training_data.synthetic
    assert (card.lineage.parent_id, card.lineage.parent_sha256) == (parent.model_id, parent.sha256)
    assert (card.lineage.labels.layer, card.lineage.labels.count, card.lineage.labels.held_out) == ("to_label", 60, 20)
    assert len(card.lineage.labels.sha256) == 64 and card.metrics["finetune_held_out_agreement_after"] > 0

    # Measured on the same layer, the new model is judged only on the rows it did not learn from.
    code, _, err = run(capsys, "evaluate", new, "--labels", new.parent / "landcover.gpkg",
                       "--imagery", new.parent / "composite.tif")
    assert code == 0, err
    labels = json.loads((new.parent / "mine.labels.json").read_text())
    assert (labels["n"], labels["left_out"]) == (20, 40)
    # the same windows through the predictor (fp32 inputs; fine-tuning scores fp16 ones): within a window
    assert labels["agreement"] == pytest.approx(report["after"]["held_out"], abs=0.051)

    code, _, err = run(capsys, "map", "--demo", "--out", tmp_path / "remap", "--model", new, "--workers", "1",
                       "--cell-size", "1200", "--stride", "120", "--no-dense")
    assert code == 0, err
    item = json.loads((tmp_path / "remap" / "item.json").read_text())
    assert "mine" in json.dumps(item)


def test_finetune_the_rgb_model_on_windows_active_learning_picked(capsys, demo_map, demo_world, tmp_path):
    new, report = _learn_from_sixty(capsys, demo_map, demo_world, DEMO_WEIGHTS, tmp_path / "map", "rgb-ft")
    _learned_without_forgetting(report)
    assert read_card(new).lineage.root == DEMO_WEIGHTS.stem
