"""Regions over the demo world for the workflow tests: files, dates and the CLI as a process.

The test region is a 6 x 6 cell corner of the demo AOI across 12°E (both UTM zones), cut into
2 x 2 cell chunks, so a run is quick and a new scene in one zone leaves some chunks untouched.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from rich.console import Console


REPO = Path(__file__).resolve().parents[2]

# Window of the last 30 days: on 2024-07-05 it holds 32TQR 06-12, 07-02 and 33TTL 06-17, 06-27;
# on 2024-07-08 also 33TTL 07-07 (67.5 % cloud, hence max_cloud 70).
FIRST_AS_OF = date(2024, 7, 5)
NEW_SCENE_AS_OF = date(2024, 7, 8)
NEW_SCENE = "S2B_33TTL_20240707_0_L2A"

SMALL_AOI = {
    "type": "Polygon",
    "coordinates": [[[11.95, 45.36], [12.04, 45.36], [12.04, 45.42], [11.95, 45.42], [11.95, 45.36]]],
}


# Set once per session by tests/workflows/conftest.py: random `tiny` weights, so the workflow
# tests exercise runs, ledgers and faults without depending on the committed demo weights.
MODEL: dict[str, Path] = {}


def region_dict(root: Path, **overrides: Any) -> dict[str, Any]:
    region = {
        "model": str(MODEL["path"]) if "path" in MODEL else None,
        "name": "testland",
        "source": "local",
        "aoi": SMALL_AOI,
        "window": {"last_days": 30},
        "max_cloud": 70,
        "root": str(root),
        "schedule": "0 4 * * *",
        "workers": 2,
        "cells_per_chunk": 2,
        # One window per 1.2 km cell: these tests are about runs, not detail, and stay fast.
        "cell_size": 1200,
        "stride": 120,
        "dense": False,
    }
    region.update(overrides)
    return {k: v for k, v in region.items() if v is not None}


def write_region(folder: Path, root: Path, file_name: str = "testland.yaml", **overrides: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    path.write_text(yaml.safe_dump(region_dict(root, **overrides), sort_keys=False), encoding="utf-8")
    return path


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def landcover_cli(*args: str, **kwargs: Any) -> subprocess.Popen:
    """`landcover <args>` as its own process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )


class StacProxy:
    """Forwards HTTP requests to the STAC API at ``upstream`` and counts them by path. With
    ``fail_every`` n, every n-th request is answered 503; with ``hide``, the items of search answers
    for which it is true are left out (a catalogue that does not have them yet). Links in the
    answers are rewritten to the proxy, so following them (search, next page) also goes through it."""

    def __init__(self, upstream: str, *, fail_every: int | None = None,
                 hide: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.upstream = urlsplit(upstream)
        self.upstream_base = upstream.rstrip("/")
        self.requests = 0
        self.failed = 0
        self.paths: list[str] = []
        self.hide = hide
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                with proxy._lock:
                    proxy.requests += 1
                    proxy.paths.append(urlsplit(self.path).path)
                    fail = fail_every is not None and proxy.requests % fail_every == 0
                    proxy.failed += fail
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if fail:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                answer = conn.getresponse()
                data = answer.read().replace(proxy.upstream_base.encode(), proxy.url.encode())
                if proxy.hide is not None and urlsplit(self.path).path.endswith("/search"):
                    page = json.loads(data)
                    page["features"] = [f for f in page.get("features", []) if not proxy.hide(f)]
                    data = json.dumps(page).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.getheader("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = _forward

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def searches(self) -> int:
        return sum(path.endswith("/search") for path in self.paths)

    def __enter__(self) -> StacProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
