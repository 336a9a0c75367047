"""Country-sized runs: planning time and client memory as the AOI grows (issue #11).

    python -m benchmarks --scale        (make bench BENCH_ARGS=--scale)
    python -m benchmarks.scale [--planning-only | --pixels-only] [--large]

1. Planning over a metadata-only synthetic catalogue (pipeline.demo.catalogue, 2 dates per MGRS
   tile) served by the same STAC API process as the demo world: AOIs of about 1, 10, 100 and
   1,000 tiles, each planned in a fresh process (search, grid clipped to the footprints, every
   block counted; no pixel read) so its peak RSS is its own; cells of 1.2 km (one window each).
   Then the ~1,000-tile AOI planned as today's default map (100 m cells of the demo multi-band
   card, windows counted per block) and as a 10 m per-pixel map (Dynamic World's card: 10 m cells,
   blocks with a 32 px halo), whose cells are counted by area (pipeline.plan_summary.count_work:
   no per-cell geometry, edge blocks rasterised).
2. Pixel runs over the multi-tile demo world (3 x 2 tiles, two UTM zones): the same
   `landcover map` on AOIs of 36 and 144 km² (and 441 km² with ``--large``), each without and
   with ``--save-composite``; the client's RSS is sampled every 0.1 s (the client process alone,
   not its dask workers). About 4 min on 2 cores, 7 with ``--large``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TILE_COUNTS = (1, 10, 100, 1000)
REPO = Path(__file__).resolve().parent.parent


def plan_one(url: str, aoi_path: str, layout: str = "window") -> dict:
    """Search + plan in this process; the figures as a dict (run as a child by :func:`planning`).
    ``layout``: ``window`` (1.2 km cells, one window each), ``default`` (the default map's 100 m
    cells and windows, the demo multi-band card) or ``per-pixel`` (10 m, Dynamic World's card)."""

    from pipeline.aoi import read_aoi
    from pipeline.patches import plan_grid
    from pipeline.plan import MIN_BLOCKS, footprint_union
    from pipeline.plan_summary import count_work
    from pipeline.search import SearchParams, search_items

    from datetime import date

    card = None
    if layout in ("default", "per-pixel"):
        # The card's module imports torch (about 650 MiB of RSS here): before the clock and the
        # RSS baseline, so the figures are the planning's own.
        import models.reben  # noqa: F401  (timm, which the default card's evaluation path reads)
        from models.card import ModelCard, card_path
        from models.dynamicworld import model_card
        from pipeline.plan import DEFAULT_WEIGHTS, plan_layout
        from pipeline.settings import MapConfig

        card = model_card("", None, "0" * 64, {}) if layout == "per-pixel" else ModelCard.read(card_path(DEFAULT_WEIGHTS))
    imports_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    aoi = read_aoi(aoi_path)
    params = SearchParams(source="earth-search", stac_url=url, collection="sentinel-2-l2a", start=date(2015, 6, 23),
                          end=date(2026, 12, 31), max_cloud=100.0, max_items_per_tile=3)
    items = search_items(params, aoi)
    searched = time.perf_counter()
    detail = None
    if card is not None:
        cfg = MapConfig(aoi=Path(aoi_path), out=Path(aoi_path).with_suffix(".map"), source="earth-search")
        grid, detail, _ = plan_layout(cfg, aoi, items, card)
    else:
        grid = plan_grid(aoi, window_px=120, min_blocks=MIN_BLOCKS, coverage=footprint_union(items))
    plan = count_work(aoi, items, grid, model_sha256="0" * 64, min_clear=0.5, detail=detail, started=searched)
    return {"cell_m": plan.cell_m,
        "tiles": len(plan.tiles), "scenes": plan.scenes, "cells": plan.cells, "blocks": plan.blocks,
        "search_s": searched - started, "plan_s": plan.seconds, "total_s": time.perf_counter() - started,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "imports_rss_mib": imports_rss,
    }


def planning(largest_as: tuple[str, ...] = ("default", "per-pixel")) -> list[dict]:
    """The planning rows: each AOI of :data:`TILE_COUNTS` tiles with 1.2 km cells, then the largest
    planned with each layout of ``largest_as`` (see :func:`plan_one`)."""
    from pipeline.demo.catalogue import aoi_geometry, catalogue_collection, country_aoi, synthetic_catalogue
    from pipeline.demo.serve import serve_items

    aois = {n: country_aoi(n) for n in TILE_COUNTS}
    t0 = time.perf_counter()
    items = synthetic_catalogue(aoi_geometry(aois[max(TILE_COUNTS)]), dates_per_tile=2)
    generated = time.perf_counter() - t0
    rows = []
    with tempfile.TemporaryDirectory(prefix="landcover-bench-scale-") as tmp, serve_items(items, catalogue_collection(items)) as url:
        print(f"synthetic catalogue: {len(items):,} items generated in {generated:.1f} s, served at {url}")
        runs = [(n, "window") for n in aois] + [(max(TILE_COUNTS), layout) for layout in largest_as]
        for n, layout in runs:
            path = Path(tmp) / f"aoi-{n}.geojson"
            path.write_text(json.dumps(aois[n]))
            out = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--plan-one", url, str(path), layout],
                                 capture_output=True, text=True, cwd=REPO, check=True)
            rows.append({"asked": n, "layout": layout, **json.loads(out.stdout.strip().splitlines()[-1])})
    return rows


def _client_peak_rss(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Run ``cmd``; its own peak RSS (MiB, sampled every 0.1 s), seconds, exit code."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    err = proc.stderr.read()
    if proc.returncode:
        print(err[-2000:], file=sys.stderr)
    return peak / 2**20, time.perf_counter() - start, proc.returncode


PIXEL_SIDES_KM = (6.0, 12.0)  # 36 and 144 km²: 4x the area
LARGE_SIDE_KM = 21.0  # 441 km² (--large): about 3 min more on 2 cores


def pixel_runs(sides_km: tuple[float, ...] = PIXEL_SIDES_KM) -> list[dict]:
    """`landcover map` over the 3 x 2 demo world on a central AOI of each side, each once without
    and once with --save-composite, one world served for all: the client's peak RSS and seconds."""
    from pipeline.demo import generate_world
    from pipeline.demo.serve import serve_world

    world = generate_world(layout=(3, 2), progress=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="landcover-bench-scale-") as tmp, serve_world(world) as served:
        for side in sides_km:
            aoi = Path(tmp) / f"aoi-{side:g}km.geojson"
            aoi.write_text(json.dumps(world.central_aoi(side)))
            for save_composite in (False, True):
                out = Path(tmp) / f"map-{side:g}{'-composite' * save_composite}"
                cmd = [str(Path(sys.executable).with_name("landcover")), "map", str(aoi), "--source", "local",
                       "--stac-url", served.stac_url, "--out", str(out), "--workers", "2",
                       *(["--save-composite"] if save_composite else [])]
                peak, seconds, code = _client_peak_rss(cmd, dict(os.environ))
                summary = json.loads((out / "summary.json").read_text()) if code == 0 else {}
                rows.append({"side_km": side, "area_km2": side * side, "save_composite": save_composite,
                             "cells": summary.get("cells", {}).get("valid"), "seconds": seconds,
                             "client_peak_rss_mib": peak, "exit": code})
    return rows


def main(argv: list[str]) -> None:
    if argv[:1] == ["--plan-one"]:
        print(json.dumps(plan_one(argv[1], argv[2], *argv[3:4])))
        return
    if "--pixels-only" not in argv:
        report_planning()
    if "--planning-only" not in argv:
        report_pixels(large="--large" in argv)


def report_planning() -> None:
    print("\n== scale: planning over a synthetic catalogue (no pixel read) ==")
    every = planning()
    rows = [r for r in every if r["layout"] == "window"]
    print(f"{'tiles asked':>11} {'cell m':>6} {'tiles':>6} {'scenes':>7} {'cells':>15} {'blocks':>8} {'search s':>9} "
          f"{'plan s':>7} {'total s':>8} {'s/tile':>7} {'us/cell':>8} {'peak RSS MiB':>13} {'after imports':>13}")
    for r in every:
        print(f"{r['asked']:>11} {r['cell_m']:>6g} {r['tiles']:>6} {r['scenes']:>7} {r['cells']:>15,} {r['blocks']:>8,} "
              f"{r['search_s']:>9.2f} {r['plan_s']:>7.2f} {r['total_s']:>8.2f} {r['total_s'] / r['tiles']:>7.3f} "
              f"{1e6 * r['total_s'] / max(1, r['cells']):>8.4f} {r['peak_rss_mib']:>13.0f} {r['imports_rss_mib']:>13.0f}"
              + _LAYOUT_NOTES[r["layout"]])
    small, big = rows[-2], rows[-1]
    growth = (big["total_s"] / small["total_s"]) / (big["tiles"] / small["tiles"])
    print(f"planning time {big['tiles']} vs {small['tiles']} tiles: {big['total_s'] / small['total_s']:.1f}x the time "
          f"for {big['tiles'] / small['tiles']:.1f}x the tiles (ratio {growth:.2f}; <= 1 is at most linear); "
          f"largest peak RSS {max(r['peak_rss_mib'] for r in rows):.0f} MiB (target < 1024)")



_LAYOUT_NOTES = {"window": "", "default": "  (the default map: 100 m cells, windows counted per block)",
                 "per-pixel": "  (10 m per-pixel map, Dynamic World's card: cells counted by area)"}


def report_pixels(large: bool = False) -> None:
    """The pixel rows: per AOI, the client's peak without and with --save-composite and what the
    composite adds; then how each grows from the smallest AOI to the largest."""
    print("\n== scale: pixel runs over the 3 x 2 tile demo world (client RSS, not workers) ==")
    rows = pixel_runs(PIXEL_SIDES_KM + ((LARGE_SIDE_KM,) if large else ()))
    by = {(r["side_km"], r["save_composite"]): r for r in rows}
    sides = sorted({r["side_km"] for r in rows})
    print(f"{'AOI':>18} {'cells':>7} {'map only MiB':>13} {'s':>5} {'with --save-composite MiB':>26} {'s':>5} "
          f"{'composite adds MiB':>19}")
    for side in sides:
        plain, comp = by[side, False], by[side, True]
        failed = [r for r in (plain, comp) if r["exit"]]
        note = f"  (exit {failed[0]['exit']})" if failed else ""
        print(f"{f'{side:g} x {side:g} km':>10} {side * side:>3.0f} km² {plain['cells'] or 0:>7} "
              f"{plain['client_peak_rss_mib']:>13.0f} {plain['seconds']:>5.0f} {comp['client_peak_rss_mib']:>26.0f} "
              f"{comp['seconds']:>5.0f} {comp['client_peak_rss_mib'] - plain['client_peak_rss_mib']:>+19.0f}{note}")
    small, big = sides[0], sides[-1]
    for save_composite, what in ((False, "map only"), (True, "with --save-composite")):
        a, b = by[small, save_composite]["client_peak_rss_mib"], by[big, save_composite]["client_peak_rss_mib"]
        print(f"{what}: {big * big / (small * small):.0f}x the area ({small * small:.0f} -> {big * big:.0f} km²): "
              f"client peak {b - a:+.0f} MiB (x{b / a:.2f})")


if __name__ == "__main__":
    main(sys.argv[1:])
