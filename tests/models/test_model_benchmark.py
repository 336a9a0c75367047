"""The throughput benchmark measures what it says and can be reused by the pipeline benchmark."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import models as bench
from benchmarks.models import REBEN, REBEN_REPO, model_only_patches_per_second, model_patches_per_second, run_benchmark
from models.card import ModelCard, card_path
from models.predictor import Predictor
from models.reben import BANDS_V02
from pipeline.plan import DEMO_WEIGHTS


@pytest.mark.parametrize("part", ["sr", "classifier", "both"])
def test_each_part_of_the_tiny_profile_reports_a_positive_rate(part):
    assert model_patches_per_second("tiny", 2, "cpu", part=part, batches=1) > 0


def test_the_no_sr_baseline_has_no_sr_part_to_time():
    with pytest.raises(ValueError, match="no SR generator"):
        model_patches_per_second("small-nosr", 2, "cpu", part="sr", batches=1)


def test_the_reben_layout_is_timed_only_as_the_predictor_runs_it():
    with pytest.raises(ValueError, match="no part 'both'"):
        model_patches_per_second(REBEN, 2, "cpu", part="both", batches=1)


def test_run_benchmark_keys_every_figure_by_profile_device_part_and_mode():
    rows = []
    figures = run_benchmark(["small-nosr"], ["cpu"], report=rows.append)
    assert set(figures) == {f"small-nosr/cpu-fp32/{part}/{mode}"
                            for part in ("classifier", "both") for mode in ("batched", "one-by-one")}
    assert [r["patches_per_s"] for r in rows] == list(figures.values())


@pytest.fixture
def small_reben_input(monkeypatch):
    """The reBEN layout with its 120 px windows resized to a 32 px network input: same path, ~14x fewer FLOPs."""
    monkeypatch.setitem(bench.REBEN_CONFIG, "image_size", 32)
    monkeypatch.setattr(bench, "_models", {})


def test_the_reben_rows_run_10_band_reflectance_windows_through_predict_reflectance(monkeypatch, small_reben_input):
    monkeypatch.setitem(bench.BATCHED["cpu"], "reben", (2, 1))  # tiny sizes: the default takes a minute
    monkeypatch.setitem(bench.ONE_BY_ONE["cpu"], "reben", 1)
    seen = []
    real = Predictor.predict_reflectance

    def spy(self, windows):
        seen.append((self.card.profile, windows.shape, windows.dtype))
        return real(self, windows)

    monkeypatch.setattr(Predictor, "predict_reflectance", spy)
    figures = run_benchmark([REBEN], ["cpu"])
    assert set(figures) == {f"{REBEN}/cpu-fp32/predict/{mode}" for mode in ("batched", "one-by-one")}
    assert all(rate > 0 for rate in figures.values())
    # warm-up + timed batch, batched (2 windows) then one by one (1 window)
    assert seen == [("resnet50", (2, 10, 120, 120), np.float32)] * 2 + [("resnet50", (1, 10, 120, 120), np.float32)] * 2


def test_the_pipeline_benchmark_installs_the_reben_layout_as_a_published_checkpoint(tmp_path, small_reben_input):
    from benchmarks.pipeline import RANDOM_MODELS, random_reben_model

    assert RANDOM_MODELS["reben"][0] is random_reben_model
    path = random_reben_model(tmp_path)
    card = ModelCard.read(card_path(path))
    assert (card.family, card.profile, card.task) == ("timm", "resnet50", "multi-label")
    assert card.source is not None and card.source.repo_id == REBEN_REPO
    assert tuple(card.bands) == BANDS_V02 and card.window_px == 120 and card.patch_size == 32 and card.sha256
    assert model_only_patches_per_second(path, 1, batches=1) > 0


def test_the_model_only_rate_of_the_demo_weights_follows_their_card():
    assert model_only_patches_per_second(DEMO_WEIGHTS, 2, batches=1) > 0
