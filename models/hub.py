"""Download the open BigEarthNet v2 (reBEN) classifiers of TU Berlin from the Hugging Face Hub.

The organisation ``BIFOLD-BigEarthNetv2-0`` publishes one repo per backbone and modality (e.g.
``resnet50-s2-v0.2.0``), each holding a ``config.json`` and a ``model.safetensors``. Only those two
files are fetched: never a pickled ``.bin``, which could run code when loaded.

How a download is kept safe and quick to fail:

* the repo id is checked before any request;
* one ``HEAD`` of ``model.safetensors`` without retries resolves the revision to a commit, so a
  missing repo, revision or safetensors file, or an unreachable endpoint, is reported in seconds
  (``hf_hub_download`` on its own retries a failed ``HEAD`` with back-off for about half a minute);
* both files are then fetched *at that commit*, so a branch moving mid-download cannot mix versions;
* everything lands in a fresh staging folder beside ``dest`` and is renamed into place only when
  complete and the weights match the sha256 the Hub lists, so ``dest`` never holds a half file;
* every failure becomes one :class:`HubError` line that names the problem and the fix.

The endpoint is ``HF_ENDPOINT`` read at call time (huggingface_hub reads it once, at import).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    DisabledRepoError,
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from models.errors import LandcoverError
from models.files import sha256_file

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HUB_FILES = (CONFIG_FILE, WEIGHTS_FILE)
DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"
EXAMPLE_REPO = "BIFOLD-BigEarthNetv2-0/resnet50-s2-v0.2.0"
# Seconds to wait for the Hub to answer a HEAD; a refused connection fails at once anyway.
METADATA_TIMEOUT_S = 10.0

_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_IMPORT_HINT = "or download it on a machine with access and run `landcover model import FOLDER`"


class HubError(LandcoverError):
    """A checkpoint cannot be downloaded from the Hub (the message says why and what to do)."""


@dataclass(frozen=True)
class DownloadedCheckpoint:
    """A complete download: where it is, and exactly which commit of which repo it came from."""

    folder: Path
    repo_id: str
    revision: str  # as asked (``main`` when none was)
    commit: str  # the 40-hex commit the Hub resolved ``revision`` to (its X-Repo-Commit header)
    config_path: Path
    weights_path: Path
    weights_sha256: str


@dataclass(frozen=True)
class _Remote:
    """What one HEAD of the weights told us: the commit to pin, and the sha256 to check against."""

    commit: str
    weights_etag: str | None


def download_checkpoint(
    repo_id: str, revision: str | None = None, *, dest: Path, endpoint: str | None = None
) -> DownloadedCheckpoint:
    """Fetch ``config.json`` and ``model.safetensors`` of ``repo_id`` at ``revision`` into the folder ``dest``.

    ``dest`` is replaced whole only after both files arrived complete (an earlier copy stays until
    then); weights already in ``dest`` with the sha256 the Hub lists are reused, not downloaded again.
    ``endpoint`` defaults to ``HF_ENDPOINT``, else the public Hub. Raises :class:`HubError`.
    """
    check_repo_id(repo_id)
    revision = _check_revision(revision)
    endpoint = hub_endpoint(endpoint)
    _check_online(repo_id)
    dest = Path(dest)
    remote = _resolve(repo_id, revision, endpoint)
    staging = _make_staging(dest)
    try:
        weights_sha256 = _reuse_weights(dest, staging, remote.weights_etag)
        for filename in HUB_FILES:
            if filename == WEIGHTS_FILE and weights_sha256 is not None:
                continue
            _fetch(repo_id, filename, revision, remote.commit, staging, endpoint)
        if weights_sha256 is None:
            weights_sha256 = _verified_sha256(staging / WEIGHTS_FILE, remote.weights_etag, repo_id, remote.commit)
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's local_dir bookkeeping
        _move_into_place(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return DownloadedCheckpoint(
        folder=dest,
        repo_id=repo_id,
        revision=revision,
        commit=remote.commit,
        config_path=dest / CONFIG_FILE,
        weights_path=dest / WEIGHTS_FILE,
        weights_sha256=weights_sha256,
    )


def check_repo_id(repo_id: str) -> None:
    """Refuse anything but ``org/name`` before a request is made (the Hub would only answer 404/401)."""
    hint = f"give the Hub repo as ORG/NAME, e.g. {EXAMPLE_REPO}"
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or "" in repo_id.split("/"):
        raise HubError(f"model repo id {repo_id!r} is not ORG/NAME; {hint}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(
            f"model repo id {repo_id!r} is not a valid Hub id (letters, digits, '-', '_', '.'); {hint}"
        ) from None


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub base URL: ``endpoint``, else ``HF_ENDPOINT`` as set now, else the public Hub."""
    url = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).strip().rstrip("/")
    if not re.match(r"https?://[^/\s]+", url):
        raise HubError(f"Hub endpoint {url!r} is not an http(s) URL; fix HF_ENDPOINT or unset it for {DEFAULT_ENDPOINT}")
    return url


def _check_online(repo_id: str) -> None:
    """Honour ``HF_HUB_OFFLINE`` as set now (huggingface_hub only sees its value at import)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        raise HubError(_offline_message(repo_id))


def _offline_message(repo_id: str) -> str:
    return f"HF_HUB_OFFLINE is set, so {repo_id} cannot be downloaded; unset it, {_IMPORT_HINT}"


def _check_revision(revision: str | None) -> str:
    """``main`` for no revision; refuse blanks that would build a broken URL."""
    if revision is None:
        return DEFAULT_REVISION
    if not revision.strip() or any(c.isspace() for c in revision):
        raise HubError(f"--revision {revision!r} is not a branch, tag or commit; omit it for {DEFAULT_REVISION}")
    return revision


def _resolve(repo_id: str, revision: str, endpoint: str) -> _Remote:
    """One HEAD of the weights, without retries: the commit behind ``revision`` and the weights' ETag."""
    url = hf_hub_url(repo_id, WEIGHTS_FILE, revision=revision, endpoint=endpoint)
    with _as_hub_error(repo_id, revision, WEIGHTS_FILE, endpoint):
        meta = get_hf_file_metadata(url, timeout=METADATA_TIMEOUT_S, endpoint=endpoint, library_name="landcover")
    if not meta.commit_hash or not _COMMIT.fullmatch(meta.commit_hash):
        raise HubError(f"{endpoint} does not answer like a Hugging Face Hub (no commit in X-Repo-Commit); check HF_ENDPOINT")
    return _Remote(commit=meta.commit_hash, weights_etag=meta.etag)


def _fetch(repo_id: str, filename: str, revision: str, commit: str, staging: Path, endpoint: str) -> None:
    """Download one file at the pinned commit into ``staging`` (huggingface_hub writes a temp file, then renames)."""
    with _as_hub_error(repo_id, revision, filename, endpoint, folder=staging.parent):
        hf_hub_download(
            repo_id,
            filename,
            revision=commit,
            local_dir=staging,
            # A private, empty cache: bytes come from the endpoint only, never from another cache on this machine.
            cache_dir=staging / ".cache" / "hub",
            endpoint=endpoint,
            etag_timeout=METADATA_TIMEOUT_S,
            library_name="landcover",
        )


def _make_staging(dest: Path) -> Path:
    """A fresh hidden folder beside ``dest`` (same filesystem, so the final rename is atomic)."""
    staging = dest.parent / f".{dest.name}.download-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir(parents=True)
    except OSError as e:
        raise HubError(f"cannot create a folder in {dest.parent} ({_reason(e)}); choose a writable cache folder") from None
    return staging


def _reuse_weights(dest: Path, staging: Path, etag: str | None) -> str | None:
    """Link the weights already in ``dest`` into ``staging`` when their sha256 is the Hub's; else None."""
    existing = dest / WEIGHTS_FILE
    if etag is None or not _SHA256.fullmatch(etag) or not existing.is_file() or existing.is_symlink():
        return None
    try:
        if sha256_file(existing) != etag:
            return None
        try:
            os.link(existing, staging / WEIGHTS_FILE)
        except OSError:
            shutil.copyfile(existing, staging / WEIGHTS_FILE)
    except OSError:
        return None  # unreadable or uncopyable: download it afresh instead
    return etag


def _verified_sha256(path: Path, etag: str | None, repo_id: str, commit: str) -> str:
    """sha256 of the downloaded weights, checked against the Hub's ETag when that is a sha256 (LFS files)."""
    digest = sha256_file(path)
    if etag is not None and _SHA256.fullmatch(etag) and digest != etag:
        raise HubError(
            f"{WEIGHTS_FILE} of {repo_id}@{commit[:12]} arrived with sha256 {digest[:12]}, not the Hub's "
            f"{etag[:12]}; nothing was kept, run the command again"
        )
    return digest


def _move_into_place(staging: Path, dest: Path) -> None:
    """Swap the complete ``staging`` in for ``dest``: readers see the old copy or the new one, never a mix."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise HubError(f"{dest} exists and is not a folder; remove it or choose another cache folder")
    old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:12]}"
    try:
        if dest.exists():
            dest.rename(old)
        try:
            staging.rename(dest)
        except OSError:
            if old.exists():
                old.rename(dest)
            raise
    except OSError as e:
        raise HubError(f"cannot move the download into {dest} ({_reason(e)}); check that folder's permissions") from None
    finally:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _as_hub_error(
    repo_id: str, revision: str, filename: str, endpoint: str, *, folder: Path | None = None
) -> Iterator[None]:
    """Turn huggingface_hub/httpx2/OS failures into one HubError line; no traceback reaches the user.

    Anything else (hf_xet raises its own Rust-side errors on the real Hub) still becomes one line,
    naming the error type, with the original kept as ``__cause__`` for debugging.
    """
    try:
        yield
    except (HfHubHTTPError, httpx2.HTTPError, OfflineModeIsEnabled, LocalEntryNotFoundError, OSError) as e:
        raise HubError(_message(e, repo_id, revision, filename, endpoint, folder)) from None
    except Exception as e:
        raise HubError(
            f"download of {filename} from {repo_id} failed ({type(e).__name__}: {_reason(e)}); nothing was kept, "
            f"run the command again (HF_HUB_DISABLE_XET=1 makes it use plain HTTP)"
        ) from e


def _message(
    e: BaseException, repo_id: str, revision: str, filename: str, endpoint: str, folder: Path | None
) -> str:
    """The one line for failure ``e`` (order matters: the Hub's errors subclass httpx2's and OSError)."""
    hub = "the Hub" if endpoint == DEFAULT_ENDPOINT else f"the Hub at {endpoint}"
    if isinstance(e, GatedRepoError):
        return (
            f"model repo '{repo_id}' is gated: accept its terms on {endpoint}/{repo_id}, then set HF_TOKEN "
            f"(or run `hf auth login`) for that account"
        )
    if isinstance(e, RepositoryNotFoundError):
        return (
            f"{hub} has no model repo '{repo_id}' ({_status(e)}); check the id, e.g. {EXAMPLE_REPO} "
            f"(a private repo also needs HF_TOKEN)"
        )
    if isinstance(e, DisabledRepoError):
        return f"model repo '{repo_id}' is disabled on {hub}; choose another checkpoint, e.g. {EXAMPLE_REPO}"
    if isinstance(e, RevisionNotFoundError):
        return (
            f"model repo '{repo_id}' has no revision '{revision}'; pass --revision a branch, tag or commit "
            f"of the repo, or omit it for {DEFAULT_REVISION}"
        )
    if isinstance(e, RemoteEntryNotFoundError):
        if filename == WEIGHTS_FILE:
            return (
                f"no {WEIGHTS_FILE} in {repo_id}@{revision}: only safetensors checkpoints are loaded "
                f"(pickled .bin files are never run)"
            )
        return f"no {filename} in {repo_id}@{revision}: not a BigEarthNet v2 (reBEN) classifier repo like {EXAMPLE_REPO}"
    if isinstance(e, OfflineModeIsEnabled) or _caused_by(e, OfflineModeIsEnabled):
        return _offline_message(repo_id)
    if isinstance(e, FileMetadataError) or _caused_by(e, FileMetadataError):
        return f"{endpoint} does not answer like a Hugging Face Hub ({_reason(e)}); check HF_ENDPOINT"
    if isinstance(e, HfHubHTTPError):
        fix = "set HF_TOKEN to a token with access" if _status(e) in ("401", "403") else "try again later"
        return f"{hub} answered HTTP {_status(e)} for {repo_id}/{filename}; {fix}"
    unreachable = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.ProxyError, httpx2.UnsupportedProtocol)
    if isinstance(e, unreachable) or isinstance(e, LocalEntryNotFoundError):
        cause = e.__cause__ if isinstance(e, LocalEntryNotFoundError) and e.__cause__ is not None else e
        return (
            f"cannot reach {hub} ({_reason(cause)}) to download {repo_id}; check the network, and HF_ENDPOINT "
            f"if set, {_IMPORT_HINT}"
        )
    if isinstance(e, httpx2.HTTPError):
        return f"download of {filename} from {repo_id} broke off ({_reason(e)}); nothing was kept, run the command again"
    where = folder if folder is not None else "the cache folder"
    return f"cannot download {filename} of {repo_id} into {where} ({_reason(e)}); free space or fix permissions there"


def _caused_by(e: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is somewhere in ``e``'s cause chain (huggingface_hub wraps errors it re-raises)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, kind):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _status(e: HfHubHTTPError) -> str:
    response = getattr(e, "response", None)
    return str(response.status_code) if response is not None else "no status"


def _reason(e: BaseException) -> str:
    """The first line of an error, short: huggingface_hub's messages run to several lines."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."
