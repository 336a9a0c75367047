"""GDAL's settings for reading COGs over HTTP, here and on every dask worker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import odc.stac
from distributed.diagnostics.plugin import WorkerPlugin

# GDAL over HTTP: retry transient failures, never list directories, only fetch .tif. Each chunk
# is read once, so a small block cache suffices (GDAL's default, 5% of RAM per process, lets every
# worker grow by a GiB over a tile).
GDAL_OPTIONS: dict[str, str | int] = {
    # Bytes: rasterio hands an integer GDAL_CACHEMAX to GDALSetCacheMax64, so the 128 this used to
    # say was a 128-byte cache (every upsampled read ~200x slower), not 128 MB.
    "GDAL_CACHEMAX": 128 * 2**20,
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
}


def configure_gdal(client: Any = None) -> dict[str, str | int]:
    """Apply :data:`GDAL_OPTIONS` here and, given a dask ``distributed.Client``, in every worker it
    has now or starts later (a worker plugin); return the options applied.

    Every read task carries the options itself (:func:`pipeline.load.reader.read_block`), so
    reads get them on any worker anyway; the worker-side setting covers other rasterio use in
    tasks. The warp behaviour that makes reprojected pixels independent of the chunking is no
    setting of the process: each read applies it for its own duration
    (:func:`pipeline.load.warp.pinned_warp`).
    """
    configure_here(GDAL_OPTIONS)
    if client is not None:
        client.register_plugin(_WorkerSetup(dict(GDAL_OPTIONS)), name="landcover-gdal")
    return dict(GDAL_OPTIONS)


def configure_here(options: Mapping[str, str | int]) -> None:
    """odc-stac's process-wide rasterio configuration, with ``options`` on top of its cloud defaults."""
    odc.stac.configure_rio(cloud_defaults=True, **options)


class _WorkerSetup(WorkerPlugin):
    """Runs :func:`configure_here` in each worker process as it starts (and in those running now)."""

    def __init__(self, options: dict[str, str | int]) -> None:
        self.options = options

    def setup(self, worker: Any) -> None:
        configure_here(self.options)
