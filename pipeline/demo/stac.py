"""STAC Items and Collection for the demo scenes, shaped like Earth Search v1 ``sentinel-2-l2a``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time, timezone
from typing import Any

import numpy as np
from pyproj import Transformer

from pipeline.demo.scenes import BANDS_10M, BANDS_20M, RESOLUTION_M, SceneSpec, TileSpec

COLLECTION_ID = "sentinel-2-l2a"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
STAC_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
]
# Earth Search v1 asset key -> (band name, centre wavelength µm, FWHM µm, title)
EO_BANDS: dict[str, tuple[str, float, float, str]] = {
    "blue": ("B02", 0.49, 0.098, "Blue (band 2)"),
    "green": ("B03", 0.56, 0.045, "Green (band 3)"),
    "red": ("B04", 0.665, 0.038, "Red (band 4)"),
    "rededge1": ("B05", 0.704, 0.019, "Red Edge 1 (band 5)"),
    "rededge2": ("B06", 0.74, 0.018, "Red Edge 2 (band 6)"),
    "rededge3": ("B07", 0.783, 0.028, "Red Edge 3 (band 7)"),
    "nir": ("B08", 0.842, 0.145, "NIR 1 (band 8)"),
    "nir08": ("B8A", 0.865, 0.033, "NIR 2 (band 8A)"),
    "swir16": ("B11", 1.61, 0.143, "SWIR 1 (band 11)"),
    "swir22": ("B12", 2.19, 0.242, "SWIR 2 (band 12)"),
}
ACQUISITION_TIME = time(10, 17, 39, tzinfo=timezone.utc)
# SCL classes behind the s2:*_percentage properties Sen2Cor reports.
_SCL_PERCENTAGES = {
    "s2:cloud_shadow_percentage": (3,),
    "s2:vegetation_percentage": (4,),
    "s2:not_vegetated_percentage": (5,),
    "s2:water_percentage": (6,),
    "s2:unclassified_percentage": (7,),
    "s2:medium_proba_clouds_percentage": (8,),
    "s2:high_proba_clouds_percentage": (9,),
    "s2:thin_cirrus_percentage": (10,),
    "s2:snow_ice_percentage": (11,),
}


def asset_path(scene: SceneSpec, key: str) -> str:
    """Asset location relative to the world root (Earth Search keeps one folder per item)."""
    return f"scenes/{scene.tile.mgrs}/{scene.id}/{key}.tif"


def footprint(tile: TileSpec) -> dict[str, Any]:
    """The tile square in lon/lat (densified: UTM edges are not straight in lon/lat)."""
    west, south, east, north = tile.bounds
    t = np.linspace(0.0, 1.0, 9)
    xs = np.concatenate([west + (east - west) * t, np.full(9, east), east - (east - west) * t, np.full(9, west)])
    ys = np.concatenate([np.full(9, north), north - (north - south) * t, np.full(9, south), south + (north - south) * t])
    lon, lat = Transformer.from_crs(tile.epsg, 4326, always_xy=True).transform(xs, ys)
    ring = [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat, strict=True)]
    ring = [p for i, p in enumerate(ring) if i == 0 or p != ring[i - 1]]
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def _bbox(geometry: Mapping[str, Any]) -> list[float]:
    ring = np.asarray(geometry["coordinates"][0])
    return [float(ring[:, 0].min()), float(ring[:, 1].min()), float(ring[:, 0].max()), float(ring[:, 1].max())]


def _band_asset(scene: SceneSpec, key: str) -> dict[str, Any]:
    tile = scene.tile
    res = RESOLUTION_M if key in BANDS_10M else 2 * RESOLUTION_M
    n = int(tile.size_px * RESOLUTION_M / res)
    name, centre, fwhm, title = EO_BANDS[key]
    return {
        "href": asset_path(scene, key),
        "type": COG_TYPE,
        "title": f"{title} - {int(res)}m",
        "eo:bands": [{"name": name, "common_name": "rededge" if key.startswith("rededge") else key,
                      "center_wavelength": centre, "full_width_half_max": fwhm}],
        "gsd": res,
        "proj:shape": [n, n],
        "proj:transform": [res, 0.0, tile.west, 0.0, -res, tile.north],
        "raster:bands": [{
            "nodata": 0, "data_type": "uint16", "bits_per_sample": 15, "spatial_resolution": res,
            "scale": 0.0001, "offset": scene.declared_offset,
        }],
        "roles": ["data", "reflectance"],
    }


def item(scene: SceneSpec, scl_counts: np.ndarray) -> dict[str, Any]:
    """The STAC Item of a rendered scene; ``scl_counts`` is the histogram of its 20 m SCL (12 bins)."""
    tile = scene.tile
    counts = np.asarray(scl_counts, dtype=np.float64)
    valid = max(counts[1:].sum(), 1.0)

    def pct(classes: tuple[int, ...]) -> float:
        return round(100.0 * float(counts[list(classes)].sum()) / valid, 4)

    geometry = footprint(tile)
    acquired = datetime.combine(scene.day, ACQUISITION_TIME)
    properties: dict[str, Any] = {
        "datetime": acquired.isoformat().replace("+00:00", "Z"),
        "platform": scene.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": pct((8, 9, 10)),
        "proj:code": f"EPSG:{tile.epsg}",
        "proj:epsg": tile.epsg,
        "mgrs:utm_zone": int(tile.mgrs[:2]),
        "mgrs:latitude_band": tile.mgrs[2],
        "mgrs:grid_square": tile.mgrs[3:],
        "grid:code": f"MGRS-{tile.mgrs}",
        "s2:mgrs_tile": tile.mgrs,
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": scene.processing_baseline,
        "s2:nodata_pixel_percentage": round(100.0 * float(counts[0]) / max(counts.sum(), 1.0), 4),
        **{name: pct(classes) for name, classes in _SCL_PERCENTAGES.items()},
        "view:sun_azimuth": 145.0,
        "view:sun_elevation": 62.0,
        "demo:synthetic": True,
    }
    if scene.offset_flag is not None:
        properties["earthsearch:boa_offset_applied"] = scene.offset_flag
    assets: dict[str, Any] = {key: _band_asset(scene, key) for key in (*BANDS_10M, *BANDS_20M)}
    n20 = tile.size_px // 2
    assets["scl"] = {
        "href": asset_path(scene, "scl"),
        "type": COG_TYPE,
        "title": "Scene classification map (SCL)",
        "gsd": 20.0,
        "proj:shape": [n20, n20],
        "proj:transform": [20.0, 0.0, tile.west, 0.0, -20.0, tile.north],
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20, "unit": "none"}],
        "roles": ["data"],
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": STAC_EXTENSIONS,
        "id": scene.id,
        "collection": COLLECTION_ID,
        "geometry": geometry,
        "bbox": _bbox(geometry),
        "properties": properties,
        "links": [],
        "assets": assets,
    }


def collection(items: list[dict[str, Any]], layout: tuple[int, int] | None = None) -> dict[str, Any]:
    """The Collection of ``items``; ``layout`` (columns, rows) is named in the description, None =
    the original two-tile world, whose description stays word for word."""
    boxes = np.array([i["bbox"] for i in items])
    times = sorted(i["properties"]["datetime"] for i in items)
    tiles = "two MGRS tiles either side of 12°E" if layout is None else (
        f"{layout[0]} x {layout[1]} MGRS-like tiles across 12°E (UTM zones 32 and 33)"
    )
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": STAC_EXTENSIONS[:3],
        "id": COLLECTION_ID,
        "title": "Sentinel-2 Level-2A (synthetic demo world)",
        "description": (
            "A generated, deterministic Sentinel-2 L2A-like world in the shape of Earth Search v1 "
            f"sentinel-2-l2a: {tiles}. Not real data."
        ),
        "license": "CC0-1.0",
        "keywords": ["sentinel-2", "l2a", "synthetic", "demo"],
        "extent": {
            "spatial": {"bbox": [[float(boxes[:, 0].min()), float(boxes[:, 1].min()),
                                  float(boxes[:, 2].max()), float(boxes[:, 3].max())]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "summaries": {"platform": sorted({i["properties"]["platform"] for i in items}),
                      "constellation": ["sentinel-2"]},
        "links": [],
    }
