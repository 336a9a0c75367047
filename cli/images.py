"""The images `landcover model predict` reads and writes: RGB pictures and GeoTIFF patches for the
seed's RGB models, GeoTIFFs of a per-pixel model's bands, and the one-pixel-per-window raster of a
tiled composite. Errors are :class:`ImageError`, one line each."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.errors import LandcoverError

GEOTIFF_SUFFIXES = {".tif", ".tiff"}
# L2A digital numbers are reflectance x 10000 when a file carries no scale of its own.
L2A_SCALE = 1e-4
_RGB_NAMES = {"red": ("red", "b04", "b4"), "green": ("green", "b03", "b3"), "blue": ("blue", "b02", "b2")}


class ImageError(LandcoverError):
    """An input image cannot be turned into a model patch."""


def _rgb_band_indexes(src) -> list[int]:
    """1-based indexes of red, green, blue: by colour interpretation, then description, then a 3-band file."""
    from rasterio.enums import ColorInterp

    interp = {ci: i + 1 for i, ci in enumerate(src.colorinterp)}
    if all(c in interp for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)) and src.count in (3, 4):
        return [interp[ColorInterp.red], interp[ColorInterp.green], interp[ColorInterp.blue]]
    names = [(d or "").strip().lower() for d in src.descriptions]
    found = [next((i + 1 for i, n in enumerate(names) if n in aliases), None) for aliases in _RGB_NAMES.values()]
    if all(found):
        return found  # type: ignore[return-value]
    if src.count == 3:
        return [1, 2, 3]
    raise ImageError(
        f"cannot tell which of the {src.count} bands of {src.name} are red, green, blue: "
        "give a 3-band RGB file or name the bands (red/green/blue or B04/B03/B02) in its band descriptions"
    )


def read_geotiff_rgb(path: Path) -> np.ndarray:
    """(1, 3, H, W) uint8 from a GeoTIFF of uint8 RGB, or of reflectance (float, or scaled integers)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    from models.preprocess import reflectance_to_uint8

    try:
        with rasterio.open(path) as src:
            bands = _rgb_band_indexes(src)
            data = src.read(bands, masked=True)
            scales = [src.scales[b - 1] for b in bands]
            offsets = [src.offsets[b - 1] for b in bands]
    except RasterioIOError as e:
        raise ImageError(f"cannot read {path} as a GeoTIFF ({e})") from None
    if data.dtype == np.uint8:
        return np.asarray(data.filled(0))[None]
    refl = data.astype(np.float64)
    if np.issubdtype(data.dtype, np.integer):
        has_own_scale = any(s != 1.0 for s in scales) or any(o != 0.0 for o in offsets)
        if has_own_scale:
            refl = refl * np.array(scales)[:, None, None] + np.array(offsets)[:, None, None]
        else:
            refl = refl * L2A_SCALE
    return reflectance_to_uint8(np.asarray(refl.filled(np.nan), dtype=np.float32)[None])


def read_picture_rgb(path: Path) -> np.ndarray:
    """(1, 3, H, W) uint8 from a PNG/JPEG (any mode, converted to RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(f"cannot read {path} as an image ({e})") from None
    return rgb.transpose(2, 0, 1)[None].copy()


def read_patch(path: Path, patch_size: int) -> np.ndarray:
    """One uint8 LR patch (1, 3, patch_size, patch_size) from an image file, resized down if bigger."""
    from models.preprocess import resize_windows

    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    rgb = read_geotiff_rgb(path) if path.suffix.lower() in GEOTIFF_SUFFIXES else read_picture_rgb(path)
    h, w = rgb.shape[-2:]
    if min(h, w) < patch_size:
        raise ImageError(f"{path} is {w} x {h} px, smaller than the model's {patch_size} px patch")
    return resize_windows(rgb, patch_size)


def write_png(image_chw: np.ndarray, path: Path) -> None:
    """Write a uint8 (3, H, W) image as PNG via a temporary name in the same directory."""
    from PIL import Image

    from models.files import atomic_write

    if not path.parent.is_dir():
        raise ImageError(f"directory does not exist for {path}")
    atomic_write(path, lambda tmp: Image.fromarray(image_chw.transpose(1, 2, 0)).save(tmp, format="PNG"))


def is_picture(path: Path) -> bool:
    """A PNG/JPEG, or a uint8 GeoTIFF: an RGB picture with no spectral scale, read as the seed's uint8 patch."""
    if path.suffix.lower() not in GEOTIFF_SUFFIXES:
        return True
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            return src.dtypes[0] == "uint8"
    except RasterioIOError as e:
        raise ImageError(f"cannot read {path} as a GeoTIFF ({e})") from None


def write_window_raster(path: Path, windows, probs: np.ndarray, card, shape: tuple[int, int], transform, crs) -> None:
    """One pixel per window of the lattice: band 1 the top class's map code (0 = not classified, too
    little clear data), band 2 its probability in percent; the legend's colours on band 1."""
    import rasterio
    from affine import Affine

    from models.files import atomic_write
    from models.imagery import lattice

    if not path.parent.is_dir():
        raise ImageError(f"directory does not exist for {path}")
    size = windows.size_px
    grid = lattice(shape, size, size)  # the lattice cut_windows used; windows lacking data stay 0
    r0, c0 = grid[0]
    n_rows, n_cols = len({r for r, _ in grid}), len({c for _, c in grid})
    codes = np.zeros((n_rows, n_cols), np.uint8)
    percent = np.zeros((n_rows, n_cols), np.uint8)
    top = probs.argmax(1)
    for (r, c), k, p in zip(windows.origins, top, probs.max(1), strict=True):
        i, j = (r - r0) // size, (c - c0) // size
        codes[i, j], percent[i, j] = card.class_codes[k], round(100 * float(p))
    out_transform = transform * Affine.translation(c0, r0) * Affine.scale(size)
    colours = {c.code: (*c.rgb, 255) for c in card.legend.classes}

    def write(tmp: Path) -> None:
        with rasterio.open(tmp, "w", driver="GTiff", width=n_cols, height=n_rows, count=2, dtype="uint8", nodata=0,
                           crs=crs, transform=out_transform) as dst:
            dst.write(np.stack([codes, percent]))
            dst.write_colormap(1, colours)
            dst.set_band_description(1, f"top class code of each {card.ground_footprint_m:g} m window ({card.model_id})")
            dst.set_band_description(2, "probability of the top class, percent")

    atomic_write(path, write)


def read_pixel_image(path: Path, card, bands: list[int] | None = None) -> np.ndarray:
    """The card's bands of a GeoTIFF (found by band description, or ``bands``) as reflectance
    (N=1, bands, H, W); the far rows and columns are cut to the card's multiple."""
    from models.imagery import read_imagery

    data = read_imagery(path, card, bands=bands).reflectance
    m = card.pixel.size_multiple
    h, w = data.shape[1] // m * m, data.shape[2] // m * m
    if h == 0 or w == 0:
        raise ImageError(f"{path} is smaller than {m} x {m} px")
    return data[None, :, :h, :w]
