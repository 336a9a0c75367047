"""One demo map per test session (the default model, as `make map` makes it), the demo truth on
one grid, and a hand-made five-class map folder with its own legend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rich.console import Console

FIVE_CLASSES = (  # code, name, colour: a legend that is not BigEarthNet's
    (1, "Open water", "1F78B4"),
    (2, "Tree cover", "33A02C"),
    (3, "Cropland", "FFD92F"),
    (4, "Built-up", "E31A1C"),
    (5, "Bare ground", "B15928"),
)
FIVE_CLASS_CRS = "EPSG:32632"
FIVE_CLASS_TRANSFORM = Affine(20.0, 0, 500_000.0, 0, -20.0, 5_000_000.0)  # 20 m cells


def five_class_codes() -> np.ndarray:
    """60 x 60 cells: five bands of rows (classes 1..5, very unequal in area) and a nodata corner."""
    codes = np.repeat(np.array([1] * 30 + [2] * 15 + [3] * 8 + [4] * 5 + [5] * 2, dtype=np.uint8)[:, None], 60, axis=1)
    codes[:10, :10] = 0
    return codes


def write_five_class_map(folder: Path, *, with_item: bool = True) -> Path:
    """landcover.tif (palette, CLASS_NAMES tag) and, unless told, item.json with the 5-class legend."""
    folder.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": 60, "height": 60, "count": 1, "dtype": "uint8", "nodata": 0,
               "crs": FIVE_CLASS_CRS, "transform": FIVE_CLASS_TRANSFORM}
    with rasterio.open(folder / "landcover.tif", "w", **profile) as dst:
        dst.write(five_class_codes(), 1)
        dst.write_colormap(1, {code: tuple(int(rgb[i:i + 2], 16) for i in (0, 2, 4)) + (255,) for code, _, rgb in FIVE_CLASSES})
        dst.update_tags(CLASS_NAMES=";".join(["0=No data"] + [f"{c}={n}" for c, n, _ in FIVE_CLASSES]))
    if with_item:
        classes = [{"value": 0, "name": "no_data", "title": "No data", "nodata": True}] + [
            {"value": c, "name": n.lower().replace(" ", "_"), "title": n, "description": n, "color_hint": rgb}
            for c, n, rgb in FIVE_CLASSES
        ]
        item = {"type": "Feature", "id": "five-classes", "properties": {},
                "assets": {"landcover": {"href": "landcover.tif", "classification:classes": classes}}}
        (folder / "item.json").write_text(json.dumps(item), encoding="utf-8")
    return folder


@pytest.fixture
def five_class_map(tmp_path) -> Path:
    return write_five_class_map(tmp_path / "five")


@pytest.fixture(scope="session")
def assess_demo_map(demo_world, tmp_path_factory) -> Path:
    """The demo map with the default model and settings (~25 s), made once per session; tests
    copy it before writing into it."""
    from pipeline.run import run_map
    from pipeline.settings import MapConfig

    out = tmp_path_factory.mktemp("assess") / "demo-map"
    run_map(MapConfig(aoi=demo_world.aoi_path, out=out, source="local", workers=2), Console(quiet=True))
    return out


@pytest.fixture
def demo_map_copy(assess_demo_map, tmp_path) -> Path:
    return Path(shutil.copytree(assess_demo_map, tmp_path / "map"))


@pytest.fixture(scope="session")
def demo_truth(demo_world, tmp_path_factory) -> Path:
    from pipeline.demo.truth import write_truth_mosaic

    return write_truth_mosaic(demo_world, tmp_path_factory.mktemp("truth") / "truth.tif")
