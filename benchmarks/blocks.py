"""Compute each pixel once (issue 22): a classifier's backbone once per block, against windows.

    python -m benchmarks.blocks                 # the demo AOI: halo study, model alone and pipeline
    python -m benchmarks.blocks --full-tile     # also the full 110 x 110 km tile (the full-size
                                                # demo world is generated once, ~15 min, cached)

The model is the BigEarthNet v2 (reBEN) ResNet50 layout with random weights (speed does not depend
on their values), at the map's default detail (100 m cells, 120 px windows every 40 px, evaluated
densely). Figures, all from one run on one machine:

* ``halo/<px>/...``: block edges. The demo AOI's composite mapped as one block and over blocks of
  160 px, with each halo; the share of cells whose class agrees and the largest probability
  difference. Random weights alone make a poor probe (timm zero-initialises the last norm of every
  residual branch, so the network is nearly its shortcut path, and its probabilities hardly vary),
  so the network is first made "live" (:func:`enliven`): every norm's scale set to 1, the head
  scaled so each class's logit spreads with a standard deviation of 2 over the scene.
* ``<area>/<path>/flops_per_km2``: the model's FLOPs (torch's FLOP counter) per km² of map, for the
  blocks the run plans there (``full_block``: one full block of each path, what a full tile is
  made of: 9.6 km with windows, 19.2 km on the block path, :data:`pipeline.plan.BLOCK_PATH_M`):
  windows: every window that reaches a block's cells, one forward pass each; block: one pass over
  the block padded by its halo.
* ``<area>/<path>/model_only_km2_per_s``: the same work timed as the workers run it (below), no
  reading; ``<area>/<path>/pipeline_km2_per_s``: a whole map (load + classify) of the area in a
  fresh child process, as `landcover map` runs it (the windows rows force the windows path), with
  ``wall_s`` (the child's whole map: cluster start, model load, export), ``worker_peak_rss_mib``
  (the largest resident set of any process of the run's cluster, sampled every half second) and
  ``cpu_s_per_km2`` (CPU seconds of the child and its cluster per km²: unlike km²/s, it holds when
  other work shares the machine, so the ratio of the two paths' is the one a quiet machine gives
  when both keep every core busy).
* ``model_only/...``: the rates behind those figures, one torch thread per worker in a process
  started as the workers are (two threads in one process on a busy 2-core machine mostly wait on
  each other), and (``--bf16``) bf16 autocast against fp32 on this CPU (AMX / AVX-512-BF16).

On the full tile (``--full-tile``) the windows path is mapped over a square at the tile's centre
(``--square-km``, default 28.8 km: 3 x 3 of its 9.6 km blocks) and its whole-tile time
extrapolated by the windows each plans (a window costs the same wherever it lies; blocks cut at
the square's edge re-evaluate a few more windows per km² than the tile's, which the count
accounts for): windows take most of an hour on the whole tile on 2 cores. The block path is
mapped over the whole tile with ``--whole-tile`` (the headline ``full_tile/block_vs_windows/
pipeline_km2_per_s`` then divides that measured rate by the windows' extrapolated one), else
over the square and extrapolated by area (its blocks of 19.2 km cut by the square's edge pay
their halo over less ground than the tile's: a low estimate).

    python -m benchmarks.blocks --full-tile --whole-tile --no-halo --no-demo   # the full-tile rows
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Self

import numpy as np

from pipeline.detail import DetailPlan, classify_pixels

CELL_PX = 10  # 100 m cells of 10 m pixels: the map's default detail
EDGE_BLOCK_CELLS = 16  # blocks of 160 px for the halo study: many edges, none on the feature lattice
HALOS = (96, 128, 160, 192)


def enliven(predictor, image: np.ndarray, spread: float = 2.0) -> None:
    """Make a randomly initialised timm network a fair probe of block edges, in place: every
    normalisation's scale 1 (timm zero-initialises the last one of each residual branch, which
    leaves only the shortcuts and a receptive field of a few pixels), and the head rescaled so each
    class's logit has mean 0 and standard deviation ``spread`` over the positions of ``image``
    (bands, H, W of reflectance), so the probabilities range widely over the scene."""
    import torch

    from models.preprocess import standardise_reflectance

    net = predictor.model.net
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._NormBase | torch.nn.LayerNorm | torch.nn.GroupNorm) \
                and module.weight is not None:
            torch.nn.init.ones_(module.weight)
    norm = predictor.card.normalisation
    x = standardise_reflectance(image[None], norm.mean, norm.std, dn_scale=norm.dn_scale, offset_dn=norm.offset_dn)
    with torch.inference_mode():
        feats = net.forward_features(x.to(predictor.device).contiguous(memory_format=torch.channels_last))
        positions = feats[0].flatten(1).T.float()  # (P, F)
        head = net.get_classifier()
        logits = positions @ head.weight.T + head.bias
        mean, std = logits.mean(dim=0), logits.std(dim=0).clamp_min(1e-6)
        head.weight.mul_((spread / std)[:, None])
        head.bias.copy_((head.bias - mean) * spread / std)


def block_plan(halo_px: int, stride_px: int, centre_px: float, window_px: int = 120) -> DetailPlan:
    """The map's default detail (100 m cells, gaussian blending) evaluated per block."""
    from dataclasses import replace

    plan = DetailPlan(window_px, window_px // 3, CELL_PX, weight="gaussian").evaluated_per_block(halo_px, stride_px)
    return replace(plan, feature_centre_px=centre_px)


def map_in_blocks(bands: np.ndarray, clear: np.ndarray, plan: DetailPlan, predict, n_classes: int,
                  cells: tuple[int, int], block_cells: int, pad_px: int) -> np.ndarray:
    """(n_classes + 1, *cells) of the ``cells`` area whose first cell starts ``pad_px`` into ``bands``,
    classified block by block (each read with its halo, as the run reads it)."""
    h = plan.halo_px
    out = np.full((n_classes + 1, *cells), np.nan, np.float32)
    for y in range(0, cells[0], block_cells):
        for x in range(0, cells[1], block_cells):
            cy, cx = min(block_cells, cells[0] - y), min(block_cells, cells[1] - x)
            ys = slice(pad_px + y * CELL_PX - h, pad_px + (y + cy) * CELL_PX + h)
            xs = slice(pad_px + x * CELL_PX - h, pad_px + (x + cx) * CELL_PX + h)
            out[:, y:y + cy, x:x + cx] = classify_pixels(
                bands[:, ys, xs], clear[ys, xs], np.ones((cy, cx), bool), plan, predict, n_classes=n_classes,
                min_clear=0.5, origin_px=(y * CELL_PX, x * CELL_PX))
    return out


def edge_agreement(whole: np.ndarray, pieces: np.ndarray) -> tuple[float, float, int]:
    """Share of cells mapped in both whose class (argmax) agrees, the largest probability difference,
    and the cells compared."""
    both = np.isfinite(whole[0]) & np.isfinite(pieces[0])
    agree = (whole[:-1].argmax(axis=0) == pieces[:-1].argmax(axis=0))[both]
    return float(agree.mean()), float(np.abs(whole[:-1] - pieces[:-1])[:, both].max()), int(both.sum())


def halo_study(predictor, bands: np.ndarray, clear: np.ndarray, pad_px: int, cells: int = 48) -> dict[str, float]:
    """Block-edge agreement of a ``cells`` x ``cells`` area for each of :data:`HALOS`."""
    stride, centre = predictor.feature_lattice()
    n = len(predictor.card.classes)
    figures: dict[str, float] = {}
    whole_plan = block_plan(pad_px, stride, centre)
    whole = map_in_blocks(bands, clear, whole_plan, predictor.predict_reflectance_block, n, (cells, cells), cells, pad_px)
    for halo in HALOS:
        pieces = map_in_blocks(bands, clear, block_plan(halo, stride, centre), predictor.predict_reflectance_block, n,
                               (cells, cells), EDGE_BLOCK_CELLS, pad_px)
        agree, diff, compared = edge_agreement(whole, pieces)
        figures |= {f"halo/{halo}/cells_agree": round(agree, 4), f"halo/{halo}/max_prob_diff": round(diff, 4),
                    f"halo/{halo}/cells": compared}
    return figures


def flops(predictor, shape: tuple[int, ...], block: bool) -> int:
    """FLOPs of one call: ``shape`` (N, bands, w, w) windows densely, or (bands, H, W) a block."""
    from torch.utils.flop_counter import FlopCounterMode

    x = np.random.default_rng(0).random(shape, dtype=np.float32) * 0.3
    with FlopCounterMode(display=False) as counter:
        predictor.predict_reflectance_block(x) if block else predictor.predict_reflectance_dense(x)
    return int(counter.get_total_flops())


def planned_work(aoi: Path, model: Path, stac_url: str | None, windows: bool) -> dict[str, float]:
    """What a map of ``aoi`` asks of the model on each path, from its plan (no pixel read): the
    km² of its cells, the windows it evaluates (windows path) or the pixels of its padded blocks
    (block path), and the cells per block side."""
    from unittest import mock

    import pipeline.plan
    from pipeline.plan import make_plan
    from pipeline.plan_summary import count_work
    from pipeline.settings import MapConfig

    cfg = MapConfig(aoi=aoi, out=Path("unused"), source="local", stac_url=stac_url, model=model)
    keep = mock.patch.object(pipeline.plan, "evaluation_path", lambda detail, card: detail) if windows else mock.MagicMock()
    with keep:
        plan = make_plan(cfg, stac_url)
    count = count_work(plan.aoi, plan.items, plan.grid, model_sha256=plan.model.sha256, min_clear=cfg.min_clear,
                       detail=plan.detail)
    work = {"km2": count.cells * (CELL_PX * 10 / 1000) ** 2, "block_cells": plan.grid.cells_per_chunk}
    if windows:
        return work | {"windows": count.windows}
    # count_work gives a block its padded pixels in windows' worth (pipeline.plan_summary.block_windows)
    return work | {"pixels": count.windows * plan.detail.window_px**2}


def full_block_work(halo_px: int, windows_cells: int, block_cells: int, window_px: int = 120, stride_px: int = 40,
                    ) -> tuple[dict[str, float], dict[str, float]]:
    """:func:`planned_work` of one full block of each path, the kind a full tile is made of: every
    window that reaches the cells of a block of ``windows_cells`` 100 m cells (windows path), the
    padded pixels of one of ``block_cells`` (block path)."""
    core = windows_cells * CELL_PX
    windows = ((core + 2 * window_px - window_px) // stride_px + 1) ** 2
    side = block_cells * CELL_PX + 2 * halo_px
    side += -side % 32
    return ({"km2": (core * 10 / 1000) ** 2, "windows": windows, "block_cells": windows_cells},
            {"km2": (block_cells * CELL_PX * 10 / 1000) ** 2, "pixels": side * side, "block_cells": block_cells})


def model_rates(model: Path, side: int, workers: int, bf16: bool = False) -> dict[str, float]:
    """Windows/s (dense, batches of 16) and block pixels/s (one padded block of ``side``) of the model
    alone, one torch thread times ``workers``, in a process started as the workers are: on a shared
    2-core machine two threads in one process wait on each other at every layer. With ``bf16``,
    also bf16 autocast against fp32 on both paths."""
    from benchmarks.pipeline import in_worker_like_process

    return in_worker_like_process(_model_rates_here, model, side, workers, bf16)


def _model_rates_here(model: Path, side: int, workers: int, bf16: bool) -> dict[str, float]:
    import torch

    from models.predictor import Predictor

    torch.set_num_threads(1)
    predictor = Predictor.from_path(model, device="cpu")  # as a worker runs it
    bands = len(predictor.card.bands)
    rng = np.random.default_rng(0)
    windows = rng.random((16, bands, 120, 120), dtype=np.float32) * 0.3
    image = rng.random((bands, side, side), dtype=np.float32) * 0.3
    predictor.predict_reflectance_dense(windows)  # warm-up at the timed shapes
    predictor.predict_reflectance_block(image)
    per_window = float(np.median([_timed(predictor.predict_reflectance_dense, windows) for _ in range(3)])) / len(windows)
    per_block = float(np.median([_timed(predictor.predict_reflectance_block, image) for _ in range(3)]))
    rates = {"windows_per_s": workers / per_window, "block_px_per_s": workers * side * side / per_block,
             "precision": predictor.precision, "block_side_px": side,
             "flops_per_window": flops(predictor, (1, bands, 120, 120), block=False),
             "flops_per_block_px": flops(predictor, (bands, side, side), block=True) / side**2}
    if not bf16:
        return rates
    # bf16 autocast against fp32 on this CPU (AMX / AVX-512-BF16 where lscpu lists them), both paths
    fp32 = Predictor(predictor.model, predictor.card, device="cpu", precision="fp32")
    half = Predictor(predictor.model, predictor.card, device="cpu", precision="bf16")
    timings: dict[str, float] = {}
    for name, p in (("fp32", fp32), ("bf16", half)):
        p.predict_reflectance_block(image)
        p.predict_reflectance_dense(windows)
        timings[f"block_{name}"] = float(np.median([_timed(p.predict_reflectance_block, image) for _ in range(3)]))
        timings[f"windows_{name}"] = float(np.median([_timed(p.predict_reflectance_dense, windows) for _ in range(3)]))
    moved = np.abs(fp32.predict_reflectance_block(image) - half.predict_reflectance_block(image)).max()
    return rates | {"bf16_block_speedup": timings["block_fp32"] / timings["block_bf16"],
                    "bf16_windows_speedup": timings["windows_fp32"] / timings["windows_bf16"],
                    "bf16_block_max_prob_diff": float(moved)}


def model_alone(area: str, rates: dict[str, float], windows: dict[str, float], block: dict[str, float]) -> dict[str, float]:
    """FLOPs per km² and km²/s of the model alone for the planned work of ``area`` on both paths."""
    return {
        f"{area}/windows/flops_per_km2": round(rates["flops_per_window"] * windows["windows"] / windows["km2"] / 1e9, 1),
        f"{area}/block/flops_per_km2": round(rates["flops_per_block_px"] * block["pixels"] / block["km2"] / 1e9, 1),
        f"{area}/windows/model_only_km2_per_s": round(windows["km2"] / (windows["windows"] / rates["windows_per_s"]), 2),
        f"{area}/block/model_only_km2_per_s": round(block["km2"] / (block["pixels"] / rates["block_px_per_s"]), 2),
        f"{area}/windows/windows": int(windows["windows"]), f"{area}/block/padded_block_px": int(block["pixels"]),
        f"{area}/windows/block_cells": int(windows["block_cells"]), f"{area}/block/block_cells": int(block["block_cells"]),
    }


def _timed(fn, arg) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def _force_windows() -> None:
    """Make this process's plans keep windows (the comparison rows): there is no setting for it, the
    plan chooses the path by architecture."""
    import pipeline.plan

    pipeline.plan.evaluation_path = lambda detail, card: detail


def _map_here(cfg, windows: bool) -> dict[str, float]:
    from rich.console import Console

    from pipeline.run import run_map

    if windows:
        _force_windows()
    result = run_map(cfg, Console(quiet=True))
    return {"cells": result.n_cells, "block_cells": result.grid.cells_per_chunk, **result.timings}


class ClusterUsage:
    """What the descendants of this process (a map's process and its cluster: nanny and worker
    processes) use while it runs, sampled every ``every_s`` seconds on a thread: the largest
    resident set of any one, and their CPU seconds summed (each process's last sample: up to
    ``every_s`` of a process's last moments is missed). CPU seconds do not grow when other work
    shares the cores, so paths measured on a busy machine still compare by them."""

    def __init__(self, every_s: float = 0.5) -> None:
        import threading

        self.every_s, self.peak = every_s, 0
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu.values())

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.every_s):
            for child in me.children(recursive=True):
                try:
                    with child.oneshot():
                        self.peak = max(self.peak, child.memory_info().rss)
                        times = child.cpu_times()
                        self._cpu[child.pid] = times.user + times.system
                except psutil.Error:  # ended between the listing and the reading
                    pass

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def pipeline_row(aoi: Path, model: Path, label: str, workers: int, stac_url: str | None, windows: bool) -> dict[str, float]:
    """A whole map of ``aoi`` in a fresh child process: km² mapped per second of load + classify, the
    child's wall time (cluster start, model load and export included), the largest resident set of
    any process of its cluster and the CPU seconds of them all (:class:`ClusterUsage`; the map
    process itself is one of them: it plans, streams and writes, well under a worker's peak)."""
    from pipeline.settings import MapConfig

    with tempfile.TemporaryDirectory() as tmp, ClusterUsage() as usage:
        cfg = MapConfig(aoi=aoi, out=Path(tmp) / "map", source="local", stac_url=stac_url, model=model, workers=workers)
        start = time.perf_counter()
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            timings = pool.submit(_map_here, cfg, windows).result()
        wall = time.perf_counter() - start
    km2 = timings["cells"] * (CELL_PX * 10 / 1000) ** 2
    return {f"{label}/pipeline_km2_per_s": round(km2 / timings["load+infer"], 2),
            f"{label}/pipeline_load+infer_s": round(timings["load+infer"], 1), f"{label}/km2": round(km2, 1),
            f"{label}/wall_s": round(wall, 1), f"{label}/worker_peak_rss_mib": usage.peak // 2**20,
            f"{label}/cpu_s": round(usage.cpu_s), f"{label}/cpu_s_per_km2": round(usage.cpu_s / km2, 3),
            f"{label}/block_cells": timings["block_cells"]}


def full_tile_rows(work: list[dict[str, float]], square: Path, tile: Path, model: Path, workers: int, stac_url: str,
                   whole_tile: bool) -> dict[str, Any]:
    """The full tile's pipeline rows (``work``: :func:`planned_work` of the tile, windows then block):
    windows mapped over ``square`` and its whole-tile time extrapolated by the windows each plans;
    the block path mapped over the whole ``tile`` (``whole_tile``), else over ``square`` and
    extrapolated by area. ``full_tile/<path>/pipeline_km2_per_s`` is the rate the headline ratio
    divides, and ``.../source`` says how each was had."""
    rows = pipeline_row(square, model, "tile_square/windows", workers, stac_url, True)
    square_windows = planned_work(square, model, stac_url, windows=True)
    scale = work[0]["windows"] / square_windows["windows"]  # the tile's model work over the square's
    windows_s = rows["tile_square/windows/pipeline_load+infer_s"] * scale
    rows |= {"tile_square/windows/windows_per_km2": round(square_windows["windows"] / square_windows["km2"], 2),
             "full_tile/windows/windows_per_km2": round(work[0]["windows"] / work[0]["km2"], 2),
             "full_tile/windows/load+infer_extrapolated_s": round(windows_s),
             "full_tile/windows/pipeline_km2_per_s": round(work[0]["km2"] / windows_s, 2),
             "full_tile/windows/cpu_s_per_km2": round(
                 rows["tile_square/windows/cpu_s"] * scale / work[0]["km2"], 3),
             "full_tile/windows/source": f"extrapolated from the {rows['tile_square/windows/km2']} km2 square "
                                         f"by planned windows (x{scale:.2f})"}
    if whole_tile:
        whole = pipeline_row(tile, model, "full_tile/block", workers, stac_url, False)
        return rows | whole | {"full_tile/block/source": "measured: the whole tile mapped"}
    rows |= pipeline_row(square, model, "tile_square/block", workers, stac_url, False)
    rate = rows["tile_square/block/pipeline_km2_per_s"]
    return rows | {"full_tile/block/load+infer_extrapolated_s": round(work[1]["km2"] / rate),
                   "full_tile/block/pipeline_km2_per_s": rate,
                   "full_tile/block/cpu_s_per_km2": rows["tile_square/block/cpu_s_per_km2"],
                   "full_tile/block/source": "extrapolated from the square by area (a low estimate: its blocks are "
                                             "cut by the square's edge)"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-tile", action="store_true", help="also the full 110 x 110 km tile")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--square-km", type=float, default=28.8,
                        help="side of the full tile's square the windows map is measured over (3 x 3 of its blocks)")
    parser.add_argument("--no-halo", action="store_true", help="skip the halo study")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo AOI's maps")
    parser.add_argument("--whole-tile", action="store_true",
                        help="with --full-tile, map the whole tile on the block path (~10 min on 2 quiet cores) "
                             "instead of the square")
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast against fp32, model alone")
    args = parser.parse_args(argv)
    import torch

    from benchmarks.detail import PAD_PX, demo_scene
    from benchmarks.pipeline import full_tile_aoi, random_reben_model
    from models.architectures import BLOCK_HALO_PX
    from models.predictor import Predictor
    from pipeline.cluster import local_worker_count
    from pipeline.demo import generate_world, serve_world
    from pipeline.plan import BLOCK_M, BLOCK_PATH_M

    workers = local_worker_count(args.workers)
    figures: dict[str, Any] = {"workers": workers, "torch_threads": torch.get_num_threads(),
                               "halo_px": BLOCK_HALO_PX}
    world = generate_world()
    with tempfile.TemporaryDirectory() as tmp:
        model = random_reben_model(Path(tmp))
        predictor = Predictor.from_path(model, device="cpu")
        stride, centre = predictor.feature_lattice()
        figures |= {"feature_stride_px": stride, "feature_centre_px": centre}
        if not args.no_halo:
            scene = demo_scene(world, tuple(predictor.card.bands), predictor.card.resampling)
            live = Predictor.from_path(model, device="cpu")
            enliven(live, scene.bands[:, PAD_PX:PAD_PX + 512, PAD_PX:PAD_PX + 512])
            figures |= halo_study(live, scene.bands, scene.clear, PAD_PX)
        areas = ["demo_aoi"]
        windows_cells, block_cells = round(BLOCK_M / (CELL_PX * 10)), round(BLOCK_PATH_M / (CELL_PX * 10))
        rates = model_rates(model, block_cells * CELL_PX + 2 * BLOCK_HALO_PX, workers, args.bf16)
        figures |= {f"model_only/{k}": v if isinstance(v, str) else round(v, 4 if "diff" in k else 2)
                    for k, v in rates.items()}
        figures |= model_alone("full_block", rates, *full_block_work(BLOCK_HALO_PX, windows_cells, block_cells))
        if args.no_demo:
            areas.remove("demo_aoi")
        else:
            with serve_world(world) as served:
                work = [planned_work(world.aoi_path, model, served.stac_url, windows) for windows in (True, False)]
                figures |= model_alone("demo_aoi", rates, *work)
                for path in ("windows", "block"):
                    figures |= pipeline_row(world.aoi_path, model, f"demo_aoi/{path}", workers, served.stac_url,
                                            path == "windows")
        if args.full_tile:
            big = generate_world(size_px=10980, progress=True)
            with serve_world(big) as served:
                tile = full_tile_aoi(big, Path(tmp) / "tile.geojson")
                square = full_tile_aoi(big, Path(tmp) / "square.geojson", side_m=args.square_km * 1000)
                work = [planned_work(tile, model, served.stac_url, windows) for windows in (True, False)]
                figures |= model_alone("full_tile", rates, *work)
                figures |= full_tile_rows(work, square, tile, model, workers, served.stac_url, args.whole_tile)
                areas += ["full_tile", "tile_square"]
    for area in ["full_block", *areas]:
        for what in ("flops_per_km2", "model_only_km2_per_s", "pipeline_km2_per_s", "cpu_s_per_km2"):
            windows, block = figures.get(f"{area}/windows/{what}"), figures.get(f"{area}/block/{what}")
            if windows and block:
                better = windows / block if what in ("flops_per_km2", "cpu_s_per_km2") else block / windows
                figures[f"{area}/block_vs_windows/{what}"] = round(better, 2)
    if "demo_aoi/windows/model_only_km2_per_s" in figures:  # the pipeline against windows at the model's own speed
        figures["demo_aoi/block_pipeline_vs_windows_model_only"] = round(
            figures["demo_aoi/block/pipeline_km2_per_s"] / figures["demo_aoi/windows/model_only_km2_per_s"], 2)
    print(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
