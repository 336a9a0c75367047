"""Generate (once) and find the embedded offline demo world.

Layout of a world folder (``$LANDCOVER_CACHE`` or ``~/.cache/landcover``, then
``demo/world-<hash>``)::

    collection.json            the sentinel-2-l2a Collection
    items.ndjson               one Item per line; asset hrefs relative to this folder
    aoi.geojson                the demo area of interest (EPSG:4326, spans 12°E); for a layout other
                               than the default two tiles, the whole layout (``layout_aoi``)
    scenes/<mgrs>/<item id>/   blue.tif green.tif red.tif nir.tif (10 m), rededge1..3, nir08,
                               swir16, swir22 (uint16), scl.tif (uint8; 20 m); COG, DEFLATE, 512 px
    truth/<mgrs>_truth.tif     ground truth, uint8 codes 1..19 (models.classes), colour table,
                               on the tile's own grid. Deliberately NOT an asset of the Items: it is
                               what a classifier must never see, and Earth Search has no such asset.
    .complete                  written last; a folder without it is regenerated

The world is generated in a sibling temporary folder and renamed into place, under a file lock,
so concurrent test runs neither see half a world nor generate it twice.

``layout=(columns, rows)`` asks for more tiles across 12°E (``scenes.layout_tiles``); the default
(2, 1) keeps the world key and every file of the original two-tile world.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from dask.system import cpu_count
from rasterio.windows import Window

from models.classes import CLASS_COLORS
from pipeline.demo import landscape, scenes, stac
from pipeline.demo.scenes import DEFAULT_LAYOUT, Layout
from pipeline.errors import LandcoverError

GENERATOR_VERSION = "5"
MARKER = ".complete"
MIN_SIZE_PX = 240
FULL_TILE_PX = 10_980
_PRUNE_AFTER_S = 24 * 3600


class DemoWorldError(LandcoverError):
    """The demo world cannot be generated or read as asked."""


@dataclass(frozen=True)
class DemoTile:
    """One tile of the world on its own UTM grid."""

    mgrs: str
    epsg: int
    truth_path: Path
    bounds: tuple[float, float, float, float]  # west, south, east, north in EPSG:<epsg>

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"


@dataclass(frozen=True)
class DemoWorld:
    """A generated world on disk: STAC metadata, COG assets, truth rasters and the demo AOI."""

    root: Path
    collection_path: Path
    items_path: Path
    aoi_path: Path
    tiles: tuple[DemoTile, ...]
    size_px: int
    seed: int
    layout: Layout = DEFAULT_LAYOUT  # (columns, rows) of tiles

    def items(self, base: str | None = None) -> list[dict[str, Any]]:
        """The Items with asset hrefs made absolute: local file paths, or ``base`` + relative path."""
        prefix = str(self.root) + os.sep if base is None else base.rstrip("/") + "/"
        out = []
        for line in self.items_path.read_text().splitlines():
            if line.strip():
                item = json.loads(line)
                for asset in item["assets"].values():
                    asset["href"] = prefix + asset["href"]
                out.append(item)
        return out

    def collection(self) -> dict[str, Any]:
        return json.loads(self.collection_path.read_text())

    def aoi(self) -> dict[str, Any]:
        return json.loads(self.aoi_path.read_text())

    def layout_aoi(self) -> dict[str, Any]:
        """A lon/lat rectangle inside the union of every tile (for the default world too)."""
        return layout_aoi(self.tiles_spec(), self.layout)

    def central_aoi(self, side_km: float) -> dict[str, Any]:
        """A ``side_km`` x ``side_km`` square at the centre of the layout, e.g. to grow an AOI."""
        return central_aoi(self.tiles_spec(), self.layout, side_km)

    def extent(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees of the ground every demo tile's scenes cover."""
        ring = self.layout_aoi()["features"][0]["geometry"]["coordinates"][0]
        lons, lats = [p[0] for p in ring], [p[1] for p in ring]
        return min(lons), min(lats), max(lons), max(lats)

    def tiles_spec(self) -> tuple[scenes.TileSpec, ...]:
        return scenes.layout_tiles(self.size_px, self.layout)

    def tile(self, mgrs: str) -> DemoTile:
        for tile in self.tiles:
            if tile.mgrs == mgrs:
                return tile
        known = ", ".join(t.mgrs for t in self.tiles)
        raise DemoWorldError(f"no demo tile {mgrs!r}; the demo world has {known}")

    def truth_path(self, tile: str | DemoTile) -> Path:
        return (tile if isinstance(tile, DemoTile) else self.tile(tile)).truth_path

    def datetime_range(self) -> tuple[str, str]:
        """First and last acquisition (ISO 8601), e.g. for a search window covering every scene."""
        interval = self.collection()["extent"]["temporal"]["interval"][0]
        return interval[0], interval[1]


def default_cache_dir() -> Path:
    env = os.environ.get("LANDCOVER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "landcover"


def world_key(size_px: int, seed: int, layout: Layout = DEFAULT_LAYOUT) -> str:
    """Folder name of a world: changes with the generator version and every parameter."""
    params: dict[str, Any] = {"version": GENERATOR_VERSION, "size_px": size_px, "seed": seed}
    if tuple(layout) != DEFAULT_LAYOUT:  # left out for the default, whose key predates layouts
        params["layout"] = list(layout)
    text = json.dumps(params, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_layout(text: str) -> Layout:
    """``"3x2"`` -> (3, 2): columns x rows, as typed on the command line."""
    cols, sep, rows = text.lower().partition("x")
    try:
        layout = (int(cols), int(rows)) if sep else None
    except ValueError:
        layout = None
    if layout is None:
        raise DemoWorldError(f"demo layout {text!r} is not COLUMNSxROWS; give e.g. 3x2")
    return _checked_layout(layout)


def _checked_layout(layout: Any) -> Layout:
    try:
        return scenes.check_layout(tuple(layout) if isinstance(layout, list | tuple) else layout)
    except ValueError as exc:
        raise DemoWorldError(str(exc)) from None


def _check_params(size_px: int, seed: int) -> None:
    if not isinstance(size_px, int) or size_px < MIN_SIZE_PX or size_px % 2:
        raise DemoWorldError(
            f"demo tile size {size_px!r} px is not usable; give an even number of pixels >= {MIN_SIZE_PX} "
            f"(default 1200, a full Sentinel-2 tile is {FULL_TILE_PX})"
        )
    if not isinstance(seed, int) or seed < 0:
        raise DemoWorldError(f"demo seed {seed!r} is not usable; give a non-negative integer")


def _describe(root: Path, size_px: int, seed: int, layout: Layout = DEFAULT_LAYOUT) -> DemoWorld:
    tiles = scenes.layout_tiles(size_px, layout)
    return DemoWorld(
        root=root,
        collection_path=root / "collection.json",
        items_path=root / "items.ndjson",
        aoi_path=root / "aoi.geojson",
        tiles=tuple(DemoTile(t.mgrs, t.epsg, root / "truth" / f"{t.mgrs}_truth.tif", t.bounds) for t in tiles),
        size_px=size_px,
        seed=seed,
        layout=layout,
    )


def is_complete(root: Path, size_px: int, seed: int, layout: Layout = DEFAULT_LAYOUT) -> bool:
    marker = root / MARKER
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("key") == world_key(size_px, seed, layout) and meta.get("version") == GENERATOR_VERSION


def generate_world(
    cache_dir: Path | None = None, *, size_px: int = 1200, seed: int = 0, progress: bool = False,
    layout: Layout | None = None,
) -> DemoWorld:
    """The demo world for (size_px, seed, layout): reused when present and complete, generated otherwise.

    ``layout`` = (columns, rows) of tiles across 12°E; None or (2, 1) is the original two-tile world.
    """
    _check_params(size_px, seed)
    layout = DEFAULT_LAYOUT if layout is None else _checked_layout(layout)
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    parent = base / "demo"
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoWorldError(f"cannot create the demo cache {parent}: {exc.strerror}; set LANDCOVER_CACHE to a writable folder") from exc
    key = world_key(size_px, seed, layout)
    root = parent / f"world-{key}"
    if is_complete(root, size_px, seed, layout):
        return _describe(root, size_px, seed, layout)
    with _locked(parent / f"world-{key}.lock"):
        if not is_complete(root, size_px, seed, layout):  # another process may have finished meanwhile
            _build(root, size_px, seed, progress, layout)
    return _describe(root, size_px, seed, layout)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _build(root: Path, size_px: int, seed: int, progress: bool, layout: Layout = DEFAULT_LAYOUT) -> None:
    started = time.perf_counter()
    work = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    default = layout == DEFAULT_LAYOUT
    tiles = scenes.layout_tiles(size_px, layout)
    all_scenes = scenes.make_scenes(tiles, layout)
    # The default world keeps its original coast line (from its first tile) so its bytes never change.
    south = scenes.ground_south_edge(tiles) if default else scenes.layout_south_edge(tiles)
    ground = landscape.Ground(seed=seed, south_m=south)
    skies = scenes.plan_skies(all_scenes, seed)
    _say(progress, f"generating the demo world ({len(tiles)} tiles of {size_px} px, {len(all_scenes)} scenes) in {root}")
    jobs = []
    for tile in tiles:
        tile_scenes = tuple(s for s in all_scenes if s.tile == tile)
        jobs.append((tile, tile_scenes, ground, seed, work, {s.id: skies[s.id] for s in tile_scenes}))
    counts: dict[str, np.ndarray] = {}
    # One process per tile, up to the cores this process may use: each renders its ground once and
    # every date over it.
    workers = min(len(jobs), cpu_count())
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for tile, result in zip(tiles, pool.map(_render_tile, *zip(*jobs, strict=True)), strict=True):
                counts.update(result)
                _say(progress, f"  tile {tile.mgrs} done")
    else:
        for job in jobs:
            counts.update(_render_tile(*job))
    items = [stac.item(scene, counts[scene.id]) for scene in all_scenes]
    _write_text(work / "items.ndjson", "".join(json.dumps(i, separators=(",", ":")) + "\n" for i in items))
    _write_text(work / "collection.json", json.dumps(stac.collection(items, None if default else layout), indent=2))
    aoi = demo_aoi(size_px) if default else layout_aoi(tiles, layout)
    _write_text(work / "aoi.geojson", json.dumps(aoi, indent=2))
    seconds = round(time.perf_counter() - started, 2)
    meta = {"version": GENERATOR_VERSION, "key": world_key(size_px, seed, layout), "size_px": size_px, "seed": seed, "seconds": seconds}
    if not default:
        meta["layout"] = list(layout)
    _write_text(work / MARKER, json.dumps(meta))
    shutil.rmtree(root, ignore_errors=True)  # a half-written world from an older run
    os.replace(work, root)
    _prune_outdated(root.parent)
    _say(progress, f"demo world ready in {seconds:.1f} s")


def _prune_outdated(parent: Path) -> None:
    """Remove worlds of older generator versions (nothing asks for them any more) once a day old.

    The age limit spares a run that opened an old world just before this generator was updated.
    """
    now = time.time()
    for marker in parent.glob(f"world-*/{MARKER}"):
        try:
            version = json.loads(marker.read_text()).get("version")
            age_s = now - marker.stat().st_mtime
        except (OSError, ValueError):
            continue
        if version != GENERATOR_VERSION and age_s > _PRUNE_AFTER_S:
            shutil.rmtree(marker.parent, ignore_errors=True)
            marker.parent.with_name(marker.parent.name + ".lock").unlink(missing_ok=True)
    for partial in parent.glob("world-*.partial-*"):
        pid = partial.name.rpartition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):  # left behind by a killed generator
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _aoi_collection(ring: list[list[float]], name: str, description: str) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "features": [{
            "type": "Feature",
            "properties": {"name": name, "description": description},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }],
    }


def _rectangle(u0: float, v0: float, u1: float, v1: float) -> list[list[float]]:
    """A closed counter-clockwise lon/lat ring of a ground rectangle (the ground plane is linear in lon/lat)."""
    lon, lat = scenes.ground_to_lonlat(np.array([u0, u1, u1, u0, u0]), np.array([v0, v0, v1, v1, v0]))
    return [[round(float(a), 6), round(float(b), 6)] for a, b in zip(lon, lat, strict=True)]


def layout_bounds(tiles: tuple[scenes.TileSpec, ...], layout: Layout) -> tuple[float, float, float, float]:
    """Ground (u0, v0, u1, v1) of a rectangle every point of which some tile covers.

    Each side is the innermost corner of the tiles along it (tiles are turned by the grid
    convergence), less a 2% margin for the tiles' straight UTM edges being slightly curved here.
    """
    columns, rows = layout
    corners = [scenes.tile_ground_corners(t) for t in tiles]  # (u, v) arrays: NW, NE, SE, SW
    west = max(float(corners[r * columns][0][[0, 3]].max()) for r in range(rows))
    east = min(float(corners[r * columns + columns - 1][0][[1, 2]].min()) for r in range(rows))
    north = min(float(corners[c][1][[0, 1]].min()) for c in range(columns))
    south = max(float(corners[(rows - 1) * columns + c][1][[2, 3]].max()) for c in range(columns))
    margin = 0.02 * tiles[0].size_px * scenes.RESOLUTION_M
    return west + margin, south + margin, east - margin, north - margin


def layout_aoi(tiles: tuple[scenes.TileSpec, ...], layout: Layout) -> dict[str, Any]:
    """The whole layout as an AOI: the largest margin-safe lon/lat rectangle inside its tiles."""
    ring = _rectangle(*layout_bounds(tiles, layout))
    columns, rows = layout
    return _aoi_collection(ring, f"demo-{columns}x{rows}", f"Synthetic demo world AOI over {columns} x {rows} tiles across 12°E")


def central_aoi(tiles: tuple[scenes.TileSpec, ...], layout: Layout, side_km: float) -> dict[str, Any]:
    """A ``side_km`` square (on the ground plane) centred on the layout; refused when it does not fit."""
    u0, v0, u1, v1 = layout_bounds(tiles, layout)
    half = side_km * 500.0
    if not side_km > 0 or 2 * half > min(u1 - u0, v1 - v0):
        fits = min(u1 - u0, v1 - v0) / 1000.0
        raise DemoWorldError(f"a {side_km} km square does not fit the {layout[0]}x{layout[1]} demo layout; give at most {fits:.1f} km")
    cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
    ring = _rectangle(cu - half, cv - half, cu + half, cv + half)
    return _aoi_collection(ring, f"demo-centre-{side_km:g}km", f"The central {side_km:g} km x {side_km:g} km of the demo layout")


def demo_aoi(size_px: int) -> dict[str, Any]:
    """A polygon across 12°E inside both tiles; its centre lies in zone 32 (west of 12°E)."""
    extent = size_px * scenes.RESOLUTION_M
    corners_u = np.array([-0.45, 0.35, 0.35, 0.05, -0.45]) * extent
    corners_v = np.array([-0.42, -0.42, 0.42, 0.42, 0.25]) * extent
    lon, lat = scenes.ground_to_lonlat(corners_u, corners_v)
    ring = [[round(float(a), 6), round(float(b), 6)] for a, b in zip(lon, lat, strict=True)]
    ring.append(ring[0])
    return {
        "type": "FeatureCollection",
        "features": [{
            "type": "Feature",
            "properties": {"name": "demo", "description": "Synthetic demo world AOI across the UTM 32/33 boundary"},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }],
    }


# ---------------------------------------------------------------------------- rendering (worker)

_TEMP_PROFILE = {"driver": "GTiff", "tiled": True, "blockxsize": 512, "blockysize": 512}
_COG_OPTIONS = {"COMPRESS": "DEFLATE", "PREDICTOR": "2", "BLOCKSIZE": "512", "NUM_THREADS": "1", "BIGTIFF": "IF_SAFER"}


def _open_temp(path: Path, tile: scenes.TileSpec, size: int, dtype: str) -> rasterio.io.DatasetWriter:
    res = tile.size_px * scenes.RESOLUTION_M / size
    transform = rasterio.Affine(res, 0.0, tile.west, 0.0, -res, tile.north)
    path.parent.mkdir(parents=True, exist_ok=True)
    return rasterio.open(
        path, "w", width=size, height=size, count=1, dtype=dtype, nodata=0,
        crs=f"EPSG:{tile.epsg}", transform=transform, **_TEMP_PROFILE,
    )


def _to_cog(temp: Path, final: Path, resampling: str) -> None:
    partial = final.with_name(final.name + ".tmp")
    rasterio.shutil.copy(temp, partial, driver="COG", OVERVIEW_RESAMPLING=resampling, **_COG_OPTIONS)
    os.replace(partial, final)
    temp.unlink()


def _render_tile(
    tile: scenes.TileSpec, tile_scenes: tuple[scenes.SceneSpec, ...], ground: landscape.Ground, seed: int, root: Path,
    skies: dict[str, scenes.Sky],
) -> dict[str, np.ndarray]:
    """Render the truth and every scene of one tile, block by block; return SCL histograms per scene."""
    n, half = tile.size_px, tile.size_px // 2
    counts = {s.id: np.zeros(12, dtype=np.int64) for s in tile_scenes}
    truth_final = root / "truth" / f"{tile.mgrs}_truth.tif"
    truth_temp = truth_final.with_name(truth_final.stem + ".part.tif")
    writers: dict[Path, tuple[rasterio.io.DatasetWriter, Path, str]] = {}
    truth_dst = _open_temp(truth_temp, tile, n, "uint8")
    truth_dst.write_colormap(1, {code + 1: (*rgb, 255) for code, rgb in enumerate(CLASS_COLORS)} | {0: (0, 0, 0, 0)})
    writers[truth_temp] = (truth_dst, truth_final, "MODE")
    outputs: dict[tuple[str, str], rasterio.io.DatasetWriter] = {}
    for scene in tile_scenes:
        for key in (*scenes.BANDS_10M, *scenes.BANDS_20M, "scl"):
            final = root / stac.asset_path(scene, key)
            temp = final.with_name(final.stem + ".part.tif")
            size = n if key in scenes.BANDS_10M else half
            dst = _open_temp(temp, tile, size, "uint8" if key == "scl" else "uint16")
            writers[temp] = (dst, final, "NEAREST" if key == "scl" else "AVERAGE")
            outputs[(scene.id, key)] = dst
    try:
        for row0, rows in scenes.row_blocks(n):
            x, y = scenes.pixel_centres(tile, row0, rows)
            u, v = scenes.ground_of_pixels(tile, x, y)
            codes, unit_key = landscape.truth(ground, u, v)
            truth_dst.write(codes, 1, window=Window(0, row0, n, rows))
            surface = landscape.reflectance(ground, codes, unit_key, u, v)
            for scene in tile_scenes:
                seen = scenes.render(scene, skies[scene.id], seed, surface, u, v, row0)
                win10 = Window(0, row0, n, rows)
                win20 = Window(0, row0 // 2, half, rows // 2)
                coarse = scenes.downsample(seen.reflectance)
                coarse_nodata = scenes.downsample(seen.nodata.astype(np.float32)) > 0  # any 10 m pixel missing
                for b, key in enumerate(landscape.BANDS):
                    if key in scenes.BANDS_10M:
                        dn = scenes.to_dn(seen.reflectance[..., b], seen.nodata, scene.pixels_carry_offset)
                        outputs[(scene.id, key)].write(dn, 1, window=win10)
                    else:
                        dn = scenes.to_dn(coarse[..., b], coarse_nodata, scene.pixels_carry_offset)
                        outputs[(scene.id, key)].write(dn, 1, window=win20)
                scl = scenes.scl_20m(seen)
                outputs[(scene.id, "scl")].write(scl, 1, window=win20)
                counts[scene.id] += np.bincount(scl.ravel(), minlength=12)[:12]
    finally:
        for dst, _, _ in writers.values():
            dst.close()
    for temp, (_, final, resampling) in writers.items():
        _to_cog(temp, final, resampling)
    return counts
