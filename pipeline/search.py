"""STAC search for Sentinel-2 L2A scenes over an AOI: the best few scenes per MGRS tile.

Filters go to the server when it declares it can apply them (bbox, datetime and collection
always; cloud cover through the ``query`` or ``filter`` extension only when the server conforms
to it) and the cloud filter is re-checked here regardless. Only Sentinel-2 L2A items of the
requested collection are kept (a search response may mix in Sentinel-1, Landsat or L1C items);
items of the retired Earth Search v0 catalogue are refused. Items from every source come back with
Earth Search's common-name asset keys (``red``, ``scl``, ...), so later stages need not care where
they came from; Planetary Computer hrefs are signed.

Earth Search v1 serves two Sentinel-2 L2A collections that work alike here: ``sentinel-2-l2a``
(the default) and ``sentinel-2-c1-l2a`` (Collection 1, reprocessed with baseline >= 05.00).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import pystac
from shapely.geometry import shape
from pystac_client import Client
from pystac_client.conformance import ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from rich.table import Table
from urllib3 import Retry
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ReadTimeoutError,
)

from models.bands import BAND_IDS
from pipeline.aoi import AOI
from pipeline.errors import SearchError

log = logging.getLogger(__name__)

Source = Literal["local", "earth-search", "planetary-computer"]
SOURCES: tuple[str, ...] = ("local", "earth-search", "planetary-computer")
DEFAULT_URLS: dict[str, str] = {
    "earth-search": "https://earth-search.aws.element84.com/v1",
    "planetary-computer": "https://planetarycomputer.microsoft.com/api/stac/v1",
}
# Planetary Computer names assets by band id; Earth Search v1 (and this pipeline) by common name.
PC_ASSET_NAMES: dict[str, str] = {**BAND_IDS, "SCL": "scl", "AOT": "aot", "WVP": "wvp"}
# Earth Search v0 (retired): its collections, and the prefix of its item properties. Its items
# name assets by band id with other metadata (no raster:bands, no s2:processing_baseline), so
# they are refused rather than silently renamed like Planetary Computer's.
EARTH_SEARCH_V0_COLLECTIONS: tuple[str, ...] = ("sentinel-s2-l2a-cogs", "sentinel-s2-l2a", "sentinel-s2-l1c")
_V0_PROPERTY_PREFIX = "sentinel:"
_V0_FIX = (
    "that catalogue is retired and its assets differ; search Earth Search v1 "
    f"({DEFAULT_URLS['earth-search']}) with collection sentinel-2-l2a or sentinel-2-c1-l2a"
)
_RETRY_STATUS = (429, 500, 502, 503, 504)
_PAGE_SIZE = 100
_TILE_IN_ID = re.compile(r"(?:^|_)T?(\d{1,2}[C-X][A-Z]{2})(?:_|$)")


@dataclass(frozen=True, kw_only=True)
class SearchParams:
    """What to search for and where. ``stac_url=None`` means the source's public endpoint."""

    source: Source = "earth-search"
    stac_url: str | None = None
    collection: str = "sentinel-2-l2a"
    start: dt.date
    end: dt.date
    max_cloud: float = 60.0
    max_items_per_tile: int = 3
    tries: int = 4  # attempts per HTTP request, retried on 5xx and connection errors
    backoff_s: float = 1.0  # urllib3 backoff factor: waits backoff_s * 2**(n-1) between tries
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _as_date(self.start, "start"))
        object.__setattr__(self, "end", _as_date(self.end, "end"))
        if self.source not in SOURCES:
            raise SearchError(f"unknown source {self.source!r}; use one of {', '.join(SOURCES)}")
        if self.source == "local" and not self.stac_url:
            raise SearchError("source 'local' needs the URL of the served demo STAC API; start the demo servers first")
        check_collection(self.collection)
        if self.stac_url and self.stac_url.rstrip("/").endswith("earth-search.aws.element84.com/v0"):
            raise SearchError(f"STAC URL {self.stac_url} is Earth Search v0: {_V0_FIX}")
        if self.start > self.end:
            raise SearchError(f"start {self.start} is after end {self.end}; swap the dates")
        if not 0.0 <= self.max_cloud <= 100.0:
            raise SearchError(f"max cloud {self.max_cloud} is not a percentage; give a value from 0 to 100")
        if self.max_items_per_tile < 1:
            raise SearchError(f"max items per tile {self.max_items_per_tile} must be at least 1")
        if self.tries < 1:
            raise SearchError(f"tries {self.tries} must be at least 1")

    @property
    def url(self) -> str:
        return self.stac_url or DEFAULT_URLS[self.source]

    @property
    def datetime_range(self) -> str:
        """The inclusive date window as a STAC datetime interval."""
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59Z"


def search_items(params: SearchParams, aoi: AOI) -> list[pystac.Item]:
    """Search, filter and rank scenes: up to ``max_items_per_tile`` least cloudy per MGRS tile."""
    client = open_client(params)
    if not client.conforms_to(ConformanceClasses.ITEM_SEARCH):
        raise SearchError(f"STAC at {params.url} does not offer item search; give the URL of a STAC API")
    request = search_request(
        params,
        aoi,
        query_ok=client.conforms_to(ConformanceClasses.QUERY),
        filter_ok=client.conforms_to(ConformanceClasses.FILTER),
    )
    try:
        with warnings.catch_warnings():
            # pystac migrates Earth Search Collection-1 items' storage extension on read and warns,
            # once per process, that it cannot parse their e84 bucket hrefs; nothing here reads
            # storage:* fields, and the warning would reach `landcover map` users as noise.
            warnings.filterwarnings("ignore", message="Could not parse bucket/account", category=UserWarning)
            found = list(client.search(**request).items())
    except APIError as err:
        raise SearchError(
            f"STAC search at {params.url} failed after {params.tries} tries: {_one_line(err)}; check the URL/network"
        ) from None
    rejected = Counter(problem for problem in (scene_problem(item, params.collection) for item in found) if problem)
    for problem, count in sorted(rejected.items()):
        log.warning("STAC search at %s: skipping %d item%s: %s", params.url, count, "s" if count != 1 else "", problem)
    items = [normalise_asset_keys(item) for item in found if _usable(item, params, aoi)]
    log.info("STAC search at %s: %d items, %d within cloud limit and footprint", params.url, len(found), len(items))
    if found and not items and all(_is_earth_search_v0(item) for item in found):
        raise SearchError(f"the STAC API at {params.url} returned only Earth Search v0 items: {_V0_FIX}")
    best = select_best_per_tile(items, params.max_items_per_tile)
    if not best:
        raise SearchError(
            f"no Sentinel-2 scenes for this AOI between {params.start} and {params.end} with cloud <= "
            f"{params.max_cloud:g}%; widen the dates or raise --max-cloud"
        )
    return best


class LoggedRetry(Retry):
    """urllib3 Retry that says, at WARNING, each time a STAC request is retried and why
    (urllib3 itself logs status-code retries only at DEBUG)."""

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if isinstance(error, NameResolutionError):  # no network or a wrong host: a retry cannot help
            raise MaxRetryError(_pool, url, reason=error) from error
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        cause = f"HTTP {response.status}" if response is not None and response.status else failure_reason(error)
        log.warning("STAC request %s %s failed (%s); retry %d after backoff", method, url, cause, len(new.history))
        return new


def failure_reason(err: BaseException | None) -> str:
    """A few words for why a request failed: the innermost cause urllib3 and requests wrap."""
    seen = err
    while seen is not None:
        if isinstance(seen, MaxRetryError) and seen.reason is not None:
            seen = seen.reason
            continue
        if isinstance(seen, NameResolutionError):
            return f"host {seen.conn.host if getattr(seen, 'conn', None) else 'name'} not found"
        if isinstance(seen, NewConnectionError):  # before timeouts: urllib3 2 derives it from ConnectTimeoutError
            return "connection refused" if "refused" in str(seen).lower() else "cannot connect"
        if isinstance(seen, (ConnectTimeoutError, ReadTimeoutError)):
            return "timed out"
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else seen.__cause__ or seen.__context__
        if inner is None or inner is seen:
            break
        seen = inner
    return _one_line(err)[:120] if err is not None else "error"


def open_client(params: SearchParams) -> Client:
    """pystac-client Client with retries and exponential backoff on 5xx and connection errors."""
    retries = params.tries - 1
    retry = LoggedRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=params.backoff_s,
        status_forcelist=_RETRY_STATUS,
        allowed_methods=None,  # search is a read even when POSTed
        raise_on_status=False,  # after the last try, report the server's own answer
    )
    stac_io = StacApiIO(max_retries=retry, timeout=params.timeout_s)
    modifier = _planetary_computer_signer() if params.source == "planetary-computer" else None
    try:
        return Client.open(params.url, stac_io=stac_io, modifier=modifier)
    except (APIError, OSError, ValueError) as err:
        reason = failure_reason(err)
        if reason.startswith("host "):  # no network, or a mistyped host: said once, not retried
            raise SearchError(f"could not reach STAC API at {params.url}: {reason}; check the network or --stac-url, "
                              "or map the offline demo (--demo)") from None
        raise SearchError(
            f"could not reach STAC API at {params.url} after {params.tries} tries: {reason}; check the URL/network"
        ) from None


def search_request(params: SearchParams, aoi: AOI, *, query_ok: bool, filter_ok: bool) -> dict[str, Any]:
    """Keyword arguments for ``Client.search``: the cloud filter only in a form the server declares."""
    request: dict[str, Any] = {
        "collections": [params.collection],
        "bbox": list(aoi.bounds),
        "datetime": params.datetime_range,
        "limit": _PAGE_SIZE,
    }
    if query_ok:
        request["query"] = {"eo:cloud_cover": {"lte": params.max_cloud}}
    elif filter_ok:
        request["filter"] = {"op": "<=", "args": [{"property": "eo:cloud_cover"}, params.max_cloud]}
        request["filter_lang"] = "cql2-json"
    return request


def check_collection(collection: str) -> str:
    """``collection`` if this pipeline can search it; an Earth Search v0 collection is refused."""
    if collection in EARTH_SEARCH_V0_COLLECTIONS:
        raise SearchError(f"collection {collection!r} is Earth Search v0: {_V0_FIX}")
    return collection


def scene_problem(item: pystac.Item, collection: str) -> str | None:
    """Why ``item`` is not a Sentinel-2 L2A scene of ``collection``; None when it is one.

    The reasons are worded per kind of item (no ids), so a caller can count them.
    """
    if _is_earth_search_v0(item):
        v0 = item.collection_id in EARTH_SEARCH_V0_COLLECTIONS
        return f"Earth Search v0 items ({f'collection {item.collection_id}' if v0 else 'sentinel:* properties'}): {_V0_FIX}"
    if item.collection_id and item.collection_id != collection:
        return f"items of collection {item.collection_id}, not {collection}"
    props = item.properties
    mission = str(props.get("constellation") or props.get("platform") or "sentinel-2").lower()
    if not mission.startswith("sentinel-2"):
        return f"{mission} items, not Sentinel-2"
    if not {"scl", "SCL"} & set(item.assets):
        return "items without a scene classification (SCL) asset, so not Level-2A"
    return None


def normalise_asset_keys(item: pystac.Item) -> pystac.Item:
    """A copy of ``item`` whose band assets use common names (B04 -> red, SCL -> scl)."""
    if not any(key in PC_ASSET_NAMES for key in item.assets):
        return item
    renamed = item.clone()
    renamed.assets = {PC_ASSET_NAMES.get(key, key): asset for key, asset in item.assets.items()}
    for asset in renamed.assets.values():
        asset.set_owner(renamed)
    return renamed


def mgrs_tile(item: pystac.Item) -> str:
    """The item's MGRS tile (e.g. '32TNS'): s2:mgrs_tile, grid:code, mgrs:* fields, the id, or the id itself."""
    props = item.properties
    if props.get("s2:mgrs_tile"):
        return str(props["s2:mgrs_tile"]).upper().lstrip("T")
    code = props.get("grid:code")
    if isinstance(code, str) and code.upper().startswith("MGRS-"):
        return code[5:].upper()
    parts = [props.get(k) for k in ("mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square")]
    if all(p is not None for p in parts):
        return f"{int(parts[0]):02d}{parts[1]}{parts[2]}".upper()
    match = _TILE_IN_ID.search(item.id)
    return match.group(1).upper() if match else item.id


def cloud_cover(item: pystac.Item) -> float:
    """eo:cloud_cover in percent; an item that does not say counts as fully cloudy."""
    value = item.properties.get("eo:cloud_cover")
    return float(value) if value is not None else 100.0


def select_best_per_tile(items: Iterable[pystac.Item], max_per_tile: int) -> list[pystac.Item]:
    """Up to ``max_per_tile`` items per MGRS tile by (cloud, datetime, id); tiles in name order."""
    by_tile: dict[str, list[pystac.Item]] = defaultdict(list)
    for item in items:
        by_tile[mgrs_tile(item)].append(item)
    chosen: list[pystac.Item] = []
    for tile in sorted(by_tile):
        ranked = sorted(by_tile[tile], key=lambda it: (cloud_cover(it), _timestamp(it), it.id))
        chosen.extend(ranked[:max_per_tile])
    return chosen


def format_item_table(items: Iterable[pystac.Item], max_rows: int = 30) -> Table:
    """The scenes a run will use, one row each (the first ``max_rows``; a country's hundreds are
    summed up in a last row), for the terminal before work starts."""
    items = list(items)
    tiles = {mgrs_tile(item) for item in items}
    table = Table(title=f"{len(items)} Sentinel-2 scene{'s' if len(items) != 1 else ''} on {len(tiles)} tile{'s' if len(tiles) != 1 else ''}")
    for column, justify in (("tile", "left"), ("date", "left"), ("cloud %", "right"), ("baseline", "right"), ("id", "left")):
        table.add_column(column, justify=justify)
    for item in items[:max_rows]:
        when = item.datetime.date().isoformat() if item.datetime else "?"
        cloud = item.properties.get("eo:cloud_cover")
        table.add_row(
            mgrs_tile(item),
            when,
            f"{float(cloud):.1f}" if cloud is not None else "?",
            str(item.properties.get("s2:processing_baseline", "?")),
            item.id,
        )
    if len(items) > max_rows:
        table.add_row("...", "", "", "", f"{len(items) - max_rows} more scenes")
    return table


def _usable(item: pystac.Item, params: SearchParams, aoi: AOI) -> bool:
    # A server may ignore the collections filter, and a search may span collections.
    if scene_problem(item, params.collection) is not None:
        return False
    if cloud_cover(item) > params.max_cloud:
        return False
    # bbox search also returns scenes whose swath misses the AOI inside their bbox.
    return item.geometry is not None and shape(item.geometry).intersects(aoi.geometry)


def _is_earth_search_v0(item: pystac.Item) -> bool:
    return item.collection_id in EARTH_SEARCH_V0_COLLECTIONS or any(
        key.startswith(_V0_PROPERTY_PREFIX) for key in item.properties
    )


def _timestamp(item: pystac.Item) -> str:
    return item.datetime.isoformat() if item.datetime else item.properties.get("start_datetime", "")


def _as_date(value: Any, name: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise SearchError(f"{name} date {value!r} is not a date; give it as YYYY-MM-DD") from None


def _planetary_computer_signer():
    import planetary_computer  # imported here: only this source needs it

    return planetary_computer.sign_inplace


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    status = getattr(err, "status_code", None)
    if status is not None:
        text = f"HTTP {status} {text}".strip()
    return text if len(text) <= 300 else text[:297] + "..."
