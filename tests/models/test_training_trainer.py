"""models.training.trainer: the session, epoch loop and optimisation step both model families train on."""

import torch

from models.classifier import SRClassifier
from models.profiles import get_profile
from models.training.sr_classifier import make_loss
from models.training.trainer import (
    NoProgress,
    Session,
    Stage,
    batches,
    run_stage,
    train_step,
)


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
    forward = lambda inp: model.classify(inp)[0]
    model.train()
    torch.manual_seed(1)  # same dropout masks before and after
    before = train_step(forward, params, x, y, opt, loss_fn, grad_clip=1.0)
    torch.manual_seed(1)
    with torch.no_grad():
        after = float(loss_fn(forward(x), y))
    assert after < before


class CountingStage(Stage):
    """A stage that records the order its hooks run in."""

    label = "count"
    steps_per_epoch = 2

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.rows: list[dict] = []

    def train_epoch(self, epoch, advance):
        self.calls.append(f"train {epoch}")
        for _ in range(self.steps_per_epoch):
            advance("")
        return {"epoch": epoch}

    def validate(self, epoch):
        self.calls.append(f"validate {epoch}")
        return {"score": epoch / 10}

    def end_epoch(self, epoch, row):
        self.calls.append(f"end {epoch}")
        self.rows.append(row)


def test_a_stage_trains_then_validates_then_keeps_each_epoch_from_where_it_resumes():
    stage = CountingStage()
    run_stage(stage, 1, 3, NoProgress())
    assert stage.calls == ["train 1", "validate 1", "end 1", "train 2", "validate 2", "end 2"]
    assert [set(r) for r in stage.rows] == [{"epoch", "score", "seconds"}] * 2


def test_a_session_seeds_the_networks_and_the_data_draws():
    def draws() -> tuple[torch.Tensor, torch.Tensor]:
        session = Session.start(seed=7, device="cpu", threads=1)
        return torch.rand(3), torch.rand(3, generator=session.generator)

    (net_a, data_a), (net_b, data_b) = draws(), draws()
    assert torch.equal(net_a, net_b) and torch.equal(data_a, data_b)


def test_batches_cover_every_sample_once():
    shuffled = torch.cat(list(batches(10, 4, torch.Generator().manual_seed(0))))
    assert sorted(shuffled.tolist()) == list(range(10))
    assert [len(b) for b in batches(10, 4, None)] == [4, 4, 2]
