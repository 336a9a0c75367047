"""The map's rasters written block by block, as a streamed run finishes its blocks.

Each block lands in a window of tiled, uncompressed scratch GeoTIFFs (class codes, confidence,
every class's probability, clear fraction) beside the staged products; totals for the summary are
added up as it lands. :meth:`MapRasters.finish` turns the scratch files into the COGs (GDAL's COG
driver reads them tile by tile), and the vector layers and the quicklook are then read back from
them window by window: the client never holds the whole map.

The scratch files are named like staged files (``*.<hex>.partial.tif``), so a killed run leaves
nothing the next export does not sweep away.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from odc.geo.geobox import GeoBox
from rasterio.windows import Window

from models.classes import NODATA_CODE
from models.legend import Legend, bigearthnet_legend
from pipeline.export.provenance import Provenance
from pipeline.export.raster import block_size, class_tags, colormap
from pipeline.export.summary import MapStats
from pipeline.mosaic import ClassMap, mosaic

# Side of the windows the vector layers and the quicklook read back (cells).
READ_WINDOW = 2048
QUICKLOOK_MAX_PX = 2000
_SCRATCH_TILE = 256


@dataclass(frozen=True)
class MapWindow:
    """A window of the finished map: ``cells`` (rows, cols) of the grid and the class map there."""

    cells: tuple[slice, slice]
    class_map: ClassMap
    geobox: GeoBox


def scratch_path(out_dir: Path, stem: str) -> Path:
    return out_dir / f"{stem}.{secrets.token_hex(6)}.partial.tif"


class MapRasters:
    """Scratch rasters of one map on ``geobox``; ``write`` each block, then ``finish``."""

    def __init__(self, out_dir: Path, geobox: GeoBox, provenance: Provenance, *, multi_label: bool, threshold: float,
                 legend: Legend | None = None) -> None:
        self.geobox = geobox
        self.provenance = provenance
        self.legend = legend or bigearthnet_legend()
        ny, nx = geobox.shape
        self.stats = MapStats(total=ny * nx, multi_label=multi_label, threshold=threshold, legend=self.legend)
        self.paths = {name: scratch_path(out_dir, f"{name}-scratch") for name in ("landcover", "confidence", "probabilities", "clear")}
        self._open: dict[str, rasterio.io.DatasetWriter] = {}
        try:
            self._open["landcover"] = self._create("landcover", "uint8", NODATA_CODE)
            self._open["confidence"] = self._create("confidence", "float32", float("nan"))
            self._open["probabilities"] = self._create("probabilities", "float32", float("nan"), count=len(self.legend))
            self._open["clear"] = self._create("clear", "float32", float("nan"))
        except BaseException:
            self.discard()
            raise
        self._describe(multi_label, threshold)

    def _create(self, name: str, dtype: str, nodata: float, count: int = 1) -> rasterio.io.DatasetWriter:
        ny, nx = self.geobox.shape
        # Uncompressed: a block's window may rewrite a tile another block half-filled, which a
        # compressed GeoTIFF would append again; the COG copy compresses once, at the end.
        return rasterio.open(
            self.paths[name], "w", driver="GTiff", width=nx, height=ny, count=count, dtype=dtype,
            crs=self.geobox.crs.to_wkt(), transform=self.geobox.affine, nodata=nodata,
            tiled=True, blockxsize=_SCRATCH_TILE, blockysize=_SCRATCH_TILE, BIGTIFF="IF_SAFER",
        )

    def _describe(self, multi_label: bool, threshold: float) -> None:
        kind = "sigmoid score" if multi_label else "softmax probability"
        p = self.provenance
        lc = self._open["landcover"]
        lc.write_colormap(1, colormap(self.legend))
        lc.set_band_description(1, f"land-cover class code ({self.legend.title}; 0 = no data)")
        lc.update_tags(**class_tags(p, self.legend))
        conf = self._open["confidence"]
        conf.set_band_description(1, f"confidence: {kind} of the mapped class (0..1)")
        conf.update_tags(MODEL_ID=p.model_id, SYNTHETIC_MODEL=str(p.synthetic_model).lower(), CONFIDENCE=kind)
        probs = self._open["probabilities"]
        for band, (code, name, _) in enumerate(self.legend.entries(), start=1):
            probs.set_band_description(band, name)
            probs.update_tags(band, CLASS_CODE=str(code), CLASS_NAME=name)
        probs.update_tags(
            MODEL_ID=p.model_id, SYNTHETIC_MODEL=str(p.synthetic_model).lower(), PROBABILITY=kind,
            **({"MULTI_LABEL_THRESHOLD": f"{threshold:g}"} if multi_label else {}),
        )

    def write(self, cells: tuple[slice, slice], block: ClassMap) -> None:
        """Write ``block`` (a ClassMap of the cells ``cells``) into its window; add up its totals."""
        rows, cols = cells
        window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        if block.shape != (window.height, window.width):
            raise ValueError(f"block of shape {block.shape} does not fit cells {cells}")
        self._open["landcover"].write(block.classes, 1, window=window)
        self._open["confidence"].write(block.confidence.astype(np.float32), 1, window=window)
        probs = block.probs if block.probs is not None else np.full((len(self.legend), *block.shape), np.nan, np.float32)
        self._open["probabilities"].write(probs.astype(np.float32), window=window)
        self._open["clear"].write(block.clear_fraction.astype(np.float32), 1, window=window)
        self.stats.add(block)

    def close(self) -> None:
        for dataset in self._open.values():
            dataset.close()
        self._open.clear()

    def finish(self, landcover: Path, confidence: Path, probabilities: Path) -> None:
        """Close the scratch rasters and copy them into the three COGs (overviews: the modal class
        for codes, which never averages into a class that is not there; the mean for probabilities)."""
        self.close()
        block = block_size(tuple(self.geobox.shape))
        common = {"BLOCKSIZE": block, "COMPRESS": "DEFLATE", "OVERVIEWS": "AUTO", "BIGTIFF": "IF_SAFER"}
        rasterio.shutil.copy(self.paths["landcover"], landcover, driver="COG", PREDICTOR="NO", OVERVIEW_RESAMPLING="MODE", **common)
        for src, dst in ((self.paths["confidence"], confidence), (self.paths["probabilities"], probabilities)):
            rasterio.shutil.copy(src, dst, driver="COG", PREDICTOR="YES", OVERVIEW_RESAMPLING="AVERAGE", **common)

    def windows(self, size: int = READ_WINDOW) -> Iterator[MapWindow]:
        """The finished map, read back window by window (after :meth:`finish` or :meth:`close`)."""
        self.close()
        ny, nx = self.geobox.shape
        with rasterio.open(self.paths["probabilities"]) as probs, rasterio.open(self.paths["clear"]) as clear, \
                rasterio.open(self.paths["landcover"]) as classes:
            for r0 in range(0, ny, size):
                for c0 in range(0, nx, size):
                    rows, cols = slice(r0, min(r0 + size, ny)), slice(c0, min(c0 + size, nx))
                    window = Window(c0, r0, cols.stop - c0, rows.stop - r0)
                    codes = classes.read(1, window=window)
                    # The mapped cells carry a class; mosaic again over them gives back the same
                    # classes (ties go the same way) with their top-3 and labels.
                    class_map = mosaic(
                        probs.read(window=window), clear.read(1, window=window), codes > 0, min_clear=0.0,
                        multi_label=self.stats.multi_label, threshold=self.stats.threshold, codes=self.legend.codes,
                    )
                    yield MapWindow((rows, cols), class_map, self.geobox[rows, cols])

    def class_windows(self, size: int = READ_WINDOW) -> Iterator[tuple[tuple[slice, slice], np.ndarray]]:
        """The finished map's class codes alone, as (cells, codes) in the windows of :meth:`windows`
        (the sieve's first pass: no probability is read)."""
        self.close()
        ny, nx = self.geobox.shape
        with rasterio.open(self.paths["landcover"]) as classes:
            for r0 in range(0, ny, size):
                for c0 in range(0, nx, size):
                    rows, cols = slice(r0, min(r0 + size, ny)), slice(c0, min(c0 + size, nx))
                    yield (rows, cols), classes.read(1, window=Window(c0, r0, cols.stop - c0, rows.stop - r0))

    def overview(self, max_px: int = QUICKLOOK_MAX_PX) -> np.ndarray:
        """The class codes decimated so the longer side is at most ``max_px`` (nearest)."""
        self.close()
        ny, nx = self.geobox.shape
        factor = max(1, -(-max(ny, nx) // max_px))
        with rasterio.open(self.paths["landcover"]) as src:
            return src.read(1, out_shape=(-(-ny // factor), -(-nx // factor)), resampling=rasterio.enums.Resampling.nearest)

    def discard(self) -> None:
        self.close()
        for path in self.paths.values():
            for leftover in path.parent.glob(f"{path.name}*"):
                leftover.unlink(missing_ok=True)
