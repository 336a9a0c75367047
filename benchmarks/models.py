"""Model throughput: patches/s for SR, classifier and both, per profile, batched vs one-by-one.

    python -m benchmarks.models                 # small + seed on CPU (and on CUDA, fp32 vs bf16)
    python -m benchmarks.models --profiles small --device cpu

Random weights (speed does not depend on their values). Runs the same path the predictor uses:
eval mode, inference_mode, channels_last, bf16 autocast when asked. The seed is measured with few
batches so the whole run stays around a couple of minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import Tensor

from models.classifier import SRClassifier
from models.profiles import get_profile

Part = Literal["sr", "classifier", "both"]
Precision = Literal["fp32", "bf16"]
PARTS: tuple[Part, ...] = ("sr", "classifier", "both")
# (batch size, timed batches) per device kind and profile weight class; one-by-one uses batch 1.
BATCHED = {"cpu": {"seed": (8, 2), "default": (32, 4)}, "cuda": {"seed": (64, 5), "default": (256, 10)}}
ONE_BY_ONE = {"cpu": {"seed": 3, "default": 16}, "cuda": {"seed": 16, "default": 64}}

_models: dict[tuple[str, str], SRClassifier] = {}


def _model(profile: str, device: torch.device) -> SRClassifier:
    key = (profile, str(device))
    if key not in _models:
        torch.manual_seed(0)
        _models[key] = SRClassifier(get_profile(profile)).to(device, memory_format=torch.channels_last).eval()
    return _models[key]


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


def model_patches_per_second(
    profile: str,
    batch_size: int,
    device: str | torch.device = "cpu",
    *,
    part: Part = "both",
    precision: Precision = "fp32",
    batches: int = 3,
) -> float:
    """Patches per second of one part of ``profile`` at ``batch_size`` on ``device`` (after one warm-up batch)."""
    dev = torch.device(device)
    model = _model(profile, dev)
    if part == "sr" and model.sr_model is None:
        raise ValueError(f"profile {profile!r} has no SR generator")
    fn, side = _step(model, part)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(batch_size, 3, side, side, generator=gen) * 2 - 1).to(dev).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        fn(x)
        _sync(dev)
        start = time.perf_counter()
        for _ in range(batches):
            fn(x)
        _sync(dev)
        elapsed = time.perf_counter() - start
    return batches * batch_size / elapsed


def run_benchmark(
    profiles: Iterable[str] = ("small", "seed"),
    devices: Iterable[str] | None = None,
    report: Callable[[dict[str, object]], None] | None = None,
) -> dict[str, float]:
    """All figures, keyed ``profile/device-precision/part/mode`` (mode: batched or one-by-one)."""
    devices = list(devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]))
    figures: dict[str, float] = {}
    for device in devices:
        kind = torch.device(device).type
        for precision in (("fp32", "bf16") if kind == "cuda" else ("fp32",)):
            for profile in profiles:
                weight = "seed" if profile.startswith("seed") else "default"
                batch, n_batches = BATCHED[kind][weight]
                singles = ONE_BY_ONE[kind][weight]
                for part in PARTS:
                    if part == "sr" and not get_profile(profile).super_resolution:
                        continue
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
    parser.add_argument("--profiles", default="small,seed", help="comma-separated profiles (default: small,seed)")
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
