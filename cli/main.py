"""The `landcover` app: its sub-commands mounted, and one-line errors for everything a user can fix."""

from __future__ import annotations

import logging
import sys

import typer
from pydantic import ValidationError
from rich.console import Console

from pipeline import __version__
from pipeline.errors import LandcoverError
from pipeline.settings import WHOLE_LINE_ERROR

app = typer.Typer(
    name="landcover",
    help="Land-cover maps from Sentinel-2 L2A scenes: STAC search -> dask workers -> a model card's classifier -> "
    "COG/GeoPackage maps styled for QGIS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)


def _mount() -> None:
    if any(c.name == "map" for c in app.registered_commands):
        return
    from cli.assess import assess_app
    from cli.map import map_command
    from cli.model import model_app
    from cli.train import register as register_training
    from cli.demo import demo_app
    from pipeline.demo.dataset import demo_world_source, demo_world_window_source
    from cli.regions import register as register_workflows

    app.command("map")(map_command)
    app.add_typer(demo_app, name="demo")
    app.add_typer(model_app, name="model", help="Inspect a model and classify single patches.")
    # models/ never imports pipeline/: the loaders of pipeline-side training sources are handed in here.
    register_training(app, sources={"demo-world": demo_world_source},
                      window_sources={"demo-world": demo_world_window_source})
    register_workflows(app)
    app.add_typer(assess_app, name="assess", help="Accuracy assessment and area estimates (Olofsson et al. 2014).")


@app.command("version")
def version_command() -> None:
    """Print the software version."""
    typer.echo(__version__)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"landcover {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the software version and exit."),
) -> None:
    """Land-cover maps from Sentinel-2 L2A scenes: STAC search -> dask workers -> a model card's classifier ->
    COG/GeoPackage maps styled for QGIS."""


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "input"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if first["type"] == WHOLE_LINE_ERROR:  # already names the option, the problem and the fix
        return f"{first['msg']}{more}"
    return f"invalid {where}: {first['msg']}{more}"


def _quiet_dask(record: logging.LogRecord) -> bool:
    # dask narrates cluster start/stop at INFO (and sets its loggers' levels itself); a map
    # run reports its own progress, so only dask's errors reach the terminal. urllib3 says each
    # retry again after pipeline.search has said it in one line.
    if record.name.startswith(("distributed", "tornado", "urllib3")):
        return record.levelno >= logging.ERROR
    return True


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_dask)
    _mount()
    from pipeline.cluster import return_large_buffers_to_the_os

    return_large_buffers_to_the_os()  # this process is the client of its run: its peak memory stays flat
    try:
        app()
    except SystemExit as exc:
        # typer turns Ctrl-C into a bare exit 130 (an Exit raised from the KeyboardInterrupt).
        if exc.code == 130 and isinstance(getattr(exc.__context__, "__cause__", None), KeyboardInterrupt):
            _interrupted()
        raise
    except LandcoverError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ValidationError as exc:
        err.print(f"[red]error:[/red] {_one_line(exc)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()


def _interrupted() -> None:
    err.print("interrupted; nothing was written to the final paths")
    sys.exit(130)


if __name__ == "__main__":
    main()
