"""The generator and classifier load the seed's published state_dict layout exactly.

The reference modules below are built from the layout as issue 3 documents it (names, Sequential
indices, shapes), independently of ``models.sr``; a state_dict saved from them must load strictly.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet50

from models.checkpoint import load_state_into
from models.classifier import SRClassifier, count_parameters
from models.profiles import get_profile
from models.sr import Generator


def reference_seed_generator(nf: int = 64, gc: int = 32, n_rrdb: int = 12, n_rrfdb: int = 6) -> nn.Module:
    def conv(cin: int, cout: int, k: int, dilation: int = 1) -> nn.Conv2d:
        return nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation)

    def dense_block() -> nn.Module:
        return nn.ModuleDict({f"conv{k}": conv(nf + (k - 1) * gc, gc if k < 5 else nf, 3) for k in range(1, 6)})

    def rfb() -> nn.Module:
        block = nn.Module()
        for k, (width, pool) in enumerate([(16, 3), (24, 5), (24, 7)], start=1):
            setattr(block, f"branch{k}", nn.Sequential(
                nn.AvgPool2d(pool, 1, pool // 2), conv(nf, width, 1), nn.ReLU(), conv(width, width, 3, dilation=k), nn.ReLU()
            ))
        block.conv_concat = nn.Sequential(conv(nf, nf, 1))
        return block

    g = nn.Module()
    g.conv_first = conv(3, nf, 3)
    g.trunk_a = nn.Sequential(*(nn.ModuleDict({f"db{k}": dense_block() for k in (1, 2, 3)}) for _ in range(n_rrdb)))
    g.trunk_rfb = nn.Sequential(*(nn.ModuleDict({f"rfb{k}": rfb() for k in range(1, 6)}) for _ in range(n_rrfdb)))
    g.rfb_up = rfb()
    g.upsample = nn.Sequential(*[m for _ in range(3) for m in (conv(nf, 4 * nf, 3), nn.PixelShuffle(2), nn.LeakyReLU(0.2))])
    g.conv_final = nn.Sequential(conv(nf, nf, 3), nn.LeakyReLU(0.2), conv(nf, 3, 3))
    return g


def reference_seed_classifier() -> nn.Module:
    clf = nn.Module()
    clf.sr_model = reference_seed_generator()
    clf.backbone = resnet50(weights=None)
    clf.backbone.fc = nn.Sequential(nn.Dropout(0.4), nn.Linear(2048, 512), nn.ReLU(), nn.Dropout(0.3), nn.Linear(512, 19))
    return clf


@pytest.fixture(scope="module")
def seed_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return reference_seed_classifier().state_dict()


@pytest.mark.parametrize("prefix", ["", "module."])
def test_seed_classifier_state_dict_loads_strictly_with_or_without_dataparallel_prefix(seed_state, prefix):
    model = SRClassifier(get_profile("seed"))
    sr_only = load_state_into(model, {prefix + k: v for k, v in seed_state.items()})
    assert not sr_only
    ours = model.state_dict()
    assert set(ours) == set(seed_state)
    assert all(torch.equal(ours[k], seed_state[k]) for k in seed_state)


def test_bare_seed_sr_state_dict_loads_strictly_into_the_generator_only(seed_state):
    bare = {k.removeprefix("sr_model."): v for k, v in seed_state.items() if k.startswith("sr_model.")}
    model = SRClassifier(get_profile("seed"))
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    assert load_state_into(model, bare)
    Generator().load_state_dict(bare, strict=True)  # also loads into a plain generator
    assert all(torch.equal(model.sr_model.state_dict()[k], v) for k, v in bare.items())
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in backbone_before.items())


def test_seed_parameter_counts_match_the_published_model():
    counts = count_parameters(SRClassifier(get_profile("seed")))
    assert counts["sr"] == sum(p.numel() for p in reference_seed_generator().parameters())
    assert 9.7e6 < counts["sr"] < 9.8e6  # the seed notebook reports 9.77 M
    assert counts["head"] == 2048 * 512 + 512 + 512 * 19 + 19


@pytest.fixture(scope="module")
def seed_generator(seed_state) -> Generator:
    g = Generator()
    g.load_state_dict({k.removeprefix("sr_model."): v for k, v in seed_state.items() if k.startswith("sr_model.")})
    return g.eval()


def test_seed_generator_upscales_32_to_256_within_tanh_range(seed_generator):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        y = seed_generator(x)
    assert y.shape == (2, 3, 256, 256)
    assert y.min() >= -1 and y.max() <= 1


def test_the_two_variants_differ_on_the_same_weights(seed_generator):
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        seed_generator.variant = "esrgan"
        esrgan = seed_generator(x)
        seed_generator.variant = "seed-classifier"
        classifier = seed_generator(x)
        seed_generator.variant = "esrgan"
        again = seed_generator(x)
    assert (esrgan - classifier).abs().max() > 1e-3
    assert torch.equal(esrgan, again)  # switching variant never touches the weights


def test_variant_sets_every_activation_and_rfb_mode():
    g = Generator(nf=8, gc=8, n_rrdb=1, n_rrfdb=1, variant="seed-classifier")
    kinds = {m.kind for m in g.modules() if type(m).__name__ == "Act"}
    residual = {m.residual for m in g.modules() if type(m).__name__ == "RFB"}
    assert kinds == {"relu"} and residual == {True}
    g.variant = "esrgan"
    kinds = {m.kind for m in g.modules() if type(m).__name__ == "Act"}
    residual = {m.residual for m in g.modules() if type(m).__name__ == "RFB"}
    assert kinds == {"lrelu"} and residual == {False}


@pytest.mark.parametrize("profile", ["tiny", "small", "small-nosr", "compact-nosr"])
def test_small_profiles_produce_logits_and_embeddings(profile):
    p = get_profile(profile)
    model = SRClassifier(p).eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        logits, embedding = model.forward_features(x)
        sr = model.super_resolve(x)
    assert logits.shape == (3, 19)
    assert embedding.shape == (3, p.hidden)
    assert (embedding >= 0).all()  # taken after the head's ReLU
    assert sr.shape == (3, 3, 256, 256)
    assert sr.min() >= -1 and sr.max() <= 1


def test_no_sr_profile_has_no_generator_and_sees_the_bicubic_upsampled_patch():
    model = SRClassifier(get_profile("small-nosr"))
    assert model.sr_model is None
    assert not any(k.startswith("sr_model.") for k in model.state_dict())
    flat = torch.full((1, 3, 32, 32), 0.25)
    assert torch.allclose(model.classifier_input(flat), torch.full((1, 3, 96, 96), 0.25), atol=1e-6)


def test_seed_classifier_end_to_end_gives_19_logits(seed_state):
    model = SRClassifier(get_profile("seed"))
    load_state_into(model, seed_state)
    with torch.inference_mode():
        logits = model.eval()(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert logits.shape == (1, 19)
    assert torch.isfinite(logits).all()


def test_half_width_resnet18_keeps_torchvision_names_with_a_quarter_of_the_weights():
    from torchvision.models import resnet18

    from models.classifier import half_width_resnet18

    full, half = resnet18(weights=None), half_width_resnet18()
    assert half.state_dict().keys() == full.state_dict().keys()
    assert half.conv1.out_channels == 32 and half.layer4[1].conv2.out_channels == 256
    n_full, n_half = (sum(p.numel() for p in m.parameters()) for m in (full, half))
    assert 0.2 < n_half / n_full < 0.3
    assert half(torch.zeros(1, 3, 96, 96)).shape == (1, 1000)
