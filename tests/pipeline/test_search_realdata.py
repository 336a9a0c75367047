"""STAC search on real catalogue responses: asset keys, MGRS tiles, filtering and Collection 1.

Real data (read in place from ``realdata/stac``, see its README.md and SOURCES.md; none of it
made by this team): every STAC Item in every file there - Earth Search v1 ``sentinel-2-l2a``
items and search pages that mix in ``sentinel-1-grd``, ``sentinel-2-l1c``, ``sentinel-2-c1-l2a``
and ``landsat-c2-l2`` items; Earth Search Collection 1 (``sentinel-2-c1-l2a``) items; Planetary
Computer items, item collections and item lists; and two items of the retired Earth Search v0
(``sentinel-s2-l2a-cogs``). The Collection-1 tests serve some of them with a real STAC API
(``rustac serve``) on 127.0.0.1 and search it with the pipeline's own ``search_items``.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pystac
import pytest
from shapely.geometry import box, shape

from pipeline.aoi import parse_aoi
from pipeline.demo.serve import start_stac_server
from pipeline.errors import SearchError
from pipeline.search import (
    SearchParams,
    _usable,
    mgrs_tile,
    normalise_asset_keys,
    scene_problem,
    search_items,
    select_best_per_tile,
)

# pystac warns while migrating Collection-1 items' storage extension (their e84 bucket hrefs);
# search_items silences it, the items these tests build directly would repeat it.
pytestmark = pytest.mark.filterwarnings("ignore:Could not parse bucket/account:UserWarning")

# The bands a Sentinel-2 L2A item must offer under Earth Search's common names, with the ESA
# band id each must point at (written out here, not taken from pipeline.search).
COMMON_NAME_BANDS = {
    "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05", "rededge2": "B06", "rededge3": "B07",
    "nir": "B08", "nir08": "B8A", "swir16": "B11", "swir22": "B12", "scl": "SCL",
}
S2_L2A_COLLECTIONS = ("sentinel-2-l2a", "sentinel-2-c1-l2a")
V0_COLLECTION = "sentinel-s2-l2a-cogs"
MIXED_RESPONSES = (
    "earth-search-v1__search-page1__cql2-filter-eo_cloud_cover-lte-40__2025-07-31.json",
    "earth-search-v1__search-page2__cql2-filter-eo_cloud_cover-lte-40__2025-07-31.json",
    "earth-search-v1__search-response__sentinel-2-l2a+landsat-c2-l2__2023-10-08.json",
)
C1_SERIES = "earth-search-v1__sentinel-2-c1-l2a__itemcollection__13TDE__2024-03-31_to_04-22.json"


def features(path: Path) -> list[dict]:
    """The Items of a STAC file: a single Item, a FeatureCollection (search response, item page)
    or a plain JSON list of Items; a Collection document has none."""
    doc = json.loads(path.read_text())
    if isinstance(doc, list):
        return doc
    if doc.get("type") == "FeatureCollection":
        return doc["features"]
    return [doc] if doc.get("type") == "Feature" else []


def item(raw: dict) -> pystac.Item:
    return pystac.Item.from_dict(raw, preserve_dict=True)


def aoi_inside(raw: dict, half_deg: float = 0.01):
    """A small square AOI around a point inside the item's footprint."""
    point = shape(raw["geometry"]).representative_point()
    return parse_aoi(box(point.x - half_deg, point.y - half_deg, point.x + half_deg, point.y + half_deg).__geo_interface__)


@pytest.fixture(scope="module")
def stac_dir(realdata: Path) -> Path:
    return realdata / "stac"


@pytest.fixture(scope="module")
def all_items(stac_dir: Path) -> list[tuple[str, dict]]:
    """(file name, raw Item) for every Item of every file in realdata/stac."""
    found = [(path.name, raw) for path in sorted(stac_dir.glob("*.*json")) for raw in features(path)]
    collections = {raw.get("collection") for _, raw in found}
    # Guard against a silently empty or partial walk: each catalogue of the README is here.
    assert {"sentinel-2-l2a", "sentinel-2-c1-l2a", V0_COLLECTION, "sentinel-1-grd", "sentinel-2-l1c", "landsat-c2-l2"} <= collections
    return found


@pytest.fixture(scope="module")
def s2_l2a_items(all_items) -> list[tuple[str, dict]]:
    return [(name, raw) for name, raw in all_items if raw.get("collection") in S2_L2A_COLLECTIONS]


# ---------------------------------------------------------------------------- asset keys and tiles


def test_every_sentinel2_l2a_item_gets_the_common_name_band_assets(s2_l2a_items):
    assert len(s2_l2a_items) > 90  # ES v1, Collection 1 and Planetary Computer items
    wrong = []
    for name, raw in s2_l2a_items:
        assets = normalise_asset_keys(item(raw)).assets
        for key, band in COMMON_NAME_BANDS.items():
            href = assets[key].href if key in assets else ""
            if band not in href.rsplit("/", 1)[-1]:
                wrong.append(f"{name}:{raw['id']}:{key}->{href or 'missing'}")
    assert not wrong, wrong[:5]


def test_the_band_assets_are_https_where_earth_search_also_lists_s3_hrefs(s2_l2a_items):
    """Earth Search v1 items also list the JP2 originals (``red-jp2``) and, since 2025, ``cloud``,
    ``snow`` and ``product_metadata`` in s3:// buckets; the common-name COGs the pipeline reads
    are plain https on every catalogue."""
    s3_keys = {key for _, raw in s2_l2a_items for key, asset in raw["assets"].items() if asset["href"].startswith("s3://")}
    assert {"red-jp2", "scl-jp2", "cloud"} <= s3_keys
    for _, raw in s2_l2a_items:
        assets = normalise_asset_keys(item(raw)).assets
        assert all(assets[key].href.startswith("https://") for key in COMMON_NAME_BANDS), raw["id"]


def test_planetary_computer_band_ids_are_renamed_and_earth_search_keys_kept(s2_l2a_items):
    by_host = {"blob.core.windows.net": [], "amazonaws.com": []}
    for _, raw in s2_l2a_items:
        host = next(h for h in by_host if h in raw["assets"]["SCL" if "SCL" in raw["assets"] else "scl"]["href"])
        by_host[host].append(raw)
    assert by_host["blob.core.windows.net"] and by_host["amazonaws.com"]
    for raw in by_host["blob.core.windows.net"]:
        keys = set(normalise_asset_keys(item(raw)).assets)
        assert not keys & {"B02", "B04", "B8A", "SCL"}, raw["id"]
    for raw in by_host["amazonaws.com"]:
        assert set(normalise_asset_keys(item(raw)).assets) == set(raw["assets"]), raw["id"]


def test_the_mgrs_tile_is_the_items_own_tile_property(s2_l2a_items):
    wrong = []
    for name, raw in s2_l2a_items:
        props = raw["properties"]
        own = set()
        if "s2:mgrs_tile" in props:
            own.add(props["s2:mgrs_tile"])
        if str(props.get("grid:code", "")).startswith("MGRS-"):
            own.add(props["grid:code"][len("MGRS-"):])
        if "mgrs:utm_zone" in props:
            own.add(f"{props['mgrs:utm_zone']:02d}{props['mgrs:latitude_band']}{props['mgrs:grid_square']}")
        assert len(own) == 1, (name, raw["id"], own)  # the item's own fields agree with each other
        if mgrs_tile(item(raw)) != own.pop():
            wrong.append((name, raw["id"], mgrs_tile(item(raw))))
    assert not wrong, wrong[:5]


def test_a_real_time_series_of_one_tile_keeps_its_least_cloudy_dates(stac_dir):
    raws = features(stac_dir / "planetary-computer__itemcollection__35MNM__2020-06-01_to_07-31__13-items.geojson")
    clearest = sorted(raws, key=lambda r: r["properties"]["eo:cloud_cover"])[:3]
    best = select_best_per_tile([item(r) for r in raws], 3)
    assert [it.id for it in best] == [r["id"] for r in clearest]


def test_a_real_orbit_strip_keeps_one_scene_per_tile(stac_dir):
    raws = features(stac_dir / "planetary-computer__itemcollection__35L-35M-strip__2020-06-06__9-items.geojson")
    best = select_best_per_tile([item(r) for r in raws], 1)
    assert [mgrs_tile(it) for it in best] == sorted(r["properties"]["s2:mgrs_tile"] for r in raws)


# ---------------------------------------------------------------------------- what the search keeps


@pytest.mark.parametrize("collection", S2_L2A_COLLECTIONS)
def test_mixed_search_responses_keep_only_the_requested_sentinel2_l2a_collection(stac_dir, collection):
    raws = [raw for name in MIXED_RESPONSES for raw in features(stac_dir / name)]
    params = SearchParams(source="earth-search", collection=collection, start="2020-01-01", end="2025-12-31", max_cloud=100)
    kept = {raw["id"] for raw in raws if _usable(item(raw), params, aoi_inside(raw))}
    assert kept == {raw["id"] for raw in raws if raw["collection"] == collection}
    assert kept  # both collections occur in the pages


@pytest.mark.parametrize(
    ("collection", "reason"),
    [
        ("sentinel-1-grd", "sentinel-1 items, not Sentinel-2"),
        ("landsat-c2-l2", "landsat-8 items, not Sentinel-2"),
        ("sentinel-2-l1c", "items without a scene classification (SCL) asset, so not Level-2A"),
    ],
)
def test_other_missions_and_levels_are_refused_even_when_their_collection_is_asked_for(stac_dir, collection, reason):
    raws = [raw for name in MIXED_RESPONSES for raw in features(stac_dir / name) if raw["collection"] == collection]
    assert raws
    assert {scene_problem(item(raw), collection) for raw in raws} == {reason}


@pytest.mark.parametrize("collection", ["sentinel-2-l2a", V0_COLLECTION])
def test_earth_search_v0_items_are_refused_naming_v1(all_items, collection):
    v0 = [raw for _, raw in all_items if raw.get("collection") == V0_COLLECTION]
    assert len(v0) == 2
    for raw in v0:
        problem = scene_problem(item(raw), collection)
        assert problem is not None and "Earth Search v0" in problem and "earth-search.aws.element84.com/v1" in problem


# ---------------------------------------------------------------------------- over a real STAC API


@pytest.fixture(scope="module")
def real_api(stac_dir: Path, tmp_path_factory) -> Iterator[str]:
    """Earth Search's two L2A collections (real Collection documents) with real items of tiles
    13TDE and 20EPT: a Collection-1 time series, an L2A scene and a scene in both collections."""
    tmp = tmp_path_factory.mktemp("real-stac")
    raws = [
        *features(stac_dir / C1_SERIES),
        *features(stac_dir / "earth-search-v1__S2A_13TDE_20231008_0_L2A.json"),
        *features(stac_dir / "earth-search-v1__sentinel-2-c1-l2a__S2B_T20EPT_20250731T131905_L2A.json"),
        *features(stac_dir / "earth-search-v1__S2B_20EPT_20250731_0_L2A.json"),
    ]
    items_path = tmp / "items.ndjson"
    items_path.write_text("".join(json.dumps(raw) + "\n" for raw in raws))
    collections = [stac_dir / f"earth-search-v1__collection__{c}.json" for c in S2_L2A_COLLECTIONS]
    proc, url = start_stac_server([*collections, items_path], tmp)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


TDE_AOI = parse_aoi(box(-105.13, 40.15, -105.07, 40.19).__geo_interface__)  # Boulder, CO: inside every 13TDE item


def api_params(url: str, **overrides) -> SearchParams:
    base = dict(source="earth-search", stac_url=url, start="2023-10-01", end="2024-04-30")
    return SearchParams(**{**base, **overrides})


def test_collection_1_search_returns_its_least_cloudy_items(real_api, stac_dir):
    series = features(stac_dir / C1_SERIES)
    expected = [r["id"] for r in sorted(series, key=lambda r: r["properties"]["eo:cloud_cover"])[:3]]
    found = search_items(api_params(real_api, collection="sentinel-2-c1-l2a"), TDE_AOI)
    assert [it.id for it in found] == expected
    assert {it.collection_id for it in found} == {"sentinel-2-c1-l2a"}


def test_collection_1_items_come_back_with_common_name_assets_on_their_bucket(real_api):
    found = search_items(api_params(real_api, collection="sentinel-2-c1-l2a", max_items_per_tile=10, max_cloud=100), TDE_AOI)
    assert len(found) == 10
    for it in found:
        assert set(COMMON_NAME_BANDS) <= set(it.assets)
        assert it.assets["red"].href.startswith("https://e84-earth-search-sentinel-data.s3.us-west-2.amazonaws.com/")


def test_a_collection_1_search_does_not_pass_on_pystacs_storage_migration_warning(real_api):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert search_items(api_params(real_api, collection="sentinel-2-c1-l2a"), TDE_AOI)
    assert not [w for w in caught if "bucket/account" in str(w.message)]


def test_the_default_collection_returns_only_the_l2a_scene(real_api):
    found = search_items(api_params(real_api), TDE_AOI)
    assert [(it.id, it.collection_id) for it in found] == [("S2A_13TDE_20231008_0_L2A", "sentinel-2-l2a")]


@pytest.mark.parametrize(
    ("collection", "expected"),
    [("sentinel-2-c1-l2a", "S2B_T20EPT_20250731T131905_L2A"), ("sentinel-2-l2a", "S2B_20EPT_20250731_0_L2A")],
)
def test_a_scene_in_both_collections_comes_from_the_one_asked_for(real_api, stac_dir, collection, expected):
    twin = features(stac_dir / "earth-search-v1__S2B_20EPT_20250731_0_L2A.json")[0]
    found = search_items(api_params(real_api, collection=collection, start="2025-07-31", end="2025-07-31"), aoi_inside(twin))
    assert [it.id for it in found] == [expected]


def test_a_catalogue_serving_only_earth_search_v0_items_is_a_one_line_error(stac_dir, tmp_path, caplog):
    """A catalogue that re-serves old v0 items under the v1 collection name: their sentinel:*
    properties give them away."""
    v0 = [raw for path in sorted(stac_dir.glob("earth-search-v0__*.json")) for raw in features(path)]
    (tmp_path / "items.ndjson").write_text("".join(json.dumps({**raw, "collection": "sentinel-2-l2a"}) + "\n" for raw in v0))
    collection = stac_dir / "earth-search-v1__collection__sentinel-2-l2a.json"
    proc, url = start_stac_server([collection, tmp_path / "items.ndjson"], tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline.search"), pytest.raises(SearchError) as err:
            search_items(api_params(url, start="2019-05-01", end="2020-07-31", max_cloud=100), aoi_inside(v0[0]))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    message = str(err.value)
    assert "\n" not in message and "returned only Earth Search v0 items" in message and "/v1" in message
    assert any("skipping 1 item: Earth Search v0" in r.getMessage() for r in caplog.records)
