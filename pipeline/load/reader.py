"""The composite's reads: one task per block reads every band of every date through odc-stac and
composites it where it runs (:func:`read_block`); a block (:func:`load_block`) is one such task,
a whole grid (:func:`load_composite`) one per chunk."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import odc.stac
import pystac
import rasterio
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from pipeline.errors import LoadError
from pipeline.load.composite import MASK_SCL, composite_block, dn_to_reflectance
from pipeline.load.gdal import GDAL_OPTIONS
from pipeline.load.geometry import coarse_geobox, exact_coarse_geobox, read_factor, upsample_planes, upsampled_chunks
from pipeline.load.warp import pinned_warp
from pipeline.patches import PatchGrid
from pipeline.radiometry import NODATA_DN


def load_composite(
    items: Iterable[pystac.Item],
    grid: PatchGrid,
    *,
    offsets: Mapping[str, int],
    bands: Sequence[str] = ("red", "green", "blue"),
    mask_scl: Sequence[int] = MASK_SCL,
    resampling: str = "bilinear",
    read_resolution: float | None = None,
) -> xr.Dataset:
    """Lazy median composite of clear reflectance on ``grid.pixel_geobox``.

    Returns float32 variables named as ``bands`` (reflectance, NaN where no clear observation)
    and ``clear_count`` (uint8, clear observations per pixel), chunked exactly as
    ``grid.pixel_chunks()``. Items without an entry in ``offsets`` (dropped by
    :func:`~pipeline.load.offsets.item_offsets`) are skipped. A clear observation is one the SCL
    does not mask whose DN is non-zero in every band.

    Each chunk of whole cells is a :func:`load_block`: one task reads all its dates and bands and
    composites them, so a chunk's dates never travel between workers and the graph stays a few
    tasks per chunk whatever the number of scenes. The tasks carry :data:`GDAL_OPTIONS` as they
    are when this is called.

    ``read_resolution`` (metres, a whole multiple of the grid's, e.g. 20.0): read and composite
    there instead (see :func:`load_block`), as chunks of the coarse grid under the whole grid
    (:func:`~pipeline.load.geometry.coarse_geobox`), upsampled with a coarse pixel borrowed from
    each neighbouring chunk (:func:`~pipeline.load.geometry.upsampled_chunks`); the result keeps
    the grid's shape and meaning.
    """
    usable = _usable(items, offsets)
    bands = _model_bands(bands)
    geobox = grid.pixel_geobox
    (ychunks, xchunks) = grid.pixel_chunks()
    options = dict(offsets=offsets, bands=bands, mask_scl=mask_scl, resampling=resampling)
    # Reads cut at multiples of whole cells; the rechunk adds the margins. These are the
    # rectangles odc-stac's own chunked read of the whole grid warped, kept because a reprojected
    # scene's pixels depend slightly on the rectangle.
    step = grid.cells_per_chunk * grid.stride_px
    factor = read_factor(geobox, read_resolution)
    if factor == 1:
        planes = _tiled(usable, geobox, (step, step), **options)
    else:
        coarse, offset = coarse_geobox(geobox, factor)
        # A grid read in one chunk stays one chunk, halo included: a sliver chunk of halo would
        # cost a read of every band of every date.
        (ny, nx), (cy, cx) = geobox.shape, coarse.shape
        tile = (cy if step >= ny else -(-step // factor), cx if step >= nx else -(-step // factor))
        planes = upsampled_chunks(_tiled(usable, coarse, tile, **options), factor, offset, geobox.shape, resampling)
    planes = planes.rechunk({1: ychunks, 2: xchunks})

    coords = xr_coords(geobox, crs_coord_name="spatial_ref")
    out = {band: xr.DataArray(planes[i], dims=("y", "x"), coords=coords) for i, band in enumerate(bands)}
    out["clear_count"] = xr.DataArray(planes[len(bands)].astype(np.uint8), dims=("y", "x"), coords=coords)
    composite = xr.Dataset(out)
    composite.attrs.update(items=[item.id for item in usable], mask_scl=list(mask_scl))
    if read_resolution is not None:
        composite.attrs.update(read_resolution=float(read_resolution))
    for band in bands:
        composite[band].attrs.update(units="1", long_name=f"{band} surface reflectance, median of clear observations")
    composite["clear_count"].attrs.update(long_name="clear observations per pixel")
    return composite


def _tiled(items: list[pystac.Item], geobox: GeoBox, tile: tuple[int, int], **options: Any) -> da.Array:
    """The (bands + 1, *geobox.shape) planes of ``geobox`` read at its own resolution as one
    :func:`load_block` per ``tile``-sized rectangle, from the top-left corner."""
    ny, nx = geobox.shape
    (ty, tx) = tile
    return da.block([[[load_block(items, geobox[y:min(y + ty, ny), x:min(x + tx, nx)], **options)
                       for x in range(0, nx, tx)] for y in range(0, ny, ty)]])


def load_block(
    items: Iterable[pystac.Item],
    geobox: GeoBox,
    *,
    offsets: Mapping[str, int],
    bands: Sequence[str] = ("red", "green", "blue"),
    mask_scl: Sequence[int] = MASK_SCL,
    resampling: str = "bilinear",
    read_resolution: float | None = None,
    upsample: bool = True,
) -> da.Array:
    """The lazy (bands + 1, H, W) float32 composite planes of one block's ``geobox`` in one chunk:
    the bands' median clear reflectance, then the clear-observation count (as :func:`load_composite`).

    One task (:func:`read_block`) reads and composites it where it runs; a streamed run builds it
    for each block as it submits it, so the client never holds the graph of the whole area. The
    pixels equal those of :func:`load_composite` over any chunking (with the same ``read_resolution``)
    wherever no scene is reprojected; a reprojected scene's depend slightly on the rectangle read.

    ``read_resolution`` (metres, a whole multiple of the geobox's; None or equal: full resolution):
    read, mask and composite on that coarser grid, so GDAL decodes the COGs' matching overview
    (odc-loader opens the overview level whenever the read shrinks by its factor), then upsample
    the planes to ``geobox``: the count by nearest, reflectance by ``resampling``
    (:func:`~pipeline.load.geometry.upsample_planes`). Worth it when the model sees the window
    coarser than that anyway (:func:`~pipeline.load.geometry.read_resolution_for`). The coarse
    grid is a lattice shared by every block of the same pixel grid and is read one coarse pixel
    wider than the block on each side, so a block whose side is no multiple of the coarse pixel is
    simply cropped, and block edges still interpolate between real neighbours.

    ``upsample=False`` returns the coarse planes themselves, (bands + 1, H / f, W / f) for a read
    ``f`` times coarser, for a consumer that works on them (a model that resizes its window to
    fewer pixels anyway); the block must then be whole coarse pixels of that lattice
    (:func:`~pipeline.load.geometry.exact_coarse_geobox`), and its pixels are those the upsampling
    starts from.
    """
    usable = _usable(items, offsets)
    bands = _model_bands(bands)
    factor = read_factor(geobox, read_resolution)
    if not upsample and factor > 1:
        coarse = exact_coarse_geobox(geobox, factor)
        if coarse is None:
            raise LoadError(f"block {geobox.shape} at {tuple(geobox.affine)[:6]} is not whole {read_resolution:g} m pixels "
                            "of the read lattice; read it with upsample=True")
        shape = coarse.shape
    else:
        shape = geobox.shape
    args = (usable, geobox, {item.id: offsets[item.id] for item in usable}, tuple(bands), tuple(mask_scl), resampling,
            factor, upsample)
    # Named from what decides the pixels (items by id), so the key is cheap and stable; the GDAL
    # options (HTTP retries, caching) decide none of them.
    token = dask.base.tokenize([item.id for item in usable], tuple(geobox.affine), geobox.shape, str(geobox.crs), *args[2:])
    name = f"block-{token}"
    task = (read_block, *args, dict(GDAL_OPTIONS))
    return da.Array({(name, 0, 0, 0): task}, name, chunks=((len(bands) + 1,), (shape[0],), (shape[1],)),
                    dtype=np.float32)


def read_block(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    offsets: Mapping[str, int],
    bands: Sequence[str],
    mask_scl: Sequence[int],
    resampling: str,
    factor: int,
    upsample: bool,
    gdal_options: Mapping[str, str | int] | None = None,
) -> np.ndarray:
    """:func:`load_block`'s pixels, read here and now: every band of every item through odc-stac,
    composited (and upsampled, if asked) in this one call, under ``gdal_options`` (default
    :data:`GDAL_OPTIONS`).

    One task per block: its reads never travel between workers to meet for the composite, and
    the scheduler handles two tasks per block (this and the classification) instead of a dozen.
    """
    options = GDAL_OPTIONS if gdal_options is None else gdal_options
    if factor > 1:
        coarse, offset = coarse_geobox(geobox, factor, halo=1 if upsample else 0)
        planes = _read_and_composite(items, coarse, offsets, bands, mask_scl, resampling, options)
        if not upsample:
            return planes
        return upsample_planes(planes, factor=factor, offset=offset, shape=geobox.shape, resampling=resampling)
    return _read_and_composite(items, geobox, offsets, bands, mask_scl, resampling, options)


def _read_and_composite(items: Sequence[pystac.Item], geobox: GeoBox, offsets: Mapping[str, int],
                        bands: Sequence[str], mask_scl: Sequence[int], resampling: str,
                        gdal_options: Mapping[str, str | int]) -> np.ndarray:
    # odc-stac reads in this thread when given no pool, so the warp behaviour reaches its calls.
    with rasterio.Env(**gdal_options), pinned_warp():
        raw = odc.stac.load(items, geobox=geobox, **_load_options(bands, resampling))
    offset_dn, scales = dn_to_reflectance(items, offsets, bands)
    return composite_block(*(raw[band].values for band in bands), raw["scl"].values, offset_dn=offset_dn,
                           scales=scales, mask_scl=tuple(mask_scl))


def _load_options(bands: Sequence[str], resampling: str) -> dict[str, Any]:
    """odc-stac's options for a composite's read: one time slice per item, in the order given (so
    slice k takes items[k]'s offset), every asset as uint16 DN."""
    return dict(
        bands=[*bands, "scl"],
        groupby=_own_slice,
        # The model card decides (reBEN upsamples 20 m bands with nearest); classes never blend.
        resampling={"scl": "nearest", "*": resampling},
        nodata=NODATA_DN,
        # One dtype for all: SCL fits in uint16, and odc-loader 0.5 mis-sizes chunks given a per-band dict.
        dtype="uint16",
        fail_on_error=True,
    )


def _own_slice(item: pystac.Item, parsed: Any, index: int) -> int:
    """odc-stac ``groupby``: every item its own time slice, numbered in the order given."""
    return index


def _usable(items: Iterable[pystac.Item], offsets: Mapping[str, int]) -> list[pystac.Item]:
    usable = [item for item in items if item.id in offsets]
    if not usable:
        raise LoadError("no readable scenes left to load; widen the search or check the asset URLs")
    return usable


def _model_bands(bands: Sequence[str]) -> list[str]:
    if "scl" in bands:
        raise LoadError("'scl' is loaded for masking, not as a model band; remove it from the bands")
    return list(bands)
