"""models.hub against a Hub stand-in on 127.0.0.1 (tests/models/hub_stub.py): nothing leaves the machine."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models.hub import EXAMPLE_REPO, HUB_FILES, HubError, download_checkpoint
from hub_stub import publish, revision_sha, serve_hub

REPO = EXAMPLE_REPO
BIN_ONLY = "BIFOLD-BigEarthNetv2-0/pickled-only"
CLASSES = [str(i) for i in range(19)]


def _config(**overrides: object) -> bytes:
    config = {
        "timm_model_name": "resnet50",
        "channels": 10,
        "classes": 19,
        "image_size": 120,
        "drop_rate": 0.15,
        "drop_path_rate": 0.15,
        "class_names": CLASSES,
        **overrides,
    }
    return json.dumps(config, indent=2).encode()


def _weights(tmp: Path, seed: int) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    path = tmp / f"weights-{seed}.safetensors"
    save_file({"fc.weight": torch.randn(19, 64, generator=generator), "fc.bias": torch.zeros(19)}, str(path))
    return path.read_bytes()


@pytest.fixture
def hub_root(tmp_path: Path) -> Path:
    root = tmp_path / "hub"
    publish(root, REPO, {"config.json": _config(), "model.safetensors": _weights(tmp_path, 0)})
    publish(root, REPO, {"config.json": _config(drop_rate=0.1), "model.safetensors": _weights(tmp_path, 1)},
            revision="v0.1.0")
    publish(root, BIN_ONLY, {"config.json": _config(), "pytorch_model.bin": b"\x80\x04 not unpickled"})
    return root


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Allow requests (to 127.0.0.1 only) where CI sets HF_HUB_OFFLINE; make hf_xet fail loudly if asked."""

    def no_xet(**_: object) -> None:
        raise AssertionError("hf_xet was asked to download: plain-HTTP answers must never reach it")

    monkeypatch.setattr("huggingface_hub.file_download.xet_get", no_xet)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)


@pytest.fixture
def hub(hub_root: Path, online: None):
    """The running stub: its base URL, with ``.requests`` and the failure switches."""
    with serve_hub(hub_root) as url:
        yield url


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "models"


def _dest(cache: Path, revision: str = "main") -> Path:
    return cache.joinpath(*REPO.split("/"), revision)


def _served(hub_root: Path, repo: str = REPO, revision: str = "main") -> Path:
    return hub_root.joinpath(*repo.split("/"), revision)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


def test_download_is_byte_identical_and_pinned_to_the_resolved_commit(hub, hub_root, cache):
    got = download_checkpoint(REPO, dest=_dest(cache), endpoint=hub)

    served = _served(hub_root)
    assert got.folder == _dest(cache)
    assert (got.repo_id, got.revision, got.commit) == (REPO, "main", revision_sha(served))
    assert sorted(p.name for p in got.folder.iterdir()) == sorted(HUB_FILES)  # no .cache bookkeeping left
    assert got.config_path.read_bytes() == (served / "config.json").read_bytes()
    assert got.weights_path.read_bytes() == (served / "model.safetensors").read_bytes()
    assert _leftovers(got.folder.parent) == []
    # One HEAD resolves main; everything after asks for that commit only.
    assert hub.requests[0] == ("HEAD", f"/{REPO}/resolve/main/model.safetensors")
    assert {path for _, path in hub.requests[1:]} == {f"/{REPO}/resolve/{got.commit}/{f}" for f in HUB_FILES}


def test_hf_endpoint_is_read_at_call_time(hub, cache, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub)
    assert download_checkpoint(REPO, dest=_dest(cache)).commit
    assert hub.requests


def test_second_call_reuses_the_weights_and_replaces_the_folder(hub, hub_root, cache, tmp_path):
    first = download_checkpoint(REPO, dest=_dest(cache), endpoint=hub)
    (first.folder / "stale.txt").write_text("from before")
    publish(hub_root, REPO, {"config.json": _config(drop_rate=0.2), "model.safetensors": _weights(tmp_path, 0)})
    hub.requests.clear()

    second = download_checkpoint(REPO, dest=_dest(cache), endpoint=hub)

    assert second.commit != first.commit and second.weights_sha256 == first.weights_sha256
    assert json.loads(second.config_path.read_text())["drop_rate"] == 0.2
    assert sorted(p.name for p in second.folder.iterdir()) == sorted(HUB_FILES)
    assert ("GET", f"/{REPO}/resolve/{second.commit}/model.safetensors") not in hub.requests
    assert _leftovers(second.folder.parent) == []


def test_explicit_revision_and_commit(hub, hub_root, cache):
    tagged = download_checkpoint(REPO, "v0.1.0", dest=_dest(cache, "v0.1.0"), endpoint=hub)
    served = _served(hub_root, revision="v0.1.0")
    assert (tagged.revision, tagged.commit) == ("v0.1.0", revision_sha(served))
    assert tagged.weights_path.read_bytes() == (served / "model.safetensors").read_bytes()

    pinned = download_checkpoint(REPO, tagged.commit, dest=_dest(cache, tagged.commit), endpoint=hub)
    assert pinned.commit == tagged.commit
    assert pinned.config_path.read_bytes() == tagged.config_path.read_bytes()


def test_missing_repo_names_the_repo_and_the_fix(hub, cache):
    with pytest.raises(HubError) as caught:
        download_checkpoint("BIFOLD-BigEarthNetv2-0/resnet51-s2", dest=cache / "x", endpoint=hub)
    message = str(caught.value)
    assert "'BIFOLD-BigEarthNetv2-0/resnet51-s2' (404)" in message and EXAMPLE_REPO in message
    assert "\n" not in message and not cache.exists()


def test_gated_repo_says_how_to_get_access(hub, cache):
    hub.gate(REPO)
    with pytest.raises(HubError, match=r"gated: accept its terms .* HF_TOKEN"):
        download_checkpoint(REPO, dest=_dest(cache), endpoint=hub)


def test_unknown_revision(hub, cache):
    with pytest.raises(HubError, match=r"has no revision 'v9'; pass --revision"):
        download_checkpoint(REPO, "v9", dest=_dest(cache, "v9"), endpoint=hub)


def test_repo_with_only_a_pickled_bin_is_refused_without_touching_it(hub, cache):
    with pytest.raises(HubError) as caught:
        download_checkpoint(BIN_ONLY, dest=cache / "bin", endpoint=hub)
    assert str(caught.value) == (
        f"no model.safetensors in {BIN_ONLY}@main: only safetensors checkpoints are loaded "
        "(pickled .bin files are never run)"
    )
    assert hub.requests == [("HEAD", f"/{BIN_ONLY}/resolve/main/model.safetensors")]


def test_unreachable_endpoint_fails_in_seconds(online, cache):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(HubError) as caught:
        download_checkpoint(REPO, dest=_dest(cache), endpoint=f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 5
    message = str(caught.value)
    assert "cannot reach the Hub at" in message and "HF_ENDPOINT" in message
    assert "landcover model import FOLDER" in message and not cache.exists()


@pytest.mark.parametrize("how", ["env now", "env at import"])
def test_offline_mode_is_refused_with_the_fix(hub, cache, monkeypatch, how):
    if how == "env now":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match=r"HF_HUB_OFFLINE is set.*landcover model import FOLDER"):
        download_checkpoint(REPO, dest=_dest(cache), endpoint=hub)
    assert hub.requests == [] and not cache.exists()


@pytest.mark.parametrize("repo_id", ["resnet50-s2-v0.2.0", "a/b/c", "/resnet50", "org/", "org/bad--name", ""])
def test_bad_repo_id_is_refused_before_any_request(hub, cache, repo_id):
    with pytest.raises(HubError, match="ORG/NAME"):
        download_checkpoint(repo_id, dest=cache / "x", endpoint=hub)
    assert hub.requests == []


def test_broken_transfer_keeps_the_previous_copy_and_no_half_file(hub, hub_root, cache, tmp_path, monkeypatch):
    before = download_checkpoint(REPO, dest=_dest(cache), endpoint=hub)
    old_weights = before.weights_path.read_bytes()
    publish(hub_root, REPO, {"config.json": _config(), "model.safetensors": _weights(tmp_path, 2)})
    hub.interrupt("model.safetensors", after_bytes=100)  # every GET breaks off at byte 100
    monkeypatch.setattr("huggingface_hub.file_download.time.sleep", lambda _: None)  # its 5 resume waits

    with pytest.raises(HubError, match=r"download of model.safetensors from .* broke off .* run the command again"):
        download_checkpoint(REPO, dest=_dest(cache), endpoint=hub)

    assert before.weights_path.read_bytes() == old_weights
    assert sorted(p.name for p in before.folder.iterdir()) == sorted(HUB_FILES)
    assert _leftovers(before.folder.parent) == []


def test_first_download_broken_off_leaves_nothing(hub, cache, monkeypatch):
    hub.interrupt("model.safetensors", after_bytes=100)
    monkeypatch.setattr("huggingface_hub.file_download.time.sleep", lambda _: None)
    with pytest.raises(HubError):
        download_checkpoint(REPO, dest=_dest(cache), endpoint=hub)
    assert not _dest(cache).exists() and _leftovers(_dest(cache).parent) == []


def test_one_dropped_connection_is_resumed_with_a_range_request(hub, hub_root, cache, monkeypatch):
    hub.interrupt("model.safetensors", after_bytes=100, times=1)
    monkeypatch.setattr("huggingface_hub.file_download.time.sleep", lambda _: None)
    got = download_checkpoint(REPO, dest=_dest(cache), endpoint=hub)
    assert got.weights_path.read_bytes() == (_served(hub_root) / "model.safetensors").read_bytes()
    assert hub.requests.count(("GET", f"/{REPO}/resolve/{got.commit}/model.safetensors")) == 2


def test_endpoint_that_is_not_a_url_is_refused_before_any_request(online, cache, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "localhost:8080")
    with pytest.raises(HubError, match=r"'localhost:8080' is not an http\(s\) URL; fix HF_ENDPOINT"):
        download_checkpoint(REPO, dest=_dest(cache))


def test_unexpected_download_failure_is_still_one_line(hub, cache, monkeypatch):
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("xet reconstruction failed\nat some rust frame")

    monkeypatch.setattr("models.hub.hf_hub_download", broken)
    with pytest.raises(HubError) as caught:
        download_checkpoint(REPO, dest=_dest(cache), endpoint=hub)
    assert "RuntimeError: xet reconstruction failed" in str(caught.value) and "\n" not in str(caught.value)
    assert not _dest(cache).exists() and _leftovers(_dest(cache).parent) == []
