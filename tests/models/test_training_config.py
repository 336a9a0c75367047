"""models.training.config: a training config is validated strictly and refused in one line."""

import pytest

from models.training.config import TrainConfigError, load_config


def test_config_refuses_unknown_keys_in_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain: {source: patches}\nvalidation: {source: patches}\nclassifer: {epochs: 3}\n")
    with pytest.raises(TrainConfigError, match=r"classifer: unknown key") as err:
        load_config(path)
    assert "\n" not in str(err.value)

def test_every_missing_or_wrong_field_is_named_in_one_message(tmp_path):
    """The README's old one-line config lacked `name` and `validation`: both are named at once."""
    path = tmp_path / "c.yaml"
    path.write_text("train: {source: user-labels, path: l.gpkg, layer: to_label, imagery: c.tif}\nseed: many\n")
    with pytest.raises(TrainConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message
    for fragment in ("name: missing", "validation: missing", "seed: Input should be a valid integer", "landcover finetune"):
        assert fragment in message


def test_a_timm_config_names_every_problem_too(tmp_path):
    from models.training.timm import TimmTrainError, load_timm_config

    path = tmp_path / "t.yaml"
    path.write_text("family: timm\nepochs: 0\ntrain: {source: demo-world}\n")
    with pytest.raises(TimmTrainError) as err:
        load_timm_config(path)
    assert all(f in str(err.value) for f in ("name: missing", "validation: missing", "epochs: Input should be greater"))


def test_config_refuses_an_unknown_profile(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nprofile: huge\ntrain: {source: patches}\nvalidation: {source: patches}\n")
    with pytest.raises(TrainConfigError, match="unknown profile 'huge'"):
        load_config(path)

def test_the_demo_config_is_valid_and_made_the_committed_weights():
    from models.card import ModelCard

    cfg = load_config("models/configs/demo.yaml")
    card = ModelCard.read(cfg.output_dir / f"{cfg.name}.json")
    assert cfg.synthetic and card.training_data.synthetic
    assert cfg.profile == card.profile == "compact-nosr" and cfg.save_half
    weights = cfg.output_dir / f"{cfg.name}.safetensors"
    assert weights.stat().st_size < 8 * 2**20  # a few MB: fits in the repository
    assert cfg.train.world_seed != cfg.validation.world_seed  # other landscape held out
