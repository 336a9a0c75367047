"""Detailed maps (issue #12): how well each way of making finer cells agrees with the demo truth.

    python -m benchmarks.detail                 # every variant, demo weights + the multi-band demo model
    python -m benchmarks.detail --quick         # today's default and the recommended variant only
    python -m benchmarks --detail               # the same, from the benchmark entry point

The demo composite is computed once (the demo world served as `landcover map --demo` serves
it, the same search, offsets and composite code) on the demo AOI's 1.2 km cell extent padded by
``PAD_PX``. Each variant then classifies it in-process, writes a plain GeoTIFF on its own cell
grid and is judged by :func:`pipeline.demo.truth.pixel_agreement` (every 10 m truth pixel) and
:func:`pipeline.demo.truth.map_agreement` (cells >= 70 % one truth class, at the variant's cell
size). "today" variants cut one window centred on each cell (pipeline.patches, as the map does
now); the others go through :func:`pipeline.detail.classify_pixels`. Seconds: classification
only (window cutting, model, blending), not the composite, on this machine's CPUs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox

from pipeline.detail import DetailPlan, WeightKind, classify_pixels
from pipeline.mosaic import mosaic
from pipeline.patches import cells_intersecting, clear_fraction, cut_windows, plan_grid, project_aoi

BASE_CELL_PX = 120  # the 1.2 km cells of today's default map: every variant's cells tile them
PAD_PX = 240  # composite margin around the AOI's cell extent: room for windows up to 240 px
MIN_CLEAR = 0.5
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "models" / "weights"
DEMO_WEIGHTS = WEIGHTS_DIR / "demo-compact-nosr.safetensors"
MULTIBAND_WEIGHTS = WEIGHTS_DIR / "demo-multiband-mobilenetv3.safetensors"


@dataclass(frozen=True)
class Scene:
    """The demo composite on the padded pixel grid and the AOI it was made for."""

    bands: np.ndarray  # (B, H, W) float32 reflectance, card band order
    clear: np.ndarray  # (H, W) bool
    pixel_geobox: GeoBox  # the padded 10 m grid of ``bands``
    aoi: shapely.Geometry  # in the grid's CRS
    shape_px: tuple[int, int]  # pixels of the unpadded cell extent


@dataclass(frozen=True)
class Variant:
    name: str
    cell_px: int
    today_stride: int | None = None  # today's path: one centred window per cell of this stride
    plan: DetailPlan | None = None


@dataclass(frozen=True)
class Row:
    model: str
    variant: str
    cell_m: float
    pixel: float
    pixels: int
    dominated: float
    dominated_n: int
    windows: int
    seconds: float


def demo_scene(world, bands: tuple[str, ...], resampling: str) -> Scene:
    """Search the served demo world as `landcover map --demo` does and compute its composite to numpy."""
    import dask

    from pipeline.aoi import read_aoi
    from pipeline.settings import ARCHIVE_START
    from pipeline.demo import serve_world
    from pipeline.load import configure_gdal, item_offsets, load_block
    from pipeline.search import SearchParams, search_items

    aoi = read_aoi(world.aoi_path)
    # window = base + 2 * pad and stride = base gives the 1.2 km cell grid and its padded pixel grid.
    grid = plan_grid(aoi, window_px=BASE_CELL_PX + 2 * PAD_PX, stride_px=BASE_CELL_PX)
    configure_gdal()
    with serve_world(world) as served:
        items = search_items(SearchParams(source="local", stac_url=served.stac_url, start=ARCHIVE_START,
                                          end=date.today()), aoi)
        offsets = item_offsets(items, bands=bands)
        planes = load_block([it for it in items if it.id in offsets], grid.pixel_geobox, offsets=offsets,
                            bands=bands, resampling=resampling)
        with dask.config.set(scheduler="threads"):
            planes = np.asarray(planes.compute())
    ny, nx = grid.cell_geobox.shape
    return Scene(planes[:-1].astype(np.float32), planes[-1] > 0, grid.pixel_geobox, project_aoi(aoi, str(grid.crs)),
                 (ny * BASE_CELL_PX, nx * BASE_CELL_PX))


def cell_grid(scene: Scene, cell_px: int) -> tuple[GeoBox, np.ndarray]:
    """Cells of ``cell_px`` tiling the scene's 1.2 km extent (so aligned to multiples of the cell size)."""
    t = scene.pixel_geobox.affine
    h, w = scene.shape_px
    res = t.a
    geobox = GeoBox((h // cell_px, w // cell_px),
                    Affine(res * cell_px, 0.0, t.c + PAD_PX * res, 0.0, -res * cell_px, t.f - PAD_PX * res),
                    scene.pixel_geobox.crs)
    return geobox, cells_intersecting(geobox, scene.aoi)


def _padded(scene: Scene, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Bands and clear mask of the cell extent padded by ``margin`` (<= PAD_PX) pixels."""
    h, w = scene.shape_px
    ys, xs = slice(PAD_PX - margin, PAD_PX + h + margin), slice(PAD_PX - margin, PAD_PX + w + margin)
    return scene.bands[:, ys, xs], scene.clear[ys, xs]


def classify_today(scene: Scene, predictor, stride_px: int) -> tuple[np.ndarray, int]:
    """Today's map: the class of the 120 px window centred on each cell of ``stride_px``. Card order."""
    window = predictor.card.window_px
    margin = (window - stride_px) // 2
    bands, clear = _padded(scene, margin)
    _, inside = cell_grid(scene, stride_px)
    frac = clear_fraction(clear, window, stride_px, margin)
    todo = (inside & (frac >= MIN_CLEAR)).ravel()
    n_classes = len(predictor.card.classes)
    out = np.full((n_classes + 1, *inside.shape), np.nan, np.float32)
    out[-1] = frac
    probs = np.full((inside.size, n_classes), np.nan, np.float32)
    probs[todo] = predictor.predict_reflectance(cut_windows(bands, window, stride_px, margin)[todo]).probs
    out[:n_classes] = probs.T.reshape(n_classes, *inside.shape)
    return out, int(todo.sum())


def classify_detail(scene: Scene, predictor, plan: DetailPlan) -> tuple[np.ndarray, int]:
    """The whole AOI as one block through :func:`pipeline.detail.classify_pixels`. Card order."""
    bands, clear = _padded(scene, plan.margin_px)
    _, inside = cell_grid(scene, plan.cell_px)
    counted = [0]

    def predict(windows: np.ndarray) -> np.ndarray:
        counted[0] += len(windows)
        if plan.dense_grid == 1:
            return predictor.predict_reflectance(windows).probs[:, :, None, None]
        return predictor.predict_reflectance_dense(windows)

    out = classify_pixels(bands, clear, inside, plan, predict, n_classes=len(predictor.card.classes),
                          min_clear=MIN_CLEAR)
    return out, counted[0]


def write_map(path: Path, classes: np.ndarray, geobox: GeoBox) -> Path:
    profile = dict(driver="GTiff", width=classes.shape[1], height=classes.shape[0], count=1, dtype="uint8",
                   crs=geobox.crs.to_wkt(), transform=geobox.affine, nodata=0)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(classes, 1)
    return path


def judge(world, scene: Scene, predictor, variant: Variant, out_dir: Path, model_name: str) -> Row:
    from pipeline.demo.truth import map_agreement, pixel_agreement

    start = time.perf_counter()
    if variant.today_stride is not None:
        planes, windows = classify_today(scene, predictor, variant.today_stride)
    else:
        assert variant.plan is not None
        planes, windows = classify_detail(scene, predictor, variant.plan)
    seconds = time.perf_counter() - start
    card = predictor.card
    n = len(card.classes)
    probs = card.to_map_order(planes[:n].reshape(n, -1).T).T.reshape(len(card.legend), *planes.shape[1:])
    probs[:, ~np.isfinite(planes[:n]).all(axis=0)] = np.nan  # to_map_order keeps NaN; unknown classes stay 0
    geobox, inside = cell_grid(scene, variant.cell_px)
    class_map = mosaic(probs, planes[n], inside, min_clear=MIN_CLEAR, multi_label=card.task == "multi-label",
                       threshold=card.threshold)
    tif = write_map(out_dir / f"{model_name}-{variant.name}.tif".replace(" ", "_").replace("/", "_"),
                    class_map.classes, geobox)
    pixels = pixel_agreement(world, tif)
    cells = map_agreement(class_map.classes, geobox, world, cell_px=variant.cell_px)
    return Row(model_name, variant.name, variant.cell_px * 10.0, pixels.fraction, pixels.pixels, cells.accuracy,
               cells.dominated, windows, seconds)


def judge_oracle(world, scene: Scene, cell_px: int, out_dir: Path) -> Row:
    """The best any map of ``cell_px`` cells can do: each cell in the AOI the majority class of its truth."""
    from pipeline.demo.truth import dominant_truth, map_agreement, pixel_agreement

    geobox, inside = cell_grid(scene, cell_px)
    major, _ = dominant_truth(world, geobox, cell_px)
    classes = np.where(inside, major, 0).astype(np.uint8)
    tif = write_map(out_dir / f"oracle-{cell_px}.tif", classes, geobox)
    pixels = pixel_agreement(world, tif)
    cells = map_agreement(classes, geobox, world, cell_px=cell_px)
    return Row("truth (oracle)", "cell majority of the truth", cell_px * 10.0, pixels.fraction, pixels.pixels,
               cells.accuracy, cells.dominated, 0, 0.0)


def variants(window_px: int, dense_grid: int, *, quick: bool) -> list[Variant]:
    """Today's default and strides, then dense evaluation, blending and cell sizes."""
    def detail(name: str, cell_px: int, stride: int, g: int, weight: WeightKind = "hann", window: int | None = None) -> Variant:
        return Variant(name, cell_px, plan=DetailPlan(window or window_px, stride, cell_px, g, weight))

    g = dense_grid
    sub = window_px // g  # side of one dense position's sub-block
    recommended = detail(f"dense+box s{window_px // 3} c10", 10, window_px // 3, g, "box")
    if quick:
        return [Variant("today default", window_px, today_stride=window_px), recommended]
    return [
        Variant("today default", window_px, today_stride=window_px),
        Variant("today stride 60", 60, today_stride=60),
        Variant("today stride 30", 30, today_stride=30),
        detail("blend hann s120 c30 (no dense)", 30, window_px, 1),
        detail("blend hann s40 c10 (no dense)", 10, window_px // 3, 1),
        detail("blend box s40 c10 (no dense)", 10, window_px // 3, 1, "box"),
        detail(f"dense only s{window_px} c{sub}", sub, window_px, g, "box"),
        detail(f"dense+box s{window_px} c10", 10, window_px, g, "box"),
        detail(f"dense+hann s{window_px // 2} c10", 10, window_px // 2, g),
        detail(f"dense+hann s{window_px // 3} c10", 10, window_px // 3, g),
        detail(f"dense+hann s{window_px // 6} c10", 10, window_px // 6, g),
        detail(f"dense+gauss s{window_px // 3} c10", 10, window_px // 3, g, "gaussian"),
        recommended,
        detail(f"dense+box s{window_px // 2} c10", 10, window_px // 2, g, "box"),
        detail(f"dense+box s{window_px // 6} c10", 10, window_px // 6, g, "box"),
        detail(f"dense+box s{window_px // 3} c20", 20, window_px // 3, g, "box"),
        detail(f"dense+box s{window_px // 3} c30", 30, window_px // 3, g, "box"),
        detail(f"dense+box s{window_px // 3} c40", 40, window_px // 3, g, "box"),
        detail(f"dense{2 * window_px}+box s{2 * window_px // 3} c10", 10, 2 * window_px // 3, 2 * g, "box",
               window=2 * window_px),
    ]


def print_table(rows: Iterable[Row]) -> None:
    rows = list(rows)
    print(f"{'model':<26} {'variant':<32} {'cell m':>6} {'pixel':>7} {'(judged)':>9} {'dominated':>10} {'(n)':>6} "
          f"{'windows':>8} {'s':>7}")
    for r in rows:
        print(f"{r.model:<26} {r.variant:<32} {r.cell_m:>6.0f} {r.pixel:>7.1%} {r.pixels:>9} {r.dominated:>10.1%} "
              f"{r.dominated_n:>6} {r.windows:>8} {r.seconds:>7.2f}", flush=True)


def run_model(world, weights: Path, variant_list: Callable[[int, int], list[Variant]], out_dir: Path, *,
              oracle: bool = False) -> list[Row]:
    from models.predictor import Predictor

    predictor = Predictor.from_path(weights, device="cpu")
    card = predictor.card
    probe = np.zeros((1, len(card.bands), card.window_px, card.window_px), np.float32)
    g = predictor.predict_reflectance_dense(probe).shape[-1]
    t0 = time.perf_counter()
    scene = demo_scene(world, tuple(card.bands), card.resampling)
    print(f"{card.model_id}: composite {scene.bands.shape} in {time.perf_counter() - t0:.1f} s; dense grid {g} x {g}",
          flush=True)
    rows = []
    if oracle:
        rows += [judge_oracle(world, scene, c, out_dir) for c in (10, 40, 120)]
        print_table(rows)
    for variant in variant_list(card.window_px, g):
        rows.append(judge(world, scene, predictor, variant, out_dir, card.model_id))
        print_table(rows[-1:])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="today's default and the recommended variant only")
    parser.add_argument("--model", type=Path, default=None, help="weights (default: the demo weights)")
    parser.add_argument("--no-multiband", action="store_true", help="skip the multi-band demo model")
    parser.add_argument("--out", type=Path, default=None, help="keep the variant maps here (default: a temp folder)")
    args = parser.parse_args(argv)

    import torch

    from pipeline.demo import generate_world

    torch.manual_seed(0)
    world = generate_world()
    with tempfile.TemporaryDirectory(prefix="landcover-bench-detail-") as tmp:
        out_dir = args.out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = run_model(world, args.model or DEMO_WEIGHTS, lambda w, g: variants(w, g, quick=args.quick), out_dir,
                         oracle=not args.quick)
        if not args.no_multiband and MULTIBAND_WEIGHTS.exists():
            rows += run_model(world, MULTIBAND_WEIGHTS, lambda w, g: variants(w, g, quick=args.quick), out_dir)
    print("\ndetailed maps vs the demo truth (pixel: every 10 m truth pixel; dominated: cells >= 70% one class)")
    print_table(rows)


if __name__ == "__main__":
    main()
