"""The demo world's ground: one land-cover truth and its surface reflectance, as functions of place.

The ground is defined on a local metric plane (``u`` metres east of 12°E, ``v`` metres north of
the world's reference latitude), so both UTM tiles sample one and the same landscape.

Layout, south to north: sea (Marine waters), a coastal belt alternating between beaches/dunes and
coastal wetlands, then an inland patchwork of ~2 km regions whose classes follow a 4 x 4 Latin
square (any 4 x 4 block of regions holds all 16 inland classes, so every tile of >= ~9 km sees
them all), crossed by meandering rivers. Units are large compared with the 1.2 km cells the
classifier sees, so most cells are dominated by one class; within a class the look (parcels,
street grids, tree crowns, stripes of orchards, pools of wetlands) comes from the rendering,
not from the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.demo.noise import fbm, hash01, value_noise, voronoi

# Band order of every spectrum and reflectance array in the demo world (Earth Search v1 keys).
BANDS: tuple[str, ...] = (
    "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22",
)

# Surface reflectance of the materials the classes are made of, in BANDS order.
_SPECTRA: dict[str, tuple[float, ...]] = {
    "marine": (0.062, 0.052, 0.028, 0.020, 0.014, 0.012, 0.010, 0.009, 0.005, 0.003),
    "lake": (0.038, 0.058, 0.044, 0.036, 0.020, 0.016, 0.013, 0.012, 0.006, 0.004),
    "soil": (0.075, 0.105, 0.145, 0.175, 0.195, 0.210, 0.230, 0.240, 0.300, 0.250),
    "crop": (0.028, 0.068, 0.036, 0.100, 0.300, 0.380, 0.420, 0.440, 0.220, 0.110),
    "cereal": (0.070, 0.112, 0.140, 0.180, 0.240, 0.270, 0.300, 0.310, 0.330, 0.240),
    "grass": (0.036, 0.085, 0.052, 0.120, 0.320, 0.400, 0.440, 0.450, 0.240, 0.130),
    "broadleaf": (0.026, 0.056, 0.030, 0.090, 0.280, 0.360, 0.400, 0.410, 0.180, 0.080),
    "conifer": (0.018, 0.033, 0.019, 0.050, 0.160, 0.210, 0.240, 0.250, 0.120, 0.050),
    "asphalt": (0.070, 0.080, 0.088, 0.098, 0.108, 0.118, 0.128, 0.130, 0.140, 0.130),
    "red_roof": (0.085, 0.090, 0.165, 0.180, 0.200, 0.210, 0.220, 0.230, 0.280, 0.240),
    "grey_roof": (0.140, 0.150, 0.160, 0.170, 0.180, 0.190, 0.200, 0.200, 0.220, 0.200),
    "bright_roof": (0.260, 0.275, 0.280, 0.290, 0.300, 0.300, 0.310, 0.310, 0.320, 0.280),
    "sand": (0.190, 0.230, 0.280, 0.300, 0.320, 0.330, 0.350, 0.360, 0.420, 0.360),
    "heather": (0.045, 0.048, 0.062, 0.085, 0.140, 0.170, 0.190, 0.200, 0.200, 0.130),
    "dry_grass": (0.095, 0.125, 0.155, 0.180, 0.220, 0.240, 0.260, 0.270, 0.320, 0.260),
    "rock": (0.150, 0.160, 0.170, 0.180, 0.190, 0.195, 0.200, 0.205, 0.240, 0.220),
    "shrub": (0.036, 0.066, 0.058, 0.110, 0.220, 0.270, 0.300, 0.310, 0.220, 0.120),
    "reeds": (0.030, 0.050, 0.046, 0.080, 0.180, 0.220, 0.250, 0.260, 0.170, 0.090),
    "mud": (0.060, 0.070, 0.080, 0.090, 0.100, 0.110, 0.120, 0.120, 0.120, 0.100),
}
SPECTRA = {name: np.asarray(values, dtype=np.float32) for name, values in _SPECTRA.items()}

# Inland classes in Latin-square order: horizontal neighbours are consecutive (towns beside
# industry, arable beside complex cultivation, lakes beside wetlands), vertical ones 4 apart.
INLAND_CLASSES: tuple[int, ...] = (1, 2, 3, 6, 5, 4, 7, 8, 9, 11, 10, 14, 13, 12, 16, 18)
REGION_SPACING_M = 2000.0
SEA_DEPTH_M = 2200.0  # sea between the south edge of the tiles and the coast
BELT_WIDTH_M = 1600.0  # beaches/dunes and coastal wetlands between the coast and the inland
BELT_SEGMENT_M = 3000.0
RIVER_SPACING_M = 7500.0


@dataclass(frozen=True)
class Ground:
    """Parameters of the one landscape both tiles show."""

    seed: int
    south_m: float  # v of the tiles' south edge; the coast is drawn relative to it

    @property
    def _offset(self) -> int:
        return int(hash01(np.array(self.seed), np.array(0), 4242) * 16)


def coast_v(ground: Ground, u: np.ndarray) -> np.ndarray:
    """Northing (v) of the shoreline along u."""
    wobble = fbm(u, np.zeros_like(u), 2500.0, ground.seed + 11, octaves=3) - 0.5
    return ground.south_m + SEA_DEPTH_M + 900.0 * wobble


def truth(ground: Ground, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class codes (uint8, 1..19) and a per-unit key in [0, 1) for every location."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    seed = ground.seed
    # Warp the region lattice so borders look like landscape, not like a chessboard.
    wu = u + 700.0 * (fbm(u, v, 1800.0, seed + 21, octaves=3) - 0.5)
    wv = v + 700.0 * (fbm(u, v, 1800.0, seed + 22, octaves=3) - 0.5)
    regions = voronoi(wu, wv, REGION_SPACING_M, seed + 23, jitter=0.6)
    lattice = np.asarray(INLAND_CLASSES, dtype=np.uint8)
    codes = lattice[(regions.ix + 4 * regions.iy + ground._offset) % 16]
    key = regions.key

    coast = coast_v(ground, u)
    belt_top = coast + BELT_WIDTH_M + 300.0 * (fbm(u, v, 900.0, seed + 31, octaves=2) - 0.5)
    segment = np.floor((wu + 7.0 * BELT_SEGMENT_M) / BELT_SEGMENT_M).astype(np.int64)
    in_belt = v < belt_top
    codes = np.where(in_belt, np.where(segment % 2 == 0, 15, 17), codes).astype(np.uint8)
    key = np.where(in_belt, hash01(segment, np.zeros_like(segment), seed + 32), key)

    # Rivers run north to south into the sea; each meanders about its own meridian.
    k = np.round(u / RIVER_SPACING_M - 0.3)
    phase = hash01(k.astype(np.int64), np.zeros_like(k, dtype=np.int64), seed + 41) * 6.283
    centre = (k + 0.3) * RIVER_SPACING_M + 450.0 * np.sin(v / 2300.0 + phase)
    centre += 500.0 * (fbm(np.zeros_like(v) + k * 977.0, v, 3000.0, seed + 42, octaves=3) - 0.5)
    half_width = 18.0 + 14.0 * value_noise(u, v, 1500.0, seed + 43)
    river = (np.abs(u - centre) < half_width) & (v >= coast)
    codes = np.where(river, 18, codes).astype(np.uint8)

    sea = v < coast
    codes = np.where(sea, 19, codes).astype(np.uint8)
    key = np.where(sea | river, 0.5, key)
    return codes, key.astype(np.float32)


def _mix(a: str, b: str, t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=np.float32)[:, None]
    return SPECTRA[a][None, :] * (1.0 - t) + SPECTRA[b][None, :] * t


def _pick(names: tuple[str, ...], choice: np.ndarray) -> np.ndarray:
    table = np.stack([SPECTRA[n] for n in names])
    index = np.minimum((np.asarray(choice) * len(names)).astype(np.int64), len(names) - 1)
    return table[index]


def _rotated(u: np.ndarray, v: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return u * c + v * s, -u * s + v * c


def _urban(u, v, key, seed):
    x, y = _rotated(u, v, key * np.pi / 2)
    street = ((x / 90.0) % 1.0 < 0.18) | ((y / 110.0) % 1.0 < 0.16)
    lot = hash01(np.floor(x / 22.0).astype(np.int64), np.floor(y / 22.0).astype(np.int64), seed)
    out = np.where(lot[:, None] < 0.5, SPECTRA["red_roof"], SPECTRA["grey_roof"])
    out = np.where((lot < 0.22)[:, None], SPECTRA["broadleaf"], out)
    return np.where(street[:, None], SPECTRA["asphalt"], out)


def _industrial(u, v, key, seed):
    x, y = _rotated(u, v, key * np.pi / 2)
    fx, fy = (x / 240.0) % 1.0, (y / 180.0) % 1.0
    building = (fx > 0.12) & (fx < 0.88) & (fy > 0.15) & (fy < 0.85)
    shade = 0.85 + 0.3 * hash01(np.floor(x / 240.0).astype(np.int64), np.floor(y / 180.0).astype(np.int64), seed)
    out = np.where(building[:, None], SPECTRA["bright_roof"] * shade[:, None], SPECTRA["asphalt"] * 1.15)
    return out


def _fields(u, v, spacing, seed, names):
    cells = voronoi(u, v, spacing, seed)
    out = _pick(names, cells.key) * (0.85 + 0.3 * hash01(cells.ix, cells.iy, seed + 5))[:, None]
    hedge = cells.edge < 6.0
    return np.where(hedge[:, None], SPECTRA["grass"], out)


def _permanent_crops(u, v, key, seed):
    cells = voronoi(u, v, 220.0, seed)
    x, _ = _rotated(u, v, cells.key * np.pi)
    rows = 0.5 + 0.5 * np.sin(2 * np.pi * x / 28.0)
    return _mix("soil", "broadleaf", 0.3 + 0.45 * rows)


def _pasture(u, v, key, seed):
    cells = voronoi(u, v, 350.0, seed)
    return _mix("grass", "dry_grass", 0.15 * cells.key) * (0.93 + 0.14 * hash01(cells.ix, cells.iy, seed + 5))[:, None]


def _agri_natural(u, v, key, seed):
    out = _fields(u, v, 220.0, seed, ("crop", "cereal", "grass", "soil"))
    natural = fbm(u, v, 450.0, seed + 9, octaves=3) > 0.52
    return np.where(natural[:, None], _mix("broadleaf", "shrub", value_noise(u, v, 40.0, seed + 3)), out)


def _agroforestry(u, v, key, seed):
    ground = _mix("grass", "dry_grass", 0.55 + 0.3 * value_noise(u, v, 200.0, seed + 2))
    tree = hash01(np.floor(u / 30.0).astype(np.int64), np.floor(v / 30.0).astype(np.int64), seed) < 0.3
    return np.where(tree[:, None], SPECTRA["broadleaf"] * 0.85, ground)


def _forest(name):
    def render(u, v, key, seed):
        crowns = 0.84 + 0.32 * value_noise(u, v, 14.0, seed)
        stands = 0.92 + 0.16 * voronoi(u, v, 400.0, seed + 1).key
        return SPECTRA[name][None, :] * (crowns * stands)[:, None]
    return render


def _mixed_forest(u, v, key, seed):
    conifer = fbm(u, v, 70.0, seed + 3, octaves=2) > 0.5
    crowns = 0.84 + 0.32 * value_noise(u, v, 14.0, seed)
    return np.where(conifer[:, None], SPECTRA["conifer"], SPECTRA["broadleaf"]) * crowns[:, None]


def _sparse(u, v, key, seed):
    rock = fbm(u, v, 160.0, seed + 3, octaves=3)
    out = _mix("dry_grass", "rock", np.clip((rock - 0.45) * 3.0, 0.0, 1.0))
    shrub = hash01(np.floor(u / 20.0).astype(np.int64), np.floor(v / 20.0).astype(np.int64), seed) < 0.08
    return np.where(shrub[:, None], SPECTRA["shrub"], out)


def _heath(u, v, key, seed):
    patches = fbm(u, v, 220.0, seed + 3, octaves=3)
    return _mix("heather", "dry_grass", np.clip((patches - 0.55) * 2.5, 0.0, 0.7)) * (
        0.9 + 0.2 * value_noise(u, v, 25.0, seed)
    )[:, None]


def _transitional(u, v, key, seed):
    ground = _mix("dry_grass", "grass", value_noise(u, v, 120.0, seed + 2))
    bush = hash01(np.floor(u / 20.0).astype(np.int64), np.floor(v / 20.0).astype(np.int64), seed) < 0.5
    return np.where(bush[:, None], _mix("shrub", "broadleaf", value_noise(u, v, 60.0, seed + 4)), ground)


def _beach(u, v, key, seed):
    ripples = 0.92 + 0.16 * value_noise(u, v, 60.0, seed)
    out = SPECTRA["sand"][None, :] * ripples[:, None]
    dune_grass = fbm(u, v, 90.0, seed + 3, octaves=2) > 0.68
    return np.where(dune_grass[:, None], _mix("sand", "shrub", np.full(u.shape, 0.6)), out)


def _inland_wetland(u, v, key, seed):
    pools = fbm(u, v, 130.0, seed + 3, octaves=3) > 0.6
    reeds = SPECTRA["reeds"][None, :] * (0.85 + 0.3 * value_noise(u, v, 18.0, seed))[:, None]
    return np.where(pools[:, None], SPECTRA["lake"] * 0.9, reeds)


def _coastal_wetland(u, v, key, seed):
    channel = np.abs(fbm(u, v, 500.0, seed + 3, octaves=4) - 0.5) < 0.025
    marsh = _mix("mud", "reeds", 0.2 + 0.6 * fbm(u, v, 80.0, seed + 4, octaves=2))
    return np.where(channel[:, None], SPECTRA["marine"] * 1.2, marsh)


def _lake(u, v, key, seed):
    turbidity = 0.85 + 0.3 * fbm(u, v, 500.0, seed, octaves=2)
    return SPECTRA["lake"][None, :] * turbidity[:, None]


def _marine(u, v, key, seed):
    waves = 0.95 + 0.1 * value_noise(u, v, 30.0, seed)
    return SPECTRA["marine"][None, :] * waves[:, None]


_RENDER = {
    1: _urban,
    2: _industrial,
    3: lambda u, v, k, s: _fields(u, v, 320.0, s, ("soil", "crop", "crop", "cereal", "soil")),
    4: _permanent_crops,
    5: _pasture,
    6: lambda u, v, k, s: _fields(u, v, 85.0, s, ("soil", "crop", "cereal", "grass", "broadleaf", "dry_grass")),
    7: _agri_natural,
    8: _agroforestry,
    9: _forest("broadleaf"),
    10: _forest("conifer"),
    11: _mixed_forest,
    12: _sparse,
    13: _heath,
    14: _transitional,
    15: _beach,
    16: _inland_wetland,
    17: _coastal_wetland,
    18: _lake,
    19: _marine,
}


def reflectance(ground: Ground, codes: np.ndarray, key: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Surface reflectance (float32, shape codes.shape + (10,)) of the ground, in BANDS order."""
    flat_codes = np.asarray(codes).ravel()
    fu = np.asarray(u, dtype=np.float64).ravel()
    fv = np.asarray(v, dtype=np.float64).ravel()
    fk = np.asarray(key).ravel()
    out = np.empty((flat_codes.size, len(BANDS)), dtype=np.float32)
    for code in np.unique(flat_codes):
        sel = np.flatnonzero(flat_codes == code)
        out[sel] = _RENDER[int(code)](fu[sel], fv[sel], fk[sel], ground.seed * 101 + int(code))
    # Grain common to every surface: a few per cent, fixed on the ground (not re-drawn per date).
    grain = 0.97 + 0.06 * hash01(np.floor(fu / 10.0).astype(np.int64), np.floor(fv / 10.0).astype(np.int64), ground.seed + 77)
    out *= grain[:, None].astype(np.float32)
    return out.reshape(np.shape(codes) + (len(BANDS),))


def surface_scl(refl: np.ndarray) -> np.ndarray:
    """Sen2Cor-like scene class of clear ground from its reflectance: 4 vegetation, 5 bare, 6 water."""
    green, red, nir = refl[..., 1], refl[..., 2], refl[..., 6]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    ndwi = (green - nir) / np.maximum(green + nir, 1e-6)
    return np.where(ndwi > 0.2, 6, np.where(ndvi > 0.4, 4, 5)).astype(np.uint8)
