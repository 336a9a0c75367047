import numpy as np
import pytest

from models.classes import NUM_CLASSES
from pipeline.mosaic import ClassMap, mosaic


def softmax_grid(winners: np.ndarray, winner_prob: float = 0.8) -> np.ndarray:
    """(19, ny, nx) softmax-like probabilities with the given 0-based winner per cell."""
    ny, nx = winners.shape
    rest = (1 - winner_prob) / (NUM_CLASSES - 1)
    probs = np.full((NUM_CLASSES, ny, nx), rest, dtype=np.float32)
    np.put_along_axis(probs, winners[None], winner_prob, axis=0)
    return probs


def everywhere(shape, value):
    return np.full(shape, value)


def test_code_is_argmax_plus_one_with_confidence_the_winning_probability():
    winners = np.array([[0, 18], [4, 9]])
    cmap = mosaic(softmax_grid(winners), everywhere((2, 2), 1.0), everywhere((2, 2), True))
    np.testing.assert_array_equal(cmap.classes, winners + 1)
    assert cmap.classes.dtype == np.uint8
    np.testing.assert_allclose(cmap.confidence, 0.8)
    assert cmap.confidence.dtype == np.float32
    assert cmap.valid.all()


def test_cells_with_too_little_clear_data_become_nodata_not_a_guess():
    clear = np.array([[0.49, 0.5], [0.0, np.nan]], dtype=np.float32)
    cmap = mosaic(softmax_grid(np.zeros((2, 2), int)), clear, everywhere((2, 2), True), min_clear=0.5)
    np.testing.assert_array_equal(cmap.classes, [[0, 1], [0, 0]])
    np.testing.assert_array_equal(cmap.valid, [[False, True], [False, False]])
    assert np.isnan(cmap.confidence[0, 0]) and cmap.confidence[0, 1] == pytest.approx(0.8)


def test_cells_outside_the_aoi_are_nodata():
    inside = np.array([[True, False]])
    cmap = mosaic(softmax_grid(np.array([[3, 3]])), everywhere((1, 2), 1.0), inside)
    np.testing.assert_array_equal(cmap.classes, [[4, 0]])
    np.testing.assert_array_equal(cmap.top_codes[:, 0, 1], [0, 0, 0])
    assert np.isnan(cmap.top_probs[:, 0, 1]).all()


def test_never_computed_cells_with_nan_probabilities_are_nodata():
    probs = softmax_grid(np.array([[2, 2]]))
    probs[:, 0, 1] = np.nan
    cmap = mosaic(probs, everywhere((1, 2), 1.0), everywhere((1, 2), True))
    np.testing.assert_array_equal(cmap.classes, [[3, 0]])
    assert not cmap.valid[0, 1]


def test_ties_go_to_the_lowest_class_index():
    probs = np.zeros((NUM_CLASSES, 1, 1), dtype=np.float32)
    probs[[7, 3, 12], 0, 0] = 1 / 3
    cmap = mosaic(probs, everywhere((1, 1), 1.0), everywhere((1, 1), True))
    assert cmap.classes[0, 0] == 4
    np.testing.assert_array_equal(cmap.top_codes[:, 0, 0], [4, 8, 13])


def test_top_three_are_ordered_by_probability():
    probs = np.zeros((NUM_CLASSES, 1, 1), dtype=np.float32)
    probs[[5, 1, 17, 0], 0, 0] = [0.1, 0.5, 0.3, 0.1]
    cmap = mosaic(probs, everywhere((1, 1), 1.0), everywhere((1, 1), True))
    np.testing.assert_array_equal(cmap.top_codes[:, 0, 0], [2, 18, 1])
    np.testing.assert_allclose(cmap.top_probs[:, 0, 0], [0.5, 0.3, 0.1])


def test_multi_label_keeps_the_top_class_and_its_sigmoid_score():
    probs = np.full((NUM_CLASSES, 1, 2), 0.05, dtype=np.float32)
    probs[[2, 8], 0, 0] = [0.9, 0.7]  # two labels present: scores need not sum to 1
    probs[10, 0, 1] = 0.3
    cmap = mosaic(probs, everywhere((1, 2), 1.0), everywhere((1, 2), True), multi_label=True)
    np.testing.assert_array_equal(cmap.classes, [[3, 11]])
    np.testing.assert_allclose(cmap.confidence, [[0.9, 0.3]])
    assert cmap.multi_label


def test_sigmoid_scores_passed_as_softmax_are_refused():
    probs = np.full((NUM_CLASSES, 1, 1), 0.5, dtype=np.float32)
    with pytest.raises(ValueError, match="multi_label=True"):
        mosaic(probs, everywhere((1, 1), 1.0), everywhere((1, 1), True))


def test_logits_are_refused():
    probs = softmax_grid(np.zeros((1, 1), int)) * 10
    with pytest.raises(ValueError, match="not logits"):
        mosaic(probs, everywhere((1, 1), 1.0), everywhere((1, 1), True), multi_label=True)


@pytest.mark.parametrize(
    ("probs_shape", "clear_shape", "aoi_shape"),
    [((18, 2, 2), (2, 2), (2, 2)), ((19, 2, 2), (2, 3), (2, 2)), ((19, 2, 2), (2, 2), (3, 2))],
)
def test_mismatched_shapes_are_refused(probs_shape, clear_shape, aoi_shape):
    with pytest.raises(ValueError, match="shape"):  # 19 legend codes: 18 planes do not fit
        mosaic(np.zeros(probs_shape, np.float32), np.ones(clear_shape), np.ones(aoi_shape, bool), codes=range(1, 20))


def test_a_legend_of_five_classes_maps_its_own_codes():
    probs = np.zeros((5, 1, 3), np.float32)
    probs[[4, 0, 2], 0, [0, 1, 2]] = 1.0  # winners: planes 4, 0, 2
    result = mosaic(probs, everywhere((1, 3), 1.0), everywhere((1, 3), True), codes=[10, 20, 30, 40, 50])
    assert result.classes.tolist() == [[50, 10, 30]]
    assert result.labels()[:, 0].argmax(axis=0).tolist() == [4, 0, 2]  # planes in legend order


def test_class_map_is_immutable_and_checks_its_arrays():
    cmap = mosaic(softmax_grid(np.zeros((2, 2), int)), everywhere((2, 2), 1.0), everywhere((2, 2), True))
    with pytest.raises(AttributeError):
        cmap.classes = np.zeros((2, 2), np.uint8)  # type: ignore[misc]
    with pytest.raises(ValueError, match="confidence"):
        ClassMap(
            classes=cmap.classes,
            confidence=np.zeros((3, 3), np.float32),
            top_codes=cmap.top_codes,
            top_probs=cmap.top_probs,
            clear_fraction=cmap.clear_fraction,
            valid=cmap.valid,
        )
