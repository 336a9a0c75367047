"""models.splits: evaluation data never overlap what the weights were trained on."""

import pytest

from models.splits import (
    LeakageError,
    assert_held_out,
    ids_digest,
    read_split_record,
    write_split_record,
)


def test_evaluation_data_sharing_patches_or_groups_with_training_is_refused():
    with pytest.raises(LeakageError, match="were used in training"):
        assert_held_out({"a/1", "a/2"}, {"a"}, ["b/1", "a/2"], ["b", "a"], split_by_group=False)
    with pytest.raises(LeakageError, match="groups"):
        assert_held_out({"a/1"}, {"a"}, ["a/9"], ["a"], split_by_group=True)
    assert_held_out({"a/1"}, {"a"}, ["b/1"], ["b"], split_by_group=True)


def test_the_split_record_is_written_beside_the_weights_and_read_back(tmp_path):
    weights = tmp_path / "toy.safetensors"
    written = write_split_record(weights, ["A/2", "A/1"], ["A", "A"], ["B"])
    assert (tmp_path / "toy.split.json").is_file()
    assert read_split_record(weights) == written == {
        "train_ids": ["A/1", "A/2"], "train_groups": ["A"], "validation_groups": ["B"], "split_by": "group",
    }


def test_weights_without_a_split_record_cannot_be_evaluated_as_held_out(tmp_path):
    with pytest.raises(LeakageError, match="--unverified"):
        read_split_record(tmp_path / "toy.safetensors")


def test_the_ids_digest_ignores_order():
    assert ids_digest(["b", "a"]) == ids_digest(["a", "b"]) != ids_digest(["a"])
