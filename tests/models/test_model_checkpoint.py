"""Checkpoint I/O: pickled code is refused, safetensors round-trips exactly, cards travel with weights."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from models.card import CardError, ModelCard
from models.checkpoint import (
    CheckpointError,
    card_path,
    infer_profile,
    load_model,
    load_state_dict,
    save_model,
    sha256_file,
    strip_module_prefix,
)
from models.classifier import SRClassifier
from models.profiles import get_profile
from pipeline.errors import LandcoverError


class WritesMarker:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"conv_first.weight": torch.zeros(1), "payload": WritesMarker(str(marker))}, path)

    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)

    assert not marker.exists()
    message = str(info.value)
    assert "\n" not in message and "pickled code" in message and str(path) in message
    assert isinstance(info.value, LandcoverError)


def test_the_malicious_fixture_really_runs_code_when_unpickled_unsafely(tmp_path):
    # Guards the test above: the payload is live, so "marker not created" means the loader refused it.
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(WritesMarker(str(marker))))
    assert marker.read_text() == "pwned"


def test_plain_torch_state_dict_with_dataparallel_prefix_loads(tmp_path):
    torch.manual_seed(0)
    model = SRClassifier(get_profile("tiny"))
    path = tmp_path / "seed_style.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)

    loaded, card = load_model(path, profile="tiny")

    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert card.profile == "tiny" and card.variant == "seed-classifier"
    assert card.sha256 == sha256_file(path)
    assert "no model card" in card.training_data.description


def test_save_then_load_is_bit_exact_and_fills_the_card(tmp_path):
    torch.manual_seed(3)
    model = SRClassifier(get_profile("tiny"), variant="esrgan")
    path = tmp_path / "w.safetensors"

    written = save_model(model, ModelCard.for_profile("tiny", variant="esrgan", metrics={"accuracy": 0.5}), path)
    loaded, card = load_model(path)

    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert written.sha256 == sha256_file(path) == card.sha256
    assert card.variant == "esrgan" and loaded.variant == "esrgan"
    assert card.metrics == {"accuracy": 0.5}
    assert json.loads(card_path(path).read_text())["sha256"] == written.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.json", "w.safetensors"]  # no temp files left


def test_safetensors_without_a_card_still_name_their_profile_and_variant(tmp_path):
    model = SRClassifier(get_profile("tiny"), variant="esrgan")
    path = tmp_path / "w.safetensors"
    save_model(model, ModelCard.for_profile("tiny", variant="esrgan"), path)
    card_path(path).unlink()

    loaded, card = load_model(path)

    assert (card.profile, card.variant, loaded.variant) == ("tiny", "esrgan", "esrgan")
    assert "no model card" in card.training_data.description


def test_weights_that_changed_after_their_card_was_written_are_refused(tmp_path, tiny_weights):
    path = tmp_path / tiny_weights.name
    path.write_bytes(tiny_weights.read_bytes())
    card_path(path).write_text(card_path(tiny_weights).read_text())
    torch.manual_seed(9)
    other = SRClassifier(get_profile("tiny"))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, path)
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(path)


def test_the_profile_is_recognised_from_the_weights_when_there_is_no_card(tmp_path):
    for name in ("tiny", "small", "small-nosr", "compact-nosr"):
        state = SRClassifier(get_profile(name)).state_dict()
        assert infer_profile(state).name == name
    bare_sr = {k.removeprefix("sr_model."): v for k, v in SRClassifier(get_profile("tiny")).state_dict().items()
               if k.startswith("sr_model.")}
    assert infer_profile(bare_sr).name == "tiny"


def test_bare_sr_weights_load_as_sr_only_with_the_esrgan_variant(tmp_path):
    model = SRClassifier(get_profile("tiny"))
    path = tmp_path / "sr.pth"
    torch.save({k.removeprefix("sr_model."): v for k, v in model.state_dict().items() if k.startswith("sr_model.")}, path)

    loaded, card = load_model(path)

    assert card.variant == "esrgan"
    assert "classifier untrained" in card.training_data.description
    assert torch.equal(loaded.sr_model.conv_first.weight, model.sr_model.conv_first.weight)


def test_weights_for_another_profile_are_refused_with_one_line(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(SRClassifier(get_profile("tiny")).state_dict(), path)
    with pytest.raises(CheckpointError, match="do not fit profile 'small'") as info:
        load_model(path, profile="small")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"not a checkpoint", "not a readable torch checkpoint"), (None, "not found")],
)
def test_unreadable_files_give_one_line_errors(tmp_path, content, match):
    path = tmp_path / "w.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_state_dict(path)


def test_a_state_dict_of_an_unrelated_network_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a checkpoint of this model family"):
        load_model(path)


def test_strip_module_prefix_only_touches_the_front():
    assert list(strip_module_prefix({"module.backbone.module.x": torch.zeros(1)})) == ["backbone.module.x"]


def test_an_invalid_card_is_a_one_line_error(tmp_path, tiny_weights):
    path = tmp_path / tiny_weights.name
    path.write_bytes(tiny_weights.read_bytes())
    card_path(path).write_text(json.dumps({"profile": "tiny", "task": "regression"}))
    with pytest.raises(CardError, match="task"):
        load_model(path)


def test_save_model_writes_safetensors_only(tmp_path):
    with pytest.raises(CheckpointError, match=".safetensors"):
        save_model(SRClassifier(get_profile("tiny")), ModelCard.for_profile("tiny"), tmp_path / "w.pth")


def test_half_precision_weights_load_into_the_float32_model_and_predict_alike(tmp_path):
    import torch

    from models.card import ModelCard
    from models.checkpoint import load_model, save_model
    from models.classifier import SRClassifier
    from models.profiles import get_profile

    torch.manual_seed(0)
    model = SRClassifier(get_profile("tiny"), "esrgan").eval()
    card = ModelCard.for_profile("tiny", variant="esrgan")
    save_model(model, card, tmp_path / "full.safetensors")
    save_model(model, card, tmp_path / "half.safetensors", half=True)
    assert (tmp_path / "half.safetensors").stat().st_size < 0.6 * (tmp_path / "full.safetensors").stat().st_size
    loaded, _ = load_model(tmp_path / "half.safetensors")
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(loaded.eval()(x), model(x), atol=2e-2, rtol=2e-2)
