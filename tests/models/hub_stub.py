"""A stand-in for the Hugging Face Hub on 127.0.0.1, so download tests never leave the machine.

It implements only what huggingface_hub's ``hf_hub_download`` path asks for: ``HEAD``/``GET
/{org}/{name}/resolve/{revision}/{filename}`` with the headers the client keys on (``X-Repo-Commit``,
``ETag``, ``Content-Length``, ``Range``/``206``), and the 404/403 answers whose ``X-Error-Code``
header the client turns into ``RepositoryNotFoundError``, ``RevisionNotFoundError``,
``RemoteEntryNotFoundError`` and ``GatedRepoError`` (see ``huggingface_hub.utils._http.hf_raise_for_status``).
It sends no ``X-Xet-*`` headers, so the client downloads over plain HTTP and hf_xet stays idle.

Layout on disk, one folder per revision (``main`` is the default)::

    root/<org>/<name>/<revision>/<file>

A revision can also be asked for by its stub commit (``revision_sha(folder)``, 40 hex), as the client
does once it has resolved a branch. Files are answered directly with 200/206 (the real Hub redirects
LFS files to a CDN with ``X-Linked-Etag``/``X-Linked-Size``; the client needs neither here).

Every request is recorded on the yielded URL (``url.requests``: ``(method, path)`` pairs) so tests
can assert nothing else was asked; ``url.interrupt(...)`` makes the stub drop the connection in the
middle of a file's body, and ``url.gate(repo_id)`` answers a repo as gated.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_REVISION = "main"
_CHUNK = 1 << 20


def publish(
    root: Path, repo_id: str, files: Mapping[str, bytes | Path], revision: str = DEFAULT_REVISION
) -> Path:
    """Lay ``files`` (name -> content or a file to copy) out as ``revision`` of ``repo_id``; return that folder.

    A revision that already exists is replaced whole, so a test can "push" a new commit to a branch.
    """
    org, name = repo_id.split("/")
    if not revision or "/" in revision or revision in (".", ".."):
        raise ValueError(f"stub revisions are plain folder names, not {revision!r}")
    folder = Path(root) / org / name / revision
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for filename, content in files.items():
        target = folder / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            shutil.copyfile(content, target)
    return folder


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file: the stub's ETag, as the Hub's for LFS files (cached: published checkpoints can be big)."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = _hash_file(path)
    return _SHA_CACHE[key]


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def revision_sha(folder: Path) -> str:
    """A stable 40-hex "commit" of a revision folder: sha1 over its file names and contents' sha256."""
    digest = hashlib.sha1()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + file_sha256(path).encode() + b"\n")
    return digest.hexdigest()


@dataclass
class _Interruption:
    after_bytes: int
    times: int | None  # None: every GET


@dataclass
class _State:
    root: Path
    requests: list[tuple[str, str]] = field(default_factory=list)
    interruptions: dict[str, _Interruption] = field(default_factory=dict)
    gated: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_interruption(self, filename: str) -> int | None:
        """Byte offset at which to cut this GET of ``filename``, or None to send it whole."""
        with self.lock:
            cut = self.interruptions.get(filename)
            if cut is None:
                return None
            if cut.times is not None:
                cut.times -= 1
                if cut.times <= 0:
                    del self.interruptions[filename]
            return cut.after_bytes


class StubURL(str):
    """The stub's base URL (use it as ``endpoint``/``HF_ENDPOINT``), carrying the stub's record and switches."""

    _state: _State

    @property
    def requests(self) -> list[tuple[str, str]]:
        """Every request so far as ``(method, path)``, in arrival order."""
        return self._state.requests

    def interrupt(self, filename: str, after_bytes: int, times: int | None = None) -> None:
        """Drop the connection once a GET of ``filename`` reaches byte ``after_bytes`` (``times`` GETs; None: all)."""
        with self._state.lock:
            self._state.interruptions[filename] = _Interruption(after_bytes, times)

    def gate(self, repo_id: str) -> None:
        """Answer every request for ``repo_id`` as the Hub does for a gated repo without access (403 GatedRepo)."""
        with self._state.lock:
            self._state.gated.add(repo_id)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keeps pytest output clean
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._resolve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._resolve(body=True)

    def do_POST(self) -> None:  # noqa: N802 - recorded, so a test sees it was asked; the stub serves no API
        self._record()
        self._error(405, None, "Method Not Allowed", body=True)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def _record(self) -> str:
        path = urlsplit(self.path).path
        with self.server.state.lock:
            self.server.state.requests.append((self.command, path))
        return path

    def _resolve(self, *, body: bool) -> None:
        state = self.server.state
        path = self._record()
        parts = path.split("/")
        if len(parts) < 6 or parts[3] != "resolve":
            return self._error(404, None, "Not Found", body=body)
        org, name, revision = unquote(parts[1]), unquote(parts[2]), unquote(parts[4])
        filename = unquote("/".join(parts[5:]))
        repo_id = f"{org}/{name}"
        repo = state.root / org / name
        if any(p in ("", ".", "..") for p in (org, name, *filename.split("/"))) or not repo.is_dir():
            return self._error(404, "RepoNotFound", "Repository not found", body=body)
        if repo_id in state.gated:
            message = f"Access to model {repo_id} is restricted. You must have access to it and be authenticated."
            return self._error(403, "GatedRepo", message, body=body)
        folder = _revision_folder(repo, revision)
        if folder is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body=body)
        commit = revision_sha(folder)
        target = folder / filename
        if not target.is_file():
            return self._error(404, "EntryNotFound", f"{filename} does not exist on \"{revision}\"", body=body,
                               extra={"X-Repo-Commit": commit})
        self._send_file(target, filename, commit, body=body)

    def _send_file(self, target: Path, filename: str, commit: str, *, body: bool) -> None:
        size = target.stat().st_size
        start, end = 0, size - 1
        status = 200
        range_header = self.headers.get("Range")
        if range_header is not None:
            parsed = _parse_range(range_header, size)
            if parsed is None:
                return self._error(416, None, "Range Not Satisfiable", body=body,
                                   extra={"Content-Range": f"bytes */{size}"})
            start, end = parsed
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{file_sha256(target)}"')
        self.send_header("X-Repo-Commit", commit)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        cut = self.server.state.take_interruption(filename)
        stop = end + 1 if cut is None else min(end + 1, max(cut, start))
        with open(target, "rb") as f:
            f.seek(start)
            remaining = stop - start
            while remaining > 0 and (chunk := f.read(min(_CHUNK, remaining))):
                self.wfile.write(chunk)
                remaining -= len(chunk)
        if cut is not None and stop <= end:
            self.wfile.flush()
            self.close_connection = True  # short body + closed socket: the client sees a broken transfer

    def _error(self, status: int, code: str | None, message: str, *, body: bool,
               extra: Mapping[str, str] | None = None) -> None:
        payload = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if code is not None:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    """Tracks open connections: closing the stub must also cut keep-alive sockets a client still holds."""

    daemon_threads = True
    state: _State

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: socket.socket, client_address: object) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _revision_folder(repo: Path, revision: str) -> Path | None:
    """The folder of a branch/tag name, or of the revision whose stub commit is ``revision``."""
    if "/" not in revision and revision not in (".", "..") and (repo / revision).is_dir():
        return repo / revision
    if len(revision) == 40:
        for folder in sorted(p for p in repo.iterdir() if p.is_dir()):
            if revision_sha(folder) == revision:
                return folder
    return None


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range, None if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            start, end = max(size - int(last), 0), size - 1
        else:
            start, end = int(first), (int(last) if last else size - 1)
    except ValueError:
        return None
    end = min(end, size - 1)
    return (start, end) if 0 <= start <= end else None


@contextmanager
def serve_hub(root: Path) -> Iterator[StubURL]:
    """Serve ``root`` as a Hub on a free 127.0.0.1 port; yield its base URL; shut it down on exit."""
    server = _Server(("127.0.0.1", 0))
    server.state = _State(root=Path(root))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-stub", daemon=True)
    thread.start()
    url = StubURL(f"http://127.0.0.1:{server.server_address[1]}")
    url._state = server.state
    try:
        yield url
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(timeout=5)
