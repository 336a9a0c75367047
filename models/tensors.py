"""Reading and writing files of named tensors (state_dicts): safetensors, and torch files without pickled code.

The bottom of the weights I/O: it knows nothing of which network a state_dict belongs to, so both
model families (models.checkpoint for the seed's SR classifier, models.reben for the timm family)
read and write their weights through here.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from models.errors import LandcoverError
from models.files import atomic_write

StateDict = dict[str, Tensor]
SAFETENSORS_SUFFIX = ".safetensors"
# Wrappers some training scripts put around the state_dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")


class CheckpointError(LandcoverError):
    """A weights file cannot be read, is unsafe, or does not fit the model."""


def load_state_dict(path: str | os.PathLike[str]) -> StateDict:
    """Tensors of a ``.safetensors`` or torch (``.pth``/``.pt``) file, on CPU, never running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.suffix == SAFETENSORS_SUFFIX:
        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):  # corruption, not a refused class or function
            raise CheckpointError(f"{path} is not a readable torch checkpoint (corrupt, truncated or another format)") from None
        raise CheckpointError(
            f"{path} holds pickled code, which is never run: save a plain state_dict "
            f"(torch.save(model.state_dict(), ...)) or safetensors instead"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({str(e).splitlines()[0]})") from None
    return _tensors_only(_unwrap(obj), path)


def _unwrap(obj: object) -> object:
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return obj[key]
    return obj


def _tensors_only(obj: object, path: Path) -> StateDict:
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path} holds non-tensor entries ({', '.join(map(str, bad[:3]))}); save a plain state_dict")
    return dict(obj)


def safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file ({} for other formats)."""
    if Path(path).suffix != SAFETENSORS_SUFFIX:
        return {}
    with safe_open(path, framework="pt") as f:
        return dict(f.metadata() or {})


def write_safetensors(state: Mapping[str, Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> None:
    """Write CPU copies of ``state`` as safetensors, atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
