"""Dynamic World's published network in PyTorch: the same numbers as TensorFlow, read without TensorFlow.

The reference logits in shared/realdata were computed by the unmodified SavedModel in TensorFlow 2.21
(``reference/make_reference.py``) on 200 real EuroSAT-MS L1C patches. Literal values below marked
"TF 2.21" were computed the same way, once, for inputs that the tests rebuild here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.bands import BAND_IDS as PROJECT_BAND_IDS
from models.card import ModelCard
from models.dynamicworld import (
    BAND_IDS,
    BANDS,
    CLASSES,
    NORM_PERCENTILES,
    PALETTE,
    SOURCE_REPOSITORY,
    DynamicWorldError,
    build_network,
    check_variables,
    expected_variables,
    git_commit,
    import_dynamicworld,
    load_network,
    load_savedmodel_weights,
    normalise_dn,
    resize_taps,
    tf_resize,
)
from models.files import sha256_file

# EuroSAT-MS files hold B01..B12 then B8A; Dynamic World takes B2 B3 B4 B5 B6 B7 B8 B11 B12.
EUROSAT_DW_BANDS = [1, 2, 3, 4, 5, 6, 7, 10, 11]
# EuroSAT class -> the Dynamic World class an honest analyst would expect (8 of the 10 classes).
CROSSWALK = {
    "Forest": "trees", "SeaLake": "water", "River": "water", "Industrial": "built", "Residential": "built",
    "AnnualCrop": "crops", "PermanentCrop": "crops", "Pasture": "grass",
}
REVISION = "0dd288fae5fb5291d988e5ea3c12eb91df481ec5"  # google/dynamicworld, as NOTE.md records


# --- what the network expects and produces ------------------------------------------------------------


def test_bands_are_the_project_names_of_b2_to_b12_without_b8a():
    assert BANDS == tuple(PROJECT_BAND_IDS[b] for b in BAND_IDS)
    assert BANDS[:3] == ("blue", "green", "red") and "nir08" not in BANDS


def test_classes_in_output_order_with_dynamic_worlds_palette():
    assert CLASSES[0] == "water" and CLASSES[4] == "crops" and CLASSES[6] == "built"  # the notebook's indices
    assert [PALETTE[c] for c in CLASSES] == [
        "#419BDF", "#397D49", "#88B053", "#7A87C6", "#E49635", "#DFC35A", "#C4281B", "#A59B8F", "#B39FE1",
    ]


def test_normalisation_is_the_notebooks_log_and_logistic():
    dn = np.full((9, 2, 3), 1000.0)
    x = normalise_dn(dn)
    assert x.dtype == np.float32 and x.shape == (9, 2, 3)
    p0, p1 = NORM_PERCENTILES[0]
    z = np.exp((np.log(1000 * 0.005 + 1) - p0) / p1 * 5 - 1)  # blue, written out once by hand
    assert x[0, 0, 0] == pytest.approx(z / (z + 1), rel=1e-6)
    assert normalise_dn(np.stack([dn, dn])).shape == (2, 9, 2, 3)  # batches too
    assert np.all((x > 0) & (x < 1))


def test_normalisation_refuses_another_band_count():
    with pytest.raises(DynamicWorldError, match="B02, B03, B04, B05, B06, B07, B08, B11, B12"):
        normalise_dn(np.zeros((10, 4, 4)))


# --- resampling as TensorFlow does it -------------------------------------------------------------------

SQUARES = torch.tensor([1, 4, 9, 16, 25, 36, 49], dtype=torch.float32)


@pytest.mark.parametrize(("n", "expected"), [
    (2, [2.5]), (3, [4.571428]), (5, [4.727273, 16.727272]), (7, [4.0, 16.941177, 38.285713]),
])
def test_antialiased_halving_matches_tensorflow(n, expected):
    """``tf.image.resize(x, n // 2, antialias=True)`` in TF 2.21 on 1, 4, 9, ... (odd n: scale (n // 2) / n)."""
    x = SQUARES[:n].view(1, 1, n, 1)
    np.testing.assert_allclose(tf_resize(x, (n // 2, 1), antialias=True).flatten().numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize(("n", "expected"), [
    (1, [1, 1, 1]), (2, [1, 1.3, 2.5, 3.7, 4]), (3, [1, 1.428571, 2.714286, 4, 6.142858, 8.285715, 9]),
])
def test_bilinear_upsampling_matches_tensorflow(n, expected):
    """``tf.image.resize(x, 2n + 1)`` (bilinear, half-pixel centres) in TF 2.21."""
    x = SQUARES[:n].view(1, 1, n, 1)
    np.testing.assert_allclose(tf_resize(x, (2 * n + 1, 1), antialias=False).flatten().numpy(), expected, rtol=1e-6)


def test_halving_an_even_size_is_a_1_3_3_1_filter_inside():
    index, weight = resize_taps(64, 32, antialias=True)
    np.testing.assert_array_equal(index[10, :4], [19, 20, 21, 22])
    np.testing.assert_allclose(weight[10, :4], np.array([1, 3, 3, 1]) / 8)
    np.testing.assert_allclose(weight[0, :3], np.array([3, 3, 1]) / 7, rtol=1e-6)  # the edge renormalises


def test_large_odd_sizes_resample_in_chunks_like_one_matrix():
    x = torch.randn(1, 2, 301, 5, generator=torch.Generator().manual_seed(0))
    index, weight = resize_taps(301, 150, antialias=True)
    dense = np.zeros((150, 301), np.float32)
    np.add.at(dense, (np.arange(150)[:, None], index), weight)
    expected = torch.from_numpy(dense) @ x
    torch.testing.assert_close(tf_resize(x, (150, 5), antialias=True), expected, rtol=1e-5, atol=1e-5)


# --- the architecture and its variables -----------------------------------------------------------------


def test_the_architecture_needs_146_variables_and_231209_numbers():
    shapes = expected_variables()
    assert len(shapes) == 146
    assert sum(int(np.prod(s)) for s in shapes.values()) == 231_209
    state = build_network().state_dict()
    assert len(state) == 146 and sum(t.numel() for t in state.values()) == 231_209


def test_a_wrong_shape_is_refused_in_one_line_naming_the_variable():
    variables = {name: np.zeros(shape, np.float32) for name, shape in expected_variables().items()}
    check_variables(variables)
    variables["conv2d_5/kernel"] = np.zeros((1, 1, 64, 95), np.float32)
    with pytest.raises(DynamicWorldError, match=r"conv2d_5/kernel has shape \(1, 1, 64, 95\), expected \(1, 1, 64, 96\)") as err:
        check_variables(variables)
    assert "\n" not in str(err.value)


def test_a_missing_or_unknown_variable_is_refused():
    variables = {name: np.zeros(shape, np.float32) for name, shape in expected_variables().items()}
    del variables["batch_normalization_23/moving_variance"]
    with pytest.raises(DynamicWorldError, match="batch_normalization_23/moving_variance is missing"):
        check_variables(variables)
    variables = {name: np.zeros(shape, np.float32) for name, shape in expected_variables().items()}
    variables["conv2d_15/kernel"] = np.zeros((1, 1, 9, 9), np.float32)
    with pytest.raises(DynamicWorldError, match="unexpected variable conv2d_15/kernel"):
        check_variables(variables)


@pytest.mark.parametrize(("height", "width"), [(2, 2), (3, 5), (33, 49), (64, 65)])
def test_any_size_from_2_px_gives_logits_of_that_size(height, width):
    with torch.inference_mode():
        out = build_network()(torch.rand(2, 9, height, width))
    assert out.shape == (2, 9, height, width)


def test_a_single_pixel_row_is_refused():
    with pytest.raises(DynamicWorldError, match="at least 2 x 2 pixels"):
        build_network()(torch.rand(1, 9, 1, 8))


def test_git_commit_reads_head_and_packed_refs(tmp_path):
    git = tmp_path / ".git"
    git.mkdir()
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{REVISION} refs/heads/main\n")
    assert git_commit(tmp_path) == REVISION
    (git / "HEAD").write_text(REVISION[::-1] + "\n")  # a detached HEAD
    assert git_commit(tmp_path) == REVISION[::-1]
    assert git_commit(tmp_path / "elsewhere") is None


# --- the real weights against TensorFlow ----------------------------------------------------------------


@pytest.fixture(scope="module")
def dw_folder(realdata) -> Path:
    return realdata / "models" / "dynamicworld"


@pytest.fixture(scope="module")
def network(dw_folder) -> torch.nn.Module:
    model = build_network()
    model.load_state_dict(load_savedmodel_weights(dw_folder), strict=True)
    return model


@pytest.fixture(scope="module")
def eurosat(realdata, dw_folder) -> tuple[list[str], np.ndarray]:
    """Class names and the DN (N, 9, 64, 64) of the 200 EuroSAT-MS patches, in the reference's order."""
    import rasterio

    files = json.loads((dw_folder / "reference" / "eurosat-ms-200__logits.json").read_text())["files"]
    dn = []
    for name in files:
        with rasterio.open(realdata / name) as src:
            dn.append(src.read()[EUROSAT_DW_BANDS])
    return [Path(f).parent.name for f in files], np.stack(dn)


@pytest.fixture(scope="module")
def port_logits(network, eurosat) -> np.ndarray:
    x = torch.from_numpy(normalise_dn(eurosat[1]))
    with torch.inference_mode():
        return torch.cat([network(batch) for batch in x.split(50)]).numpy()


@pytest.fixture(scope="module")
def reference_logits(dw_folder) -> np.ndarray:
    return np.load(dw_folder / "reference" / "eurosat-ms-200__logits.npy")


def test_the_port_gives_tensorflows_logits_on_200_real_patches(port_logits, reference_logits):
    assert port_logits.shape == reference_logits.shape == (200, 9, 64, 64)
    max_diff = float(np.abs(port_logits - reference_logits).max())
    agreement = float((port_logits.argmax(1) == reference_logits.argmax(1)).mean())
    print(f"\nDynamic World port vs TensorFlow, 200 EuroSAT-MS patches: max |logit diff| {max_diff:.3g}, "
          f"per-pixel argmax agreement {agreement:.5%}")
    assert max_diff < 1e-3
    assert agreement >= 0.999


def _crosswalk_share(labels: list[str], logits: np.ndarray) -> tuple[int, int]:
    """Patches of the 8 crosswalked classes whose class of highest mean softmax is the expected one."""
    probs = torch.softmax(torch.from_numpy(logits), dim=1).mean((2, 3)).numpy()
    picked = [(label, CLASSES[int(p.argmax())]) for label, p in zip(labels, probs) if label in CROSSWALK]
    return sum(CROSSWALK[label] == dw for label, dw in picked), len(picked)


def test_the_crosswalk_share_is_the_same_as_tensorflows(eurosat, port_logits, reference_logits):
    labels = eurosat[0]
    port, n = _crosswalk_share(labels, port_logits)
    reference, _ = _crosswalk_share(labels, reference_logits)
    print(f"\nEuroSAT -> Dynamic World crosswalk on {n} patches of 8 classes: port {port}/{n}, TensorFlow {reference}/{n}")
    assert n == 160
    assert port == reference


@pytest.mark.parametrize(("height", "width", "pixels"), [
    # TF 2.21 logits of AnnualCrop_1 cropped to the top-left height x width (odd: floor halving).
    (33, 49, {(0, 0): [-7.14749, -7.60615, -6.54445, -7.35947, -4.8314, -6.31543, -7.25069, -5.83644, -7.84069],
              (16, 24): [-7.7792, -7.91912, -5.2602, -7.93289, -6.11926, -6.42062, -7.85384, -6.62462, -7.8981],
              (32, 48): [-7.70992, -7.3303, -6.15557, -7.54478, -5.16547, -7.09176, -7.64854, -7.60891, -8.17539]}),
    (3, 5, {(0, 0): [-6.94043, -6.48254, -5.88314, -6.83877, -4.99727, -4.82401, -6.04887, -4.80281, -6.68274],
            (2, 4): [-6.88214, -6.76148, -6.02894, -6.80546, -5.18331, -5.13519, -6.14807, -5.0769, -6.90094]}),
])
def test_odd_sizes_give_tensorflows_logits(network, eurosat, height, width, pixels):
    x = torch.from_numpy(normalise_dn(eurosat[1][0, :, :height, :width]))[None]
    with torch.inference_mode():
        out = network(x)[0].numpy()
    assert out.shape == (9, height, width)
    for (row, col), expected in pixels.items():
        np.testing.assert_allclose(out[:, row, col], expected, atol=1e-4)


# --- import: safetensors + model card, loaded without pickle --------------------------------------------


def test_import_writes_safetensors_and_a_card_that_load_back(dw_folder, network, tmp_path):
    weights = import_dynamicworld(dw_folder / "model" / "forward", tmp_path, revision=REVISION)
    assert weights == tmp_path / "model.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]  # no temp files left
    card = ModelCard.read(tmp_path / "model.json")
    assert card.family == "per-pixel" and card.model_id == "google/dynamicworld"
    assert card.source.commit == REVISION and card.licence == "Apache-2.0" and card.source.url == SOURCE_REPOSITORY
    assert card.notice.startswith("This source code is available under an Apache 2 open source license")
    assert "National Geographic and the World Resources Institute" in card.notice
    assert card.citation.doi == "10.1038/s41597-022-01307-4" and card.processing_level == "L1C"
    assert card.bands == list(BANDS) and card.resampling == "bilinear"
    assert card.normalisation.kind == "dynamicworld-log" and card.normalisation.percentiles == list(NORM_PERCENTILES)
    assert card.classes == list(CLASSES) == list(card.legend.names) and card.legend.codes == tuple(range(1, 10))
    assert [c.colour for c in card.legend.classes] == [PALETTE[c] for c in CLASSES]
    assert card.pixel.size_multiple == 2 and card.pixel.halo_px % 2 == 0
    assert card.metrics["parameters"] == 231_209 and card.sha256 == sha256_file(weights)

    loaded = load_network(weights)
    x = torch.rand(1, 9, 21, 18, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), network(x), rtol=0, atol=0)


def test_import_finds_model_forward_in_the_repository_folder(dw_folder, tmp_path):
    assert import_dynamicworld(dw_folder, tmp_path).is_file()
    assert ModelCard.read(tmp_path / "model.json").source.commit is None  # no .git, no revision


def test_a_folder_without_the_savedmodel_is_refused(tmp_path):
    with pytest.raises(DynamicWorldError, match="expected model/forward/saved_model.pb"):
        load_savedmodel_weights(tmp_path)


def test_other_safetensors_are_refused_by_name(tmp_path):
    from safetensors.torch import save_file

    save_file({"backbone.fc.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(DynamicWorldError, match="not Dynamic World weights: missing tensor"):
        load_network(tmp_path / "other.safetensors")
    save_file({key: torch.zeros(1) for key in build_network().state_dict()}, str(tmp_path / "flat.safetensors"))
    with pytest.raises(DynamicWorldError, match=r"tensor batch_normalization.bias has shape \(1,\), expected \(64,\)"):
        load_network(tmp_path / "flat.safetensors")
    with pytest.raises(DynamicWorldError, match="no Dynamic World weights"):
        load_network(tmp_path / "absent.safetensors")
