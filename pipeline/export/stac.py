"""A STAC Item describing the map: footprint, time span of its inputs, projection, class
table, every output file as an asset, and provenance back to the input items and model."""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pystac
from odc.geo.geobox import GeoBox
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from shapely.geometry import mapping

from models.legend import Legend, bigearthnet_legend
from pipeline.export.provenance import Provenance
from pipeline.export.summary import ClassStats

PREFIX = "landcover"  # namespace of this project's provenance properties

MEDIA_TYPES = {
    ".tif": pystac.MediaType.COG,
    ".gpkg": pystac.MediaType.GEOPACKAGE,
    ".png": pystac.MediaType.PNG,
    ".json": pystac.MediaType.JSON,
    ".qml": pystac.MediaType.XML,
    ".xml": pystac.MediaType.XML,
    ".qgz": "application/x-qgis-project+zip",
}


def item_id(provenance: Provenance) -> str:
    """Stable id: the same inputs, model and settings give the same id."""
    digest = hashlib.sha256(
        json.dumps(
            [sorted(provenance.input_items), provenance.model_sha256, provenance.parameters],
            sort_keys=True, default=str,
        ).encode()
    ).hexdigest()
    return f"landcover-{digest[:16]}"


def slug(name: str) -> str:
    """Classification v2 `name`: letters, digits, - and _ only."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def class_table(stats: Sequence[ClassStats] = (), legend: Legend | None = None) -> list[Classification]:
    present = {s.code: s for s in stats}
    table = [Classification.create(value=0, name="no_data", title="No data", nodata=True)]
    for c in (legend or bigearthnet_legend()).classes:
        code, name, rgb = c.code, c.name, c.rgb
        entry = Classification.create(
            value=code, name=slug(name), title=name, description=c.description or name,
            color_hint="{:02X}{:02X}{:02X}".format(*rgb),
        )
        if code in present:
            entry.count = present[code].cells
            entry.percentage = present[code].percent
        table.append(entry)
    return table


def _time_span(scenes: Sequence[Mapping[str, Any]]) -> tuple[datetime | None, datetime | None]:
    stamps = sorted(
        datetime.fromisoformat(s["datetime"].replace("Z", "+00:00")) for s in scenes if s.get("datetime")
    )
    return (stamps[0], stamps[-1]) if stamps else (None, None)


def map_item(
    geobox: GeoBox,
    provenance: Provenance,
    scenes: Sequence[Mapping[str, Any]],
    scene_links: Sequence[str],
    assets: Mapping[str, tuple[str, str, list[str]]],
    stats: Sequence[ClassStats],
    created: datetime | None = None,
    legend: Legend | None = None,
) -> pystac.Item:
    """assets: key -> (relative href, title, roles); the href extension picks the media type."""
    legend = legend or bigearthnet_legend()
    created = created or datetime.now(UTC)
    footprint = _lonlat_footprint(geobox)
    start, end = _time_span(scenes)
    item = pystac.Item(
        id=item_id(provenance),
        geometry=mapping(footprint),
        bbox=list(footprint.bounds),
        datetime=None,
        start_datetime=start or created,
        end_datetime=end or created,
        properties={
            "title": f"Land-cover map ({legend.title})",
            "created": created.isoformat().replace("+00:00", "Z"),
            f"{PREFIX}:input_items": list(provenance.input_items),
            f"{PREFIX}:model_id": provenance.model_id,
            f"{PREFIX}:model_sha256": provenance.model_sha256,
            f"{PREFIX}:model_card": provenance.model_card,
            f"{PREFIX}:software_version": provenance.software_version,
            f"{PREFIX}:parameters": provenance.parameters,
            f"{PREFIX}:synthetic_model": provenance.synthetic_model,
            f"{PREFIX}:model": {"id": provenance.model_id, "sha256": provenance.model_sha256,
                                "source": provenance.model_source},
            f"{PREFIX}:window": ({"start": provenance.window[0], "end": provenance.window[1]}
                                 if provenance.window else None),
            f"{PREFIX}:aoi_km2": provenance.aoi_km2,
            f"{PREFIX}:catalogue": provenance.catalogue,
            f"{PREFIX}:skipped_items": dict(provenance.skipped_items),
            **({f"{PREFIX}:evaluation": dict(provenance.evaluation)} if provenance.evaluation else {}),
            **({f"{PREFIX}:notes": list(provenance.notes)} if provenance.notes else {}),
        },
    )
    projection = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = geobox.crs.epsg
    projection.code = f"EPSG:{epsg}" if epsg else None
    if epsg is None:
        projection.wkt2 = geobox.crs.to_wkt()
    projection.shape = list(geobox.shape)
    projection.transform = list(geobox.affine)[:6]
    projection.bbox = list(geobox.boundingbox)

    for key, (href, title, roles) in assets.items():
        suffix = "." + href.rsplit(".", 1)[-1]
        item.add_asset(key, pystac.Asset(href=href, title=title, roles=roles, media_type=MEDIA_TYPES.get(suffix)))
    ClassificationExtension.add_to(item)
    for key in ("landcover", "landcover_gpkg"):
        if key in item.assets:
            ClassificationExtension.ext(item.assets[key]).classes = class_table(stats, legend)

    for href in scene_links:
        item.add_link(pystac.Link(rel="derived_from", target=href, media_type=pystac.MediaType.GEOJSON))
    return item


def input_links(scenes: Sequence[Any]) -> list[str]:
    """Resolvable references to the input items: each item's canonical link (where the catalogue
    keeps it for good), else its self href; none for items served on loopback (the offline demo
    catalogue lives only as long as its run: the item ids and the catalogue say where they came from)."""
    links = []
    for scene in scenes:
        item = scene.to_dict(transform_hrefs=False) if isinstance(scene, pystac.Item) else scene
        by_rel = {link.get("rel"): link.get("href") for link in item.get("links", [])}
        href = by_rel.get("canonical") or by_rel.get("self")
        if href and not _loopback(href):
            links.append(href)
    return links


def _loopback(href: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(href).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _lonlat_footprint(geobox: GeoBox):
    """The grid's outline in lon/lat, densified so its curved edges stay within a few metres."""
    edge = max(abs(geobox.resolution.x) * geobox.shape.x, abs(geobox.resolution.y) * geobox.shape.y)
    with warnings.catch_warnings():
        # odc-geo still calls shapely.ops.transform, deprecated in shapely 2.1; harmless here.
        warnings.simplefilter("ignore", DeprecationWarning)
        return geobox.extent.to_crs("EPSG:4326", resolution=edge / 16).geom
