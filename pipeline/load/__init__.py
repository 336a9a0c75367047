"""Scenes -> one cloud-free median composite of surface reflectance on the pixel grid.

Two steps, split so the cheap eager I/O happens before any graph is built:

* :func:`item_offsets` (:mod:`.offsets`) decides each item's BOA offset (metadata, then a pixel
  check on a decimated read of ``red`` + ``scl``) and probes every asset a run needs; an item whose
  asset 404s or is truncated is dropped with a warning.
* :func:`load_block` / :func:`load_composite` (:mod:`.reader`) build the lazy reads: odc-stac reads
  every item as its own time slice (items of different tiles or baselines carry different offsets),
  DN become reflectance per item, pixels the SCL calls nodata/saturated/shadow/cloud/cirrus are
  masked, and a NaN-median over time gives the composite (:mod:`.composite`). Nothing is read until
  the result is computed; memory is bounded by the block size.

The rest, by concern: GDAL's settings (:mod:`.gdal`), how odc-stac's reads reproject, for the
duration of a read only (:mod:`.warp`), and reads coarser than the grid (:mod:`.geometry`).
"""

from pipeline.load.composite import MASK_SCL, band_scale, composite_block, median_composite
from pipeline.load.gdal import GDAL_OPTIONS, configure_gdal
from pipeline.load.geometry import (
    OVERVIEW_LEVELS_M,
    coarse_geobox,
    exact_coarse_geobox,
    read_resolution_for,
    upsample_planes,
)
from pipeline.load.offsets import item_offsets
from pipeline.load.reader import load_block, load_composite, read_block
from pipeline.load.warp import pinned_warp

__all__ = [
    "GDAL_OPTIONS",
    "MASK_SCL",
    "OVERVIEW_LEVELS_M",
    "band_scale",
    "coarse_geobox",
    "composite_block",
    "configure_gdal",
    "exact_coarse_geobox",
    "item_offsets",
    "load_block",
    "load_composite",
    "median_composite",
    "pinned_warp",
    "read_block",
    "read_resolution_for",
    "upsample_planes",
]
