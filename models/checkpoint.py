"""Checkpoint I/O: seed ``.pth`` state_dicts (never unpickling code), safetensors, cards, sha256.

Seed classifier checkpoints are plain state_dicts with ``sr_model.*`` and ``backbone.*`` keys,
sometimes behind DataParallel's ``module.`` prefix; seed SR checkpoints are a bare generator
state_dict. Both load strictly: a missing or unexpected key is an error, never a silent partial
load (except the documented SR-only case, where the classifier stays untrained).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from models.card import ModelCard, TrainingData, card_path
from models.classifier import SRClassifier
from models.files import atomic_write_text, sha256_file
from models.profiles import PROFILES, Profile, Variant, check_variant, get_profile
from models.tensors import (
    SAFETENSORS_SUFFIX,
    CheckpointError,
    StateDict,
    load_state_dict,
    safetensors_metadata,
    write_safetensors,
)


def strip_module_prefix(state: Mapping[str, Tensor]) -> StateDict:
    """Drop DataParallel/DDP ``module.`` prefixes (at the front of every key)."""
    out: StateDict = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        out[key] = value
    return out


def is_bare_sr(state: Mapping[str, Tensor]) -> bool:
    """True for a generator-only state_dict (the seed's published SR weights)."""
    return "conv_first.weight" in state and not any(k.startswith(("sr_model.", "backbone.")) for k in state)


def _count_indices(state: Mapping[str, Tensor], prefix: str) -> int:
    idx = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def infer_profile(state: Mapping[str, Tensor]) -> Profile:
    """The registered profile whose shapes a (prefix-stripped) state_dict has."""
    sr = {k[len("sr_model."):]: v for k, v in state.items() if k.startswith("sr_model.")}
    if is_bare_sr(state):
        sr = dict(state)
    found: dict[str, object] = {"super_resolution": bool(sr)}
    if sr:
        try:
            found |= {
                "nf": sr["conv_first.weight"].shape[0],
                "gc": sr["trunk_a.0.db1.conv1.weight"].shape[0] if "trunk_a.0.db1.conv1.weight" in sr else None,
                "n_rrdb": _count_indices(sr, "trunk_a."),
                "n_rrfdb": _count_indices(sr, "trunk_rfb."),
                "scale": 2 ** sum(1 for k in sr if k.startswith("upsample.") and k.endswith(".weight")),
            }
        except KeyError:
            raise CheckpointError("the SR weights lack conv_first: not an RFB-ESRGAN generator state_dict") from None
    if not is_bare_sr(state):
        if "backbone.fc.1.weight" not in state:
            raise CheckpointError(
                "weights have neither sr_model.*/backbone.* keys nor a bare generator (conv_first.*): "
                "not a checkpoint of this model family"
            )
        hidden, features = state["backbone.fc.1.weight"].shape
        blocks = [_count_indices(state, f"backbone.layer{i}.") for i in range(1, 5)]
        bottleneck = "backbone.layer1.0.conv3.weight" in state
        backbone = {(3, 4, 6, 3): "resnet50" if bottleneck else "resnet34", (2, 2, 2, 2): "resnet18"}.get(tuple(blocks))
        if backbone == "resnet18" and state["backbone.conv1.weight"].shape[0] == 32:
            backbone = "resnet18-half"
        found |= {"hidden": hidden, "backbone": backbone}
    for profile in PROFILES.values():
        if all(getattr(profile, k) == v for k, v in found.items()):
            return profile
    shape = ", ".join(f"{k}={v}" for k, v in found.items())
    raise CheckpointError(f"weights match no known profile ({shape}); pass the profile or save a model card with them")


def load_state_into(model: SRClassifier, state: Mapping[str, Tensor]) -> bool:
    """Load strictly; a bare SR state_dict fills only ``model.sr_model``. Returns True if SR-only."""
    state = strip_module_prefix(state)
    target = model.sr_model if is_bare_sr(state) else model
    if target is None:
        raise CheckpointError(f"profile {model.profile.name!r} has no SR generator to load SR-only weights into")
    result = target.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        missing, unexpected = result.missing_keys, result.unexpected_keys
        raise CheckpointError(
            f"weights do not fit profile {model.profile.name!r}: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}); check the profile"
        )
    return target is model.sr_model


def _shape_mismatch(e: RuntimeError, profile: str) -> CheckpointError:
    first = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e).splitlines()[0])
    return CheckpointError(f"weights do not fit profile {profile!r}: {first}")


def read_card(weights: str | os.PathLike[str]) -> ModelCard | None:
    path = card_path(weights)
    return ModelCard.read(path) if path.is_file() else None


def load_model(
    path: str | os.PathLike[str],
    *,
    profile: str | None = None,
    variant: str | None = None,
    device: str | torch.device = "cpu",
    card: ModelCard | None = None,
    sha256: str | None = None,
) -> tuple[SRClassifier, ModelCard]:
    """Build the model a weights file needs and load it strictly; read its card if there is one.

    Profile and variant come from the arguments, else the card, else the weights' shapes (and the
    profile's default variant; ``esrgan`` for a bare SR state_dict, which is how SR was trained).
    Without a card, one is made that says the provenance is unknown. ``card`` and ``sha256``: the
    card and the file's hash a caller already has (a map's workers get both from the client and
    hash the file once themselves), so neither is read or computed again.
    """
    card = card if card is not None else read_card(path)
    digest = (lambda: sha256) if sha256 else (lambda: sha256_file(path))
    if card is not None and card.family == "timm":
        return _load_timm(Path(path), card, device, digest)
    if card is not None and card.family == "per-pixel":
        return _load_per_pixel(Path(path), card, device, digest)
    state = strip_module_prefix(load_state_dict(path))
    # Without a card, what save_model recorded inside a safetensors file still names profile and variant.
    meta = safetensors_metadata(path) if card is None else {}
    profile = profile or (card.profile if card else meta.get("profile"))
    prof = get_profile(profile) if profile else infer_profile(state)
    sr_only = is_bare_sr(state)
    if variant is not None:
        var: Variant | None = check_variant(variant)
    elif card is not None and card.variant is not None:
        var = card.variant
    elif meta.get("variant"):
        var = check_variant(meta["variant"])
    else:
        var = "esrgan" if sr_only else prof.default_variant
    if card is not None and card.sha256 and card.sha256 != digest():
        raise CheckpointError(f"{path} does not match the sha256 in its model card {card_path(path)}; the weights changed")
    model = SRClassifier(prof, var if prof.super_resolution else None,
                         num_classes=len(card.classes) if card else _num_classes(state))
    try:
        load_state_into(model, state)
    except RuntimeError as e:
        raise _shape_mismatch(e, prof.name) from None
    if card is None:
        desc = "SR weights only; classifier untrained" if sr_only else "unknown (no model card beside the weights)"
        card = ModelCard.for_profile(prof.name, variant=var, training_data=TrainingData(description=desc),
                                     sha256=digest())
    else:
        card = card.model_copy(update={"profile": prof.name, "variant": var if prof.super_resolution else None})
    return model.to(device).eval(), card


def _load_timm(path: Path, card: ModelCard, device: str | torch.device, digest: Callable[[], str]):
    """A timm-family model (reBEN layout) as its card describes it; the card is required."""
    from models.reben import check_loads

    if card.sha256 and card.sha256 != digest():
        raise CheckpointError(f"{path} does not match the sha256 in its model card {card_path(path)}; the weights changed")
    return check_loads(card, path).to(device).eval(), card


def _load_per_pixel(path: Path, card: ModelCard, device: str | torch.device, digest: Callable[[], str]):
    """A per-pixel network as its card names it (today: Dynamic World's); the card is required."""
    from models.dynamicworld import load_network

    if card.sha256 and card.sha256 != digest():
        raise CheckpointError(f"{path} does not match the sha256 in its model card {card_path(path)}; the weights changed")
    return load_network(path, device=device), card


def _num_classes(state: Mapping[str, Tensor]) -> int:
    weight = state.get("backbone.fc.4.weight")
    return weight.shape[0] if weight is not None else len(ModelCard.for_profile("seed").classes)


def save_model(
    model: SRClassifier, card: ModelCard, path: str | os.PathLike[str], *, half: bool = False
) -> ModelCard:
    """Write weights as safetensors and the card beside them (sha256 filled in); returns that card.

    ``half`` stores floating-point tensors as float16: half the file for weights that are only
    used for inference (loading copies them back into the float32 model).
    """
    path = Path(path)
    if path.suffix != SAFETENSORS_SUFFIX:
        raise CheckpointError(f"save weights as {SAFETENSORS_SUFFIX}, not {path.suffix or 'no suffix'}: {path}")
    if not path.parent.is_dir():
        raise CheckpointError(f"directory does not exist: {path.parent}")
    meta = {"profile": card.profile, "variant": card.variant or "", "format": "landcover-sr-classifier"}
    state = model.state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    write_safetensors(state, path, metadata=meta)
    card = card.model_copy(update={"sha256": sha256_file(path)})
    text = card.model_dump_json(indent=2)
    atomic_write_text(card_path(path), text + "\n")
    return card
