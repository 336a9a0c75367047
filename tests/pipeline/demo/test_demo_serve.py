"""Serving the demo world: a real STAC API and a Range-capable file server on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pystac_client import Client

from pipeline.demo import serve
from pipeline.demo.serve import RangeNotSatisfiable, ServeError, parse_range, serve_world

REPO = Path(__file__).resolve().parents[3]


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET"):
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}, method=method), timeout=10)


def _port_open(url: str) -> bool:
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie of ours still answers kill(0); reap it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.1)
    return False


# ---------------------------------------------------------------------------- STAC API


def test_pystac_client_finds_the_scenes_by_bbox_and_datetime(served_world):
    client = Client.open(served_world.stac_url)
    across_12e = client.search(collections=["sentinel-2-l2a"], bbox=[11.98, 45.38, 12.02, 45.42], datetime="2024-06-01/2024-06-30")
    found = {item.id for item in across_12e.items()}
    assert found == {"S2B_32TQR_20240612_0_L2A", "S2A_33TTL_20240617_0_L2A", "S2A_33TTL_20240627_0_L2A"}
    west_only = client.search(collections=["sentinel-2-l2a"], bbox=[11.85, 45.38, 11.87, 45.40], datetime="2021-01-01/2021-12-31")
    assert [item.id for item in west_only.items()] == ["S2A_32TQR_20210820_0_L2A"]


def test_served_items_point_at_the_file_server(served_world):
    client = Client.open(served_world.stac_url)
    item = next(client.search(ids=["S2A_33TTL_20240617_0_L2A"]).items())
    assert item.assets["red"].href.startswith(served_world.files_url)
    assert item.properties["proj:code"] == "EPSG:32633"


# ---------------------------------------------------------------------------- file server


def test_gdal_reads_a_window_of_a_served_cog_over_http(served_world, demo_world):
    remote = served_world.items[0]["assets"]["red"]["href"]
    local = demo_world.items()[0]["assets"]["red"]["href"]
    window = ((300, 364), (500, 564))
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), rasterio.open(remote) as src:
        assert src.driver == "GTiff" and src.crs.to_epsg() == 32632
        remote_pixels = src.read(1, window=window)
        overview = src.read(1, out_shape=(src.height // 4, src.width // 4))
    with rasterio.open(local) as src:
        np.testing.assert_array_equal(remote_pixels, src.read(1, window=window))
    assert overview.any()


def test_range_requests_get_206_and_exactly_those_bytes(served_world, demo_world):
    href = served_world.items[0]["assets"]["scl"]["href"]
    data = (demo_world.root / href[len(served_world.files_url):]).read_bytes()
    with _get(href, {"Range": "bytes=100-199"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        assert response.read() == data[100:200]
    with _get(href, {"Range": "bytes=-10"}) as response:
        assert response.status == 206 and response.read() == data[-10:]
    with _get(href, method="HEAD") as response:
        assert response.status == 200
        assert int(response.headers["Content-Length"]) == len(data)
        assert response.headers["Accept-Ranges"] == "bytes"
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(href, {"Range": f"bytes={len(data)}-"})
    assert err.value.code == 416 and err.value.headers["Content-Range"] == f"bytes */{len(data)}"


def test_one_connection_serves_many_ranges_as_an_object_store_does(served_world, demo_world):
    """HTTP/1.1 keep-alive: GDAL reads a block's COG tiles without a new connection per range,
    whatever came before on the connection (a 206, a HEAD, a 416, a whole file)."""
    import http.client

    href = served_world.items[0]["assets"]["red"]["href"]
    data = (demo_world.root / href[len(served_world.files_url):]).read_bytes()
    host, port = href.split("//")[1].split("/")[0].split(":")
    path = "/" + href.split("//")[1].split("/", 1)[1]
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.connect()
        local = conn.sock.getsockname()
        for start in (0, 5000, len(data) - 300):
            conn.request("GET", path, headers={"Range": f"bytes={start}-{start + 299}"})
            response = conn.getresponse()
            assert response.status == 206 and response.read() == data[start:start + 300]
        for method, headers, status in (("HEAD", {}, 200), ("GET", {"Range": f"bytes={len(data)}-"}, 416),
                                        ("GET", {}, 200)):
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            assert response.status == status and (status != 200 or method == "HEAD" or body == data)
        assert conn.sock.getsockname() == local  # still the first connection
        conn.request("GET", "/no/such/file.tif")  # an error closes it (http.server's send_error); the next reconnects
        response = conn.getresponse()
        response.read()
        assert response.status == 404
        conn.request("GET", path, headers={"Range": "bytes=0-9"})
        assert conn.getresponse().read() == data[:10]
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=5-", (5, 99)),
        ("bytes=-20", (80, 99)),
        ("bytes=90-500", (90, 99)),  # clipped to the file
        (None, None),
        ("bytes=0-1,5-6", None),  # multi-range: answered with the whole file
        ("items=0-1", None),
        ("bytes=9-2", None),
    ],
)
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=-0"])
def test_parse_range_unsatisfiable(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


# ---------------------------------------------------------------------------- lifecycle and errors


def test_servers_are_gone_after_the_block(demo_world):
    before = set(serve._CHILDREN)  # the session's served_world may be running too
    with serve_world(demo_world) as served:
        procs = list(serve._CHILDREN - before)
        assert len(procs) == 2 and _port_open(served.stac_url) and _port_open(served.files_url)
    assert all(p.poll() is not None for p in procs)
    assert not _port_open(served.stac_url) and not _port_open(served.files_url)


def test_servers_die_with_a_killed_parent(demo_world, tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from pipeline.demo import serve
        from pipeline.demo.world import generate_world
        world = generate_world(Path({str(demo_world.root.parents[1])!r}))
        with serve.serve_world(world):
            print(" ".join(str(p.pid) for p in serve._CHILDREN), flush=True)
            time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(not _gone(pid, 0.2) for pid in pids)
        parent.send_signal(signal.SIGKILL)  # no finally, no atexit: only the kernel can clean up
        parent.wait(timeout=10)
        assert all(_gone(pid) for pid in pids)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_a_missing_rustac_says_what_to_install(demo_world, tmp_path, monkeypatch):
    before = set(serve._CHILDREN)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServeError, match="pip install rustac") as err:
        with serve_world(demo_world):
            pass
    assert "\n" not in str(err.value)
    assert serve._CHILDREN == before  # nothing was started


def test_a_failed_stac_server_start_reports_its_stderr(tmp_path):
    broken = tmp_path / "rustac"
    broken.write_text("#!/bin/sh\necho 'error: cannot read items.ndjson' >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(ServeError, match="did not start: error: cannot read items.ndjson") as err:
        serve.start_stac_server([tmp_path / "items.ndjson"], tmp_path, binary=broken, timeout_s=10)
    assert "\n" not in str(err.value)


def test_a_busy_port_is_avoided(demo_world, monkeypatch):
    """If the port picked for the STAC API is taken meanwhile, another one is tried."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        picks = iter([busy])
        real = serve._free_port
        monkeypatch.setattr(serve, "_free_port", lambda host="127.0.0.1": next(picks, None) or real(host))
        with serve_world(demo_world) as served:
            assert not served.stac_url.endswith(f":{busy}")
            assert Client.open(served.stac_url).get_collection("sentinel-2-l2a") is not None
