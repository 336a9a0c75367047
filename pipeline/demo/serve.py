"""Serve a demo world on 127.0.0.1: a STAC API (``rustac serve``) and a Range-capable file server.

The same pystac-client and GDAL ``/vsicurl/`` code paths then run as against Earth Search.

``rustac serve`` uses its in-memory backend here: item search by ``collections``, ``bbox``,
``datetime``, ``ids`` and paging works; ``query``, ``filter`` and ``sortby`` are NOT implemented
(a ``query`` silently returns no items), so callers must check the server's conformance classes
and filter client-side where it lacks them.

Both servers run as child processes (the file server so it does not compete with dask for the
GIL), in their own session (Ctrl-C reaches only the parent, which stops them cleanly), and with
``PR_SET_PDEATHSIG`` so the kernel stops them if the parent dies without cleaning up.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import email.utils
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.demo.world import DemoWorld
from pipeline.errors import LandcoverError

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
_PORT_ATTEMPTS = 5
_PR_SET_PDEATHSIG = 1


class ServeError(LandcoverError):
    """A demo server could not be started."""


@dataclass(frozen=True)
class ServedWorld:
    """A world being served: the STAC API root, the file server root and the served Items."""

    stac_url: str  # e.g. http://127.0.0.1:41234  (the STAC API landing page)
    files_url: str  # e.g. http://127.0.0.1:41235/  (the world folder; asset hrefs start here)
    items: list[dict[str, Any]]  # as the API serves them: absolute http:// asset hrefs
    world: DemoWorld


# ---------------------------------------------------------------------------- Range-capable file server


class RangeNotSatisfiable(Exception):
    """A Range header that selects no byte of the file."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """First and last byte (inclusive) a ``Range: bytes=...`` header asks for; None = whole file.

    Multi-range and malformed headers are ignored (RFC 9110 lets a server answer 200 instead).
    """
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    spec = header.strip()[6:].strip()
    if "," in spec or "-" not in spec:
        return None
    first, _, last = (part.strip() for part in spec.partition("-"))
    try:
        if not first:  # suffix: the last N bytes
            length = int(last)
            if length <= 0 or size == 0:
                raise RangeNotSatisfiable(header)
            return max(0, size - length), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        raise RangeNotSatisfiable(header)
    if end < start:
        return None
    return start, min(end, size - 1)


class RangeRequestHandler(SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` plus single byte ranges (206, Content-Range, 416), over
    persistent HTTP/1.1 connections (as object stores serve COGs: GDAL reads a block's tiles
    without a new connection per range), each range sent by the kernel (``sendfile``)."""

    protocol_version = "HTTP/1.1"  # every response carries a Content-Length, so connections can stay open
    # On a kept-alive connection Nagle's algorithm holds the body back until the client ACKs the
    # headers, which it delays: ~40 ms per range request.
    disable_nagle_algorithm = True
    _remaining: int | None = None

    def send_head(self) -> BinaryIO | None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return super().send_head()  # directories and 404s as usual
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the base class after copyfile
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        stat = os.fstat(handle.fileno())
        size = stat.st_size
        try:
            wanted = parse_range(self.headers.get("Range"), size)
        except RangeNotSatisfiable:
            handle.close()
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        start, end = wanted if wanted is not None else (0, size - 1)
        if wanted is None:
            self.send_response(HTTPStatus.OK)
        else:
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Length", str(max(0, end - start + 1)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        self.end_headers()
        handle.seek(start)
        self._remaining = max(0, end - start + 1)
        return handle

    def copyfile(self, source: BinaryIO, outputfile: BinaryIO) -> None:
        remaining = self._remaining
        if remaining is None:
            return super().copyfile(source, outputfile)
        outputfile.flush()  # the headers, before the body goes straight to the socket
        sent = self.connection.sendfile(source, source.tell(), remaining)
        if sent < remaining:  # the file shrank under us: the promised length cannot be kept
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        pass  # a request log per COG block would drown the pipeline's own output


def run_file_server(root: Path, host: str = HOST, port: int = 0) -> None:
    """Serve ``root`` until terminated; prints the URL (with the bound port) as its first line."""

    class Handler(RangeRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"http://{host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


# ---------------------------------------------------------------------------- child processes


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM this child when its parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the atexit/finally cleanup still applies


_CHILDREN: set[subprocess.Popen] = set()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    _CHILDREN.discard(proc)


@atexit.register
def _stop_all() -> None:
    for proc in list(_CHILDREN):
        _stop(proc)


def _spawn(args: list[str], stdout: Any, stderr: Any, env: dict[str, str] | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        args, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        start_new_session=True,
    )
    _CHILDREN.add(proc)
    return proc


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def _wait_until_answers(proc: subprocess.Popen, url: str, deadline: float) -> bool:
    """True once ``url`` answers; False when the process exits first."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if _answers(url):
            return True
        time.sleep(0.1)
    return False


def _free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_file_server(root: Path, logs: Path, timeout_s: float = START_TIMEOUT_S) -> tuple[subprocess.Popen, str]:
    """Start the file server for ``root`` in a child process; it binds a free port itself."""
    log = logs / "files.log"
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    with open(log, "wb") as err:
        proc = _spawn([sys.executable, "-m", "pipeline.demo.serve", str(root)], subprocess.PIPE, err, env)
    deadline = time.monotonic() + timeout_s
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                break
            line += chunk
        elif proc.poll() is not None:
            break
    url = line.decode(errors="replace").strip()
    if not url.startswith("http://") or not _wait_until_answers(proc, url, deadline):
        _stop(proc)
        raise ServeError(f"the demo file server did not start: {_tail(log) or 'no output'}")
    return proc, url if url.endswith("/") else url + "/"


def rustac_binary() -> Path:
    """The ``rustac`` CLI of this environment (beside the interpreter), else the one on PATH."""
    beside = Path(sys.executable).parent / "rustac"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("rustac")
    if found:
        return Path(found)
    raise ServeError("the 'rustac' command is missing, so the demo STAC API cannot start; install it with: pip install rustac")


def start_stac_server(
    hrefs: list[Path], logs: Path, binary: Path | None = None, timeout_s: float = START_TIMEOUT_S
) -> tuple[subprocess.Popen, str]:
    """``rustac serve`` (memory backend) on a free port; retried on another port if the bind fails."""
    binary = binary or rustac_binary()
    log = logs / "stac.log"
    deadline = time.monotonic() + timeout_s
    for _ in range(_PORT_ATTEMPTS):
        port = _free_port()
        url = f"http://{HOST}:{port}"
        with open(log, "wb") as err:
            proc = _spawn([str(binary), "serve", "--addr", f"{HOST}:{port}", *map(str, hrefs)], subprocess.DEVNULL, err)
        if _wait_until_answers(proc, url + "/", deadline):
            return proc, url
        _stop(proc)
        tail = _tail(log)
        if "in use" not in tail.lower() or time.monotonic() >= deadline:
            raise ServeError(f"the demo STAC API ({binary} serve) did not start: {tail or 'no output'}")
    raise ServeError(f"the demo STAC API found no free port after {_PORT_ATTEMPTS} tries: {_tail(log)}")


def _start_stac_of(
    items: list[dict[str, Any]], collection: dict[str, Any], folder: Path, binary: Path, timeout_s: float
) -> tuple[subprocess.Popen, str]:
    """Write ``items`` and ``collection`` into ``folder`` and serve them with ``rustac serve``."""
    items_path = folder / "items.ndjson"
    with open(items_path, "w") as handle:  # line by line: a country's items need not be one string
        for item in items:
            handle.write(json.dumps(item, separators=(",", ":")) + "\n")
    collection_path = folder / "collection.json"
    collection_path.write_text(json.dumps(collection))
    return start_stac_server([collection_path, items_path], folder, binary, timeout_s)


@contextmanager
def serve_world(world: DemoWorld, *, timeout_s: float = START_TIMEOUT_S) -> Iterator[ServedWorld]:
    """Serve ``world`` for the duration of the block; both servers are stopped on exit."""
    binary = rustac_binary()  # fail before starting anything
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="landcover-demo-serve-")))
        files_proc, files_url = start_file_server(world.root, tmp, timeout_s)
        stack.callback(_stop, files_proc)
        items = world.items(base=files_url)
        stac_proc, stac_url = _start_stac_of(items, world.collection(), tmp, binary, timeout_s)
        stack.callback(_stop, stac_proc)
        yield ServedWorld(stac_url=stac_url, files_url=files_url, items=items, world=world)


@contextmanager
def serve_items(
    items: list[dict[str, Any]], collection: dict[str, Any], *, timeout_s: float = START_TIMEOUT_S
) -> Iterator[str]:
    """Serve ``items`` of ``collection`` (metadata only: no file server) through a STAC API on
    127.0.0.1 for the duration of the block; yields the API root URL and stops it on exit."""
    binary = rustac_binary()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="landcover-demo-items-")))
        proc, url = _start_stac_of(items, collection, tmp, binary, timeout_s)
        stack.callback(_stop, proc)
        yield url


def main(argv: list[str] | None = None) -> None:
    """Child-process entry point of the file server: ``python -m pipeline.demo.serve ROOT``."""
    parser = argparse.ArgumentParser(description="Range-capable static file server for the demo world")
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    run_file_server(args.root, HOST, args.port)


if __name__ == "__main__":
    main()
