"""The patch grid: which ground window each output map cell classifies, and how dask blocks map onto it.

Two grids share one CRS and one origin, both owned by :class:`odc.geo.geobox.GeoBox`:

* the **cell grid** (``cell_geobox``) is the output map: one pixel per patch, of size
  ``stride_px * resolution`` (default 120 x 10 m = 1.2 km). Its edges are snapped to multiples of
  the cell size in the output CRS, so runs over overlapping AOIs share cells exactly.
* the **pixel grid** (``pixel_geobox``) is the 10 m grid the composite is loaded on. A cell's
  window (``window_px`` square) is centred on the cell, so when ``stride_px < window_px`` the pixel
  grid is the cell grid's extent padded by ``margin_px = (window_px - stride_px) // 2`` on every side::

      pixel rows:  | margin | cell 0 (stride) | cell 1 (stride) | ... | cell n-1 | margin |
      window of cell i covers pixel rows [i*stride, i*stride + window)

Dask blocks. ``pixel_chunks()`` cuts the pixel grid at cell boundaries: the first block also holds
the leading margin and the last the trailing one, so block k of the pixel array holds exactly the
cells of block k of ``cell_chunks()``. A function applied to a pixel block therefore needs
``margin_px`` more pixels on each interior side, which is what
``dask.array.map_overlap(f, pixels, depth={y: margin, x: margin}, boundary="none", trim=False,
chunks=cell_chunks)`` hands it (with ``margin_px == 0``, plain ``map_blocks``). Every block it sees
is then ``cells * stride_px + 2 * margin_px`` pixels tall and wide: the shape :func:`cut_windows` and
:func:`clear_fraction` expect.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from numpy.lib.stride_tricks import sliding_window_view
from odc.geo.geobox import GeoBox
from pyproj import Transformer

from pipeline.aoi import AOI
from pipeline.errors import LandcoverError


class GridError(LandcoverError, ValueError):
    """Patch grid parameters that do not fit together."""


# Densify AOI edges (degrees) before projecting so long straight lon/lat edges bend correctly.
_DENSIFY_DEG = 0.01


@dataclass(frozen=True, eq=False)
class PatchGrid:
    """The output cell grid, the 10 m pixel grid under it, and how both are chunked."""

    cell_geobox: GeoBox
    pixel_geobox: GeoBox
    window_px: int
    stride_px: int
    margin_px: int
    cells_per_chunk: int
    # The area mapped, in the grid CRS: the AOI (clipped to the scenes' footprints when the plan
    # knew them). A cell is part of the map when its square meets this area.
    area: shapely.Geometry

    @functools.cached_property
    def inside_aoi(self) -> np.ndarray:
        """bool (ny, nx): cells whose square meets :attr:`area`. O(cells): for small grids and
        tests; a run asks :meth:`inside_cells` block by block."""
        return cells_intersecting(self.cell_geobox, self.area)

    def inside_cells(self, cells: tuple[slice, slice]) -> np.ndarray:
        """bool (cy, cx): which cells of ``cells`` meet the mapped area. A block wholly inside or
        outside it is answered by one test of its square, one on its edge against the area clipped
        to the block (:func:`_meeting_raster`: rasterised, with exact tests only along the area's
        outline), so a country costs only its edges and never its whole outline per block."""
        whole, local = self._block_area(cells)
        shape = (cells[0].stop - cells[0].start, cells[1].stop - cells[1].start)
        if whole is not None:
            return np.full(shape, whole, dtype=bool)
        return _meeting_raster(*self._edges(cells), local)

    def count_inside(self, cells: tuple[slice, slice]) -> int:
        """How many cells of ``cells`` meet the mapped area: ``inside_cells(cells).sum()``, with no
        array at all for a block wholly inside or outside the area (most of a country's)."""
        whole, local = self._block_area(cells)
        if whole is not None:
            return (cells[0].stop - cells[0].start) * (cells[1].stop - cells[1].start) if whole else 0
        return int(_meeting_raster(*self._edges(cells), local).sum())

    def _edges(self, cells: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        """The x and y edges of the cells ``cells`` (cols + 1 and rows + 1 values)."""
        rows, cols = cells
        t = self.cell_geobox.affine  # north-up: x = c + a * col, y = f + e * row
        return t.c + t.a * np.arange(cols.start, cols.stop + 1), t.f + t.e * np.arange(rows.start, rows.stop + 1)

    def _block_area(self, cells: tuple[slice, slice]) -> tuple[bool | None, shapely.Geometry | None]:
        """(True, None): every cell of ``cells`` meets the area; (False, None): none does; else
        (None, the area clipped to the block's square), which decides the cells one by one."""
        xs, ys = self._edges(cells)
        left, right, bottom, top = xs.min(), xs.max(), ys.min(), ys.max()
        if shapely.contains_properly(self.area, shapely.box(left, bottom, right, top)):
            return True, None
        # A cell meets the area when their interiors meet, which only the area's part inside the
        # block can decide; that part is small however large the country is.
        local = shapely.clip_by_rect(self.area, left, bottom, right, top)
        if local.is_empty or local.area == 0:
            return False, None
        return None, local

    @property
    def crs(self):
        return self.cell_geobox.crs

    @property
    def shape(self) -> tuple[int, int]:
        """Cells (ny, nx)."""
        return tuple(self.cell_geobox.shape)

    def cell_chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Dask chunks (y, x) of the cell grid: ``cells_per_chunk`` cells each, the last smaller."""
        ny, nx = self.shape
        return _split(ny, self.cells_per_chunk), _split(nx, self.cells_per_chunk)

    def pixel_chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Dask chunks (y, x) of the pixel grid, cut at the cell boundaries of ``cell_chunks()``.

        Each chunk is ``cells * stride_px`` pixels; the first and last also hold a margin.
        """
        return tuple(self._pixel_axis(cells) for cells in self.cell_chunks())

    def _pixel_axis(self, cells: tuple[int, ...]) -> tuple[int, ...]:
        sizes = [n * self.stride_px for n in cells]
        sizes[0] += self.margin_px
        sizes[-1] += self.margin_px
        return tuple(sizes)


def plan_grid(
    aoi: AOI,
    *,
    crs: str | None = None,
    resolution: float = 10.0,
    window_px: int = 120,
    stride_px: int | None = None,
    cells_per_chunk: int = 8,
    min_blocks: int = 1,
    coverage: shapely.Geometry | None = None,
    margin_px: int | None = None,
    lattice_from_coverage: bool = True,
) -> PatchGrid:
    """Plan the cell and pixel grids covering ``aoi``.

    ``coverage`` (lon/lat), the union of the scenes' footprints, clips the mapped area to the part
    of the AOI the scenes cover: a continent-sized AOI over a few tiles maps those tiles only. The
    grid's extent, and so its block lattice, follows that clipped area too, unless
    ``lattice_from_coverage`` is False: then it is the AOI's whatever the scenes cover, so the
    blocks (and the keys of their stored results) of a region survive a change of coverage.

    ``crs`` defaults to the UTM zone of the AOI centre. ``stride_px`` defaults to ``window_px``
    (abutting windows); a smaller stride gives overlapping windows and finer cells.
    ``cells_per_chunk`` is the largest block side; a small AOI gets smaller blocks so that it
    still splits into about ``min_blocks`` blocks (see :func:`balanced_cells_per_chunk`).
    """
    stride_px = window_px if stride_px is None else stride_px
    # ``margin_px`` given: the pixel padding a detail plan needs (pipeline.detail), any cell size;
    # else one window centred on each cell of ``stride_px``.
    if margin_px is None:
        margin_px = _margin(window_px, stride_px)
    elif margin_px < 0 or stride_px < 1:
        raise GridError(f"margin {margin_px} px and cell {stride_px} px must be >= 0 and >= 1")
    if resolution <= 0:
        raise GridError(f"resolution {resolution} must be positive; give metres per pixel, e.g. 10")
    if cells_per_chunk < 1:
        raise GridError(f"cells_per_chunk {cells_per_chunk} must be at least 1")
    crs = crs or f"EPSG:{aoi.centre_utm_epsg}"

    projected = project_aoi(aoi, crs)
    extent = projected.bounds
    if coverage is not None:
        projected = shapely.intersection(projected, project_lonlat(coverage, crs))
        if projected.is_empty or projected.area == 0:
            raise GridError("no scene footprint meets the AOI; widen the dates or check the AOI")
    shapely.prepare(projected)
    cell = stride_px * resolution
    left, bottom, right, top = projected.bounds if lattice_from_coverage else extent
    x0, x1 = math.floor(left / cell) * cell, math.ceil(right / cell) * cell
    y0, y1 = math.floor(bottom / cell) * cell, math.ceil(top / cell) * cell
    nx, ny = max(int(round((x1 - x0) / cell)), 1), max(int(round((y1 - y0) / cell)), 1)

    cells_per_chunk = balanced_cells_per_chunk((ny, nx), cells_per_chunk, min_blocks)
    cell_geobox = GeoBox((ny, nx), Affine(cell, 0.0, x0, 0.0, -cell, y1), crs)
    pad = margin_px * resolution
    pixel_geobox = GeoBox(
        (ny * stride_px + 2 * margin_px, nx * stride_px + 2 * margin_px),
        Affine(resolution, 0.0, x0 - pad, 0.0, -resolution, y1 + pad),
        crs,
    )
    return PatchGrid(
        cell_geobox=cell_geobox,
        pixel_geobox=pixel_geobox,
        window_px=window_px,
        stride_px=stride_px,
        margin_px=margin_px,
        cells_per_chunk=cells_per_chunk,
        area=projected,
    )


def balanced_cells_per_chunk(shape: tuple[int, int], max_cells: int, min_blocks: int = 1) -> int:
    """Block side (cells) for a grid of ``shape``: ``max_cells``, or less when that would give
    fewer than ``min_blocks`` blocks. One block is one task, so a small AOI cut into a few big
    blocks leaves workers idle while one runs the last block; with a heavy model that idle time
    is most of the run. It depends on the grid only (not on the cluster), so a region's blocks,
    and the content keys of its stored results, stay the same whatever runs them."""
    ny, nx = shape
    fitting = max(1, math.ceil(math.sqrt(ny * nx / max(min_blocks, 1))))
    return max(1, min(max_cells, fitting))


def project_aoi(aoi: AOI, crs: str) -> shapely.Geometry:
    """The AOI polygon in ``crs``, its lon/lat edges densified so they bend as they should."""
    return project_lonlat(aoi.geometry, crs)


def project_lonlat(geometry: shapely.Geometry, crs: str) -> shapely.Geometry:
    """A lon/lat geometry in ``crs``, its edges densified so they bend as they should."""
    to_crs = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    densified = shapely.segmentize(geometry, _DENSIFY_DEG)
    return shapely.transform(densified, lambda xy: np.column_stack(to_crs.transform(xy[:, 0], xy[:, 1])))


def cells_intersecting(cell_geobox: GeoBox, geometry: shapely.Geometry) -> np.ndarray:
    """bool (ny, nx): which cells of the grid intersect ``geometry`` (same CRS as the grid)."""
    ny, nx = cell_geobox.shape
    t = cell_geobox.affine  # north-up: x = c + a * col, y = f + e * row
    return _meeting(t.c + t.a * np.arange(nx + 1), t.f + t.e * np.arange(ny + 1), geometry)


def _meeting(x_edges: np.ndarray, y_edges: np.ndarray, geometry: shapely.Geometry) -> np.ndarray:
    """bool (rows, cols) of the cells between the given edges whose interior meets ``geometry``."""
    xa, ya = np.meshgrid(x_edges[:-1], y_edges[:-1])
    xb, yb = np.meshgrid(x_edges[1:], y_edges[1:])
    boxes = shapely.box(np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb), np.maximum(ya, yb))
    shapely.prepare(geometry)
    # Touching along an edge only does not make a cell part of the AOI.
    return shapely.intersects(boxes, geometry) & ~shapely.touches(boxes, geometry)


def _meeting_raster(x_edges: np.ndarray, y_edges: np.ndarray, geometry: shapely.Geometry) -> np.ndarray:
    """:func:`_meeting` (the same cells, exactly) without one box per cell: a cell whose square
    the area's outline does not reach is wholly inside or wholly outside it, which its centre
    decides (the area rasterised); only the cells along the outline are tested one by one.

    The outline is rasterised with ``all_touched`` and widened by a cell on every side, so the
    cells tested exactly surely hold every cell the outline touches (GDAL's rounding on cell edges
    included). A 10 m block of 960 x 960 cells on a country's border then tests a few thousand
    boxes instead of 921,600.
    """
    rows, cols = len(y_edges) - 1, len(x_edges) - 1
    if shapely.get_type_id(geometry) == 7:  # a collection (a clip's slivers) has no one outline: test every cell
        return _meeting(x_edges, y_edges, geometry)
    transform = Affine(x_edges[1] - x_edges[0], 0.0, x_edges[0], 0.0, y_edges[1] - y_edges[0], y_edges[0])
    filled = rasterio.features.rasterize([geometry], out_shape=(rows, cols), transform=transform, dtype="uint8",
                                         all_touched=False).astype(bool)
    outline = rasterio.features.rasterize([shapely.boundary(geometry)], out_shape=(rows, cols), transform=transform,
                                          dtype="uint8", all_touched=True).astype(bool)
    r, c = np.nonzero(_widened(outline))
    xa, xb, ya, yb = x_edges[c], x_edges[c + 1], y_edges[r], y_edges[r + 1]
    boxes = shapely.box(np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb), np.maximum(ya, yb))
    shapely.prepare(geometry)
    meets = shapely.intersects(boxes, geometry)
    meets[meets] = ~shapely.touches(boxes[meets], geometry)  # touching along an edge only is not meeting
    filled[r, c] = meets
    return filled


def _widened(mask: np.ndarray) -> np.ndarray:
    """``mask`` widened by one cell on every side (a 3 x 3 dilation, as two 1-D passes)."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    out = rows.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


def cut_windows(block: np.ndarray, window_px: int, stride_px: int, margin_px: int) -> np.ndarray:
    """(C, H, W) block with margins -> (N, C, window_px, window_px) windows, cells in row-major order.

    ``H == cells_y * stride_px + 2 * margin_px`` (likewise W); the window of cell (i, j) is
    ``block[:, i*stride : i*stride + window, j*stride : j*stride + window]``, centred on the cell.
    """
    cells_y, cells_x = block_cells(block.shape[-2:], window_px, stride_px, margin_px)
    views = sliding_window_view(block, (window_px, window_px), axis=(1, 2))[:, ::stride_px, ::stride_px]
    # views: (C, cells_y, cells_x, window, window) -> (N, C, window, window); the reshape copies.
    return np.ascontiguousarray(views.transpose(1, 2, 0, 3, 4)).reshape(
        cells_y * cells_x, block.shape[0], window_px, window_px
    )


def clear_fraction(clear_block: np.ndarray, window_px: int, stride_px: int, margin_px: int) -> np.ndarray:
    """(H, W) bool (pixel has at least one clear observation) -> (cells_y, cells_x) float32 clear share of each window."""
    cells_y, cells_x = block_cells(clear_block.shape, window_px, stride_px, margin_px)
    views = sliding_window_view(np.asarray(clear_block, dtype=bool), (window_px, window_px))[::stride_px, ::stride_px]
    return views.mean(axis=(-2, -1), dtype=np.float64).astype(np.float32).reshape(cells_y, cells_x)


def block_cells(shape: tuple[int, int], window_px: int, stride_px: int, margin_px: int) -> tuple[int, int]:
    """Cells (y, x) held by a pixel block of ``shape`` (margins included); error if it holds partial cells."""
    if window_px != stride_px + 2 * margin_px:
        raise GridError(f"window {window_px} != stride {stride_px} + 2 * margin {margin_px}; take all three from one PatchGrid")
    cells = []
    for size in shape:
        inner = size - 2 * margin_px
        if inner <= 0 or inner % stride_px:
            raise GridError(
                f"pixel block of {tuple(shape)} does not hold whole cells of {stride_px} px plus {margin_px} px margins; "
                "cut blocks with PatchGrid.pixel_chunks() and map_overlap(depth=margin_px)"
            )
        cells.append(inner // stride_px)
    return cells[0], cells[1]


def _margin(window_px: int, stride_px: int) -> int:
    if window_px < 1 or stride_px < 1:
        raise GridError(f"window {window_px} px and stride {stride_px} px must be positive")
    if stride_px > window_px:
        raise GridError(f"stride {stride_px} px exceeds the window {window_px} px and would leave gaps; use stride <= window")
    if (window_px - stride_px) % 2:
        raise GridError(
            f"window {window_px} px minus stride {stride_px} px is odd, so windows cannot be centred on cells; "
            "choose a stride that differs from the window by an even number"
        )
    return (window_px - stride_px) // 2


def _split(n: int, size: int) -> tuple[int, ...]:
    full, rest = divmod(n, size)
    return (size,) * full + ((rest,) if rest else ())
