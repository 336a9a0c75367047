"""The throughput benchmark measures what it says and can be reused by the pipeline benchmark."""

from __future__ import annotations

import pytest

from benchmarks.models import model_patches_per_second, run_benchmark


@pytest.mark.parametrize("part", ["sr", "classifier", "both"])
def test_each_part_of_the_tiny_profile_reports_a_positive_rate(part):
    assert model_patches_per_second("tiny", 2, "cpu", part=part, batches=1) > 0


def test_the_no_sr_baseline_has_no_sr_part_to_time():
    with pytest.raises(ValueError, match="no SR generator"):
        model_patches_per_second("small-nosr", 2, "cpu", part="sr", batches=1)


def test_run_benchmark_keys_every_figure_by_profile_device_part_and_mode():
    rows = []
    figures = run_benchmark(["small-nosr"], ["cpu"], report=rows.append)
    assert set(figures) == {f"small-nosr/cpu-fp32/{part}/{mode}"
                            for part in ("classifier", "both") for mode in ("batched", "one-by-one")}
    assert [r["patches_per_s"] for r in rows] == list(figures.values())
