"""`landcover run`, `landcover run-due` and `landcover schedule print`.

Mounted by cli/main.py with ``register(app)``; errors raise LandcoverError subclasses, which
the main CLI prints as one line with exit status 2.
"""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from pipeline.errors import LandcoverError

err = Console(stderr=True)

schedule_app = typer.Typer(no_args_is_help=True, help="Print the crontab line or systemd timer for run-due.")


def _as_of(value: Optional[str]) -> Optional[date]:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise LandcoverError(f"--as-of {value!r} is not a date; use YYYY-MM-DD") from None


def _now(value: Optional[str]) -> Optional[datetime]:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise LandcoverError(f"--now {value!r} is not a time; use e.g. 2024-07-08T03:00") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def run_command(
    region_file: Path = typer.Argument(..., help="Region definition (YAML), e.g. workflows/regions/demo.yaml."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Run date YYYY-MM-DD (default: today, UTC)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Output root (default: the region's `root`)."),
    plan: bool = typer.Option(
        False, "--plan", help="Print what the run would do (blocks already done, cells, estimate) and stop; reads no pixel.",
    ),
) -> None:
    """Run one region: map it into <root>/<region>/<as-of>/, reusing what earlier runs made."""
    from workflows.region import load_region
    from workflows.runner import plan_region, run_region

    region = load_region(region_file)
    if plan:
        from pipeline.plan_summary import plan_table

        err.print(plan_table(*plan_region(region, as_of=_as_of(as_of), root=root, console=err)))
        return
    run_region(region, as_of=_as_of(as_of), root=root, console=err)


def run_due_command(
    folder: Path = typer.Argument(..., help="Folder of region files, e.g. workflows/regions/."),
    root: Optional[Path] = typer.Option(None, "--root", help="Output root for every region (default: each region's)."),
    now: Optional[str] = typer.Option(None, "--now", help="Pretend it is this UTC time (for testing schedules)."),
) -> None:
    """Run every region whose cron schedule fired since its last run (for cron / a systemd timer)."""
    from workflows.runner import run_due

    results = run_due(folder, now=_now(now), root=root, console=err)
    for r in results:
        # A failure's reason was said above, once; here its status and when it is tried again.
        detail = r.message if r.status in ("finished", "reused", "disabled", "locked") else ""
        when = f"next attempt {r.next_attempt:%Y-%m-%d %H:%M} UTC" if r.next_attempt else ""
        typer.echo("\t".join(x for x in (r.region, r.status, detail or when) if x))
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


def runs_command(
    region_file: Path = typer.Argument(..., help="Region definition (YAML) whose runs to list."),
    root: Optional[Path] = typer.Option(None, "--root", help="Output root (default: the region's `root`)."),
) -> None:
    """List a region's runs: date, status, scenes, model, changed area, output."""
    from rich.table import Table

    from workflows.region import load_region
    from workflows.runner import run_history

    region = load_region(region_file)
    table = Table(title=f"runs of {region.name}")
    for column in ("run", "as of", "status", "scenes", "model", "changed ha", "output / error"):
        table.add_column(column)
    for row in run_history(region, root=root):
        table.add_row(str(row.run_id), row.as_of.isoformat(), row.status, str(row.scenes), row.model,
                      "" if row.changed_ha is None else f"{row.changed_ha:,.1f}", row.where)
    Console(width=200).print(table)


@schedule_app.command("print")
def schedule_print(
    folder: Path = typer.Argument(Path("workflows/regions"), help="Folder of region files the job runs."),
    every: int = typer.Option(15, "--every", help="Minutes between checks (must divide an hour)."),
    log: Optional[Path] = typer.Option(
        None, "--log", help="Append the job's output to this file (default: run-due.log in the cache folder, "
        "$LANDCOVER_CACHE or ~/.cache/landcover)."),
) -> None:
    """Print a crontab line and a systemd service + timer pair running `landcover run-due FOLDER`."""
    from workflows.region import region_files
    from workflows.schedule import SchedulePlan, schedule_text

    folder = folder.resolve()
    region_files(folder)  # refuses a folder that is not there
    exe = shutil.which("landcover") or str(Path(sys.executable).with_name("landcover"))
    from pipeline.demo.world import default_cache_dir

    log = (log or default_cache_dir() / "run-due.log").resolve()
    plan = SchedulePlan(Path(exe).resolve(), folder, Path.cwd().resolve(), every, log)
    typer.echo(schedule_text(plan), nl=False)


def register(app: typer.Typer) -> None:
    """Add `run`, `run-due` and `schedule print` to the main `landcover` app (once)."""
    if any(c.name == "run" for c in app.registered_commands):
        return
    app.command("run")(run_command)
    app.command("run-due")(run_due_command)
    app.command("runs")(runs_command)
    app.add_typer(schedule_app, name="schedule", help="Print how to run `landcover run-due` from cron or systemd.")
