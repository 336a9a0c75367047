"""The minimum mapping unit of the polygon layer: patches of the class map smaller than it are
merged into a neighbour before the map is traced into polygons, so a 10 m map of a country does
not become millions of one-pixel polygons. The rasters (landcover.tif and the others) and
summary.json stay unsieved.

    min_cells = mmu_cells(mmu_ha, geobox)             # 0.5 ha of 10 m cells: 50
    sieve = plan_sieve(rasters.class_windows(), min_cells)
    for window in rasters.windows():                  # the same windows, in the same order
        classes = sieve.apply(window.cells, window.class_map.classes)

Why not GDAL's sieve. rasterio's ``features.sieve`` takes and returns whole arrays (GDAL's own
streaming ``GDALSieveFilter`` is not reachable without GDAL's Python bindings, which are no
dependency), and sieving windows or overlapping strips one by one leaves seams: a patch cut by a
window edge looks smaller than it is, and which neighbour absorbs a small patch depends on the
neighbours' sizes, which a window cuts too. So the sieve is decided on the whole map, streamed:

1. :func:`plan_sieve` reads the class codes window by window and labels each window's patches
   (4-connected cells of one code, as the polygons are traced); pieces that meet across a window
   edge with the same code are one patch (a graph's connected components), and patches of other
   codes that touch are neighbours. Memory: one window of labels, a row of the map and a few
   numbers per piece and per pair of touching pieces, as GDAL's sieve holds per polygon.
2. Patches smaller than ``min_cells`` are merged, smallest first, into their largest neighbouring
   patch (sizes as merged so far; ties: the lower patch number, i.e. the one met first in
   reading order); a patch that has grown to ``min_cells`` by absorbing others stays. A patch
   with no neighbour of another class (an island in nodata) stays: the sieve never makes nodata
   and never spreads a class over nodata.
3. :meth:`Sieve.apply` relabels a window (the same labels as in 1) and gives each cell its
   patch's final code.

The result depends on the map alone, never on the window size: a map read in one window or in
many gives the same sieved codes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import scipy.sparse
import scipy.sparse.csgraph
from odc.geo.geobox import GeoBox

from pipeline.export.summary import SQUARE_METRES_PER_HECTARE, cell_area_m2

_ROW = 1 << 32  # a cell's place in reading order: row * _ROW + column
Cells = tuple[slice, slice]


def mmu_cells(mmu_ha: float, geobox: GeoBox) -> int:
    """The smallest patch (cells) the polygon layer keeps for a minimum mapping unit of ``mmu_ha``
    hectares: a patch of exactly the unit stays. 1 (nothing sieved) when one cell already holds
    the unit, e.g. 0.5 ha on a 100 m (1 ha) grid."""
    cells = mmu_ha * SQUARE_METRES_PER_HECTARE / cell_area_m2(geobox)
    return max(1, math.ceil(cells - 1e-9))


def areas_note(mmu_ha: float, min_cells: int, raster: str) -> str:
    """What summary.json's areas count: the unsieved ``raster``, and how the polygons differ."""
    if min_cells > 1:
        polygons = (f"the landcover polygons of the GeoPackage are sieved to a minimum mapping unit of {mmu_ha:g} ha "
                    f"({min_cells} cells), so their areas differ")
    elif mmu_ha > 0:
        polygons = f"the landcover polygons trace it unsieved (a minimum mapping unit of {mmu_ha:g} ha is one cell or less)"
    else:
        polygons = "the landcover polygons trace it unsieved (no minimum mapping unit)"
    return f"areas count the cells of {raster}, unsieved; {polygons}"


def label_patches(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4-connected patches of equal nonzero code: labels (h, w) int32 (0 at nodata, else 1..n, in
    order of code then scan order: a function of ``codes`` alone) and the code of each patch."""
    labels = np.zeros(codes.shape, dtype=np.int32)
    patch_codes = []
    n = 0
    for code in np.unique(codes[codes > 0]):
        found, count = scipy.ndimage.label(codes == code)  # the default structure: 4-connected
        labels[found > 0] = found[found > 0] + n
        patch_codes.append(np.full(count, code, dtype=codes.dtype))
        n += count
    return labels, (np.concatenate(patch_codes) if patch_codes else np.zeros(0, dtype=codes.dtype))


@dataclass(frozen=True)
class Sieve:
    """What every piece (a patch of one window) becomes: ``first[cells]`` is the number of the
    first piece of the window ``cells``, ``final[piece]`` its code after the sieve."""

    first: dict[tuple[int, int], int]
    final: np.ndarray
    min_cells: int

    def apply(self, cells: Cells, codes: np.ndarray) -> np.ndarray:
        """The sieved codes of the window ``cells`` whose codes :func:`plan_sieve` read as ``codes``."""
        if self.min_cells <= 1:
            return codes
        labels, _ = label_patches(codes)
        first = self.first[(cells[0].start, cells[1].start)]
        out = codes.copy()
        inside = labels > 0
        out[inside] = self.final[first + labels[inside] - 1]
        return out


def no_sieve() -> Sieve:
    """The sieve of a minimum mapping unit of one cell or less: every code stays."""
    return Sieve({}, np.zeros(0, np.uint8), 1)


def plan_sieve(windows: Iterable[tuple[Cells, np.ndarray]], min_cells: int) -> Sieve:
    """Decide the sieve of a map read as ``windows`` ((rows, cols) of the map, class codes; row-major
    windows that tile the map, as :meth:`pipeline.export.writer.MapRasters.class_windows` gives):
    see the module docstring."""
    if min_cells <= 1:
        return no_sieve()
    first: dict[tuple[int, int], int] = {}
    sizes, starts, same, touch = [], [], [], []
    codes = np.zeros(1024, np.uint8)  # the code of every piece so far (grown by doubling)
    n = 0
    above: dict[int, np.ndarray] = {}  # column start -> piece numbers of the row above the window (-1: nodata)
    left: np.ndarray | None = None  # piece numbers of the last column of the window to the left
    for (rows, cols), window_codes in windows:
        labels, patch_codes = label_patches(window_codes)
        first[(rows.start, cols.start)] = n
        pieces = np.where(labels > 0, labels.astype(np.int64) + n - 1, -1)
        sizes.append(np.bincount(labels.ravel(), minlength=len(patch_codes) + 1)[1:])
        # Each piece's first cell in reading order (row, then column) of the whole map: the first
        # in the window's own scan, since the window's rows and columns are the map's, shifted.
        found, at = np.unique(labels.ravel(), return_index=True)
        r, c = np.divmod(at[found > 0], labels.shape[1])
        starts.append((r + rows.start).astype(np.int64) * _ROW + (c + cols.start))
        if n + len(patch_codes) > len(codes):
            codes = np.resize(codes, 2 * (n + len(patch_codes)))
        codes[n:n + len(patch_codes)] = patch_codes
        # Neighbours inside the window: horizontally and vertically adjacent cells of two pieces.
        touch.append(_pairs(pieces[:, :-1], pieces[:, 1:]))
        touch.append(_pairs(pieces[:-1], pieces[1:]))
        # Across the window's left and top edges: one patch if the codes agree, else neighbours.
        if cols.start > 0 and left is not None:
            _across(left, pieces[:, 0], same, touch, codes)
        if rows.start > 0:
            _across(above[cols.start], pieces[0], same, touch, codes)
        above[cols.start] = pieces[-1].copy()
        left = pieces[:, -1].copy()
        n += len(patch_codes)
    if n == 0:
        return Sieve(first, np.zeros(0, np.uint8), min_cells)
    piece_codes = codes[:n]
    patch = _patches(np.concatenate(starts), np.concatenate(same) if same else np.zeros((0, 2), np.int64))
    n_patches = int(patch.max()) + 1
    patch_size = np.bincount(patch, weights=np.concatenate(sizes), minlength=n_patches).astype(np.int64)
    patch_code = np.zeros(n_patches, dtype=piece_codes.dtype)
    patch_code[patch] = piece_codes
    edges = patch[np.concatenate(touch)] if touch else np.zeros((0, 2), np.int64)
    edges = edges[edges[:, 0] != edges[:, 1]]
    edges = _unique_pairs(edges.min(axis=1), edges.max(axis=1))
    final_patch = _merge_small(patch_size, edges, min_cells)
    return Sieve(first, patch_code[final_patch][patch], min_cells)


def _pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(k, 2) distinct pairs of pieces at adjacent cells ``a`` / ``b`` (both mapped, not the same)."""
    keep = (a >= 0) & (b >= 0) & (a != b)
    return _unique_pairs(a[keep], b[keep])


def _unique_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The distinct (a, b) pairs, (k, 2) int64, sorted; one integer key per pair (numbers below
    2**32) sorts far faster than ``np.unique(axis=0)``."""
    keys = np.unique(a.astype(np.int64) * _ROW + b.astype(np.int64))
    return np.stack(np.divmod(keys, _ROW), axis=1)


def _across(before: np.ndarray, after: np.ndarray, same: list, touch: list, codes: np.ndarray) -> None:
    """Pieces facing each other across a window edge: ``before`` (earlier windows) and ``after``
    (this window) go to ``same`` when their codes (``codes``, by piece) agree, else to ``touch``."""
    pairs = _pairs(before, after)
    if not len(pairs):
        return
    agree = codes[pairs[:, 0]] == codes[pairs[:, 1]]
    same.append(pairs[agree])
    touch.append(pairs[~agree])


def _patches(starts: np.ndarray, same: np.ndarray) -> np.ndarray:
    """The patch number of each piece (``starts``: its first cell, row * _ROW + column), pieces in
    ``same`` pairs joined; patches numbered in reading order of their first cell, so the numbers
    (and the sieve's ties) are the map's whatever windows it was read in."""
    n = len(starts)
    graph = scipy.sparse.coo_matrix((np.ones(len(same), np.int8), (same[:, 0], same[:, 1])), shape=(n, n))
    count, component = scipy.sparse.csgraph.connected_components(graph, directed=False)
    first = np.full(count, np.iinfo(np.int64).max)
    np.minimum.at(first, component, starts)
    rank = np.empty(count, np.int64)
    rank[np.argsort(first)] = np.arange(count)
    return rank[component]


def _merge_small(size: np.ndarray, edges: np.ndarray, min_cells: int) -> np.ndarray:
    """The patch each patch ends up in after small patches (< ``min_cells``) merge, smallest first,
    into their largest neighbour (ties: the lower number)."""
    n = len(size)
    parent = np.arange(n)
    grown = size.copy()
    # Both directions of every edge, as lists per patch (CSR): patch i's neighbours are
    # column[start[i]:start[i + 1]].
    both = np.concatenate([edges, edges[:, ::-1]]) if len(edges) else np.zeros((0, 2), np.int64)
    adjacency = scipy.sparse.csr_matrix((np.ones(len(both), np.int8), (both[:, 0], both[:, 1])), shape=(n, n))
    start, column = adjacency.indptr, adjacency.indices

    def neighbours(i: int) -> np.ndarray:
        return column[start[i]:start[i + 1]]

    members: dict[int, list[int]] = {}  # root -> small patches merged into it (their neighbours are its too)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    queue = [(int(size[i]), i) for i in np.flatnonzero(size < min_cells)]
    heapq.heapify(queue)
    while queue:
        _, i = heapq.heappop(queue)
        root = find(i)
        if root != i or grown[i] >= min_cells:
            continue  # merged into another already, or grown to the unit by absorbing others
        around = {find(int(j)) for m in (i, *members.get(i, ())) for j in neighbours(m)} - {i}
        if not around:
            continue  # an island in nodata stays
        target = min(around, key=lambda j: (-grown[j], j))
        parent[i] = target
        grown[target] += grown[i]
        members.setdefault(target, []).extend([i, *members.pop(i, [])])
        if grown[target] < min_cells:
            heapq.heappush(queue, (int(grown[target]), target))  # still small: it merges on in turn
    return np.array([find(i) for i in range(n)], dtype=np.int64)
