"""models.training.schedule: the seed's warm-up + cosine learning rate and the EMA of the weights."""

import pytest
import torch

from models.classifier import SRClassifier
from models.profiles import get_profile
from models.training.schedule import build_ema, build_scheduler, warmup_cosine


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

def tiny_model():
    torch.manual_seed(0)
    return SRClassifier(get_profile("tiny"))

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
