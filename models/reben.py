"""The BigEarthNet v2 (reBEN) classifiers of TU Berlin: any timm architecture, 10 L2A bands, multi-label.

The published checkpoints (Hugging Face organisation ``BIFOLD-BigEarthNetv2-0``, MIT licence) hold
``config.json`` and ``model.safetensors``. Their state-dict keys are ``model.vision_encoder.<timm
key>``: ConfigILM wraps a timm model created with ``num_classes=19``, ``in_chans=channels`` and
``img_size=120`` where the architecture takes one. :class:`TimmClassifier` keeps that layout, so
the published file loads strictly with zero missing and zero unexpected keys.

What the network expects (from the public ConfigILM 0.7 / reben-training-scripts code): 10 bands
at 120 x 120 px (20 m bands upsampled with nearest), ``(DN - mean) / std`` on L2A DN without the
+1000 offset of baseline >= 04.00, sigmoid outputs with the 19 classes in alphabetical order of
their names. The band order changed between releases; :func:`card_from_config` says which.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from models.card import (
    ModelCard,
    ModelSource,
    PublishedMetric,
    StandardNormalisation,
    TimmArchitecture,
    TrainingData,
    card_path,
    model_cache,
)
from models.classes import CLASS_NAMES
from models.errors import LandcoverError
from models.files import atomic_copy, atomic_write_text, sha256_file
from models.tensors import load_state_dict

ORGANISATION = "BIFOLD-BigEarthNetv2-0"
PREFIX = "model.vision_encoder."
REBEN_CLASSES: tuple[str, ...] = tuple(sorted(CLASS_NAMES))
S2_CHANNELS = 10
# Band order of each release, as Earth Search common names.
BANDS_V02: tuple[str, ...] = ("blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22")
BANDS_V01: tuple[str, ...] = ("blue", "green", "red", "nir", "rededge1", "rededge2", "rededge3", "swir16", "swir22", "nir08")
BAND_ORDERS: dict[str, tuple[str, ...]] = {"v0.1": BANDS_V01, "v0.2": BANDS_V02}
# Per-band L2A DN statistics of reBEN (no BOA offset), keyed by band so either order reads them.
MEANS: dict[str, float] = dict(zip(BANDS_V02, (438.37, 614.06, 588.41, 942.84, 1769.93, 2049.55, 2193.29, 2235.56, 1568.23, 997.73)))
STDS: dict[str, float] = dict(zip(BANDS_V02, (607.03, 603.30, 684.57, 738.43, 1100.46, 1275.81, 1369.37, 1356.54, 1070.16, 813.53)))
_REPO_VERSION = re.compile(r"-v(\d+)\.(\d+)(?:\.(\d+))?$")
_REBEN_SOURCE = "Clasen et al. 2024, reBEN: Refined BigEarthNet (arXiv:2407.03653), and the model's Hub card"
# Figures the authors published, by repository name.
PUBLISHED_METRICS: dict[str, list[PublishedMetric]] = {
    "resnet50-s2-v0.2.0": [PublishedMetric(name="mAP (macro)", value=71.4, split="reBEN test", source=_REBEN_SOURCE)],
    "resnet50-all-v0.2.0": [
        PublishedMetric(name="mAP (macro)", value=70.3, split="reBEN test", source=_REBEN_SOURCE),
        PublishedMetric(name="mAP (micro)", value=86.1, split="reBEN test", source=_REBEN_SOURCE),
    ],
}


class RebenError(LandcoverError):
    """A reBEN-layout checkpoint or its config cannot be used."""


def build_network(arch: TimmArchitecture, num_classes: int) -> nn.Module:
    """A randomly initialised timm model, as ConfigILM creates it (never downloads weights)."""
    import timm

    if not timm.is_model(arch.model_name):
        raise RebenError(f"timm {timm.__version__} has no architecture {arch.model_name!r}; "
                         "check timm_model_name in config.json")
    kwargs: dict[str, Any] = dict(pretrained=False, num_classes=num_classes, in_chans=arch.channels,
                                  drop_rate=arch.drop_rate, drop_path_rate=arch.drop_path_rate)
    try:
        return timm.create_model(arch.model_name, img_size=arch.image_size, **kwargs)
    except TypeError:  # an architecture without a fixed input size (ResNets, ConvNeXts) takes no img_size
        return timm.create_model(arch.model_name, **kwargs)


class _Wrapper(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.vision_encoder = net


class TimmClassifier(nn.Module):
    """A timm network with the published key layout; ``forward`` returns logits (N, num_classes)."""

    def __init__(self, arch: TimmArchitecture, num_classes: int = len(REBEN_CLASSES)) -> None:
        super().__init__()
        self.architecture = arch
        self.num_classes = num_classes
        self.model = _Wrapper(build_network(arch, num_classes))

    @property
    def net(self) -> nn.Module:
        return self.model.vision_encoder

    @property
    def embedding_dim(self) -> int:
        return int(self.net.num_features)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, C, H, W) standardised input -> (logits, embedding): the pooled features before the classifier."""
        features = self.net.forward_features(x)
        return self.net.forward_head(features), self.net.forward_head(features, pre_logits=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def load_timm_weights(model: TimmClassifier, state: Mapping[str, Tensor], *, what: str = "the weights") -> None:
    """Load strictly: the channels are checked first (a config of another checkpoint), then every key."""
    own = model.state_dict()
    first_conv = next((k for k, v in own.items() if v.ndim == 4), None)
    if first_conv is not None and first_conv in state and state[first_conv].shape[1] != own[first_conv].shape[1]:
        raise RebenError(
            f"{what} take {state[first_conv].shape[1]} input channels but the config says "
            f"{own[first_conv].shape[1]}: the config.json belongs to another checkpoint; use the one published with them"
        )
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise RebenError(
            f"{what} do not fit timm {model.architecture.model_name!r} in the reBEN layout: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}); "
            f"keys must read {PREFIX}<timm key>"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e).splitlines()[0])
        raise RebenError(f"{what} do not fit timm {model.architecture.model_name!r}: {first}") from None


def release_of(repo_id: str) -> str | None:
    """'BIFOLD-BigEarthNetv2-0/resnet50-s2-v0.2.0' -> 'v0.2'; None when the name carries no version."""
    m = _REPO_VERSION.search(repo_id.rstrip("/").rsplit("/", 1)[-1])
    if not m:
        return None
    major, minor = int(m.group(1)), int(m.group(2))
    return "v0.1" if (major, minor) < (0, 2) else "v0.2"


def band_order(repo_id: str, requested: str | None = None) -> tuple[str, tuple[str, ...]]:
    """The release whose band order a checkpoint takes: from its name, checked against ``requested``."""
    found = release_of(repo_id)
    if requested is not None and requested not in BAND_ORDERS:
        raise RebenError(f"unknown band order {requested!r}; use one of {', '.join(BAND_ORDERS)}")
    if found and requested and found != requested:
        raise RebenError(
            f"{repo_id} is a {found}.x checkpoint, whose band order is {_bands_label(BAND_ORDERS[found])}; "
            f"the {requested} order ({_bands_label(BAND_ORDERS[requested])}) would feed it the wrong bands: "
            f"drop --band-order or pass {found}"
        )
    release = found or requested
    if release is None:
        raise RebenError(
            f"cannot tell the release of {repo_id!r} from its name (no -vX.Y.Z suffix), and v0.1 and v0.2 take "
            f"their bands in different orders: pass --band-order v0.2 or v0.1"
        )
    return release, BAND_ORDERS[release]


def _bands_label(bands: tuple[str, ...]) -> str:
    from models.bands import band_id

    return ",".join(band_id(b) for b in bands)


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text())
    except OSError as e:
        raise RebenError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise RebenError(f"{path} is not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(config, dict) or "timm_model_name" not in config:
        raise RebenError(f"{path} has no timm_model_name: not the config.json of a BigEarthNet v2 (reBEN) checkpoint")
    return config


def check_modality(repo_id: str, channels: int) -> None:
    """Refuse what this tool cannot feed: ``s1`` (VV, VH) and ``all`` (VV, VH + 10 S2 bands) models."""
    name = repo_id.rsplit("/", 1)[-1]
    modality = re.search(r"-(s1|s2|all)-", f"-{name}-")
    kind = modality.group(1) if modality else None
    if kind in ("s1", "all") or channels in (2, 12):
        label = kind or ("s1" if channels == 2 else "all")
        raise RebenError(
            f"{repo_id} is an '{label}' model ({channels} channels): it needs Sentinel-1 VV/VH bands, which this tool "
            f"does not load; use a Sentinel-2 model (-s2-, 10 channels), e.g. {ORGANISATION}/resnet50-s2-v0.2.0"
        )
    if channels != S2_CHANNELS:
        raise RebenError(f"{repo_id} takes {channels} channels; the BigEarthNet v2 Sentinel-2 models take 10")


def card_from_config(
    config: Mapping[str, Any],
    *,
    repo_id: str,
    revision: str = "main",
    commit: str | None = None,
    band_order_release: str | None = None,
) -> ModelCard:
    """The model card of a published reBEN checkpoint, made from its ``config.json``."""
    channels = int(config.get("channels", 0))
    check_modality(repo_id, channels)
    classes = int(config.get("classes", len(REBEN_CLASSES)))
    if classes != len(REBEN_CLASSES):
        raise RebenError(f"{repo_id} predicts {classes} classes; the BigEarthNet v2 models predict 19")
    release, bands = band_order(repo_id, band_order_release)
    size = int(config.get("image_size", 120))
    arch = TimmArchitecture(
        model_name=str(config["timm_model_name"]), channels=channels, image_size=size,
        drop_rate=float(config.get("drop_rate", 0.0) or 0.0), drop_path_rate=float(config.get("drop_path_rate", 0.0) or 0.0),
    )
    return ModelCard(
        family="timm",
        profile=arch.model_name,
        architecture=arch,
        task="multi-label",
        threshold=0.5,
        classes=list(REBEN_CLASSES),
        bands=list(bands),
        resampling="nearest",
        normalisation=StandardNormalisation(
            mean=[MEANS[b] for b in bands], std=[STDS[b] for b in bands], boa_offset="removed",
            description=f"(DN - mean) / std per band ({release} order) on L2A DN without the +1000 BOA offset; "
                        "reBEN statistics",
        ),
        patch_size=size,
        window_px=120,
        ground_footprint_m=1200.0,
        training_data=TrainingData(
            description=f"BigEarthNet v2.0 (reBEN), Sentinel-2 L2A, 10 bands at 120 px, 19 classes multi-label "
                        f"(published by TU Berlin as {repo_id})",
            synthetic=False,
        ),
        published_metrics=PUBLISHED_METRICS.get(repo_id.rsplit("/", 1)[-1], []),
        source=ModelSource(repo_id=repo_id, revision=revision, commit=commit,
                           url=f"https://huggingface.co/{repo_id}", licence="MIT"),
        licence="MIT",
    )


def load_reben_state(path: Path) -> dict[str, Tensor]:
    """The tensors of a published ``model.safetensors`` (safetensors only: a pickled file is never run)."""
    if Path(path).suffix != ".safetensors":
        raise RebenError(f"{path}: only safetensors checkpoints are loaded for the timm family")
    return load_state_dict(path)


def check_loads(card: ModelCard, weights: Path) -> TimmClassifier:
    """Build the card's network and load the weights strictly (what import and every worker do)."""
    assert card.architecture is not None
    model = TimmClassifier(card.architecture, len(card.classes))
    load_timm_weights(model, load_reben_state(weights), what=str(weights))
    return model.eval()


def guess_origin(folder: Path) -> tuple[str, str | None]:
    """(repo id, commit) of a downloaded folder: a Hub cache snapshot
    (``models--ORG--NAME/snapshots/<commit>``) says both; a plain folder is taken to be named after
    its repo in the reBEN organisation."""
    folder = Path(folder).resolve()
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        parts = folder.parent.parent.name.split("--")[1:]
        if len(parts) == 2:
            return "/".join(parts), folder.name
    return f"{ORGANISATION}/{folder.name}", None


def install_checkpoint(
    folder: Path,
    *,
    repo_id: str | None = None,
    revision: str = "main",
    commit: str | None = None,
    band_order_release: str | None = None,
    cache: Path | None = None,
) -> Path:
    """Check a downloaded ``config.json`` + ``model.safetensors`` and install them with their card.

    The weights load strictly before anything is written, so a wrong config or a truncated file is
    refused here, not on a worker half-way through a map. Result: ``<cache>/<org>/<name>/<revision>/
    model.safetensors`` with ``model.json`` (the card, sha256 included) beside it; returns the weights path.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RebenError(f"{folder} is not a folder; give the folder holding config.json and model.safetensors")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise RebenError(f"no model.safetensors in {folder} (found: {found}); only safetensors checkpoints are loaded")
    repo_id = repo_id or f"{ORGANISATION}/{folder.name}"
    if repo_id.count("/") != 1:
        raise RebenError(f"repo id {repo_id!r} is not ORGANISATION/NAME")
    config = read_config(folder / "config.json")
    name = repo_id.rsplit("/", 1)[-1]
    if re.search(r"-(s1|all)-", f"-{name}-"):  # say so before reading megabytes of weights
        check_modality(repo_id, int(config.get("channels", 0)))
    # The weights load strictly into the network the config describes before any card check, so a
    # config of another checkpoint is named as such (load_timm_weights compares channels first).
    arch = TimmArchitecture(model_name=str(config["timm_model_name"]), channels=int(config.get("channels") or 1),
                            image_size=int(config.get("image_size", 120)),
                            drop_rate=float(config.get("drop_rate", 0.0) or 0.0),
                            drop_path_rate=float(config.get("drop_path_rate", 0.0) or 0.0))
    load_timm_weights(TimmClassifier(arch, int(config.get("classes", len(REBEN_CLASSES)))),
                      load_reben_state(weights), what=f"the weights in {weights}")
    card = card_from_config(config, repo_id=repo_id, revision=revision, commit=commit,
                            band_order_release=band_order_release)
    dest = model_cache(cache) / repo_id / revision
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / "model.safetensors"
    atomic_copy(weights, final)
    card = card.model_copy(update={"sha256": sha256_file(final)})
    atomic_write_text(card_path(final), card.model_dump_json(indent=2) + "\n")
    return final
