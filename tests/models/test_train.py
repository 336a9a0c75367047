import pytest
import torch

from models.classifier import SRClassifier
from models.profiles import get_profile
from models.train import (
    CheckpointResumeError,
    TrainConfigError,
    augment,
    build_ema,
    build_scheduler,
    load_config,
    load_training_state,
    make_loss,
    random_crops,
    relativistic_losses,
    run_training,
    smooth_multi_hot,
    train_step,
    warmup_cosine,
)
from training_toys import small_run_config


def test_warmup_then_cosine_at_known_epochs():
    # the seed: 5 warm-up epochs, then half a cosine to zero at the last epoch
    assert [warmup_cosine(e, 5, 30) for e in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert warmup_cosine(5, 5, 30) == pytest.approx(1.0)
    assert warmup_cosine(17, 5, 30) == pytest.approx(0.5)  # half-way through the cosine
    assert warmup_cosine(29, 5, 30) == pytest.approx(0.0)


def test_scheduler_steps_the_learning_rate_per_epoch():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    sched = build_scheduler(opt, warmup=5, total=30)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(6e-5) and lrs[4] == pytest.approx(3e-4)
    assert lrs[17] == pytest.approx(1.5e-4) and lrs[29] == pytest.approx(0.0, abs=1e-12)


def test_label_smoothing_single_label_matches_the_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    target = torch.tensor([[0.0, 1.0, 0.0]])
    logp = torch.log_softmax(logits, dim=1)[0]
    eps = 0.15
    expected = -((1 - eps) * logp[1] + eps / 3 * logp.sum())
    assert float(make_loss("single", eps)(logits, target)) == pytest.approx(float(expected), rel=1e-6)


def test_single_label_mode_trains_on_the_lowest_index_of_a_multi_hot():
    logits = torch.tensor([[0.0, 5.0, 5.0]])
    both = torch.tensor([[0.0, 1.0, 1.0]])
    assert float(make_loss("single", 0.0)(logits, both)) == pytest.approx(float(make_loss("single", 0.0)(logits, torch.tensor([[0.0, 1.0, 0.0]]))))


def test_multi_label_smoothing_pulls_targets_towards_one_half():
    assert smooth_multi_hot(torch.tensor([1.0, 0.0]), 0.15).tolist() == pytest.approx([0.925, 0.075])


def tiny_model():
    torch.manual_seed(0)
    return SRClassifier(get_profile("tiny"))


def test_one_training_step_reduces_the_loss_on_a_fixed_batch():
    model = tiny_model()
    model.freeze_sr()
    with torch.no_grad():
        x = model.classifier_input(torch.rand(8, 3, 32, 32) * 2 - 1)
    y = torch.nn.functional.one_hot(torch.arange(8) % 3, 19).float()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-4, weight_decay=1e-5)
    loss_fn = make_loss("single", 0.15)
    forward = lambda inp: model.classify(inp)[0]  # noqa: E731
    model.train()
    torch.manual_seed(1)  # same dropout masks before and after
    before = train_step(forward, params, x, y, opt, loss_fn, grad_clip=1.0)
    torch.manual_seed(1)
    with torch.no_grad():
        after = float(loss_fn(forward(x), y))
    assert after < before


def test_ema_follows_the_model_with_a_lag():
    model = tiny_model()
    ema = build_ema(model, decay=0.9995, warmup=True)
    ema.update_parameters(model)  # first update copies
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update_parameters(model)
    raw = model.backbone.fc[1].weight
    avg = ema.module.backbone.fc[1].weight
    # warm-up decay after one update is (1+1)/(10+1): the EMA moves 9/11 of the way
    assert torch.allclose(avg, raw - 2 / 11, atol=1e-5)


def test_augment_keeps_shapes_and_values_in_range_and_replays_from_the_generator():
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    # geometry only: a dihedral transform keeps each image's pixel multiset
    g = augment(x, torch.Generator().manual_seed(3), jitter=0.0)
    assert torch.allclose(g.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


def test_sr_crops_stay_aligned_with_the_reference():
    lr = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    ref = torch.nn.functional.interpolate(lr, scale_factor=8, mode="nearest")
    lc, rc = random_crops(lr, ref, 8, 8, torch.Generator().manual_seed(0))
    assert lc.shape == (2, 3, 8, 8) and rc.shape == (2, 3, 64, 64)
    assert torch.equal(torch.nn.functional.interpolate(lc, scale_factor=8, mode="nearest"), rc)


def test_relativistic_gan_losses_reward_the_right_side():
    real, fake = torch.full((4, 1), 3.0), torch.full((4, 1), -3.0)
    d_loss, g_loss = relativistic_losses(real, fake)
    assert d_loss < 0.01 < g_loss


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


# --------------------------------------------------------------------------- whole runs


def test_training_saves_the_ema_weights_not_the_raw_ones(tmp_path):
    from models.checkpoint import load_state_dict

    cfg = small_run_config(tmp_path)
    result = run_training(cfg, progress=False)
    saved = load_state_dict(result.weights)
    state = load_training_state(tmp_path / "work" / "toy" / "checkpoint.pt")
    raw = state["model"]
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    key = "backbone.fc.1.weight"
    assert not torch.equal(raw[key], ema[key])
    assert torch.equal(saved[key], ema[key])
    assert result.card.metrics["n_train"] == 24 and result.card.metrics["train_groups"] == "A"
    rows = result.log_json.read_text()
    assert '"val_accuracy"' in rows and (tmp_path / "out" / "toy.metrics.csv").is_file()


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import models.train as train
    from models.checkpoint import load_state_dict

    straight = run_training(small_run_config(tmp_path / "s"), progress=False)

    calls = {"n": 0}
    real_validate = train._validate

    def crash_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    cfg = small_run_config(tmp_path / "r")
    monkeypatch.setattr(train, "_validate", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, progress=False)
    monkeypatch.setattr(train, "_validate", real_validate)
    resumed = run_training(cfg, progress=False)
    a, b = load_state_dict(straight.weights), load_state_dict(resumed.weights)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert [r["epoch"] for r in train.EpochLog.read(resumed.log_json)] == [0, 1]


def test_resuming_with_a_changed_config_is_refused(tmp_path):
    cfg = small_run_config(tmp_path, epochs=1)
    run_training(cfg, progress=False)
    changed = cfg.model_copy(update={"classifier": cfg.classifier.model_copy(update={"lr": 1e-3})})
    with pytest.raises(CheckpointResumeError, match="different config"):
        run_training(changed, progress=False)


# --------------------------------------------------------------------------- sources handed in


def test_a_source_models_cannot_load_alone_names_the_command_that_can(tmp_path):
    from models.train import DataSpec, load_source

    with pytest.raises(TrainConfigError, match=r"`landcover train") as err:
        load_source(DataSpec(source="demo-world"))
    assert "\n" not in str(err.value) and "demo-world" in str(err.value)
    cfg = small_run_config(tmp_path).model_copy(update={"validation": DataSpec(source="demo-world")})
    with pytest.raises(TrainConfigError, match="landcover train"):
        run_training(cfg, progress=False)
    assert not (tmp_path / "work").exists()  # refused before any work


def test_a_handed_in_loader_gets_the_spec_and_its_groups_are_selected(tmp_path):
    from models.datasets import PatchSet
    from models.train import DataSpec, load_source
    from training_toys import colour_patches

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
    from models.train import DataSpec

    cfg = small_run_config(tmp_path, epochs=1)
    cfg = cfg.model_copy(update={"validation": DataSpec(source="demo-world")})
    held_out = PatchSet.load(tmp_path / "b.npz")
    result = run_training(cfg, progress=False, sources={"demo-world": lambda spec, keep: held_out})
    assert result.card.metrics["n_validation"] == 12 and result.card.metrics["validation_groups"] == "B"


def test_the_training_cli_alone_refuses_a_demo_world_config_in_one_line(tmp_path, tiny_weights):
    from typer.testing import CliRunner

    from models import train_cli

    config = tmp_path / "c.yaml"
    config.write_text("name: x\nprofile: tiny\ntrain: {source: demo-world}\nvalidation: {source: demo-world}\n")
    result = CliRunner().invoke(train_cli.app, ["evaluate", str(tiny_weights), "--config", str(config)])
    assert isinstance(result.exception, TrainConfigError), result.output
    assert "landcover train" in str(result.exception)
