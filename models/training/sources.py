"""The samples a training config names: built-in sources, and loaders handed in for the others."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models.training.config import DataSpec, TrainConfigError

SourceLoader = Callable[[DataSpec, bool], Any]
"""Loads a source models/ cannot load alone: ``loader(spec, keep_windows) -> PatchSet``.

The ``demo-world`` source is one: its loader (``pipeline.demo.dataset.demo_world_source``) lives
beside the demo, and the command line hands it in (``cli.train.register``), because
models/ never imports pipeline/.
"""

BUILTIN_SOURCES: tuple[str, ...] = ("patches", "user-labels", "bigearthnet-v1", "bigearthnet-v2")


def load_source(spec: DataSpec, *, keep_windows: bool = False, sources: Mapping[str, SourceLoader] | None = None) -> Any:
    """The samples a DataSpec names: a PatchSet (in memory) or a lazy BigEarthNet dataset.

    ``sources`` maps further source names (``demo-world``) to their loaders; they may not
    replace a built-in source. Group selection applies to every in-memory source.
    """
    from models import datasets as ds

    loader = loader_of(spec, sources)
    if loader is not None:
        data = loader(spec, keep_windows)
    elif spec.source == "patches":
        data = ds.PatchSet.load(_need(spec.path, "path: the .npz patch set"))
    elif spec.source == "user-labels":
        data = ds.user_label_patches(_need(spec.path, "path: the labelled GeoPackage"),
                                     _need(spec.imagery, "imagery: the reflectance raster the labels sit on"),
                                     layer=spec.layer, class_field=spec.class_field, window=spec.window)
    elif spec.source == "bigearthnet-v1":
        split_csv = Path(spec.split) if spec.split else None
        from models.bigearthnet import BigEarthNetV1

        return BigEarthNetV1(_need(spec.path, "path: the BigEarthNet-v1.0 folder"), split_csv)
    else:
        from models.bigearthnet import BigEarthNetV2

        return BigEarthNetV2(_need(spec.path, "path: the reBEN folder"), spec.split)
    if spec.groups is not None or spec.exclude_groups:
        data = data.select_groups(spec.groups, spec.exclude_groups)
    if len(data) == 0:
        raise TrainConfigError(f"the {spec.source} source yields no patches after group selection: check groups/exclude_groups")
    return data


def loader_of(spec: DataSpec, sources: Mapping[str, SourceLoader] | None) -> SourceLoader | None:
    """The injected loader of ``spec``'s source; None for a built-in source; an error naming the
    fix when the source needs a loader nobody supplied."""
    sources = sources or {}
    shadowed = sorted(set(sources) & set(BUILTIN_SOURCES))
    if shadowed:
        raise ValueError(f"source loaders may not replace the built-in sources {', '.join(shadowed)}")
    if spec.source in sources:
        return sources[spec.source]
    if spec.source in BUILTIN_SOURCES:
        return None
    raise TrainConfigError(
        f"the {spec.source} source is loaded by the landcover command line, not by models/ alone: "
        f"run this config with `landcover train CONFIG.yaml` (or `landcover evaluate --config`, "
        f"`landcover active-learn --simulate`)"
    )


def _need(value: Path | None, what: str) -> Path:
    if value is None:
        raise TrainConfigError(f"data source needs {what}")
    return value


def lr_images(source: Any, index: np.ndarray) -> np.ndarray:
    """uint8 LR patches of ``index`` from a PatchSet or a lazy dataset."""
    if hasattr(source, "images"):
        return source.images[index]
    return np.stack([source.image(int(i)) for i in index])


def ref_windows(source: Any, index: np.ndarray) -> np.ndarray:
    """uint8 full-resolution windows of ``index``: the SR stage's reference."""
    if getattr(source, "windows", None) is not None:
        return source.windows[index]
    if hasattr(source, "window"):
        return np.stack([source.window(int(i)) for i in index])
    raise TrainConfigError("the SR stage needs full-resolution windows: use a demo-world, user-labels or BigEarthNet source")
