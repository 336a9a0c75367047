"""models.training.sources: built-in sources, and loaders handed in for the sources models/ cannot load alone."""

import pytest
from training_toys import small_run_config

from models.training.config import DataSpec, TrainConfigError
from models.training.sources import load_source
from models.training.sr_classifier import run_training


def test_a_source_models_cannot_load_alone_names_the_command_that_can(tmp_path):

    with pytest.raises(TrainConfigError, match=r"`landcover train") as err:
        load_source(DataSpec(source="demo-world"))
    assert "\n" not in str(err.value) and "demo-world" in str(err.value)
    cfg = small_run_config(tmp_path).model_copy(update={"validation": DataSpec(source="demo-world")})
    with pytest.raises(TrainConfigError, match="landcover train"):
        run_training(cfg, progress=False)
    assert not (tmp_path / "work").exists()  # refused before any work

def test_a_handed_in_loader_gets_the_spec_and_its_groups_are_selected(tmp_path):
    from training_toys import colour_patches

    from models.datasets import PatchSet

    calls = []

    def loader(spec, keep_windows):
        calls.append((spec.world_seed, keep_windows))
        return PatchSet.concat([colour_patches(6, "X", 0), colour_patches(4, "Y", 1)])

    spec = DataSpec(source="demo-world", world_seed=3, exclude_groups=["X"])
    data = load_source(spec, keep_windows=True, sources={"demo-world": loader})
    assert calls == [(3, True)] and set(data.groups) == {"Y"} and len(data) == 4
    with pytest.raises(TrainConfigError, match="no patches after group selection"):
        load_source(DataSpec(source="demo-world", groups=["Z"]), sources={"demo-world": loader})
    with pytest.raises(ValueError, match="built-in sources patches"):
        load_source(spec, sources={"patches": loader})

def test_training_runs_on_a_handed_in_source(tmp_path):
    from models.datasets import PatchSet

    cfg = small_run_config(tmp_path, epochs=1)
    cfg = cfg.model_copy(update={"validation": DataSpec(source="demo-world")})
    held_out = PatchSet.load(tmp_path / "b.npz")
    result = run_training(cfg, progress=False, sources={"demo-world": lambda spec, keep: held_out})
    assert result.card.metrics["n_validation"] == 12 and result.card.metrics["validation_groups"] == "B"

def test_training_commands_without_the_demo_loader_refuse_a_demo_world_config_in_one_line(tmp_path, tiny_weights):
    from typer.testing import CliRunner

    import typer

    from cli.train import register

    app = typer.Typer()
    register(app)  # no loader handed in for the demo world: models/ cannot load it alone
    config = tmp_path / "c.yaml"
    config.write_text("name: x\nprofile: tiny\ntrain: {source: demo-world}\nvalidation: {source: demo-world}\n")
    result = CliRunner().invoke(app, ["evaluate", str(tiny_weights), "--config", str(config)])
    assert isinstance(result.exception, TrainConfigError), result.output
    assert "landcover train" in str(result.exception)
