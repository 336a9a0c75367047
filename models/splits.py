"""The training split record, and the guard that keeps training data out of evaluation.

Training writes which patches and groups (tiles / spatial blocks) it used beside the weights
(``<name>.split.json``) and a digest of the patch ids into the model card. Evaluation reads both:
:func:`assert_held_out` refuses an evaluation set that shares a patch with training, or a group
when training was split by group. So a number in a card labelled "validation" cannot come from
training data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from models.errors import LandcoverError
from models.files import atomic_write_text


class LeakageError(LandcoverError):
    """The evaluation set overlaps the training set."""


def assert_held_out(
    train_ids: set[str],
    train_groups: set[str],
    eval_ids: Sequence[str],
    eval_groups: Sequence[str],
    *,
    split_by_group: bool,
) -> None:
    """Refuse an evaluation set that shares patches (or, for group splits, groups) with training."""
    shared = train_ids.intersection(eval_ids)
    if shared:
        raise LeakageError(
            f"{len(shared)} evaluation patches (e.g. {sorted(shared)[0]}) were used in training: "
            "evaluate on a held-out tile, block or split"
        )
    if split_by_group:
        groups = train_groups.intersection(eval_groups)
        if groups:
            raise LeakageError(
                f"evaluation groups {sorted(groups)[:3]} were used in training: evaluate on other tiles or blocks"
            )


def ids_digest(ids: list[str]) -> str:
    """sha256 of the sorted patch ids: identifies a training set in the model card."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def split_record_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".split.json")


def write_split_record(weights: Path, train_ids: Iterable[str], train_groups: Iterable[str],
                       validation_groups: Iterable[str]) -> dict[str, Any]:
    """Write the record of a group split beside ``weights``; returns what was written."""
    record = {
        "train_ids": sorted(train_ids), "train_groups": sorted(set(train_groups)),
        "validation_groups": sorted(set(validation_groups)), "split_by": "group",
    }
    atomic_write_text(split_record_path(weights), json.dumps(record, indent=0))
    return record


def read_split_record(weights: Path) -> dict[str, Any]:
    """The training split written beside the weights by ``landcover train``."""
    path = split_record_path(weights)
    if not path.is_file():
        raise LeakageError(
            f"no training split record {path.name} beside {Path(weights).name}: cannot prove the evaluation "
            "data are held out; pass --unverified to report the numbers as unverified"
        )
    return json.loads(path.read_text())
