"""models.training.config: a training config is validated strictly and refused in one line."""

import pytest

from models.training.config import TrainConfigError, load_config


def test_config_refuses_unknown_keys_in_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain: {source: patches}\nvalidation: {source: patches}\nclassifer: {epochs: 3}\n")
    with pytest.raises(TrainConfigError, match=r"classifer: unknown key") as err:
        load_config(path)
    assert "\n" not in str(err.value)

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
