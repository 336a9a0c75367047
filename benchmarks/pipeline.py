"""End-to-end map throughput: wall time per stage, patches/s vs the model alone, peak RSS.

    python -m benchmarks.pipeline                 # the demo AOI (both UTM zones)
    python -m benchmarks.pipeline --full-tile     # also one full 10,980 px tile (generates a
                                                  # full-size demo world first: ~15 min, cached)

Each map runs with the given weights (default: the demo weights) and, on the demo AOI and (with
--full-tile) a 24 km square of the tile, also with the seed architecture (RFB-ESRGAN x8 +
ResNet50, random weights: speed does not depend on the values), so the overhead is shown both for
a light model, where reading and compositing the scenes dominate, and for the model the pipeline
is built around. The demo AOI is also mapped with the BigEarthNet v2 (reBEN) resnet50 layout
(random weights written as the published config.json + model.safetensors and installed as
`landcover model fetch` installs them; 10 bands at 120 px), whose model-only figure runs the
installed checkpoint through the predictor, standardisation included. "load+infer" excludes the
"model" stage in which every worker loads the model.

Each map runs in a fresh child process, as `landcover map` would; peak RSS is the sum over that
process and its children (dask workers, demo servers), sampled every 0.2 s, so the torch this
benchmark loads for its model-only figures is not counted. Goals (DESIGN/issue 4): pipeline overhead <= 10 % of model-only time on CPU, and < 3 GiB
for a full tile. Figures are ratios measured in one run, so they travel between machines.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil
from rich.console import Console

from pipeline.config import MapConfig
from pipeline.run import DEMO_WEIGHTS, run_map


class PeakRSS:
    """Largest resident memory of this process's children (and, if asked, itself) while the block runs."""

    def __init__(self, interval: float = 0.2, *, include_self: bool = True) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self.include_self = include_self

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me] * self.include_self + me.children(recursive=True):
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


def full_tile_aoi(world, out: Path, side_m: float | None = None) -> Path:
    """The lon/lat footprint of the first tile, shrunk by one cell so it stays inside it; or,
    given ``side_m``, a square of that side at the tile's centre."""
    import shapely
    from odc.geo.geom import box

    tile = world.tiles[0]
    x0, y0, x1, y1 = tile.bounds
    if side_m is not None:
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, side_m / 2
        x0, y0, x1, y1 = cx - half - 1200, cy - half - 1200, cx + half + 1200, cy + half + 1200
    geom = box(x0 + 1200, y0 + 1200, x1 - 1200, y1 - 1200, f"EPSG:{tile.epsg}").to_crs("EPSG:4326").geom
    out.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(geom)}))
    return out


def _map_in_child(cfg: MapConfig) -> tuple[dict[str, float], int]:
    result = run_map(cfg, Console(quiet=True))
    return result.timings, result.n_cells


def bench_map(aoi: Path, model: Path, label: str, workers: int, stac_url: str | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = MapConfig(aoi=aoi, out=Path(tmp) / "map", source="local", stac_url=stac_url, model=model, workers=workers)
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool, PeakRSS(include_self=False) as rss:
            timings, patches = pool.submit(_map_in_child, cfg).result()
    compute = timings["load+infer"]
    figures = {f"{label}/{k}_s": round(v, 2) for k, v in timings.items()}
    figures[f"{label}/cells"] = patches
    figures[f"{label}/patches_per_s_load+infer"] = round(patches / compute, 2)
    figures[f"{label}/patches_per_s_end_to_end"] = round(patches / sum(timings.values()), 2)
    figures[f"{label}/peak_rss_gib"] = round(rss.peak / 2**30, 2)
    return figures


def random_seed_model(folder: Path) -> Path:
    """The seed architecture with random weights and a card saying so (throughput only)."""
    from models.card import ModelCard
    from models.checkpoint import save_model
    from models.classifier import SRClassifier
    from models.profiles import get_profile

    path = folder / "seed-random.safetensors"
    card = ModelCard.for_profile("seed", training_data={"description": "random init, benchmark only", "synthetic": True})
    save_model(SRClassifier(get_profile("seed"), card.variant), card, path)
    return path


def random_reben_model(folder: Path) -> Path:
    """The reBEN resnet50 layout with random weights: published-style files, installed with their card
    (throughput only)."""
    import timm
    import torch
    from safetensors.torch import save_file

    from benchmarks.models import REBEN_CONFIG, REBEN_REPO
    from models.reben import PREFIX, install_checkpoint

    download = folder / "reben-download"
    download.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = timm.create_model(REBEN_CONFIG["timm_model_name"], pretrained=False, num_classes=REBEN_CONFIG["classes"],
                            in_chans=REBEN_CONFIG["channels"])
    save_file({PREFIX + k: v.contiguous() for k, v in net.state_dict().items()}, download / "model.safetensors")
    (download / "config.json").write_text(json.dumps(REBEN_CONFIG))
    return install_checkpoint(download, repo_id=REBEN_REPO, cache=folder / "cache")


# Random-weight architectures mapped on the demo AOI besides the given weights: name -> (how to
# write the checkpoint, model-only batch size and timed batches on CPU). Rows "<name>_demo_aoi".
RANDOM_MODELS: dict[str, tuple[Callable[[Path], Path], int, int]] = {
    "seed": (random_seed_model, 8, 3),
    "reben": (random_reben_model, 16, 3),
}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-tile", action="store_true", help="also map one full 10,980 px tile")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--model", type=Path, default=DEMO_WEIGHTS)
    parser.add_argument("--no-seed", action="store_true", help="skip the seed-architecture runs")
    parser.add_argument("--no-reben", action="store_true", help="skip the reBEN resnet50 run on the demo AOI")
    args = parser.parse_args(argv)
    # Imported here, not at the top: each map runs in a spawned child that re-imports this
    # module, and torch there would add ~0.5 GiB to the peak RSS a real `landcover map` never has.
    from benchmarks.models import model_only_patches_per_second
    from pipeline.cluster import local_worker_count
    from pipeline.demo import generate_world, serve_world

    console = Console()
    workers = local_worker_count(args.workers)
    model_only = model_only_patches_per_second(args.model, 32, batches=6)
    figures = {"model_only/patches_per_s": round(model_only, 2), "workers": workers}
    world = generate_world()
    figures |= bench_map(world.aoi_path, args.model, "demo_aoi", workers)
    for name, (write_model, batch, batches) in RANDOM_MODELS.items():
        if getattr(args, f"no_{name}"):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = write_model(Path(tmp))
            rate = model_only_patches_per_second(path, batch, batches=batches)
            figures[f"{name}_model_only/patches_per_s"] = round(rate, 2)
            figures |= bench_map(world.aoi_path, path, f"{name}_demo_aoi", workers)
    if args.full_tile:
        big = generate_world(size_px=10980, progress=True)
        with tempfile.TemporaryDirectory() as tmp, serve_world(big) as served:
            aoi = full_tile_aoi(big, Path(tmp) / "tile.geojson")
            figures |= bench_map(aoi, args.model, "full_tile", workers, stac_url=served.stac_url)
            if not args.no_seed:  # 20 x 20 cells: enough blocks that start-up and the last block do not dominate
                square = full_tile_aoi(big, Path(tmp) / "square.geojson", side_m=24_000)
                figures |= bench_map(square, random_seed_model(Path(tmp)), "seed_24km", workers, stac_url=served.stac_url)
    for label, reference in (
        ("demo_aoi", "model_only"), ("full_tile", "model_only"),
        ("seed_demo_aoi", "seed_model_only"), ("seed_24km", "seed_model_only"),
        ("reben_demo_aoi", "reben_model_only"),
    ):
        rate = figures.get(f"{label}/patches_per_s_load+infer")
        if rate:
            figures[f"{label}/overhead_vs_model_only"] = round(1 - rate / figures[f"{reference}/patches_per_s"], 3)
    console.print_json(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
