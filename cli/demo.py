"""`landcover demo generate|serve`: build the offline demo world, serve it on loopback."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from pipeline.demo.world import DemoWorld, generate_world, parse_layout

demo_app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="The offline demo world: two Sentinel-2 tiles either side of 12°E near Venice (the default world covers "
    "lon 11.88..12.12, lat 45.35..45.45; draw an AOI inside it, or use --demo), served on 127.0.0.1.",
)
# Wide enough for the scene table whatever the terminal (item ids are never cut).
out = Console(width=max(120, Console().width))

_SIZE = typer.Option(1200, "--size", help="Tile size in 10 m pixels (even; a full Sentinel-2 tile is 10980).")
_SEED = typer.Option(0, "--seed", help="World seed: the same seed gives the same world.")
_CACHE = typer.Option(None, "--cache-dir", help="Cache folder (default: $LANDCOVER_CACHE or ~/.cache/landcover).")
_LAYOUT = typer.Option(
    None, "--layout", help="Tiles as COLUMNSxROWS across 12°E, e.g. 3x2 (default: the two-tile world, 2x1)."
)


def scenes_table(world: DemoWorld) -> Table:
    """One row per Item: how each scene is described and what its pixels hold."""
    table = Table(title=f"demo world {world.root}")
    for column in ("item", "EPSG", "date", "cloud %", "nodata %", "baseline", "boa_offset_applied"):
        table.add_column(column, no_wrap=column == "item")
    for item in world.items():
        p = item["properties"]
        flag = p.get("earthsearch:boa_offset_applied")
        table.add_row(
            item["id"], str(p["proj:epsg"]), p["datetime"][:10], f"{p['eo:cloud_cover']:.1f}",
            f"{p['s2:nodata_pixel_percentage']:.1f}", p["s2:processing_baseline"], "-" if flag is None else str(flag).lower(),
        )
    return table


def _layout(text: Optional[str]) -> Optional[tuple[int, int]]:
    return None if text is None else parse_layout(text)


@demo_app.command("generate")
def generate(
    size: int = _SIZE, seed: int = _SEED, cache_dir: Optional[Path] = _CACHE, layout: Optional[str] = _LAYOUT
) -> None:
    """Generate the demo world (or find it in the cache) and list its scenes."""
    world = generate_world(cache_dir, size_px=size, seed=seed, progress=True, layout=_layout(layout))
    out.print(scenes_table(world))
    west, south, east, north = world.extent()
    out.print(f"items: {world.items_path}\nAOI:   {world.aoi_path}\n"
              f"extent (an AOI inside it maps): lon {west:.4f}..{east:.4f}, lat {south:.4f}..{north:.4f}")
    for tile in world.tiles:
        out.print(f"truth {tile.mgrs} ({tile.crs}): {tile.truth_path}")


@demo_app.command("serve")
def serve(
    size: int = _SIZE, seed: int = _SEED, cache_dir: Optional[Path] = _CACHE, layout: Optional[str] = _LAYOUT
) -> None:
    """Serve the demo world (STAC API + file server on 127.0.0.1) until Ctrl-C."""
    from pipeline.demo.serve import serve_world

    world = generate_world(cache_dir, size_px=size, seed=seed, progress=True, layout=_layout(layout))
    with serve_world(world) as served:
        out.print(f"STAC API: {served.stac_url}\nfiles:    {served.files_url}\nAOI:      {world.aoi_path}")
        out.print("Ctrl-C stops both servers.")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            out.print("stopping")
