import datetime as dt
import json
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pystac
import pytest
from rich.console import Console

from pipeline.aoi import parse_aoi
from pipeline.errors import SearchError
from pipeline.search import (
    SearchParams,
    format_item_table,
    mgrs_tile,
    normalise_asset_keys,
    search_items,
    search_request,
    select_best_per_tile,
)

RUSTAC = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "rustac"
AOI = parse_aoi({"type": "Polygon", "coordinates": [[[11.8, 46.0], [12.2, 46.0], [12.2, 46.2], [11.8, 46.2], [11.8, 46.0]]]})


def lonlat_polygon(lon0, lat0, lon1, lat1):
    return {"type": "Polygon", "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]]}


def make_item(item_id, *, tile, cloud, day, footprint=(11.0, 45.5, 13.0, 46.5), asset_keys=("red", "scl")):
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": item_id,
        "collection": "sentinel-2-l2a",
        "geometry": lonlat_polygon(*footprint),
        "bbox": list(footprint),
        "properties": {
            "datetime": f"2023-06-{day:02d}T10:20:00Z",
            "eo:cloud_cover": cloud,
            "s2:mgrs_tile": tile,
            "s2:processing_baseline": "05.09",
        },
        "links": [],
        "assets": {key: {"href": f"http://127.0.0.1:1/{item_id}/{key}.tif", "type": "image/tiff"} for key in asset_keys},
    }


WORLD = [
    make_item("S2A_32TQS_20230602_0_L2A", tile="32TQS", cloud=40.0, day=2),
    make_item("S2B_32TQS_20230605_0_L2A", tile="32TQS", cloud=5.0, day=5),
    make_item("S2A_32TQS_20230612_0_L2A", tile="32TQS", cloud=5.0, day=12),  # ties the 5th on cloud: date decides
    make_item("S2B_32TQS_20230615_0_L2A", tile="32TQS", cloud=20.0, day=15),
    make_item("S2A_33TTM_20230602_0_L2A", tile="33TTM", cloud=80.0, day=2),  # over the cloud limit
    make_item("S2B_33TTM_20230605_0_L2A", tile="33TTM", cloud=10.0, day=5),
    make_item("S2A_33TUM_20230605_0_L2A", tile="33TUM", cloud=0.0, day=5, footprint=(11.0, 45.5, 11.7, 46.5)),  # west of the AOI
    make_item("S2A_32TQS_20230601_0_L2A", tile="32TQS", cloud=0.0, day=1),
]
# A swath edge: the bbox covers the AOI but the footprint is a thin diagonal sliver that misses it.
SLIVER = make_item("S2B_33TTL_20230608_0_L2A", tile="33TTL", cloud=1.0, day=8)
SLIVER["geometry"] = {"type": "Polygon", "coordinates": [[[11.0, 45.5], [13.0, 45.5], [11.0, 45.6], [11.0, 45.5]]]}
WORLD.append(SLIVER)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stac_url(tmp_path_factory):
    """A real STAC API (rustac, memory backend) on a free loopback port, stopped afterwards."""
    path = tmp_path_factory.mktemp("stac") / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": WORLD}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(RUSTAC), "serve", str(path), "--addr", f"127.0.0.1:{port}", "--create-collections"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"rustac serve did not start: {proc.stderr.read().decode()}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def params(url, **overrides):
    base = dict(source="local", stac_url=url, start="2023-06-01", end="2023-06-30", max_cloud=60.0, max_items_per_tile=2)
    return SearchParams(**{**base, **overrides})


def test_search_keeps_the_least_cloudy_scenes_per_tile(stac_url):
    items = search_items(params(stac_url), AOI)
    assert [item.id for item in items] == [
        "S2A_32TQS_20230601_0_L2A",  # 0 %
        "S2B_32TQS_20230605_0_L2A",  # 5 %, earlier than the other 5 % scene
        "S2B_33TTM_20230605_0_L2A",  # 10 %; the 80 % scene is over the limit
    ]
    assert all(isinstance(item, pystac.Item) for item in items)


def test_cloud_limit_is_applied_client_side_against_a_server_without_query(stac_url):
    items = search_items(params(stac_url, max_cloud=4.0, max_items_per_tile=5), AOI)
    assert [item.id for item in items] == ["S2A_32TQS_20230601_0_L2A"]


def test_footprints_that_miss_the_aoi_are_dropped(stac_url):
    ids = {item.id for item in search_items(params(stac_url, max_items_per_tile=10), AOI)}
    assert "S2B_33TTL_20230608_0_L2A" not in ids  # bbox overlaps, footprint does not
    assert "S2A_33TUM_20230605_0_L2A" not in ids
    assert len(ids) == 6


def test_date_window_is_inclusive_and_pushed_to_the_server(stac_url):
    items = search_items(params(stac_url, start="2023-06-12", end="2023-06-12"), AOI)
    assert [item.id for item in items] == ["S2A_32TQS_20230612_0_L2A"]


def test_no_scenes_is_a_one_line_error_naming_the_fix(stac_url):
    message = (
        r"no Sentinel-2 scenes for this AOI between 2024-01-01 and 2024-01-31 with cloud <= 60%; "
        r"widen the dates or raise --max-cloud"
    )
    with pytest.raises(SearchError, match=message):
        search_items(params(stac_url, start="2024-01-01", end="2024-01-31"), AOI)


def test_unreachable_api_fails_after_retries():
    port = free_port()  # nothing listens there now
    message = rf"could not reach STAC API at http://127.0.0.1:{port} after 3 tries: .*; check the URL/network"
    with pytest.raises(SearchError, match=message):
        search_items(params(f"http://127.0.0.1:{port}", tries=3, backoff_s=0.01), AOI)


class AlwaysUnavailable(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).hits += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_server_errors_are_retried_with_backoff_then_reported():
    server = ThreadingHTTPServer(("127.0.0.1", 0), AlwaysUnavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(SearchError, match=r"after 4 tries: .*503"):
            search_items(params(url, tries=4, backoff_s=0.01), AOI)
        assert AlwaysUnavailable.hits == 4
    finally:
        server.shutdown()
        server.server_close()


def test_cloud_filter_is_pushed_only_in_a_form_the_server_declares():
    p = params("http://127.0.0.1:1")
    plain = search_request(p, AOI, query_ok=False, filter_ok=False)
    assert plain["bbox"] == list(AOI.bounds) and plain["collections"] == ["sentinel-2-l2a"]
    assert plain["datetime"] == "2023-06-01T00:00:00Z/2023-06-30T23:59:59Z"
    assert "query" not in plain and "filter" not in plain
    assert search_request(p, AOI, query_ok=True, filter_ok=True)["query"] == {"eo:cloud_cover": {"lte": 60.0}}
    cql = search_request(p, AOI, query_ok=False, filter_ok=True)
    assert cql["filter"] == {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 60.0]}
    assert cql["filter_lang"] == "cql2-json"


def test_public_sources_default_to_their_endpoints():
    es = SearchParams(source="earth-search", start="2023-01-01", end="2023-01-31")
    assert es.url == "https://earth-search.aws.element84.com/v1"
    pc = SearchParams(source="planetary-computer", start=dt.date(2023, 1, 1), end=dt.date(2023, 1, 31))
    assert pc.url == "https://planetarycomputer.microsoft.com/api/stac/v1"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(start="2023-07-01"), "after end .*swap the dates"),
        (dict(start="June"), "not a date; give it as YYYY-MM-DD"),
        (dict(max_cloud=120), "not a percentage"),
        (dict(source="sentinel-hub"), "unknown source"),
        (dict(stac_url=None), "needs the URL of the served demo STAC API"),
        (dict(stac_url="https://earth-search.aws.element84.com/v0/"), "Earth Search v0: that catalogue is retired"),
        (dict(collection="sentinel-s2-l2a-cogs"), "Earth Search v0: that catalogue is retired.*sentinel-2-c1-l2a"),
    ],
)
def test_bad_parameters_are_refused(overrides, match):
    with pytest.raises(SearchError, match=match):
        params("http://127.0.0.1:1", **overrides)


def test_planetary_computer_asset_keys_become_common_names():
    pc_keys = ("B02", "B03", "B04", "B08", "B8A", "SCL", "visual")
    item_id = "S2A_MSIL2A_20230605T101559_R065_T32TQS_20230605T174311"
    item = pystac.Item.from_dict(make_item(item_id, tile="32TQS", cloud=1, day=5, asset_keys=pc_keys))
    renamed = normalise_asset_keys(item)
    assert set(renamed.assets) == {"blue", "green", "red", "nir", "nir08", "scl", "visual"}
    assert renamed.assets["red"].href.endswith("/B04.tif")
    assert renamed.assets["red"].owner is renamed
    assert set(item.assets) >= {"B04", "SCL"}  # the original is left alone


def test_mgrs_tile_falls_back_to_grid_code_and_the_id():
    item = pystac.Item.from_dict(make_item("S2B_MSIL2A_20230605T101559_R065_T33TUM_20230605T1", tile="33TUM", cloud=1, day=5))
    assert mgrs_tile(item) == "33TUM"
    del item.properties["s2:mgrs_tile"]
    assert mgrs_tile(item) == "33TUM"  # from the id
    item.properties["grid:code"] = "MGRS-32TQS"
    assert mgrs_tile(item) == "32TQS"


def test_best_per_tile_is_deterministic_whatever_the_input_order():
    items = [pystac.Item.from_dict(d) for d in WORLD]
    forward = [i.id for i in select_best_per_tile(items, 2)]
    backward = [i.id for i in select_best_per_tile(list(reversed(items)), 2)]
    assert forward == backward
    assert forward[:2] == ["S2A_32TQS_20230601_0_L2A", "S2B_32TQS_20230605_0_L2A"]


def test_item_table_lists_every_scene():
    items = select_best_per_tile([pystac.Item.from_dict(d) for d in WORLD[:3]], 3)
    console = Console(width=200, record=True)
    console.print(format_item_table(items))
    text = console.export_text()
    assert "3 Sentinel-2 scenes" in text
    for item in items:
        assert item.id in text
    assert "32TQS" in text and "2023-06-05" in text and "5.0" in text and "05.09" in text


def test_demo_world_search_over_http_finds_both_zones(served_world):
    aoi = parse_aoi(json.loads(served_world.world.aoi_path.read_text()))
    items = search_items(SearchParams(source="local", stac_url=served_world.stac_url, start="2020-01-01", end="2025-12-31"), aoi)
    tiles = {mgrs_tile(item) for item in items}
    assert tiles == {tile.mgrs for tile in served_world.world.tiles}
    assert all(item.properties["eo:cloud_cover"] <= 60.0 for item in items)
    assert all(item.assets["red"].href.startswith(served_world.files_url) for item in items)


def test_retries_of_a_failing_stac_api_are_logged(caplog):
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    from pipeline.search import LoggedRetry

    retry = LoggedRetry(total=2, backoff_factor=0)
    with caplog.at_level("WARNING", logger="pipeline.search"):
        retry = retry.increment("GET", "http://127.0.0.1:9/search", error=NewConnectionError(None, "refused"))
        retry = retry.increment("GET", "http://127.0.0.1:9/search", error=NewConnectionError(None, "refused"))
        with pytest.raises(MaxRetryError):
            retry.increment("GET", "http://127.0.0.1:9/search", error=NewConnectionError(None, "refused"))
    assert [r.getMessage().split(";")[1].strip() for r in caplog.records[:2]] == ["retry 1 after backoff", "retry 2 after backoff"]
