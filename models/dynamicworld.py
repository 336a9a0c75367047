"""Dynamic World's published forward network (Google / WRI, Apache-2.0) in PyTorch, read without TensorFlow.

Source: github.com/google/dynamicworld, ``model/forward`` (a TF2 Keras SavedModel; Brown et al. 2022,
Sci. Data, doi:10.1038/s41597-022-01307-4). A per-pixel network: 9 Sentinel-2 L1C TOA bands in, 9
class logits per pixel out, at the input's height and width.

The architecture below was read once from the Keras config inside ``saved_model.pb`` (model
``functional_1``) and the ops of its traced graph; it is fixed, so it is written out here and the
import checks every variable against it by name and shape. In the graph's order:

- stem at full resolution: ``conv2d`` 3x3 (9 -> 64, SAME) -> ``batch_normalization`` -> Mish;
- one antialiased downsample to ``(H // 2, W // 2)``: ``tf.image.resize(antialias=True)`` =
  ``ScaleAndTranslate`` with a triangle kernel widened by the scale (:func:`resize_taps`);
- three branches on the downsampled stem: ``block_a`` (1x1 64 -> 96, then three depthwise 3x3 /
  pointwise pairs) plus the 1x1 shortcut ``conv2d_5``; ``block_b`` (96 -> 144, same shape) plus
  shortcut ``conv2d_9``; a side branch ``conv2d_1`` (1x1 64 -> 48) + ``depthwise_conv2d``;
- ``concat`` of block_b (144) and the side branch (48), ``block_c`` (192 -> 144) plus shortcut
  ``conv2d_13``;
- one bilinear upsample back to ``(H, W)``: ``ResizeBilinear(half_pixel_centers=True)``;
- an L2 normalisation over channels (``x * rsqrt(max(sum(x^2), 1e-12))``) and ``conv2d_14`` 1x1
  (144 -> 9): the logits (the published notebook applies softmax afterwards).

Every conv and depthwise conv has a bias and is followed by batch norm (epsilon 1e-3) and Mish
(``x * tanh(softplus(x))``, written as three TF ops in the graph), except ``conv2d_14``.
Because of the /2 resize, odd sizes change the output: ``floor(H / 2)`` rows are sampled with
the exact scale ``floor(H / 2) / H``, as TensorFlow does.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.card import (
    Citation,
    DynamicWorldNormalisation,
    ModelCard,
    ModelSource,
    PixelNetwork,
    TrainingData,
    card_path,
    model_cache,
)
from models.errors import LandcoverError
from models.files import atomic_write, atomic_write_text, sha256_file
from models.legend import Legend
from models.tfbundle import BundleError, read_savedmodel_variables

NAME = "dynamicworld"
SOURCE_REPOSITORY = "https://github.com/google/dynamicworld"
PAPER = "Brown et al. 2022, Dynamic World, Near real-time global 10 m land use land cover mapping, Sci. Data 9, 251"
PAPER_DOI = "10.1038/s41597-022-01307-4"
LICENCE = "Apache-2.0"
PROCESSING_LEVEL = "L1C"  # top-of-atmosphere: GEE COPERNICUS/S2, DN = 10000 x reflectance
WEIGHTS_FILE = "model.safetensors"

# Input bands in the network's order (the upstream notebook), as Sentinel-2 band ids and as the
# project's common names (models.bands.BAND_IDS). There is no B1, B8A, B9 or B10.
BAND_IDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
BANDS: tuple[str, ...] = ("blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "swir16", "swir22")
# Per-band (shift, divisor) applied after log(DN * 0.005 + 1): the notebook's "30/70 percentiles"
# table, used as written (the code divides by the second column, not by a difference).
NORM_PERCENTILES: tuple[tuple[float, float], ...] = (
    (1.7417268007636313, 2.023298706048351), (1.7261204997060209, 2.038905204308012),
    (1.6798346251414997, 2.179592821212937), (1.7734969472909623, 2.2890068333026603),
    (2.289154079164943, 2.6171674549378166), (2.382939712192371, 2.773418590375327),
    (2.3828939530384052, 2.7578332604178284), (2.1952484264967844, 2.789092484314204),
    (1.554812948247501, 2.4140534947492487),
)
# Output channels in order (GEE GOOGLE/DYNAMICWORLD/V1 band order) with Dynamic World's palette.
CLASSES: tuple[str, ...] = (
    "water", "trees", "grass", "flooded_vegetation", "crops", "shrub_and_scrub", "built", "bare", "snow_and_ice",
)
PALETTE: dict[str, str] = {
    "water": "#419BDF", "trees": "#397D49", "grass": "#88B053", "flooded_vegetation": "#7A87C6", "crops": "#E49635",
    "shrub_and_scrub": "#DFC35A", "built": "#C4281B", "bare": "#A59B8F", "snow_and_ice": "#B39FE1",
}
IN_CHANNELS = len(BANDS)
NUM_CLASSES = len(CLASSES)
BN_EPSILON = 1e-3  # Keras BatchNormalization default, as in the graph's FusedBatchNormV3
L2_EPSILON = 1e-12  # tf.math.l2_normalize: the Maximum constant in the graph

# name -> (kind, in channels, out channels, kernel size): every layer that holds variables.
# "conv" = Conv2D with bias; "dw" = DepthwiseConv2D (multiplier 1) with bias; "bn" = BatchNormalization.
_Layer = tuple[str, int, int, int]


def _unit(conv: str, bn: str, kind: str, cin: int, cout: int, k: int) -> dict[str, _Layer]:
    return {conv: (kind, cin, cout, k), bn: ("bn", cout, cout, 1)}


def _block(first: int, bn: int, dws: tuple[int, int, int], cin: int, cout: int) -> dict[str, _Layer]:
    """Three pointwise/depthwise pairs (1x1 conv_i -> 3x3 dw), as block_a/b/c are laid out."""
    layers: dict[str, _Layer] = {}
    for j, dw in enumerate(dws):
        layers |= _unit(f"conv2d_{first + j}", f"batch_normalization_{bn + 2 * j}", "conv", cin if j == 0 else cout, cout, 1)
        layers |= _unit(f"depthwise_conv2d_{dw}", f"batch_normalization_{bn + 2 * j + 1}", "dw", cout, cout, 3)
    return layers


ARCHITECTURE: dict[str, _Layer] = {
    **_unit("conv2d", "batch_normalization", "conv", IN_CHANNELS, 64, 3),
    **_unit("conv2d_1", "batch_normalization_1", "conv", 64, 48, 1),
    **_unit("depthwise_conv2d", "batch_normalization_2", "dw", 48, 48, 3),
    **_block(2, 3, (1, 2, 3), 64, 96),
    **_unit("conv2d_5", "batch_normalization_9", "conv", 64, 96, 1),
    **_block(6, 10, (4, 5, 6), 96, 144),
    **_unit("conv2d_9", "batch_normalization_16", "conv", 96, 144, 1),
    **_block(10, 17, (7, 8, 9), 144 + 48, 144),
    **_unit("conv2d_13", "batch_normalization_23", "conv", 144 + 48, 144, 1),
    "conv2d_14": ("conv", 144, NUM_CLASSES, 1),
}
# _block numbers its pointwise convs consecutively: block_a = conv2d_2..4, block_b = conv2d_6..8,
# block_c = conv2d_10..12, matching the SavedModel's names.


class DynamicWorldError(LandcoverError):
    """The Dynamic World SavedModel, its weights or its input cannot be used."""


# --- the variables: TensorFlow names and shapes <-> PyTorch state dict --------------------------

def expected_variables() -> dict[str, tuple[int, ...]]:
    """{TensorFlow variable name: shape} the architecture needs (HWIO kernels, as Keras stores them)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, (kind, cin, cout, k) in ARCHITECTURE.items():
        if kind == "conv":
            out |= {f"{name}/kernel": (k, k, cin, cout), f"{name}/bias": (cout,)}
        elif kind == "dw":
            out |= {f"{name}/depthwise_kernel": (k, k, cin, 1), f"{name}/bias": (cout,)}
        else:
            out |= {f"{name}/{v}": (cout,) for v in ("gamma", "beta", "moving_mean", "moving_variance")}
    return out


def check_variables(variables: Mapping[str, np.ndarray]) -> None:
    """Refuse, naming the first offending variable, unless the names and shapes are exactly the architecture's."""
    expected = expected_variables()
    for name in sorted(expected):
        if name not in variables:
            raise DynamicWorldError(f"Dynamic World variable {name} is missing from the SavedModel")
        shape = tuple(np.shape(variables[name]))
        if shape != expected[name]:
            raise DynamicWorldError(f"Dynamic World variable {name} has shape {shape}, expected {expected[name]}")
    extra = sorted(set(variables) - set(expected))
    if extra:
        raise DynamicWorldError(f"unexpected variable {extra[0]} in the Dynamic World SavedModel (not this architecture)")


_BN_KEYS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def state_dict_from_variables(variables: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
    """Checked TF variables -> this module's state dict: kernels HWIO -> OIHW (depthwise HW,C,1 -> C,1,H,W)."""
    check_variables(variables)
    state: dict[str, Tensor] = {}
    for tf_name, array in variables.items():
        layer, var = tf_name.split("/")
        kind = ARCHITECTURE[layer][0]
        if var == "kernel":
            key, value = "weight", array.transpose(3, 2, 0, 1)
        elif var == "depthwise_kernel":
            key, value = "weight", array.transpose(2, 3, 0, 1)
        elif kind == "bn":
            key, value = _BN_KEYS[var], array
        else:
            key, value = var, array
        state[f"{layer}.{key}"] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return state


# --- resampling exactly as TensorFlow ------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def resize_taps(in_size: int, out_size: int, *, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (out_size, taps) and weights (out_size, taps) of a 1-D resize, TF's way.

    ``antialias=True``: ``tf.image.resize(method="bilinear", antialias=True)`` = ScaleAndTranslate
    with a triangle kernel of radius 1 widened by 1/scale when shrinking (a low-pass filter), output
    pixel centres mapped with half-pixel offsets, weights normalised over the span that lies inside
    the image (scale_and_translate_op.cc). ``antialias=False``: ``ResizeBilinear`` with
    ``half_pixel_centers=True`` (two taps, edge pixels repeated; image_resizer_state.h). Arithmetic
    in float32 as TF does; unused taps have weight 0 and a valid index. Cached, so read-only.
    """
    f32 = np.float32
    if antialias:
        scale = f32(out_size) / f32(in_size)
        inv_scale = f32(1.0 / float(scale))
        kernel_scale = max(inv_scale, f32(1.0))
        span = min(2 * int(np.ceil(kernel_scale)) + 1, in_size)
        index = np.zeros((out_size, span), np.int64)
        weight = np.zeros((out_size, span), np.float32)
        for x in range(out_size):
            sample = (f32(x) + f32(0.5)) * inv_scale
            start = min(max(int(np.ceil(sample - kernel_scale - f32(0.5))), 0), in_size - 1)
            end = min(max(int(np.floor(sample + kernel_scale - f32(0.5))), 0), in_size - 1) + 1
            sources = np.arange(start, end)
            w = np.maximum(f32(1.0) - np.abs((sources.astype(f32) + f32(0.5) - sample) * (f32(1.0) / kernel_scale)), f32(0.0))
            index[x, : end - start], index[x, end - start:] = sources, start
            weight[x, : end - start] = w * (f32(1.0) / w.sum(dtype=f32))
        return _frozen(index), _frozen(weight)
    scale = f32(in_size) / f32(out_size)
    position = (np.arange(out_size, dtype=f32) + f32(0.5)) * scale - f32(0.5)
    below = np.floor(position)
    lower = np.maximum(below.astype(np.int64), 0)
    upper = np.minimum(np.ceil(position).astype(np.int64), in_size - 1)
    lerp = (position - below).astype(f32)
    return _frozen(np.stack([lower, upper], 1)), _frozen(np.stack([f32(1.0) - lerp, lerp], 1))


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


_CHUNK = 64  # output positions per matrix product


def _resample_axis(x: Tensor, dim: int, index: np.ndarray, weight: np.ndarray) -> Tensor:
    """Apply 1-D taps along ``dim`` (2 or 3) as small dense matrix products, one per chunk of output
    positions over just the input window that chunk's taps touch: the work per output pixel stays
    bounded at any image size (one whole-axis matrix would grow with it), and matrix products run
    far faster than per-tap gathers (measured ~70x on CPU at 64 px)."""
    parts = []
    for start in range(0, index.shape[0], _CHUNK):
        idx, w = index[start:start + _CHUNK], weight[start:start + _CHUNK]
        lo, hi = int(idx.min()), int(idx.max()) + 1
        matrix = np.zeros((idx.shape[0], hi - lo), np.float32)
        np.add.at(matrix, (np.arange(idx.shape[0])[:, None], idx - lo), w)  # padding taps add 0
        m = torch.from_numpy(matrix).to(device=x.device, dtype=x.dtype)
        parts.append(m @ x[..., lo:hi, :] if dim == 2 else x[..., lo:hi] @ m.T)
    return torch.cat(parts, dim)


def tf_resize(x: Tensor, size: tuple[int, int], *, antialias: bool) -> Tensor:
    """Resize an NCHW tensor as ``tf.image.resize`` (bilinear) does on NHWC; see :func:`resize_taps`."""
    height, width = x.shape[-2:]
    x = _resample_axis(x, 2, *resize_taps(height, size[0], antialias=antialias))
    return _resample_axis(x, 3, *resize_taps(width, size[1], antialias=antialias))


# --- the network ---------------------------------------------------------------------------------

class _BatchNorm(nn.Module):
    """Inference batch norm with the published statistics, ``(x - mean) * rsqrt(var + eps) * gamma + beta``
    (FusedBatchNormV3 in inference mode). Buffers, not parameters: this port is for mapping."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        for name, init in (("weight", torch.ones), ("bias", torch.zeros),
                           ("running_mean", torch.zeros), ("running_var", torch.ones)):
            self.register_buffer(name, init(channels))

    def scale_shift(self) -> tuple[Tensor, Tensor]:
        """Per-channel ``(scale, shift)`` with ``bn(x) = x * scale + shift``."""
        scale = self.weight * torch.rsqrt(self.running_var + BN_EPSILON)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.scale_shift()
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def _layer(kind: str, cin: int, cout: int, k: int) -> nn.Module:
    if kind == "bn":
        return _BatchNorm(cout)
    groups = cin if kind == "dw" else 1
    return nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups)  # SAME with stride 1 and odd k: symmetric


class DynamicWorldNet(nn.Module):
    """The forward network: normalised (N, 9, H, W) float32 -> (N, 9, H, W) logits; H, W >= 2.

    Submodules carry the SavedModel's layer names, so each weight's origin reads off its key."""

    def __init__(self) -> None:
        super().__init__()
        for name, spec in ARCHITECTURE.items():
            self.add_module(name, _layer(*spec))

    def _unit(self, x: Tensor, layer: str, bn: str) -> Tensor:
        """conv -> batch norm -> Mish, the norm folded into the conv's weights and bias (one pass
        over the activations instead of three; the same function up to float rounding)."""
        conv, norm = self.get_submodule(layer), self.get_submodule(bn)
        scale, shift = norm.scale_shift()
        weight, bias = conv.weight * scale.view(-1, 1, 1, 1), conv.bias * scale + shift
        return F.mish(F.conv2d(x, weight, bias, padding=conv.padding, groups=conv.groups))

    def _block(self, x: Tensor, first: int, bn: int, dws: tuple[int, int, int]) -> Tensor:
        for j, dw in enumerate(dws):
            x = self._unit(x, f"conv2d_{first + j}", f"batch_normalization_{bn + 2 * j}")
            x = self._unit(x, f"depthwise_conv2d_{dw}", f"batch_normalization_{bn + 2 * j + 1}")
        return x

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if height < 2 or width < 2:
            raise DynamicWorldError(f"Dynamic World needs at least 2 x 2 pixels (it halves the grid once); got {height} x {width}")
        if x.device.type == "cpu":  # oneDNN's (depthwise) convs: ~1.5x faster channels-last, measured at 64 px
            x = x.contiguous(memory_format=torch.channels_last)
        stem = self._unit(x, "conv2d", "batch_normalization")
        low = tf_resize(stem, (height // 2, width // 2), antialias=True)  # tf.cast(shape / 2, int32): floor
        a = self._block(low, 2, 3, (1, 2, 3)) + self._unit(low, "conv2d_5", "batch_normalization_9")
        b = self._block(a, 6, 10, (4, 5, 6)) + self._unit(a, "conv2d_9", "batch_normalization_16")
        side = self._unit(self._unit(low, "conv2d_1", "batch_normalization_1"), "depthwise_conv2d", "batch_normalization_2")
        joined = torch.cat([b, side], dim=1)
        c = self._block(joined, 10, 17, (7, 8, 9)) + self._unit(joined, "conv2d_13", "batch_normalization_23")
        up = tf_resize(c, (height, width), antialias=False)
        up = up * torch.rsqrt(torch.clamp(up.square().sum(1, keepdim=True), min=L2_EPSILON))
        return self.conv2d_14(up)


def build_network() -> DynamicWorldNet:
    """The architecture, untrained (PyTorch's default conv init, identity batch norms), in eval mode."""
    return DynamicWorldNet().eval()


# --- input ---------------------------------------------------------------------------------------

def normalise_dn(dn: np.ndarray, percentiles: Sequence[Sequence[float]] = NORM_PERCENTILES) -> np.ndarray:
    """L1C DN (10000 x TOA reflectance) in :data:`BANDS` order, (9, H, W) or (N, 9, H, W) -> network
    input, float32: ``x = log(DN * 0.005 + 1); x = (x - P0) / P1; x = exp(5x - 1); x / (x + 1)``
    (the upstream notebook), computed in float64. DN below -200 has no logarithm and gives NaN.
    ``percentiles``: the (P0, P1) pair of each band (a model card's; default the notebook's)."""
    dn = np.asarray(dn)
    if dn.ndim not in (3, 4) or dn.shape[-3] != len(percentiles):
        raise DynamicWorldError(f"Dynamic World input must be (9, H, W) or (N, 9, H, W) DN in band order "
                                f"{', '.join(BAND_IDS)}; got shape {dn.shape}")
    p = np.asarray(percentiles, dtype=np.float64)
    shift, divisor = p[:, 0].reshape(-1, 1, 1), p[:, 1].reshape(-1, 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (np.log(dn.astype(np.float64) * 0.005 + 1) - shift) / divisor
        x = np.exp(x * 5 - 1)
        return (x / (x + 1)).astype(np.float32)


# --- import from the SavedModel -------------------------------------------------------------------

def forward_folder(folder: str | os.PathLike[str]) -> Path:
    """``model/forward`` itself, or the repository (or ``model``) folder that contains it."""
    folder = Path(folder)
    for candidate in (folder, folder / "forward", folder / "model" / "forward"):
        if (candidate / "saved_model.pb").is_file():
            return candidate
    raise DynamicWorldError(f"no Dynamic World SavedModel in {folder}: expected model/forward/saved_model.pb (clone {SOURCE_REPOSITORY})")


def load_savedmodel_weights(folder: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The checked state dict of :class:`DynamicWorldNet` from the SavedModel's variables, without TensorFlow."""
    try:
        variables = read_savedmodel_variables(forward_folder(folder))
    except BundleError as e:
        raise DynamicWorldError(f"cannot read the Dynamic World weights: {e}") from e
    return state_dict_from_variables(variables)


def git_commit(repository: Path) -> str | None:
    """The checked-out commit of a git clone, read from ``.git`` without git (None when there is none)."""
    git = repository / ".git"
    if git.is_file():  # a worktree or submodule: "gitdir: <path>"
        git = (repository / git.read_text().split(":", 1)[1].strip()).resolve()
    head_file = git / "HEAD"
    if not head_file.is_file():
        return None
    head = head_file.read_text().strip()
    if not head.startswith("ref:"):
        return head
    ref = head.split(":", 1)[1].strip()
    if (git / ref).is_file():
        return (git / ref).read_text().strip()
    packed = git / "packed-refs"
    for line in packed.read_text().splitlines() if packed.is_file() else []:
        if line.endswith(f" {ref}"):
            return line.split()[0]
    return None


REPO_ID = "google/dynamicworld"  # where `landcover model import` installs it in the model cache
# Context per block side, a multiple of 2: blocks 32 px apart then agree within 1e-4 in probability
# (tests/pipeline/test_pixel_map.py measures the seam).
HALO_PX = 32


def legend() -> Legend:
    """Dynamic World's 9 classes with its palette, coded 1..9 (its label band's 0..8 plus 1: 0 is no data here)."""
    return Legend.from_names(CLASSES, [PALETTE[c] for c in CLASSES], title="Dynamic World V1 classes")


def model_card(notice: str, commit: str | None, weights_sha256: str, files_sha256: dict[str, str]) -> ModelCard:
    """The card of the imported weights: the per-pixel family, bands, normalisation, legend and provenance."""
    return ModelCard(
        family="per-pixel",
        profile=NAME,
        task="single-label",
        legend=legend(),
        pixel=PixelNetwork(network="dynamicworld", resolution_m=10.0, size_multiple=2, halo_px=HALO_PX),
        processing_level=PROCESSING_LEVEL,
        bands=list(BANDS),
        # The notebook reprojects every band bilinearly onto B2's 10 m grid.
        resampling="bilinear",
        normalisation=DynamicWorldNormalisation(percentiles=[tuple(p) for p in NORM_PERCENTILES]),
        patch_size=1, window_px=1, ground_footprint_m=10.0,
        training_data=TrainingData(description="Dynamic World training set: annotated Sentinel-2 L1C tiles "
                                               "(Brown et al. 2022)"),
        source=ModelSource(repo_id=REPO_ID, revision=commit or "unknown", commit=commit, url=SOURCE_REPOSITORY,
                           licence=LICENCE),
        licence=LICENCE,
        notice=notice,
        citation=Citation(text=PAPER, doi=PAPER_DOI),
        metrics={"parameters": sum(int(np.prod(s)) for s in expected_variables().values()),
                 **{f"source_sha256:{k}": v for k, v in files_sha256.items()}},
        sha256=weights_sha256,
    )


def import_dynamicworld(folder: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, revision: str | None = None) -> Path:
    """Convert the SavedModel to ``out_dir/model.safetensors`` with its model card ``model.json``
    beside it; returns the weights' path.

    ``folder``: the clone of google/dynamicworld or its ``model/forward``. The commit comes from the
    clone's ``.git`` when it has one, else from ``revision`` (None when neither says). The NOTICE
    that the licence requires to travel with the work is read from two levels above model/forward.
    """
    forward = forward_folder(folder)
    notice_file = forward.parents[1] / "NOTICE"
    if not notice_file.is_file():
        raise DynamicWorldError(f"Dynamic World's NOTICE is missing at {notice_file}: "
                                "its Apache-2.0 attribution must travel with the weights")
    state = load_savedmodel_weights(forward)
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise DynamicWorldError(f"output folder does not exist: {out_dir}")
    from safetensors.torch import save_file

    weights = out_dir / WEIGHTS_FILE
    atomic_write(weights, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt", "model": NAME}))
    commit = git_commit(forward.parents[1]) or revision
    files = {str(p.relative_to(forward)): sha256_file(p)
             for p in (forward / "saved_model.pb", *sorted((forward / "variables").glob("variables.*")))}
    card = model_card(notice_file.read_text(encoding="utf-8").strip(), commit, sha256_file(weights), files)
    atomic_write_text(card_path(weights), card.model_dump_json(indent=1) + "\n")
    return weights


def is_savedmodel_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` is Dynamic World's SavedModel (model/forward, or a folder above it)."""
    try:
        forward_folder(folder)
    except DynamicWorldError:
        return False
    return True


def install(folder: str | os.PathLike[str], *, revision: str | None = None, cache: Path | None = None) -> Path:
    """Import into the model cache as ``<cache>/google/dynamicworld/main/model.safetensors`` with its
    card, so ``landcover map --model google/dynamicworld`` finds it; returns the weights' path."""
    dest = model_cache(cache) / REPO_ID / "main"
    dest.mkdir(parents=True, exist_ok=True)
    return import_dynamicworld(folder, dest, revision=revision)


def load_network(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> DynamicWorldNet:
    """The network with weights from an imported ``model.safetensors`` (no pickle), in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise DynamicWorldError(f"no Dynamic World weights at {path}; import them first from a clone of {SOURCE_REPOSITORY}")
    state = load_file(str(path))
    model = build_network()
    wanted = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    missing, unexpected = sorted(wanted.keys() - state.keys()), sorted(state.keys() - wanted.keys())
    if missing or unexpected:
        which = f"missing tensor {missing[0]}" if missing else f"unexpected tensor {unexpected[0]}"
        raise DynamicWorldError(f"{path} is not Dynamic World weights: {which}")
    for key in sorted(wanted):
        if tuple(state[key].shape) != wanted[key]:
            raise DynamicWorldError(f"{path} is not Dynamic World weights: tensor {key} has shape {tuple(state[key].shape)}, expected {wanted[key]}")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
