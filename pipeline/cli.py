"""`landcover`: the command line. Errors a user can fix print as one line and exit 2."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console

from pipeline import __version__
from pipeline.config import WHOLE_LINE_ERROR
from pipeline.errors import LandcoverError

app = typer.Typer(
    name="landcover",
    help="Land-cover maps from Sentinel-2 L2A scenes: STAC search -> dask -> SR x8 + ResNet -> COG/GeoPackage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)


def _mount() -> None:
    from models.cli import model_app
    from pipeline.demo.cli import demo_app

    app.add_typer(demo_app, name="demo", help="The offline demo world: generate it, serve it.")
    app.add_typer(model_app, name="model", help="Inspect a model and classify single patches.")
    from models.train_cli import register as register_training
    from pipeline.demo.dataset import demo_world_source, demo_world_window_source
    from workflows.cli import register as register_workflows

    # models/ never imports pipeline/: the loaders of pipeline-side training sources are handed in here.
    register_training(app, sources={"demo-world": demo_world_source},
                      window_sources={"demo-world": demo_world_window_source})
    register_workflows(app)


def _date(value: Optional[str], name: str):
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise LandcoverError(f"--{name} {value!r} is not a date; use YYYY-MM-DD") from None


@app.command("map")
def map_command(
    aoi: Optional[Path] = typer.Argument(None, help="AOI GeoJSON in EPSG:4326 (omit with --demo)."),
    out: Path = typer.Option(Path("maps/demo"), "--out", "-o", help="Output folder."),
    demo: bool = typer.Option(False, "--demo", help="Map the demo AOI over the offline demo world."),
    demo_layout: Optional[str] = typer.Option(
        None, "--demo-layout",
        help="Demo world of COLUMNSxROWS tiles across 12°E, e.g. 3x2 (with --demo: its whole area); source local only.",
    ),
    source: str = typer.Option("local", help="local | earth-search | planetary-computer"),
    stac_url: Optional[str] = typer.Option(None, help="Override the source's STAC API URL."),
    collection: str = typer.Option(
        "sentinel-2-l2a", help="STAC collection: sentinel-2-l2a, or sentinel-2-c1-l2a (Earth Search Collection 1)."
    ),
    start: Optional[str] = typer.Option(None, help="First acquisition date, YYYY-MM-DD."),
    end: Optional[str] = typer.Option(None, help="Last acquisition date, YYYY-MM-DD."),
    max_cloud: float = typer.Option(60.0, help="Max scene cloud cover in percent."),
    max_items_per_tile: int = typer.Option(3, help="Best scenes kept per MGRS tile."),
    model: Optional[Path] = typer.Option(None, help="Weights (.safetensors/.pt) with a card JSON beside them."),
    scheduler: Optional[str] = typer.Option(None, help="Existing dask scheduler, e.g. tcp://host:8786."),
    workers: Optional[int] = typer.Option(None, help="LocalCluster worker processes (default: one per core)."),
    crs: Optional[str] = typer.Option(None, help="Output CRS (default: UTM zone of the AOI centre)."),
    read_resolution: Optional[float] = typer.Option(
        None, "--read-resolution",
        help="Metres to read the COGs at, a multiple of 10 (default: the overview level the model's input pixel allows, "
        "20 for the seed-family models, 10 for reBEN).",
    ),
    cell_size: float = typer.Option(100.0, "--cell-size", help="Output cell size in metres (1200: one cell per 1.2 km window)."),
    stride: Optional[int] = typer.Option(None, help="Pixels between window origins (default: a third of the window, 40)."),
    dense: bool = typer.Option(True, "--dense/--no-dense", help="Apply the classifier head at every position of its feature map."),
    blend: str = typer.Option("gaussian", help="Weight of overlapping windows: gaussian | hann | box."),
    min_clear: float = typer.Option(0.5, help="Cells with a smaller clear fraction become nodata."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    batch_size: Optional[int] = typer.Option(None, help="Inference batch size (default: adaptive)."),
    overwrite: bool = typer.Option(False, help="Replace a previous map in --out."),
    save_composite: bool = typer.Option(
        False, "--save-composite",
        help="Also write composite.tif, the cloud-free reflectance the map was classified from "
        "(a QGIS backdrop, and the --imagery of `landcover active-learn`).",
    ),
    plan: bool = typer.Option(
        False, "--plan", help="Print what the run would do (scenes, tiles, cells, blocks, estimate) and stop; reads no pixel.",
    ),
) -> None:
    """Map land cover over an AOI into a COG, a GeoPackage, QGIS styles, a STAC item and a quicklook."""
    from pipeline.config import MapConfig
    from pipeline.run import run_map

    if demo == (aoi is not None):
        raise LandcoverError("give either an AOI GeoJSON or --demo (not both, not neither)")
    layout = _demo_layout(demo_layout, demo, source)
    if demo:
        from pipeline.demo import generate_world

        aoi = generate_world(layout=layout).aoi_path
        source = "local"
    cfg = MapConfig(
        aoi=aoi, out=out, source=source, stac_url=stac_url, collection=collection,
        start=_date(start, "start"), end=_date(end, "end"),
        max_cloud=max_cloud, max_items_per_tile=max_items_per_tile, model=model, scheduler=scheduler,
        workers=workers, crs=crs, read_resolution=read_resolution, cell_size=cell_size, stride=stride, dense=dense,
        blend=blend, min_clear=min_clear, device=device,
        batch_size=batch_size, overwrite=overwrite, save_composite=save_composite, demo_layout=layout,
    )
    if plan:
        from pipeline.run import plan_run

        err.print(plan_run(cfg, err).table())
        return
    result = run_map(cfg, err)
    if demo:
        _report_demo_agreement(result, generate_world(layout=layout))
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    err.print(
        f"[green]done[/green]: {result.n_valid} of {result.n_cells} cells classified from {result.n_items} scenes "
        f"-> {result.out}/ ({stages})"
    )


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
    truth is unambiguous."""
    import rasterio

    from pipeline.demo.truth import map_agreement, pixel_agreement

    landcover = result.out / "landcover.tif"
    with rasterio.open(landcover) as src:
        classes = src.read(1)
    pixels = pixel_agreement(world, landcover)
    agreement = map_agreement(classes, result.grid.cell_geobox, world, cell_px=result.grid.stride_px)
    err.print(
        f"agreement with the demo world's 10 m truth: {pixels.fraction:.1%} of {pixels.pixels:,} truth pixels; "
        f"cells >= {agreement.dominance:.0%} one class: {agreement.agree}/{agreement.dominated} = {agreement.accuracy:.1%}"
    )


@app.command("version")
def version_command() -> None:
    """Print the software version."""
    typer.echo(__version__)


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "input"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if first["type"] == WHOLE_LINE_ERROR:  # already names the option, the problem and the fix
        return f"{first['msg']}{more}"
    return f"invalid {where}: {first['msg']}{more}"


def _quiet_dask(record: logging.LogRecord) -> bool:
    # dask narrates cluster start/stop at INFO (and sets its loggers' levels itself); a map
    # run reports its own progress, so only dask's errors reach the terminal.
    if record.name.startswith(("distributed", "tornado")):
        return record.levelno >= logging.ERROR
    return True


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_dask)
    _mount()
    try:
        app()
    except LandcoverError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ValidationError as exc:
        err.print(f"[red]error:[/red] {_one_line(exc)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; nothing was written to the final paths")
        sys.exit(130)


if __name__ == "__main__":
    main()
