"""Tiles, acquisitions and their rendering: the ground seen through clouds, in Sentinel-2 DN.

Two MGRS-like tiles sit either side of 12°E (EPSG:32632 and EPSG:32633) and overlap across
the zone boundary as real MGRS tiles do. Each tile has three acquisitions, each a case the
pipeline must handle: a nearly clear and a very cloudy date, a swath-edge nodata wedge, and the
radiometry cases of ``pipeline.radiometry`` (baseline 03.xx without offset; baseline >= 04.00
with +1000 DN and no flag as on Planetary Computer; Earth Search v1 with the offset removed and
``earthsearch:boa_offset_applied: true``; and one item whose flag is wrong).

Larger layouts (``layout_tiles``: columns x rows of tiles across 12°E, each in the UTM zone of its
own centre, overlapping its neighbours by ~10% like real MGRS tiles) repeat each zone's three
acquisitions on every tile of that zone, as one orbit images neighbouring tiles on one day.

A tile is rendered in row blocks so a full 10,980 px tile never sits in memory at once;
everything is a function of ground position, so blocks join without seams.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
from affine import Affine
from pyproj import Transformer

from pipeline.demo import landscape
from pipeline.demo.noise import fbm, hash01, value_noise

RESOLUTION_M = 10.0
LAT0 = 45.4  # a coast at the latitude of the northern Adriatic
LON_ZONE_EDGE = 12.0
_M_PER_DEG_LAT = 111_132.0
_M_PER_DEG_LON = 111_320.0 * math.cos(math.radians(LAT0))
BANDS_10M = ("blue", "green", "red", "nir")
BANDS_20M = ("rededge1", "rededge2", "rededge3", "nir08", "swir16", "swir22")
# SCL classes (Sen2Cor)
SCL_NODATA, SCL_SHADOW, SCL_UNCLASSIFIED = 0, 3, 7
SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS = 8, 9, 10
SUN_AZIMUTH_DEG = 145.0
SHADOW_DISTANCE_M = 700.0
# (columns, rows): the two tiles every test and the committed demo weights were made on.
DEFAULT_LAYOUT = (2, 1)
MAX_LAYOUT_SIDE = 10  # keeps every tile within zones 32/33 and within the MGRS letters used below
LAYOUT_OVERLAP = 0.1  # share of a tile's width shared with each neighbour (MGRS: 9.8 of 109.8 km)
Layout = tuple[int, int]


@dataclass(frozen=True)
class TileSpec:
    """One MGRS-like tile: its own UTM grid at 10 m."""

    mgrs: str  # e.g. "32TQR"
    epsg: int
    west: float  # UTM metres
    north: float
    size_px: int

    @property
    def transform(self) -> Affine:
        return Affine(RESOLUTION_M, 0.0, self.west, 0.0, -RESOLUTION_M, self.north)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the tile's UTM CRS."""
        extent = self.size_px * RESOLUTION_M
        return (self.west, self.north - extent, self.west + extent, self.north)


@dataclass(frozen=True)
class SceneSpec:
    """One acquisition of one tile and how its catalogue entry describes it."""

    tile: TileSpec
    day: date
    platform: str  # "sentinel-2a" / "sentinel-2b"
    processing_baseline: str
    pixels_carry_offset: bool  # DN = reflectance * 10000 + 1000
    offset_flag: bool | None  # earthsearch:boa_offset_applied, None = absent
    cloud_fraction: float  # target share of the tile under cloud (SCL 8/9)
    cirrus: bool
    wedge: str | None  # "west" / "east": swath-edge nodata on that side

    @property
    def id(self) -> str:
        return f"S2{self.platform[-1].upper()}_{self.tile.mgrs}_{self.day:%Y%m%d}_0_L2A"

    @property
    def declared_offset(self) -> float:
        """raster:bands offset: -0.1 from baseline 04.00 on (Earth Search keeps it even when removed)."""
        return -0.1 if self.processing_baseline >= "04.00" else 0.0

    @property
    def date_seed(self) -> int:
        return self.day.toordinal()


def _snap(value: float, step: float = 60.0) -> float:
    # Sentinel-2 tile corners sit on a 60 m grid, so 10, 20 and 60 m pixels nest.
    return round(value / step) * step


def lonlat_to_ground(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Geographic coordinates -> the world's metric plane (u east of 12°E, v north of LAT0)."""
    return (np.asarray(lon) - LON_ZONE_EDGE) * _M_PER_DEG_LON, (np.asarray(lat) - LAT0) * _M_PER_DEG_LAT


def ground_to_lonlat(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(u) / _M_PER_DEG_LON + LON_ZONE_EDGE, np.asarray(v) / _M_PER_DEG_LAT + LAT0


def make_tiles(size_px: int) -> tuple[TileSpec, TileSpec]:
    """Two tiles straddling 12°E, each reaching 15% of its width into the neighbouring zone."""
    extent = size_px * RESOLUTION_M
    tiles = []
    for mgrs, epsg, share_west in (("32TQR", 32632, 0.85), ("33TTL", 32633, 0.15)):
        x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(LON_ZONE_EDGE, LAT0)
        tiles.append(TileSpec(mgrs, epsg, _snap(x - share_west * extent), _snap(y + extent / 2), size_px))
    return tiles[0], tiles[1]


# The acquisitions of each zone, as (day, platform, baseline, pixels carry offset, offset flag,
# cloud share, cirrus, swath-edge wedge); see the module docstring for the cases they cover.
_ZONE_ACQUISITIONS: dict[int, tuple[tuple, ...]] = {
    # zone 32: the no-offset baseline, a Planetary-Computer-like offset scene, and a wrong flag.
    32632: (
        (date(2021, 8, 20), "sentinel-2a", "03.01", False, None, 0.015, False, None),
        (date(2024, 6, 12), "sentinel-2b", "05.10", True, None, 0.55, True, None),
        (date(2024, 7, 2), "sentinel-2b", "05.10", True, True, 0.22, False, "west"),
    ),
    # zone 33: Planetary-Computer-like and Earth Search v1 (offset removed, flag true).
    32633: (
        (date(2024, 6, 17), "sentinel-2a", "05.10", True, None, 0.02, False, None),
        (date(2024, 6, 27), "sentinel-2a", "05.10", False, True, 0.25, False, "east"),
        (date(2024, 7, 7), "sentinel-2b", "05.10", False, True, 0.6, True, None),
    ),
}


def make_scenes(tiles: Sequence[TileSpec], layout: Layout = DEFAULT_LAYOUT) -> tuple[SceneSpec, ...]:
    """Every tile's zone acquisitions; ``tiles`` in ``layout_tiles`` order (rows north to south).

    A swath edge cuts only the outermost column on its side: an orbit's edge is one line on the
    ground, not a wedge repeated in every tile.
    """
    columns = layout[0]
    out = []
    for index, tile in enumerate(tiles):
        column = index % columns
        for day, platform, baseline, carry, flag, cloud, cirrus, wedge in _ZONE_ACQUISITIONS[tile.epsg]:
            outer = (wedge == "west" and column == 0) or (wedge == "east" and column == columns - 1)
            out.append(SceneSpec(tile, day, platform, baseline, carry, flag, cloud, cirrus, wedge if outer else None))
    return tuple(out)


# ---------------------------------------------------------------------------- layouts of many tiles

# MGRS 100 km column letters of zones 32 and 33 and the row letters (I and O are never used).
_COLUMN_LETTERS = {32632: "JKLMNPQR", 32633: "STUVWXYZ"}
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
# The squares the two default tiles are named after (where 12°E, 45.4°N lies in each zone).
_ANCHOR_SQUARE = {32632: ("Q", "R"), 32633: ("T", "L")}


def check_layout(layout: object) -> Layout:
    """``layout`` as (columns, rows) if it is one the demo world can draw; ValueError otherwise."""
    ok = (
        isinstance(layout, tuple) and len(layout) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_LAYOUT_SIDE for n in layout)
    )
    if not ok:
        raise ValueError(
            f"demo layout {layout!r} is not usable; give (columns, rows), each 1..{MAX_LAYOUT_SIDE}, e.g. (3, 2)"
        )
    return layout  # type: ignore[return-value]


def layout_centres(size_px: int, layout: Layout) -> list[tuple[float, float]]:
    """Ground (u, v) of every tile centre, rows north to south, columns west to east.

    Centres are a tile width less the overlap apart. An odd number of columns is shifted west by a
    quarter step so no centre sits on 12°E, where its zone would be a coin toss.
    """
    columns, rows = layout
    step = (1.0 - LAYOUT_OVERLAP) * size_px * RESOLUTION_M
    shift = 0.25 * step if columns % 2 else 0.0
    return [
        ((c - (columns - 1) / 2) * step - shift, ((rows - 1) / 2 - r) * step)
        for r in range(rows)
        for c in range(columns)
    ]


def _zone_epsg(u: float) -> int:
    return 32632 if u < 0.0 else 32633


def _tile_name(epsg: int, column_step: int, row_step: int) -> str:
    """An MGRS-like name: the anchor square of the zone moved by whole squares (east, north).

    Demo tiles are ~12 km, not 100 km, so neighbours borrow the names of neighbouring squares;
    the names stay unique, valid MGRS and ordered like the tiles on the ground.
    """
    column_letter, row_letter = _ANCHOR_SQUARE[epsg]
    columns = _COLUMN_LETTERS[epsg]
    col = columns.index(column_letter) + column_step
    if not 0 <= col < len(columns):
        raise ValueError(f"demo layout too wide for the MGRS column letters of zone {epsg - 32600}")
    row = (_ROW_LETTERS.index(row_letter) + row_step) % len(_ROW_LETTERS)
    return f"{epsg - 32600}T{columns[col]}{_ROW_LETTERS[row]}"


def layout_tiles(size_px: int, layout: Layout = DEFAULT_LAYOUT) -> tuple[TileSpec, ...]:
    """Columns x rows of tiles across 12°E, rows north to south, columns west to east.

    The default layout is ``make_tiles`` exactly (its 30% overlap included), so the default world
    never changes. Other layouts centre each tile on its ground position in the UTM zone of that
    centre; tile edges follow the zone's grid, so tiles of the two zones meet at the grid
    convergence angle (~2° each way at 45°N), well inside the 10% overlap.
    """
    layout = check_layout(layout)
    if layout == DEFAULT_LAYOUT:
        return make_tiles(size_px)
    columns, rows = layout
    centres = layout_centres(size_px, layout)
    extent = size_px * RESOLUTION_M
    zone_of_column = [_zone_epsg(u) for u, _ in centres[:columns]]
    last_west = max((c for c, e in enumerate(zone_of_column) if e == 32632), default=-1)
    anchor_row = (rows - 1) // 2
    tiles = []
    for index, (u, v) in enumerate(centres):
        row, column = divmod(index, columns)
        epsg = zone_of_column[column]
        # Steps in squares from the zone's anchor: the columns nearest 12°E, the row nearest LAT0.
        column_step = column - last_west if epsg == 32632 else column - (last_west + 1)
        lon, lat = ground_to_lonlat(np.array(u), np.array(v))
        x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(float(lon), float(lat))
        name = _tile_name(epsg, column_step, anchor_row - row)
        tiles.append(TileSpec(name, epsg, _snap(x - extent / 2), _snap(y + extent / 2), size_px))
    return tuple(tiles)


def layout_south_edge(tiles: Sequence[TileSpec]) -> float:
    """v of the layout's southernmost tile corner: the sea is drawn along the southern row."""
    return float(min(tile_ground_corners(t)[1].min() for t in tiles))


def tile_ground_corners(tile: TileSpec) -> tuple[np.ndarray, np.ndarray]:
    """Ground u, v of a tile's corners: NW, NE, SE, SW."""
    west, south, east, north = tile.bounds
    lon, lat = Transformer.from_crs(tile.epsg, 4326, always_xy=True).transform(
        [west, east, east, west], [north, north, south, south]
    )
    return lonlat_to_ground(np.asarray(lon), np.asarray(lat))


def pixel_centres(tile: TileSpec, row0: int, rows: int, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """UTM x, y of the centres of a block of rows (every ``step``-th pixel)."""
    cols = np.arange(0, tile.size_px, step) + step / 2.0
    lines = np.arange(row0, row0 + rows, step) + step / 2.0
    x = tile.west + cols * RESOLUTION_M
    y = tile.north - lines * RESOLUTION_M
    return np.meshgrid(x, y)


def ground_of_pixels(tile: TileSpec, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon, lat = Transformer.from_crs(tile.epsg, 4326, always_xy=True).transform(x, y)
    return lonlat_to_ground(lon, lat)


def ground_south_edge(tiles: tuple[TileSpec, ...]) -> float:
    """v of the tiles' southern edge: the sea is drawn from there."""
    t = tiles[0]
    _, lat = Transformer.from_crs(t.epsg, 4326, always_xy=True).transform(t.west, t.bounds[1])
    return float(lonlat_to_ground(np.array(0.0), np.array(lat))[1])


# ---------------------------------------------------------------------------- atmosphere


@dataclass(frozen=True)
class Sky:
    """Cloud thresholds of one acquisition, fixed before rendering so blocks agree."""

    cloud_threshold: float
    cirrus_threshold: float


_CLOUD_SCALE_M = 2500.0
_CLOUD_SOFTNESS = 0.05


def _cloud_field(u: np.ndarray, v: np.ndarray, scene: SceneSpec, seed: int) -> np.ndarray:
    return fbm(u, v, _CLOUD_SCALE_M, seed * 31 + scene.date_seed, octaves=5)


def _cirrus_field(u: np.ndarray, v: np.ndarray, scene: SceneSpec, seed: int) -> np.ndarray:
    return fbm(u, v, 7000.0, seed * 37 + scene.date_seed + 1, octaves=3)


def plan_sky(scene: SceneSpec, seed: int) -> Sky:
    """Thresholds giving the scene its target cloud share, from a coarse sample of the tile."""
    step = max(1, scene.tile.size_px // 200)
    x, y = pixel_centres(scene.tile, 0, scene.tile.size_px, step)
    u, v = ground_of_pixels(scene.tile, x, y)
    clouds = _cloud_field(u, v, scene, seed)
    threshold = float(np.quantile(clouds, 1.0 - scene.cloud_fraction))
    cirrus = float(np.quantile(_cirrus_field(u, v, scene, seed), 0.65)) if scene.cirrus else math.inf
    return Sky(threshold, cirrus)


def plan_skies(scenes: Sequence[SceneSpec], seed: int) -> dict[str, Sky]:
    """The sky of every scene; scenes of one day share the sky of that day's first scene.

    One acquisition over neighbouring tiles is one sky: their overlaps then show the same clouds.
    """
    by_day: dict[date, Sky] = {}
    skies = {}
    for scene in scenes:
        if scene.day not in by_day:
            by_day[scene.day] = plan_sky(scene, seed)
        skies[scene.id] = by_day[scene.day]
    return skies


def _opacity(field: np.ndarray, threshold: float) -> np.ndarray:
    return np.clip((field - threshold) / _CLOUD_SOFTNESS, 0.0, 1.0) ** 0.8


@dataclass(frozen=True)
class Rendered:
    """One block of one scene: top-of-canopy reflectance seen by the sensor, and its SCL."""

    reflectance: np.ndarray  # float32 (rows, cols, 10)
    scl: np.ndarray  # uint8 (rows, cols) at 10 m
    cloud: np.ndarray  # float32 opacity (rows, cols)
    nodata: np.ndarray  # bool (rows, cols)


def render(
    scene: SceneSpec, sky: Sky, seed: int, surface: np.ndarray, u: np.ndarray, v: np.ndarray, row0: int
) -> Rendered:
    """Put clouds, cirrus, shadows and the swath edge over the ground reflectance."""
    refl = surface.copy()
    scl = landscape.surface_scl(surface)
    alpha = _opacity(_cloud_field(u, v, scene, seed), sky.cloud_threshold).astype(np.float32)
    az = math.radians(SUN_AZIMUTH_DEG)
    su = u + SHADOW_DISTANCE_M * math.sin(az)
    sv = v + SHADOW_DISTANCE_M * math.cos(az)
    shadow = _opacity(_cloud_field(su, sv, scene, seed), sky.cloud_threshold).astype(np.float32)
    shadow = np.clip(1.6 * shadow, 0.0, 1.0)  # a shadow is as sharp as its cloud's dense core
    shadow *= 1.0 - alpha  # a cloud hides its own shadow
    refl *= (1.0 - 0.8 * shadow)[..., None]
    if math.isfinite(sky.cirrus_threshold):
        cirrus = 0.05 * np.clip((_cirrus_field(u, v, scene, seed) - sky.cirrus_threshold) / 0.08, 0.0, 1.0)
        veil = np.array([1.0, 0.95, 0.9, 0.85, 0.8, 0.8, 0.75, 0.75, 0.6, 0.5], dtype=np.float32)
        refl += cirrus.astype(np.float32)[..., None] * veil
        scl = np.where(cirrus > 0.015, SCL_CIRRUS, scl)
    scl = np.where(shadow > 0.4, SCL_SHADOW, scl)  # Sen2Cor flags the dark core, not the faint rim
    tops = 0.5 + 0.3 * value_noise(u, v, 400.0, seed + scene.date_seed).astype(np.float32)
    cloud_spec = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.55], dtype=np.float32)
    refl = refl * (1.0 - alpha)[..., None] + (alpha * tops)[..., None] * cloud_spec
    scl = np.where(alpha > 0.01, SCL_UNCLASSIFIED, scl)
    scl = np.where(alpha > 0.05, SCL_CLOUD_MEDIUM, scl)
    scl = np.where(alpha > 0.5, SCL_CLOUD_HIGH, scl)

    # Per-date calibration wobble and sensor noise: small, so harmonised dates agree.
    gain = 0.99 + 0.02 * float(hash01(np.array(scene.date_seed), np.array(1), seed))
    rng = np.random.default_rng([seed, scene.date_seed, row0])
    refl = refl * np.float32(gain) + rng.normal(0.0, 0.002, refl.shape).astype(np.float32)

    nodata = np.zeros(u.shape, dtype=bool)
    if scene.wedge is not None:
        n = scene.tile.size_px
        rows = np.arange(row0, row0 + u.shape[0])[:, None] / n
        cols = np.arange(u.shape[1])[None, :] / n
        if scene.wedge == "west":
            nodata = cols < 0.28 - 0.2 * rows
        else:
            nodata = cols > 0.72 + 0.2 * rows
        nodata = np.broadcast_to(nodata, u.shape)
    scl = np.where(nodata, SCL_NODATA, scl).astype(np.uint8)
    return Rendered(refl.astype(np.float32), scl, alpha, nodata)


def to_dn(reflectance: np.ndarray, nodata: np.ndarray, carry_offset: bool) -> np.ndarray:
    """Reflectance -> uint16 DN as the product stores it (0 reserved for nodata)."""
    dn = np.rint(reflectance * 10_000.0) + (1000.0 if carry_offset else 0.0)
    dn = np.clip(dn, 1, 65_535).astype(np.uint16)
    dn[nodata] = 0
    return dn


def downsample(values: np.ndarray) -> np.ndarray:
    """2 x 2 mean of a (rows, cols, ...) block: 20 m bands integrate four 10 m footprints."""
    r, c = values.shape[0] // 2, values.shape[1] // 2
    return values.reshape(r, 2, c, 2, *values.shape[2:]).mean(axis=(1, 3))


def scl_20m(rendered: Rendered) -> np.ndarray:
    """SCL at 20 m: a cloud/shadow/nodata in any of the four 10 m pixels marks the 20 m pixel."""
    scl = rendered.scl
    r, c = scl.shape[0] // 2, scl.shape[1] // 2
    quads = scl.reshape(r, 2, c, 2).transpose(0, 2, 1, 3).reshape(r, c, 4)
    priority = np.array([100, 0, 0, 60, 1, 1, 1, 50, 80, 90, 70, 1], dtype=np.int16)
    ranked = priority[quads]
    winner = np.take_along_axis(quads, ranked.argmax(axis=2)[..., None], axis=2)[..., 0]
    # Plain surfaces take the top-left pixel (nearest), marked conditions the strongest one.
    return np.where(ranked.max(axis=2) > 1, winner, quads[..., 0]).astype(np.uint8)


def row_blocks(size_px: int, target_pixels: int = 2_000_000) -> Iterator[tuple[int, int]]:
    """(row0, rows) blocks of an even number of rows, about ``target_pixels`` each."""
    rows = max(2, (target_pixels // size_px) // 2 * 2)
    for row0 in range(0, size_px, rows):
        yield row0, min(rows, size_px - row0)
