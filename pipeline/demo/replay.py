"""The replay of a demo model's training data, for ``landcover finetune``.

A demo model was trained by a config in ``models/configs`` (its ``name`` is the weights' stem;
a fine-tuned model names the root of its lineage) on windows of a generated demo world, and
validated on another world. :func:`demo_replay` cuts the same worlds into the same labelled
windows - the card's bands, the config's window, stride and class share - so fine-tuning can
join the user's labels to the data the base learned from, and report agreement on the base's
own validation windows before and after.

A window's class is its majority class, as a user labels windows (``models.finetune``).

Windows are composited band by band (one band's dates in memory at a time, ~70 MB for a
2,400 px tile, where compositing every band at once peaks near 6 GB) and cached as uint16 DN in
the world's folder, so a second fine-tune reads them in a second.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

from pipeline.demo.world import DemoWorld, generate_world

if TYPE_CHECKING:
    from models.card import ModelCard
    from models.finetune import Replay
    from models.user_labels import LabelledWindows

CONFIGS = Path(__file__).resolve().parents[2] / "models" / "configs"
_CACHE_VERSION = 1


def training_config(name: str, configs: Path = CONFIGS) -> dict[str, Any] | None:
    """The training config (as a mapping) whose ``name`` is ``name``; None when there is none."""
    import yaml

    for path in sorted(configs.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if isinstance(raw, dict) and raw.get("name") == name:
            return raw | {"_path": str(path)}
    return None


def _band_composite(items: Sequence[Any], band: str, shape: tuple[int, int], clear: list[np.ndarray],
                    offsets: dict[str, int]) -> np.ndarray:
    """One band's NaN-median over the items' clear pixels, on the tile's grid."""
    from pipeline.load import band_scale, median_composite

    planes = []
    for item, ok in zip(items, clear, strict=True):
        with rasterio.open(item.assets[band].href) as src:
            coarser = src.height < shape[0] or src.width < shape[1]
            dn = src.read(1, out_shape=shape, resampling=Resampling.nearest if coarser else Resampling.bilinear)
        refl = (dn.astype(np.float32) - offsets[item.id]) * np.float32(band_scale(item, band))
        planes.append(np.where(ok, refl, np.nan))
    return median_composite(np.stack(planes), axis=0)


def _clear_masks(items: Sequence[Any], bands: Sequence[str], shape: tuple[int, int]) -> list[np.ndarray]:
    """Per item: clear where the SCL does not mask the pixel and no asked band is nodata (DN 0),
    as :func:`pipeline.demo.dataset.tile_composite` decides."""
    from pipeline.load import MASK_SCL

    masks = []
    for item in items:
        with rasterio.open(item.assets["scl"].href) as src:
            ok = ~np.isin(src.read(1, out_shape=shape, resampling=Resampling.nearest), list(MASK_SCL))
        for band in bands:
            with rasterio.open(item.assets[band].href) as src:
                ok &= src.read(1, out_shape=shape, resampling=Resampling.nearest) != 0
        masks.append(ok)
    return masks


def _tile_windows(world: DemoWorld, bands: Sequence[str], window: int, stride: int, min_share: float,
                  min_valid: float = 0.9) -> dict[str, Any]:
    import pystac
    from pyproj import Transformer

    from models.datasets import window_bounds, window_label, window_origins
    from pipeline.load import item_offsets

    items = [pystac.Item.from_dict(d) for d in world.items()]
    tag = f"world-s{world.seed}-{world.size_px}"
    out: dict[str, list] = {"dn": [], "targets": [], "majority": [], "ids": [], "bounds": []}
    for tile in world.tiles:
        tile_items = [it for it in items if it.properties.get("s2:mgrs_tile") == tile.mgrs]
        with rasterio.open(tile.truth_path) as src:
            truth, transform, crs = src.read(1), src.transform, src.crs
        offsets = item_offsets(tile_items, bands=bands)
        tile_items = [it for it in tile_items if it.id in offsets]
        clear = _clear_masks(tile_items, bands, truth.shape)
        refl = np.stack([_band_composite(tile_items, b, truth.shape, clear, offsets) for b in bands])
        del clear
        finite = np.isfinite(refl).all(axis=0)
        to_4326 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        for r, c in window_origins(truth.shape, window, stride):
            label = window_label(truth[r:r + window, c:c + window], min_share)
            usable = (truth[r:r + window, c:c + window] > 0) & finite[r:r + window, c:c + window]
            if label.majority < 0 or usable.mean() < min_valid:
                continue  # a nodata-heavy window is no evidence of any class
            win = refl[:, r:r + window, c:c + window]
            out["dn"].append(np.where(np.isfinite(win), np.clip(np.rint(np.nan_to_num(win) * 1e4), 1, 65535), 0)
                             .astype(np.uint16))
            out["targets"].append(label.multi_hot)
            out["majority"].append(label.majority)
            out["ids"].append(f"{tag}/{tile.mgrs}/r{r}_c{c}")
            x0, y0, x1, y1 = window_bounds(transform, r, c, window)
            xs, ys = to_4326.transform([x0, x1, x1, x0], [y0, y0, y1, y1])
            out["bounds"].append((min(xs), min(ys), max(xs), max(ys)))
        del refl
    return {
        "dn": np.stack(out["dn"]) if out["dn"] else np.zeros((0, len(bands), window, window), np.uint16),
        "targets": np.array(out["targets"], np.float32).reshape(len(out["ids"]), -1),
        "majority": np.array(out["majority"], np.int64), "ids": np.array(out["ids"]),
        "bounds": np.array(out["bounds"], np.float64).reshape(-1, 4),
    }


def world_windows(world: DemoWorld, bands: Sequence[str], *, window: int = 120, stride: int = 120,
                  min_share: float = 0.1) -> dict[str, Any]:
    """Labelled windows of every tile of ``world`` (cached in its folder): uint16 DN (N, bands, w, w),
    multi-hot targets in map-code order, majority class index, ids and EPSG:4326 footprints."""
    from models.files import atomic_write

    key = json.dumps([_CACHE_VERSION, list(bands), window, stride, min_share])
    path = world.root / "replay" / f"windows-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    data = _tile_windows(world, bands, window, stride, min_share)
    path.parent.mkdir(exist_ok=True)
    atomic_write(path, lambda tmp: np.savez(tmp, **data))
    return data


def _labelled(data: dict[str, Any], card: ModelCard, index: np.ndarray | None = None) -> LabelledWindows:
    from models.classes import CLASS_NAMES
    from models.user_labels import LabelledWindows

    idx = np.arange(len(data["ids"])) if index is None else index
    columns = [CLASS_NAMES.index(name) for name in card.classes]
    targets = data["targets"][idx][:, columns]
    # Each window's own class is its majority, what a user labelling it picks (models.finetune says why
    # single-label models are replayed so too).
    own = data["majority"][idx]
    main = np.array([columns.index(m) if m in columns else -1 for m in own], np.int64)  # -1: not an output
    if card.task != "multi-label":
        targets = np.zeros_like(targets)
        targets[main >= 0, main[main >= 0]] = 1.0
    return LabelledWindows(
        windows=data["dn"][idx], targets=targets, known=np.ones_like(targets, dtype=bool), main=main,
        ids=[str(i) for i in data["ids"][idx]], bounds_4326=[tuple(b) for b in data["bounds"][idx]],
        dn_scale=1e-4,
    )


def demo_replay(card: ModelCard, weights: Path, *, max_train: int | None = None, seed: int = 0) -> Replay | None:
    """The replay of a synthetic demo model: its training config's worlds, cut as it was trained;
    None for a model without such a config (not trained here, or not on the demo world).

    ``max_train``: at most this many training windows, drawn at random with ``seed`` (the replay's
    share of a fine-tuning epoch stays small); the validation windows are all kept.
    """
    from models.finetune import Replay

    name = card.lineage.root if card.lineage is not None else Path(weights).stem
    config = training_config(name)
    if config is None or not card.training_data.synthetic:
        return None
    sets = []
    for part in ("train", "validation"):
        spec = config.get(part) or {}
        if spec.get("source") != "demo-world":
            return None
        world = generate_world(spec.get("path"), size_px=int(spec.get("world_size_px", 1200)),
                               seed=int(spec.get("world_seed", 0)))
        sets.append(world_windows(world, card.bands, window=int(spec.get("window", 120)),
                                  stride=int(spec.get("stride", 120)), min_share=float(spec.get("min_share", 0.1))))
    train, validation = sets
    index = None
    if max_train is not None and max_train < len(train["ids"]):
        index = np.sort(np.random.default_rng(seed).choice(len(train["ids"]), max_train, replace=False))
    return Replay(
        train=_labelled(train, card, index), validation=_labelled(validation, card),
        description=f"demo world of {Path(config['_path']).name}: train world seed {config['train'].get('world_seed', 0)}, "
                    f"validation world seed {config['validation'].get('world_seed', 0)}",
    )
