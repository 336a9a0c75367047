"""The seed's preprocessing: reflectance -> uint8 -> 32 px bicubic -> [-1, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.preprocess import (
    PatchError,
    from_model_output,
    preprocess_reflectance,
    reflectance_to_uint8,
    resize_windows,
    to_model_input,
)


def test_reflectance_is_clipped_scaled_and_truncated_like_the_seed():
    refl = np.array([-0.2, 0.0, 0.5, 0.999, 1.0, 1.7, np.nan], dtype=np.float32)
    rgb = np.broadcast_to(refl, (1, 3, 1, refl.size)).copy()
    out = reflectance_to_uint8(rgb)
    assert out.dtype == np.uint8
    # 0.5 * 255 = 127.5 -> 127 and 0.999 * 255 = 254.7 -> 254: truncation, as astype(uint8) did
    assert out[0, 0, 0].tolist() == [0, 0, 127, 254, 255, 255, 0]


def test_seed_formula_matches_on_l2a_digital_numbers():
    dn = np.random.default_rng(0).integers(0, 12000, size=(2, 3, 8, 8))
    seed = np.clip(dn / 10000.0 * 255, 0, 255).astype(np.uint8)  # the seed's load_rgb_from_tif
    assert np.array_equal(reflectance_to_uint8((dn / 10000.0).astype(np.float32)), seed)


def test_resize_of_a_uniform_window_keeps_its_value():
    windows = np.full((2, 3, 120, 120), 77, dtype=np.uint8)
    out = resize_windows(windows)
    assert out.shape == (2, 3, 32, 32) and out.dtype == np.uint8
    assert (out == 77).all()


def test_resize_averages_the_window_like_pils_bicubic():
    # Antialiased bicubic: fine stripes average out (a plain bicubic would alias them).
    rng = np.random.default_rng(1)
    window = rng.integers(0, 256, size=(120, 120, 3), dtype=np.uint8)
    ours = resize_windows(window.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0).astype(int)
    pil = np.asarray(Image.fromarray(window).resize((32, 32), Image.BICUBIC)).astype(int)
    assert np.abs(ours - pil).mean() < 0.5  # measured 0.11; without antialiasing it is ~49
    assert np.abs(ours - pil).max() <= 2


def test_resize_keeps_torch_as_torch_and_patch_sized_input_unchanged():
    t = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    assert resize_windows(t) is t
    assert isinstance(resize_windows(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)), torch.Tensor)


def test_model_input_spans_minus_one_to_one():
    patches = np.array([0, 51, 255], dtype=np.uint8).reshape(1, 1, 1, 3).repeat(3, axis=1)
    x = to_model_input(patches)
    assert x.dtype == torch.float32
    assert torch.allclose(x[0, 0, 0], torch.tensor([-1.0, -0.6, 1.0]))
    assert np.array_equal(from_model_output(x), patches)


def test_the_whole_chain_on_reflectance_windows():
    x = preprocess_reflectance(np.full((4, 3, 120, 120), 0.2, dtype=np.float32))
    assert x.shape == (4, 3, 32, 32)
    assert torch.allclose(x, torch.full_like(x, 51 / 255 * 2 - 1))


@pytest.mark.parametrize(
    ("fn", "array", "match"),
    [
        (reflectance_to_uint8, np.zeros((3, 120, 120), np.float32), r"\(N, 3, H, W\)"),
        (resize_windows, np.zeros((1, 4, 120, 120), np.uint8), r"\(N, 3, H, W\)"),
        (resize_windows, np.zeros((1, 3, 120, 120), np.float32), "uint8"),
        (to_model_input, np.zeros((1, 3, 32, 32), np.float32), "uint8"),
    ],
)
def test_bad_arrays_are_named_in_the_error(fn, array, match):
    with pytest.raises(PatchError, match=match):
        fn(array)
