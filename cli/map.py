"""`landcover map`: plan a map over an AOI and make it (or print the plan)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from cli.options import with_settings
from pipeline.errors import LandcoverError
from pipeline.settings import MapSettings

err = Console(stderr=True)


@with_settings(MapSettings)
def map_command(
    aoi: Optional[Path] = typer.Argument(None, help="AOI GeoJSON in EPSG:4326 (omit with --demo)."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Output folder (default: maps/demo with --demo, which replaces its own earlier demo "
        "map; else maps/<AOI file name>)."),
    demo: bool = typer.Option(False, "--demo", help="Map the demo AOI over the offline demo world."),
    demo_layout: Optional[str] = typer.Option(
        None, "--demo-layout",
        help="Demo world of COLUMNSxROWS tiles across 12°E, e.g. 3x2 (with --demo: its whole area); source local only.",
    ),
    start: Optional[str] = typer.Option(
        None, help="First acquisition date, YYYY-MM-DD (default: 90 days before --end; the whole archive for "
        "the offline demo world)."),
    end: Optional[str] = typer.Option(None, help="Last acquisition date, YYYY-MM-DD (default: today)."),
    overwrite: bool = typer.Option(False, help="Replace a previous map in --out."),
    plan: bool = typer.Option(
        False, "--plan", help="Print what the run would do (scenes, tiles, cells, blocks, estimate) and stop; reads no pixel.",
    ),
    as_json: bool = typer.Option(False, "--json", help="With --plan: print the whole plan as JSON on stdout."),
    settings: dict[str, Any] | None = None,
) -> None:
    """Map land cover over an AOI into a COG, a GeoPackage, QGIS styles, a STAC item and a quicklook."""
    from pipeline.run import plan_run, run_map
    from pipeline.settings import MapConfig

    settings = dict(settings or {})
    if demo == (aoi is not None):
        raise LandcoverError("give either an AOI GeoJSON or --demo (not both, not neither)")
    layout = _demo_layout(demo_layout, demo, settings["source"])
    if demo:
        from pipeline.demo import generate_world

        aoi = generate_world(layout=layout).aoi_path
        settings["source"] = "local"
    out = out or default_out(aoi, demo)
    if demo and not overwrite and is_demo_map(out):
        overwrite = True  # `make map` again: the demo replaces its own earlier map, never a user's
        err.print(f"replacing the earlier demo map in {out}/")
    cfg = MapConfig(aoi=aoi, out=out, start=_date(start, "start"), end=_date(end, "end"), overwrite=overwrite,
                    demo_layout=layout, **settings)
    if plan:
        from pipeline.plan_summary import plan_json, plan_table

        run_plan, count = plan_run(cfg, err)
        if as_json:
            typer.echo(json.dumps(plan_json(run_plan, count), indent=2))
        else:
            err.print(plan_table(run_plan, count))
        return
    result = run_map(cfg, err)
    if demo:
        _report_demo_agreement(result, generate_world(layout=layout))
    err.print(done_line(result))


# What each timed stage of a run is, for the done line.
STAGE_LABELS = {
    "plan": "plan (AOI, model, search)",
    "cluster": "cluster start",
    "offsets": "scene checks",
    "load+infer": "read + classify",
    "model": "model loading on the workers (once)",
    "export": "export",
    "shutdown": "shutdown",
}


def done_line(result) -> str:
    """The last line of a map: cells, scenes used (and skipped), where it went, and the time of
    each stage, each named for what it is."""
    scenes = (f"{result.n_items} of {result.n_planned} scenes (skipped: "
              + "; ".join(f"{k}: {v}" for k, v in result.skipped.items()) + ")") if result.skipped else f"{result.n_items} scenes"
    stages = ", ".join(f"{STAGE_LABELS.get(k, k)} {v:.1f} s" for k, v in result.timings.items())
    return (f"[green]done[/green]: {result.n_valid:,} of {result.n_cells:,} cells classified from {scenes} -> {result.out}/ "
            f"({stages})")


def default_out(aoi: Path, demo: bool) -> Path:
    """maps/demo for the demo world, else maps/<AOI file name without its suffix>."""
    return Path("maps") / ("demo" if demo else aoi.stem)


def is_demo_map(out: Path) -> bool:
    """Whether ``out`` holds a map `--demo` made: its provenance names the offline demo catalogue
    and an AOI of a generated demo world (not the folder's name: a user's maps/demo is kept)."""
    import json

    from pipeline.demo.world import default_cache_dir

    try:
        item = json.loads((out / "item.json").read_text(encoding="utf-8"))
        parameters = item["properties"]["landcover:parameters"]
        aoi = Path(parameters["aoi"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    demo_root = (default_cache_dir() / "demo").resolve()
    return parameters.get("source") == "local" and not parameters.get("stac_url") and aoi.resolve().is_relative_to(demo_root)


def _date(value: Optional[str], name: str):
    from datetime import datetime

    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise LandcoverError(f"--{name} {value!r} is not a date; use YYYY-MM-DD") from None


def _demo_layout(text: Optional[str], demo: bool, source: str) -> Optional[tuple[int, int]]:
    """--demo-layout as (columns, rows); it names the served demo world, so only `local` takes it."""
    if text is None:
        return None
    if not demo and source != "local":
        raise LandcoverError(f"--demo-layout applies to the offline demo world (--demo or --source local), not --source {source}")
    from pipeline.demo import parse_layout

    return parse_layout(text)


def _report_demo_agreement(result, world) -> None:
    """The demo world has ground truth: say how the map compares, pixel by pixel and where
    truth is unambiguous. The truth is in BigEarthNet-19 codes, so a map in another legend (Dynamic
    World's, a user's own classes) is not compared: a line says why."""
    import rasterio

    from models.legend import bigearthnet_legend
    from pipeline.demo.truth import map_agreement, pixel_agreement

    landcover = result.out / "landcover.tif"
    with rasterio.open(landcover) as src:
        classes = src.read(1)
        names = src.tags().get("CLASS_NAMES", "")
    legend = bigearthnet_legend()
    if names.split(";")[1:] != [f"{code}={legend.name(code)}" for code in legend.codes]:
        err.print("no agreement with the demo world's truth: it is in BigEarthNet-19 classes, the map in its model's own")
        return
    pixels = pixel_agreement(world, landcover)
    agreement = map_agreement(classes, result.grid.cell_geobox, world, cell_px=result.grid.stride_px)
    err.print(
        f"agreement with the demo world's 10 m truth: {pixels.fraction:.1%} of {pixels.pixels:,} truth pixels; "
        f"cells >= {agreement.dominance:.0%} one class: {agreement.agree}/{agreement.dominated} = {agreement.accuracy:.1%}"
    )
