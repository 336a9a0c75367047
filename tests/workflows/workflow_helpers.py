"""Regions over the demo world for the workflow tests: files, dates and the CLI as a process.

The test region is a 6 x 6 cell corner of the demo AOI across 12°E (both UTM zones), cut into
2 x 2 cell chunks, so a run is quick and a new scene in one zone leaves some chunks untouched.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console


REPO = Path(__file__).resolve().parents[2]

# Window of the last 30 days: on 2024-07-05 it holds 32TQR 06-12, 07-02 and 33TTL 06-17, 06-27;
# on 2024-07-08 also 33TTL 07-07 (67.5 % cloud, hence max_cloud 70).
FIRST_AS_OF = date(2024, 7, 5)
NEW_SCENE_AS_OF = date(2024, 7, 8)
NEW_SCENE = "S2B_33TTL_20240707_0_L2A"

SMALL_AOI = {
    "type": "Polygon",
    "coordinates": [[[11.95, 45.36], [12.04, 45.36], [12.04, 45.42], [11.95, 45.42], [11.95, 45.36]]],
}


# Set once per session by tests/workflows/conftest.py: random `tiny` weights, so the workflow
# tests exercise runs, ledgers and faults without depending on the committed demo weights.
MODEL: dict[str, Path] = {}


def region_dict(root: Path, **overrides: Any) -> dict[str, Any]:
    region = {
        "model": str(MODEL["path"]) if "path" in MODEL else None,
        "name": "testland",
        "source": "local",
        "aoi": SMALL_AOI,
        "window": {"last_days": 30},
        "max_cloud": 70,
        "root": str(root),
        "schedule": "0 4 * * *",
        "workers": 2,
        "cells_per_chunk": 2,
        # One window per 1.2 km cell: these tests are about runs, not detail, and stay fast.
        "cell_size": 1200,
        "stride": 120,
        "dense": False,
    }
    region.update(overrides)
    return {k: v for k, v in region.items() if v is not None}


def write_region(folder: Path, root: Path, file_name: str = "testland.yaml", **overrides: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    path.write_text(yaml.safe_dump(region_dict(root, **overrides), sort_keys=False), encoding="utf-8")
    return path


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def landcover_cli(*args: str, **kwargs: Any) -> subprocess.Popen:
    """`landcover <args>` with the workflow commands mounted, as its own process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "workflows", *args], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )
