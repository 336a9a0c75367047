"""The one model interface every command uses: a card's bands read from an image, cut into windows
of the card's footprint on the ground, classified, with the embeddings active learning needs.

* Bands: by band description - ``landcover map --save-composite`` names each band of
  ``composite.tif`` with the card's band name (``"red surface reflectance x 10000 ..."``), and
  band ids (``B04``) or common names (``red``) as the first word of a description are read as well -
  or by explicit 1-based band numbers (``--bands 3,2,1``), given in the card's band order. A file
  without band names is read in file order only by an RGB model, from a 3-band file (red, green,
  blue, as RGB pictures are).
* Reflectance: floats are reflectance; integers are DN x the band's scale (+ offset) when the
  file records one, else L2A DN x 1e-4; nodata and DN 0 of an integer file become NaN.
* Windows: a window covers the card's ground footprint (``ground_footprint_m``, 1.2 km for every
  model here), so at the image's pixel size it is ``footprint / pixel`` px a side; a window of
  another pixel count is resized by the predictor to what the network takes. The windows tile the
  image on a lattice centred in it, so an image of exactly one window is that window.

models/ knows nothing of the pipeline; this module only reads GeoTIFFs (rasterio) and runs the
:class:`~models.predictor.Predictor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.bands import BandError, band_id, common_name
from models.card import ModelCard
from models.errors import LandcoverError

L2A_SCALE = 1e-4  # reflectance per DN of an integer file that records no scale of its own
MIN_VALID = 0.9  # a window with less clear data than this is no evidence of any class


class ImageryError(LandcoverError):
    """An image cannot be read as the model's bands."""


@dataclass(frozen=True)
class Imagery:
    """The card's bands of an image, in the card's order, as reflectance."""

    reflectance: np.ndarray  # float32 (bands, H, W), NaN where no data
    transform: object  # affine.Affine of the image
    crs: str | None
    path: Path
    band_numbers: tuple[int, ...]  # 1-based bands of the file, in the card's band order

    @property
    def pixel_m(self) -> float:
        return float(abs(self.transform.a))  # type: ignore[attr-defined]

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.reflectance.shape[1]), int(self.reflectance.shape[2])


@dataclass(frozen=True)
class Windows:
    """Windows cut from an :class:`Imagery`: pixels, where they are, and their ids."""

    data: np.ndarray  # float32 (N, bands, w, w) reflectance
    origins: list[tuple[int, int]]  # top-left (row, col) in the image
    bounds: list[tuple[float, float, float, float]]  # (minx, miny, maxx, maxy) in the image's CRS
    ids: list[str]
    size_px: int
    crs: str | None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int] | np.ndarray) -> Windows:
        index = np.asarray(index, np.int64)
        return Windows(self.data[index], [self.origins[i] for i in index], [self.bounds[i] for i in index],
                       [self.ids[i] for i in index], self.size_px, self.crs)


def overlapping(origins: Sequence[tuple[int, int]], others: Sequence[tuple[int, int]], size: int) -> np.ndarray:
    """bool per window at ``origins``: whether it shares a pixel with any window at ``others``
    (top-left (row, col) of ``size`` px squares of one image; windows that only touch do not)."""
    if not len(origins) or not len(others):
        return np.zeros(len(origins), bool)
    gap = np.abs(np.asarray(origins)[:, None, :] - np.asarray(others)[None, :, :])
    return (gap < size).all(axis=-1).any(axis=1)


def _described_band(description: str | None) -> str | None:
    """The band a description names by its first word (``red surface reflectance``, ``B04``), if any."""
    words = (description or "").strip().split()
    if not words:
        return None
    try:
        return common_name(words[0].rstrip(":,;"))
    except BandError:
        return None


def band_numbers(descriptions: Sequence[str | None], card_bands: Sequence[str], *, colour_rgb: bool = False,
                 explicit: Sequence[int] | None = None, name: str = "the image") -> list[int]:
    """1-based bands of a file holding ``card_bands`` (card order): explicit numbers, else band
    descriptions, else a plain RGB file for an RGB card. Anything else is an error naming the fix."""
    count = len(descriptions)
    wanted = ", ".join(card_bands)
    if explicit is not None:
        if len(explicit) != len(card_bands):
            raise ImageryError(f"--bands gives {len(explicit)} band numbers but the model takes {len(card_bands)} "
                               f"({wanted}): list one file band per model band, in that order")
        bad = [b for b in explicit if not 1 <= b <= count]
        if bad:
            raise ImageryError(f"--bands {bad[0]} is not a band of {name}, which has bands 1..{count}")
        return list(explicit)
    named = [_described_band(d) for d in descriptions]
    if any(named):
        found = {n: i + 1 for i, n in reversed(list(enumerate(named))) if n}
        missing = [b for b in card_bands if b not in found]
        if not missing:
            return [found[b] for b in card_bands]
        have = ", ".join(n for n in named if n) or "none"
        raise ImageryError(
            f"{name} has no band named {', '.join(band_id(b) + '/' + b for b in missing)} (its bands: {have}); the "
            f"model takes {wanted}: give imagery with those bands (e.g. the map's composite.tif) or --bands")
    if list(card_bands) == ["red", "green", "blue"] and (colour_rgb or count == 3):
        return [1, 2, 3]  # an RGB file, as RGB models have always read one
    raise ImageryError(
        f"cannot tell which of the {count} bands of {name} are the model's {wanted}: name the bands in the "
        f"file's band descriptions (band ids like B04 or names like red; the map's composite.tif has them) "
        f"or give --bands with one file band number per model band")


def read_imagery(path: str | Path, card: ModelCard, *, bands: Sequence[int] | None = None) -> Imagery:
    """The card's bands of a GeoTIFF as float32 reflectance (NaN where no data)."""
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.errors import RasterioIOError

    path = Path(path)
    if not path.is_file():
        raise ImageryError(f"image not found: {path}")
    try:
        with rasterio.open(path) as src:
            rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
            numbers = band_numbers(src.descriptions, card.bands, colour_rgb=list(src.colorinterp[:3]) == rgb,
                                   explicit=bands, name=str(path))
            data = src.read(numbers, masked=True)
            scales = np.array([src.scales[b - 1] for b in numbers], np.float64)[:, None, None]
            offsets = np.array([src.offsets[b - 1] for b in numbers], np.float64)[:, None, None]
            transform, crs = src.transform, (src.crs.to_wkt() if src.crs else None)
    except RasterioIOError as e:
        raise ImageryError(f"cannot read {path} as a GeoTIFF ({e})") from None
    values = data.astype(np.float64)
    if np.issubdtype(data.dtype, np.integer):
        own = bool((scales != 1.0).any() or (offsets != 0.0).any())
        values = values * scales + offsets if own else values * L2A_SCALE
        values = np.ma.masked_where(np.ma.getdata(data) == 0, values)  # DN 0: no clear observation
    refl = np.asarray(values.astype(np.float32).filled(np.nan))
    return Imagery(refl, transform, crs, path, tuple(numbers))


def window_px(card: ModelCard, pixel_m: float) -> int:
    """Side in image pixels of a window covering the card's ground footprint."""
    side = card.ground_footprint_m / pixel_m
    if abs(side - round(side)) > 1e-6 or round(side) < 1:
        raise ImageryError(f"the model's {card.ground_footprint_m:g} m window is not a whole number of the image's "
                           f"{pixel_m:g} m pixels: resample the image to 10 m (the map's composite.tif is)")
    return int(round(side))


def lattice(shape: tuple[int, int], size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left (row, col) of windows of ``size`` every ``stride`` px, the lattice centred in ``shape``."""
    def starts(extent: int) -> list[int]:
        n = (extent - size) // stride + 1 if extent >= size else 0
        first = (extent - (size + (n - 1) * stride)) // 2 if n else 0
        return [first + k * stride for k in range(n)]

    return [(r, c) for r in starts(shape[0]) for c in starts(shape[1])]


def cut_windows(imagery: Imagery, card: ModelCard, *, stride_px: int | None = None,
                min_valid: float = MIN_VALID) -> Windows:
    """Every window of the card's footprint with at least ``min_valid`` clear pixels."""
    from models.datasets import window_bounds

    size = window_px(card, imagery.pixel_m)
    height, width = imagery.shape
    if height < size or width < size:
        raise ImageryError(f"{imagery.path} is {width} x {height} px of {imagery.pixel_m:g} m, smaller than the model's "
                           f"{card.ground_footprint_m:g} m window ({size} px): give a larger image")
    finite = np.isfinite(imagery.reflectance).all(axis=0)
    data, origins = [], []
    for r, c in lattice((height, width), size, stride_px or size):
        if finite[r:r + size, c:c + size].mean() >= min_valid:
            data.append(imagery.reflectance[:, r:r + size, c:c + size])
            origins.append((r, c))
    stem = imagery.path.stem
    return Windows(
        data=np.stack(data) if data else np.zeros((0, len(card.bands), size, size), np.float32),
        origins=origins, bounds=[window_bounds(imagery.transform, r, c, size) for r, c in origins],
        ids=[f"{stem}/r{r}c{c}" for r, c in origins], size_px=size, crs=imagery.crs,
    )


def windows_at(imagery: Imagery, card: ModelCard, centres: Sequence[tuple[float, float]], ids: Sequence[str]) -> Windows:
    """The window of the card's footprint centred on each point (x, y in the image's CRS); a point
    whose window leaves the image is an error naming it."""
    from models.datasets import window_bounds

    size = window_px(card, imagery.pixel_m)
    height, width = imagery.shape
    inverse = ~imagery.transform  # type: ignore[operator]
    data, origins = [], []
    for (x, y), name in zip(centres, ids, strict=True):
        col, row = inverse * (x, y)
        r0, c0 = int(round(row - size / 2)), int(round(col - size / 2))
        if r0 < 0 or c0 < 0 or r0 + size > height or c0 + size > width:
            raise ImageryError(f"the window of {name} leaves {imagery.path}: label only inside the imagery, "
                               f"at least {card.ground_footprint_m / 2:g} m from its edge")
        data.append(imagery.reflectance[:, r0:r0 + size, c0:c0 + size])
        origins.append((r0, c0))
    return Windows(
        data=np.stack(data) if data else np.zeros((0, len(card.bands), size, size), np.float32),
        origins=origins, bounds=[window_bounds(imagery.transform, r, c, size) for r, c in origins],
        ids=list(ids), size_px=size, crs=imagery.crs,
    )


def classify(predictor, windows: np.ndarray):
    """Probabilities (output order, softmax or sigmoid per the card) and embeddings of reflectance
    windows, for any family with windows (seed SR + classifier, compact RGB, timm/reBEN)."""
    if predictor.card.family == "per-pixel":
        raise ImageryError(f"{predictor.card.model_id} is a per-pixel model: it has no window embedding; "
                           "map with it (`landcover map --model`) instead")
    return predictor.predict_reflectance(windows)
