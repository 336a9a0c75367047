"""`landcover model ...`: describe a model (info), install one (fetch, import) and classify an image
with it (predict: one window, a whole composite tiled into windows, or a per-pixel model's shares).
The images it reads and writes are cli.images'.

Mounted by the main CLI as ``landcover model``; errors print ``error: <one line>`` to stderr and
exit 2, like the rest of the command line.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from cli.images import (
    ImageError,
    is_picture,
    read_patch,
    read_pixel_image,
    write_png,
    write_window_raster,
)
from models.errors import LandcoverError

model_app = typer.Typer(
    help="Inspect a model and classify single patches.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
EXIT_USER_ERROR = 2


def _fail(exc: LandcoverError) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USER_ERROR)


def _card_table(card) -> Table:
    table = Table(title="model card", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    data = card.model_dump(mode="json")
    data["classes"] = f"{len(card.classes)}: " + ", ".join(card.classes)
    data["normalisation"] = card.normalisation.description
    data["training_data"] = ("SYNTHETIC (demo) - " if card.training_data.synthetic else "") + card.training_data.description
    data["metrics"] = json.dumps(card.metrics) if card.metrics else "none recorded"
    for key, value in data.items():
        table.add_row(key, str(value))
    return table


def _params_table(counts: dict[str, int]) -> Table:
    table = Table(title="parameters")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    table.add_column("millions", justify="right")
    for part, label in (("sr", "SR generator"), ("backbone", "backbone"), ("head", "head (fc)"), ("total", "total")):
        table.add_row(label, f"{counts[part]:,}", f"{counts[part] / 1e6:.2f} M")
    return table


@model_app.command("info")
def info(
    path: Path = typer.Argument(..., help="Weights (.safetensors/.pth) with their card JSON beside them, or the repo "
                                "id of an installed model (e.g. google/dynamicworld)."),
    profile: str | None = typer.Option(None, help="Profile, if the weights have no card (default: from shapes)."),
    variant: str | None = typer.Option(None, help="SR variant: esrgan | seed-classifier."),
) -> None:
    """Print the model card and the parameter counts of SR, backbone and head."""
    from models.checkpoint import load_model
    from models.classifier import count_parameters

    try:
        model, card = load_model(installed(path), profile=profile, variant=variant)
    except LandcoverError as e:
        raise _fail(e) from None
    out = Console()
    out.print(_card_table(card))
    if card.family == "per-pixel":
        total = sum(int(t.numel()) for t in model.state_dict().values())
        out.print(_params_table({"sr": 0, "backbone": total - sum(p.numel() for p in model.conv2d_14.parameters()),
                                 "head": sum(p.numel() for p in model.conv2d_14.parameters()), "total": total}))
    elif card.family == "timm":
        total = sum(p.numel() for p in model.parameters())
        out.print(_params_table({"sr": 0, "backbone": total - _head_parameters(model), "head": _head_parameters(model),
                                 "total": total}))
    else:
        out.print(_params_table(count_parameters(model)))


def installed(path: Path) -> Path:
    """A weights path as given, or the weights of an installed model named by its repo id (as
    `landcover map --model` takes them)."""
    from pipeline.plan import model_path

    # A file name (with a suffix) stays a path: a missing file is named as such by the loader.
    return path if path.exists() or path.suffix else model_path(path)


def _head_parameters(model) -> int:
    return sum(p.numel() for p in model.net.get_classifier().parameters())


_CACHE_OPTION = typer.Option(None, "--cache-dir", help="Model cache (default: $LANDCOVER_CACHE/models or ~/.cache/landcover/models).")
_BAND_ORDER_OPTION = typer.Option(
    None, "--band-order", help="v0.2 | v0.1: the release whose band order the weights take (default: from the repo name)."
)


def _report_installed(weights: Path) -> None:
    """The installed weights path on stdout (for scripts); what it is on stderr."""
    from models.card import card_path
    from models.checkpoint import read_card

    card = read_card(weights)
    err = Console(stderr=True)
    if card is not None:
        from models.bands import band_id

        bands = ",".join(band_id(b) for b in card.bands)
        metrics = "; ".join(f"{m.name} {m.value:g} ({m.split})" for m in card.published_metrics) or "none published"
        err.print(f"installed {card.model_id} ({card.architecture.model_name if card.architecture else card.profile}, "
                  f"{card.licence or 'licence unknown'}): bands {bands}, {len(card.classes)} classes {card.task}, "
                  + (f"per pixel at {card.pixel.resolution_m:g} m; " if card.family == "per-pixel"
                     else f"window {card.window_px} px; ")
                  + f"published metrics: {metrics}; card {card_path(weights)}",
                  highlight=False, soft_wrap=True)
    typer.echo(str(weights))


@model_app.command("fetch")
def fetch(
    repo_id: str = typer.Argument(..., help="Hub model repo, e.g. BIFOLD-BigEarthNetv2-0/resnet50-s2-v0.2.0."),
    revision: str | None = typer.Option(None, help="Branch, tag or commit (default: main)."),
    band_order: str | None = _BAND_ORDER_OPTION,
    cache_dir: Path | None = _CACHE_OPTION,
) -> None:
    """Download a BigEarthNet v2 (reBEN) classifier from the Hugging Face Hub ($HF_ENDPOINT) and install it
    with its model card; prints the weights path to pass as `landcover map --model`."""
    from models.card import model_cache
    from models.hub import download_checkpoint
    from models.reben import install_checkpoint

    try:
        root = model_cache(cache_dir)
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root) as tmp:
            got = download_checkpoint(repo_id, revision, dest=Path(tmp) / "download")
            weights = install_checkpoint(got.folder, repo_id=got.repo_id, revision=got.revision, commit=got.commit,
                                         band_order_release=band_order, cache=root)
    except OSError as e:
        raise _fail(LandcoverError(f"cannot write the model cache {cache_dir or model_cache()}: {e.strerror}; "
                                   "set LANDCOVER_CACHE or --cache-dir to a writable folder")) from None
    except LandcoverError as e:
        raise _fail(e) from None
    _report_installed(weights)


@model_app.command("import")
def import_folder(
    folder: Path = typer.Argument(..., help="A folder with config.json and model.safetensors (e.g. a Hub snapshot), "
                                  "or Dynamic World's SavedModel (a clone of google/dynamicworld, or its model/forward)."),
    repo_id: str | None = typer.Option(None, help="The repo it came from (default: from the folder's name)."),
    revision: str = typer.Option("main", help="The revision it is (default: main); for Dynamic World without a .git, "
                                 "the commit of google/dynamicworld it is (recorded in the card)."),
    band_order: str | None = _BAND_ORDER_OPTION,
    cache_dir: Path | None = _CACHE_OPTION,
) -> None:
    """Install a reBEN checkpoint or Dynamic World's published network downloaded elsewhere (checked, with its
    model card); prints the weights path."""
    from models import dynamicworld
    from models.reben import guess_origin, install_checkpoint

    try:
        if dynamicworld.is_savedmodel_folder(folder):  # TensorFlow's variables read without TensorFlow
            weights = dynamicworld.install(folder, revision=None if revision == "main" else revision, cache=cache_dir)
            _report_installed(weights)
            return
        guessed_repo, commit = guess_origin(folder)
        weights = install_checkpoint(folder, repo_id=repo_id or guessed_repo, revision=revision, commit=commit,
                                     band_order_release=band_order, cache=cache_dir)
    except OSError as e:
        raise _fail(LandcoverError(f"cannot install {folder}: {e.strerror}; check the folder and the model cache")) from None
    except LandcoverError as e:
        raise _fail(e) from None
    _report_installed(weights)




def _probability_table(title: str, card, probs: np.ndarray, top: int) -> Table:
    kind = "independent probabilities (multi-label)" if card.task == "multi-label" else "softmax probabilities"
    table = Table(title=f"{title}: top {min(top, len(probs))} classes ({kind})", caption=card.demo_label)
    for column, justify in (("rank", "right"), ("code", "right"), ("class", "left"), ("probability", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    codes = card.class_codes
    for rank, i in enumerate(np.argsort(-probs, kind="stable")[:top], start=1):
        table.add_row(str(rank), str(codes[i]), card.classes[i], f"{probs[i]:.3f}")
    return table




def _predict_pixels(predictor, image: Path, *, as_json: bool, top: int, bands: list[int] | None = None) -> None:
    """per-pixel models: the share of the image's pixels each class takes (argmax per pixel)."""
    card = predictor.card
    probs = predictor.predict_pixels(read_pixel_image(image, card, bands))[0]
    counts = np.bincount(probs.argmax(0).ravel(), minlength=len(card.classes))
    shares = counts / counts.sum()
    if as_json:
        typer.echo(json.dumps({"pixels": int(counts.sum()), "share": dict(zip(card.classes, shares.tolist())),
                               "mean_probability": dict(zip(card.classes, probs.mean(axis=(1, 2)).tolist()))}, indent=2))
        return
    table = Table(title=f"{image.name}: {counts.sum():,} pixels, most frequent classes", caption=card.demo_label)
    for column in ("code", "class", "share of pixels", "mean probability"):
        table.add_column(column, justify="left" if column == "class" else "right")
    codes = card.class_codes
    for i in np.argsort(-counts, kind="stable")[:top]:
        table.add_row(str(codes[i]), card.classes[i], f"{shares[i]:.1%}", f"{probs[i].mean():.3f}")
    Console().print(table)


@model_app.command("predict")
def predict(
    path: Path = typer.Argument(..., help="Weights (.safetensors/.pth) with their card JSON beside them, or the repo "
                                "id of an installed model."),
    image: Path = typer.Argument(..., help="GeoTIFF of the model's bands (e.g. the map's composite.tif or a window of "
                                 "it; bands found by description or --bands), or an RGB picture (PNG) for RGB models."),
    as_json: bool = typer.Option(False, "--json", help="Print every class probability as JSON, in class order "
                                 "(a whole raster: one entry per window)."),
    raster: Path | None = typer.Option(None, "--raster", help="Write a small GeoTIFF, one pixel per window: "
                                          "top class code and its probability."),
    bands: str | None = typer.Option(None, "--bands", help="File band numbers of the model's bands, in the card's "
                                        "order (e.g. 3,2,1), when the image's bands are not named."),
    save_sr: Path | None = typer.Option(None, "--save-sr", help="Write the super-resolved image as PNG (one window)."),
    top: int = typer.Option(5, min=1, help="How many classes to list without --json."),
    profile: str | None = typer.Option(None, help="Profile, if the weights have no card."),
    variant: str | None = typer.Option(None, help="SR variant: esrgan | seed-classifier."),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda when available)."),
) -> None:
    """Classify an image with any model: one window of the model's footprint (1.2 km), or a whole
    raster tiled into windows (a table, --json, or a --raster of top classes)."""
    from cli.train import parse_bands
    from models.checkpoint import load_model
    from models.imagery import classify, cut_windows, read_imagery
    from models.predictor import Predictor

    try:
        model, card = load_model(installed(path), profile=profile, variant=variant)
        if card.family == "per-pixel":  # a class per pixel: the shares of the image's pixels
            _predict_pixels(Predictor(model, card, device=device, batch_size=1), image, as_json=as_json, top=top,
                            bands=parse_bands(bands))
            return
        predictor = Predictor(model, card, device=device, batch_size=None if raster or as_json else 1)
        if image.is_file() and is_picture(image):
            if card.family != "sr-classifier":
                raise ImageError(f"{card.model_id} takes {len(card.bands)} bands of reflectance ({', '.join(card.bands)}), "
                                 f"not an RGB picture: give a GeoTIFF of those bands, e.g. the map's composite.tif")
            patch = read_patch(image, card.patch_size)
            if save_sr is not None and model.sr_model is None:
                raise ImageError(f"profile {card.profile!r} has no SR generator: drop --save-sr")
            probs = predictor.predict(patch).probs
            if save_sr is not None:
                write_png(predictor.super_resolve(patch)[0], save_sr)
            windows = None
        else:
            if not image.is_file():
                raise ImageError(f"image not found: {image}")
            imagery = read_imagery(image, card, bands=parse_bands(bands))
            windows = cut_windows(imagery, card)
            if len(windows) == 0:
                raise ImageError(f"no window of {image} has 90% clear pixels: nothing to classify")
            if save_sr is not None:
                raise ImageError("--save-sr takes an RGB picture (PNG) of one patch; drop it for GeoTIFFs")
            probs = classify(predictor, windows.data).probs
            if raster is not None:
                write_window_raster(raster, windows, probs, card, imagery.shape, imagery.transform, imagery.crs)
    except LandcoverError as e:
        raise _fail(e) from None
    if windows is None or len(windows) == 1:
        if as_json:
            typer.echo(json.dumps({name: float(p) for name, p in zip(card.classes, probs[0])}, indent=2))
            return
        out = Console()
        out.print(_probability_table(image.name, card, probs[0], top))
        if save_sr is not None:
            out.print(f"super-resolved image written to {save_sr}")
        return
    if as_json:
        typer.echo(json.dumps({
            "model": card.model_id, "task": card.task, "window_m": card.ground_footprint_m, "crs": windows.crs,
            "windows": [{"id": wid, "bounds": list(b), "top": card.classes[int(p.argmax())],
                         "probabilities": {name: round(float(v), 6) for name, v in zip(card.classes, p)}}
                        for wid, b, p in zip(windows.ids, windows.bounds, probs)],
        }, indent=1))
        return
    out = Console()
    table = Table(title=f"{image.name}: {len(windows)} windows of {card.ground_footprint_m:g} m", caption=card.demo_label)
    for column in ("window", "top class", "code", "probability"):
        table.add_column(column)
    for wid, p in zip(windows.ids, probs):
        k = int(p.argmax())
        table.add_row(wid, card.classes[k], str(card.class_codes[k]), f"{p[k]:.3f}")
    out.print(table)
    if raster is not None:
        out.print(f"one pixel per window written to {raster}")
