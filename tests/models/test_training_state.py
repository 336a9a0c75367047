"""models.training.state: the learning-curve log, the resumable state, and the best weights so far."""

import pytest
import torch

from models.training.state import (
    BestWeights,
    CheckpointResumeError,
    EpochLog,
    load_training_state,
    save_training_state,
)


def test_the_log_writes_every_key_of_every_row_and_reads_back(tmp_path):
    log = EpochLog(tmp_path / "m.csv", tmp_path / "m.json")
    log.add({"stage": "sr", "epoch": 0, "train_l1": 0.5})
    log.add({"stage": "classifier", "epoch": 0, "val_accuracy": 0.75})
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == "stage,epoch,train_l1,val_accuracy"
    assert EpochLog.read(tmp_path / "m.json") == log.rows
    assert EpochLog.read(tmp_path / "missing.json") == []


def test_a_resumable_state_round_trips_without_pickled_code(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_training_state(path, {"epoch": 3, "model": {"w": torch.ones(2)}})
    state = load_training_state(path)
    assert state["epoch"] == 3 and torch.equal(state["model"]["w"], torch.ones(2))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointResumeError, match="delete it to start over"):
        load_training_state(path)


def test_the_best_weights_are_a_copy_of_the_first_best_epoch():
    model = torch.nn.Linear(1, 1, bias=False)
    best = BestWeights()
    for epoch, score in enumerate([0.2, 0.5, 0.5, 0.1]):
        with torch.no_grad():
            model.weight.fill_(epoch)
        best.offer(score, epoch, model)
    assert best.epoch == 1 and best.score == 0.5 and float(best.state["weight"]) == 1.0
