"""The stratified estimator reproduces the worked example of Olofsson et al. (2014), section 5."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.assess.estimate import sample_size, stratified_estimate

# Map classes (rows) and reference classes (columns), both in this order:
# deforestation, forest gain, stable forest, stable non-forest.
PAPER_COUNTS = np.array([
    [66, 0, 5, 4],
    [0, 55, 8, 12],
    [1, 0, 153, 11],
    [2, 1, 9, 313],
])
PAPER_PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000])  # mapped 30 m pixels
PIXEL_HA = 0.09


@pytest.fixture(scope="module")
def paper():
    return stratified_estimate(PAPER_COUNTS, PAPER_PIXELS * PIXEL_HA)


def test_areas_and_their_95_percent_intervals_are_the_papers(paper):
    areas = [(round(c.area.value), round(c.area.half_width)) for c in paper.classes]
    assert areas == [(21_158, 6_158), (11_686, 3_756), (285_770, 15_510), (581_386, 16_282)]


def test_overall_users_and_producers_accuracy_are_the_papers(paper):
    assert round(paper.overall.value, 3) == 0.947
    assert [round(c.users.value, 2) for c in paper.classes] == [0.88, 0.73, 0.93, 0.96]
    assert [round(c.producers.value, 2) for c in paper.classes] == [0.75, 0.85, 0.93, 0.96]


def test_overall_accuracy_interval_is_the_papers(paper):
    """The paper prints 0.947 +/- 0.018."""
    assert round(paper.overall.half_width, 3) == 0.018
    assert paper.overall.low == pytest.approx(paper.overall.value - 1.96 * paper.overall.se)


def test_the_error_matrix_is_in_area_proportions_that_sum_to_one(paper):
    assert paper.proportions.sum() == pytest.approx(1.0)
    assert paper.proportions.sum(axis=1) == pytest.approx(PAPER_PIXELS / PAPER_PIXELS.sum())
    assert paper.proportions[0, 0] == pytest.approx(0.02 * 66 / 75)  # eq. 4: W_i n_ij / n_i.
    assert [c.mapped_area for c in paper.classes] == pytest.approx(PAPER_PIXELS * PIXEL_HA)
    assert [c.map_samples for c in paper.classes] == [75, 75, 165, 325]


def test_the_papers_sample_size_for_a_standard_error_of_0_01():
    """Eq. 13 with the paper's assumed user's accuracies 0.7, 0.6, 0.9, 0.95: n = 641."""
    weights = PAPER_PIXELS / PAPER_PIXELS.sum()
    assert sample_size(weights, np.array([0.7, 0.6, 0.9, 0.95]), 0.01) == 641


def test_a_class_with_one_sample_is_reported_with_undefined_standard_errors():
    counts = np.array([[40, 2], [0, 1]])
    result = stratified_estimate(counts, np.array([900.0, 100.0]))
    thin = result.classes[1]
    assert thin.map_samples == 1 and result.thin_strata == (1,)
    assert thin.users.value == 1.0 and math.isnan(thin.users.se)
    assert math.isnan(result.overall.se)  # eq. 5 sums over every stratum
    assert not math.isnan(result.overall.value)


def test_an_unsampled_stratum_gives_no_users_accuracy_rather_than_zero():
    result = stratified_estimate(np.array([[10, 0], [0, 0]]), np.array([50.0, 50.0]))
    assert math.isnan(result.classes[1].users.value)
    assert result.proportions[1].sum() == 0.0  # its area cannot be distributed: the report says so


def test_shapes_that_do_not_match_are_refused():
    with pytest.raises(ValueError):
        stratified_estimate(np.ones((2, 3)), np.ones(2))
