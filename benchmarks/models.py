"""Model throughput: patches/s for SR, classifier and both, per profile, batched vs one-by-one.

    python -m benchmarks.models                 # small, seed and reben-resnet50 on CPU (and on CUDA, fp32 vs bf16)
    python -m benchmarks.models --profiles small --device cpu

Random weights (speed does not depend on their values). Runs the same path the predictor uses:
eval mode, inference_mode, channels_last, bf16 autocast when asked. ``reben-resnet50`` is the
BigEarthNet v2 (reBEN) layout (timm resnet50, 10 bands, 120 x 120 px, multi-label): it is timed
through ``Predictor.predict_reflectance`` on random 10-band reflectance windows (part
``predict``), so its per-band standardisation is part of the figure. The seed and reBEN are
measured with few batches so the whole run stays around a couple of minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from models.classifier import SRClassifier
from models.profiles import get_profile

if TYPE_CHECKING:
    from models.card import ModelCard
    from models.predictor import Predictor
    from models.reben import TimmClassifier

Part = Literal["sr", "classifier", "both", "predict"]
Precision = Literal["fp32", "bf16"]
PARTS: tuple[Part, ...] = ("sr", "classifier", "both")
# The BigEarthNet v2 (reBEN) resnet50 checkpoint layout, as its published config.json reads.
REBEN = "reben-resnet50"
REBEN_REPO = "BIFOLD-BigEarthNetv2-0/resnet50-s2-v0.2.0"
REBEN_CONFIG: dict[str, Any] = {"timm_model_name": "resnet50", "channels": 10, "classes": 19, "image_size": 120,
                                "drop_rate": 0.15, "drop_path_rate": 0.15}
# (batch size, timed batches) per device kind and profile weight class; one-by-one uses batch 1.
BATCHED = {"cpu": {"seed": (8, 2), "reben": (16, 3), "default": (32, 4)},
           "cuda": {"seed": (64, 5), "reben": (256, 10), "default": (256, 10)}}
ONE_BY_ONE = {"cpu": {"seed": 3, "reben": 4, "default": 16}, "cuda": {"seed": 16, "reben": 64, "default": 64}}

_models: dict[tuple[str, str], SRClassifier | TimmClassifier] = {}


def reben_card() -> ModelCard:
    """The card ``landcover`` makes for the published reBEN resnet50 checkpoint (bands, standardisation, classes)."""
    from models.reben import card_from_config

    return card_from_config(REBEN_CONFIG, repo_id=REBEN_REPO)


def _model(profile: str, device: torch.device) -> SRClassifier | TimmClassifier:
    key = (profile, str(device))
    if key not in _models:
        torch.manual_seed(0)
        if profile == REBEN:
            from models.reben import TimmClassifier

            card = reben_card()
            assert card.architecture is not None
            model: SRClassifier | TimmClassifier = TimmClassifier(card.architecture, len(card.classes))
        else:
            model = SRClassifier(get_profile(profile))
        _models[key] = model.to(device, memory_format=torch.channels_last).eval()
    return _models[key]


def parts_of(profile: str) -> tuple[Part, ...]:
    """What is timed for ``profile``: the reBEN layout as the predictor runs it, a seed profile part by part."""
    if profile == REBEN:
        return ("predict",)
    return tuple(p for p in PARTS if p != "sr" or get_profile(profile).super_resolution)


def _weight_class(profile: str) -> str:
    return "reben" if profile == REBEN else "seed" if profile.startswith("seed") else "default"


def _step(model: SRClassifier, part: Part) -> tuple[Callable[[Tensor], object], int]:
    """The function to time and the side of its input."""
    if part == "sr":
        return model.super_resolve, 32
    if part == "classifier":
        return model.classify, model.profile.input_size
    return model.forward_features, 32


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn: Callable[[], object], batch_size: int, batches: int, device: torch.device) -> float:
    """Patches per second of ``batches`` calls of ``fn`` on ``batch_size`` patches each, after one warm-up call."""
    fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(batches):
        fn()
    _sync(device)
    return batches * batch_size / (time.perf_counter() - start)


def predictor_patches_per_second(predictor: Predictor, batches: int = 3) -> float:
    """Patches per second of ``predictor.predict_reflectance`` on one batch of random reflectance windows of
    the card's bands and window size per call: preprocessing (standardisation), model and copy back included."""
    card = predictor.card
    shape = (predictor.batch_size, len(card.bands), card.window_px, card.window_px)
    windows = np.random.default_rng(0).uniform(0.0, 0.5, shape).astype(np.float32)
    return _rate(lambda: predictor.predict_reflectance(windows), predictor.batch_size, batches, predictor.device)


def model_patches_per_second(
    profile: str,
    batch_size: int,
    device: str | torch.device = "cpu",
    *,
    part: Part = "both",
    precision: Precision = "fp32",
    batches: int = 3,
) -> float:
    """Patches per second of one part of ``profile`` at ``batch_size`` on ``device`` (after one warm-up batch).

    Part ``predict`` (the reBEN layout's only part) runs ``Predictor.predict_reflectance``."""
    if part not in parts_of(profile):
        what = "SR generator" if part == "sr" else f"part {part!r}"
        raise ValueError(f"profile {profile!r} has no {what} to time (it has: {', '.join(parts_of(profile))})")
    dev = torch.device(device)
    model = _model(profile, dev)
    if profile == REBEN:
        from models.predictor import Predictor

        predictor = Predictor(model, reben_card(), dev, batch_size=batch_size, precision=precision)
        return predictor_patches_per_second(predictor, batches)
    fn, side = _step(model, part)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(batch_size, 3, side, side, generator=gen) * 2 - 1).to(dev).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        return _rate(lambda: fn(x), batch_size, batches, dev)


def model_only_patches_per_second(path: Path, batch_size: int, device: str = "cpu", *, batches: int = 3) -> float:
    """The model-only rate of the weights at ``path``, as its card says: a seed-family profile's SR +
    classifier, or a timm-family checkpoint (loaded as the pipeline loads it) through the predictor."""
    from models.card import ModelCard, card_path

    card = ModelCard.read(card_path(path))
    if card.family != "timm":
        return model_patches_per_second(card.profile, batch_size, device, part="both", batches=batches)
    from models.predictor import Predictor

    return predictor_patches_per_second(Predictor.from_path(path, device, batch_size=batch_size), batches)


def run_benchmark(
    profiles: Iterable[str] = ("small", "seed", REBEN),
    devices: Iterable[str] | None = None,
    report: Callable[[dict[str, object]], None] | None = None,
) -> dict[str, float]:
    """All figures, keyed ``profile/device-precision/part/mode`` (mode: batched or one-by-one)."""
    devices = list(devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]))
    figures: dict[str, float] = {}
    for device in devices:
        kind = torch.device(device).type
        bf16 = kind == "cuda" and torch.cuda.is_bf16_supported()
        for precision in (("fp32", "bf16") if bf16 else ("fp32",)):
            for profile in profiles:
                weight = _weight_class(profile)
                batch, n_batches = BATCHED[kind][weight]
                singles = ONE_BY_ONE[kind][weight]
                for part in parts_of(profile):
                    for mode, bs, nb in (("batched", batch, n_batches), ("one-by-one", 1, singles)):
                        pps = model_patches_per_second(profile, bs, device, part=part, precision=precision, batches=nb)
                        figures[f"{profile}/{device}-{precision}/{part}/{mode}"] = pps
                        if report:
                            report(dict(profile=profile, device=device, precision=precision, part=part,
                                        mode=mode, batch_size=bs, patches_per_s=pps))
            _models.clear()
    return figures


def main(argv: list[str] | None = None) -> dict[str, float]:
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(prog="python -m benchmarks.models", description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", default=f"small,seed,{REBEN}",
                        help=f"comma-separated profiles, {REBEN} for the reBEN layout (default: small,seed,{REBEN})")
    parser.add_argument("--device", action="append", help="cpu or cuda (repeatable; default: cpu, plus cuda if present)")
    args = parser.parse_args(argv)

    console = Console()
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
                  + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
    rows: list[dict[str, object]] = []

    def report(row: dict[str, object]) -> None:
        rows.append(row)
        console.print(f"  {row['profile']:<10} {row['device']}-{row['precision']} {row['part']:<10} "
                      f"{row['mode']:<10} batch {row['batch_size']:<4} {row['patches_per_s']:9.1f} patches/s")

    figures = run_benchmark([p.strip() for p in args.profiles.split(",") if p.strip()], args.device, report)
    table = Table(title="model throughput (patches/s; random weights, channels_last, inference_mode)")
    for col in ("profile", "device", "part", "batched", "one-by-one", "speed-up"):
        table.add_column(col, justify="left" if col in ("profile", "device", "part") else "right")
    for row in rows:
        if row["mode"] != "batched":
            continue
        stem = f"{row['profile']}/{row['device']}-{row['precision']}/{row['part']}"
        batched, single = figures[f"{stem}/batched"], figures[f"{stem}/one-by-one"]
        table.add_row(str(row["profile"]), f"{row['device']}-{row['precision']}", str(row["part"]),
                      f"{batched:.1f} (b{row['batch_size']})", f"{single:.1f}", f"{batched / single:.1f}x")
    console.print(table)
    return figures


if __name__ == "__main__":
    main()
