"""Time the demo world generator: `python -m benchmarks.demo_world [--size N] [--seed S]`.

Generates into a fresh temporary cache (so nothing is reused) and prints the seconds taken.
The default world (2 tiles of 1200 px, 6 scenes) must take under a minute on 2 cores;
`--size 10980` times full Sentinel-2 sized tiles (minutes, several GB of temporary disk).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from pipeline.demo import generate_world


def time_generation(size_px: int = 1200, seed: int = 0) -> float:
    """Seconds to generate a world of this size from nothing."""
    with tempfile.TemporaryDirectory(prefix="landcover-bench-") as tmp:
        started = time.perf_counter()
        generate_world(Path(tmp), size_px=size_px, seed=seed)
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1200, help="tile size in 10 m pixels (10980 = a full tile)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    seconds = time_generation(args.size, args.seed)
    print(f"demo world {args.size} px x 2 tiles, 6 scenes: {seconds:.1f} s on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
