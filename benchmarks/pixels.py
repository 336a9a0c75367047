"""Per-pixel rows of `make bench`: Dynamic World's published network, model alone and in the pipeline.

    python -m benchmarks.pixels

The network is imported from ``$LANDCOVER_REALDATA`` (or ``../shared/realdata``) into a temporary
model cache, exactly as `landcover model import` does; without the real data the rows say so.

1. Model alone: reflectance tiles of 576 x 576 px (a 512 px core and the card's 32 px halo) through
   :meth:`models.predictor.Predictor.predict_pixels` (normalisation, network, softmax), in Mpx/s of
   input, on one CPU thread (as a map's worker runs it), on every thread, and on CUDA when present.
2. Pipeline: `landcover map --demo --model google/dynamicworld` (the demo world's 90 km² at 10 m,
   2 workers); Mpx/s of mapped cells over the read + classify time the run reports.

The machine may be shared, so the pipeline is bracketed by the model alone on one thread (right
before and right after it) and reported as a ratio to what its workers' model time alone would
allow: pipeline Mpx/s / (workers x one-thread model Mpx/s of core pixels, i.e. input Mpx/s x
(512 / 576)², the share of a tile the network answers for).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TILE = 576
CORE = 512  # a tile's core: TILE less the card's 32 px halo on both sides
WORKERS = 2


def realdata() -> Path | None:
    root = Path(os.environ.get("LANDCOVER_REALDATA") or REPO.parent / "shared" / "realdata")
    return root if (root / "models" / "dynamicworld" / "model" / "forward").is_dir() else None


def model_rate(weights: Path, device: str, threads: int | None, repeats: int = 2) -> float:
    """Input Mpx/s of predict_pixels on one 576 x 576 tile at a time."""
    import torch

    from models.predictor import Predictor

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        predictor = Predictor.from_path(weights, device=device, batch_size=1)
        tile = np.random.default_rng(0).random((1, 9, TILE, TILE), dtype=np.float32) * 0.3
        predictor.predict_pixels(tile[:, :, :64, :64])  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            predictor.predict_pixels(tile)
        if device == "cuda":
            torch.cuda.synchronize()
        return repeats * TILE * TILE / (time.perf_counter() - start) / 1e6
    finally:
        torch.set_num_threads(before)


def pipeline_rate(cache: Path, out: Path) -> dict:
    """`landcover map --demo` with the network: cells, seconds, Mpx/s of read + classify."""
    env = {**os.environ, "LANDCOVER_CACHE": str(cache)}
    start = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).with_name("landcover")), "map", "--demo", "--model",
                           "google/dynamicworld", "--out", str(out), "--workers", str(WORKERS)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=1800, check=False)
    wall = time.perf_counter() - start
    if proc.returncode:
        return {"error": proc.stderr[-500:]}
    cells = json.loads((out / "summary.json").read_text())["cells"]["valid"]
    text = " ".join(proc.stderr.split())
    found = re.search(r"read \+ classify ([\d.]+) s", text) or re.search(r"load\+infer ([\d.]+)s", text)
    seconds = float(found.group(1)) if found else wall
    return {"cells": cells, "classify_s": seconds, "wall_s": wall, "mpx_s": cells / seconds / 1e6}


def main(argv: list[str] | None = None) -> None:
    import torch

    print("\n== per-pixel: Dynamic World's network (google/dynamicworld) ==")
    root = realdata()
    if root is None:
        print("  skipped: the Dynamic World SavedModel is not at $LANDCOVER_REALDATA/models/dynamicworld")
        return
    from models.dynamicworld import install

    with tempfile.TemporaryDirectory(prefix="landcover-bench-pixels-") as tmp:
        weights = install(root / "models" / "dynamicworld", cache=Path(tmp) / "cache" / "models")
        print(f"  model alone, {TILE} x {TILE} px tiles (normalisation + network + softmax):")
        for label, device, threads in (("CPU, 1 thread", "cpu", 1), (f"CPU, {torch.get_num_threads()} threads", "cpu", None)):
            print(f"    {label:<20} {model_rate(weights, device, threads):6.3f} Mpx/s")
        if torch.cuda.is_available():
            print(f"    {'CUDA (bf16 autocast)':<20} {model_rate(weights, 'cuda', None, repeats=10):6.3f} Mpx/s "
                  f"({torch.cuda.get_device_name()})")
        before = model_rate(weights, "cpu", 1)
        run = pipeline_rate(Path(tmp) / "cache", Path(tmp) / "map")
        after = model_rate(weights, "cpu", 1)
        if "error" in run:
            print(f"  pipeline: failed: {run['error']}")
            return
        print(f"  pipeline, demo world at 10 m, {WORKERS} workers: {run['cells']:,} cells, read + classify "
              f"{run['classify_s']:.1f} s = {run['mpx_s']:.3f} Mpx/s (whole run {run['wall_s']:.0f} s)")
        core = (before + after) / 2 * (CORE / TILE) ** 2
        print(f"  model alone right before / after the pipeline, 1 thread: {before:.3f} / {after:.3f} Mpx/s of input "
              f"= {core:.3f} Mpx/s of core pixels; pipeline / ({WORKERS} x that) = {run['mpx_s'] / (WORKERS * core):.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
