"""`landcover assess ...`: accuracy and area of a map by good practice (Olofsson et al. 2014).

    landcover assess design MAP_DIR [--n N | --target-se 0.01 | --per-class N] [--seed S]
    landcover assess label MAP_DIR --reference REF.tif [--crosswalk FILE.yaml]   (or label in QGIS)
    landcover assess report MAP_DIR [--samples FILE.gpkg]

Mounted by the main CLI as ``landcover assess``; user errors raise LandcoverError, which it prints
as one line (exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from pipeline.errors import LandcoverError

assess_app = typer.Typer(
    help="Accuracy and area of a map with 95% intervals: a stratified sample, reference labels, a report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)

_MAP_DIR = typer.Argument(..., help="The folder of a map made by `landcover map` (landcover.tif, item.json).")
_SAMPLES = typer.Option(None, "--samples", help="The sample GeoPackage (default: MAP_DIR/assessment.gpkg).")


def _map_dir(path: Path) -> Path:
    if not (path / "landcover.tif").is_file():
        raise LandcoverError(f"{path} holds no landcover.tif; give the folder of a map made by `landcover map`")
    return path


@assess_app.command("design")
def design_command(
    map_dir: Path = _MAP_DIR,
    n: Optional[int] = typer.Option(None, "--n", help="Sample points in all, allocated proportionally with --min-per-class."),
    target_se: Optional[float] = typer.Option(
        None, "--target-se", help="Standard error of overall accuracy to size the sample for (default 0.01; eq. 13).",
    ),
    per_class: Optional[int] = typer.Option(None, "--per-class", help="The same number of points in every class instead."),
    min_per_class: int = typer.Option(50, "--min-per-class", help="Fewest points of any class under proportional allocation."),
    users_accuracy: list[str] = typer.Option(
        [], "--users-accuracy", help="Assumed user's accuracy of a class for --target-se, CLASS=U (name or code); repeatable; default 0.8.",
    ),
    unit: float = typer.Option(10.0, "--unit", help="Metres: the pixel size of the finest reference you will label with."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed; the same seed draws the same points (default: drawn and recorded)."),
    samples: Optional[Path] = _SAMPLES,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing sample (its labels are lost)."),
) -> None:
    """Draw a stratified random sample of points by map class, styled for labelling in QGIS."""
    from pipeline.assess.design import design_sample, parse_users_accuracy
    from pipeline.assess.legend import read_legend
    from pipeline.assess.samples import (
        SAMPLES_GPKG,
        Samples,
        add_to_project,
        strata_table,
        write_samples,
    )

    map_dir = _map_dir(map_dir)
    path = samples or map_dir / SAMPLES_GPKG
    if path.exists() and not overwrite:
        raise LandcoverError(f"{path} already holds a sample (and maybe its labels); pass --overwrite or give --samples NEW.gpkg")
    legend = read_legend(map_dir)
    design = design_sample(
        map_dir, n=n, target_se=target_se, per_class=per_class, min_per_class=min_per_class,
        users_accuracy=parse_users_accuracy(users_accuracy, legend), unit_m=unit, seed=seed,
    )
    write_samples(path, Samples(design.samples, strata_table(design)), legend)
    project = add_to_project(map_dir, path, legend, design.samples.crs.to_wkt())
    for s in design.strata:
        err.print(f"  {s.name}: {s.n} of {s.units:,} points ({s.mapped_ha:,.0f} ha mapped)", highlight=False)
    listed = f", listed in {project.name}" if project else ""
    err.print(f"[green]done[/green]: {len(design.samples)} points (seed {design.seed}) -> {path}{listed}; "
              "fill their 'reference' field in QGIS or with `landcover assess label`")


@assess_app.command("label")
def label_command(
    map_dir: Path = _MAP_DIR,
    reference: Path = typer.Option(..., "--reference", help="A reference raster of class codes (e.g. the demo world's truth)."),
    crosswalk: Optional[Path] = typer.Option(
        None, "--crosswalk", help="YAML: reference value -> map class (name or code); null for 'no reference'.",
    ),
    samples: Optional[Path] = _SAMPLES,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace labels already given (default: fill empty ones only)."),
) -> None:
    """Read each sample point's reference class from a raster."""
    from pipeline.assess.label import label_from_raster, name_rows, read_crosswalk
    from pipeline.assess.legend import read_legend
    from pipeline.assess.samples import SAMPLES_GPKG, read_samples, write_samples

    map_dir = _map_dir(map_dir)
    if not reference.is_file():
        raise LandcoverError(f"reference raster not found: {reference}")
    path = samples or map_dir / SAMPLES_GPKG
    legend = read_legend(map_dir)
    table = read_crosswalk(crosswalk, legend) if crosswalk is not None else None
    labelled, outcome = label_from_raster(read_samples(path), legend, reference, table, overwrite=overwrite)
    write_samples(path, labelled, legend)
    kept = f", {outcome.kept} kept their label" if outcome.kept else ""
    err.print(f"[green]done[/green]: {outcome.labelled} points labelled from {reference.name}{kept} -> {path}", highlight=False)
    if outcome.no_reference:
        err.print(f"[yellow]warning[/yellow]: {name_rows(list(outcome.no_reference))} have no reference value "
                  "(off the raster or on its nodata); label them in QGIS before `landcover assess report`", highlight=False)


@assess_app.command("report")
def report_command(map_dir: Path = _MAP_DIR, samples: Optional[Path] = _SAMPLES) -> None:
    """Error matrix, accuracies and class areas with 95% intervals, from the labelled sample."""
    from pipeline.assess.report import write_report

    map_dir = _map_dir(map_dir)
    assessment, files = write_report(map_dir, samples)
    overall = assessment.estimate.overall
    err.print(f"overall accuracy {overall.value:.3f} (95% interval {overall.low:.3f} to {overall.high:.3f}) "
              f"from {assessment.samples} points", highlight=False)
    for note in assessment.notes:
        err.print(f"[yellow]note[/yellow]: {note}", highlight=False)
    recorded = f", recorded in {files.item.name}" if files.item else ""
    err.print(f"[green]done[/green]: {files.json.name}, {files.markdown.name}, {files.png.name} in {map_dir}{recorded}", highlight=False)
