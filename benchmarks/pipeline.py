"""End-to-end map throughput: wall time per stage, patches/s vs the model alone, peak RSS.

    python -m benchmarks.pipeline                 # the demo AOI (both UTM zones)
    python -m benchmarks.pipeline --full-tile     # also one full 10,980 px tile (generates a
                                                  # full-size demo world first: ~15 min, cached)

Peak RSS is the sum over this process and its children (dask workers, servers), sampled every
0.2 s. Goals (DESIGN/issue 4): pipeline overhead <= 10 % of model-only time on CPU, and < 3 GiB
for a full tile. Figures are ratios measured in one run, so they travel between machines.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from pathlib import Path

import psutil
from rich.console import Console

from benchmarks.models import model_patches_per_second
from pipeline.config import MapConfig
from pipeline.run import DEMO_WEIGHTS, run_map


class PeakRSS:
    """Largest resident memory of this process tree while the block runs."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def full_tile_aoi(world, out: Path) -> Path:
    """The lon/lat footprint of the first tile, shrunk by one cell so it stays inside it."""
    import shapely
    from odc.geo.geom import box

    tile = world.tiles[0]
    x0, y0, x1, y1 = tile.bounds
    geom = box(x0 + 1200, y0 + 1200, x1 - 1200, y1 - 1200, f"EPSG:{tile.epsg}").to_crs("EPSG:4326").geom
    out.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(geom)}))
    return out


def bench_map(aoi: Path, model: Path, label: str, workers: int, stac_url: str | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = MapConfig(aoi=aoi, out=Path(tmp) / "map", source="local", stac_url=stac_url, model=model, workers=workers)
        with PeakRSS() as rss:
            result = run_map(cfg, Console(quiet=True))
    compute = result.timings["load+infer"]
    patches = result.n_cells
    figures = {f"{label}/{k}_s": round(v, 2) for k, v in result.timings.items()}
    figures[f"{label}/cells"] = patches
    figures[f"{label}/patches_per_s_load+infer"] = round(patches / compute, 2)
    figures[f"{label}/patches_per_s_end_to_end"] = round(patches / sum(result.timings.values()), 2)
    figures[f"{label}/peak_rss_gib"] = round(rss.peak / 2**30, 2)
    return figures


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-tile", action="store_true", help="also map one full 10,980 px tile")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--model", type=Path, default=DEMO_WEIGHTS)
    args = parser.parse_args(argv)
    from models.card import ModelCard
    from models.checkpoint import card_path
    from pipeline.cluster import local_worker_count
    from pipeline.demo import generate_world, serve_world

    console = Console()
    workers = local_worker_count(args.workers)
    profile = ModelCard.read(card_path(args.model)).profile
    model_only = model_patches_per_second(profile, 32, "cpu", part="both", batches=6)
    figures = {"model_only/patches_per_s": round(model_only, 2), "workers": workers}
    world = generate_world()
    figures |= bench_map(world.aoi_path, args.model, "demo_aoi", workers)
    if args.full_tile:
        big = generate_world(size_px=10980, progress=True)
        with tempfile.TemporaryDirectory() as tmp, serve_world(big) as served:
            aoi = full_tile_aoi(big, Path(tmp) / "tile.geojson")
            figures |= bench_map(aoi, args.model, "full_tile", workers, stac_url=served.stac_url)
    for label in ("demo_aoi", "full_tile"):
        rate = figures.get(f"{label}/patches_per_s_load+infer")
        if rate:
            figures[f"{label}/overhead_vs_model_only"] = round(1 - rate / model_only, 3)
    console.print_json(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
