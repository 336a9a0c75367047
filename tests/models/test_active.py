from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box

from models.active import (
    ActiveLearningError,
    balanced_cap,
    border_scores,
    centre_distances,
    dbss_select,
    inner_scores,
    simulate,
    ssas_pseudo_labels,
    to_label_frame,
    write_to_label,
)


def toy_embedding():
    """Two tight labelled clusters at x=-5 and x=+5, and an unlabelled pool that holds
    ordinary samples near the clusters, one sample planted on the boundary (x=0) and one
    planted far from everything (off the boundary line, so only
    the inner branch wants it)."""
    rng = np.random.default_rng(0)
    labelled = np.concatenate([rng.normal((-5, 0), 0.3, (20, 2)), rng.normal((5, 0), 0.3, (20, 2))])
    labels = np.array([0] * 20 + [1] * 20)
    ordinary = np.concatenate([rng.normal((-5, 0), 0.5, (30, 2)), rng.normal((5, 0), 0.5, (30, 2))])
    boundary = np.array([[0.0, 0.2]])
    far = np.array([[25.0, 30.0]])
    pool = np.concatenate([ordinary, boundary, far])
    return pool, labelled, labels, len(ordinary), len(ordinary) + 1


def test_dbss_inner_branch_picks_the_planted_far_away_sample():
    pool, labelled, labels, _, far = toy_embedding()
    q = dbss_select(pool, labelled, labels, n=1, p_in=1.0)
    assert q.index.tolist() == [far]
    assert q.branch == ["inner"]


def test_dbss_border_branch_picks_the_planted_boundary_sample():
    pool, labelled, labels, boundary, _ = toy_embedding()
    q = dbss_select(pool, labelled, labels, n=1, p_in=0.0)
    assert q.index.tolist() == [boundary]
    assert q.branch == ["border"]


def test_dbss_splits_the_budget_between_branches_without_duplicates():
    pool, labelled, labels, boundary, far = toy_embedding()
    q = dbss_select(pool, labelled, labels, n=10, p_in=0.3)
    assert q.branch.count("inner") == 3 and q.branch.count("border") == 7
    assert len(set(q.index.tolist())) == 10
    assert {boundary, far} <= set(q.index.tolist())


def test_border_score_is_the_smallest_gap_between_centre_distances():
    d = np.array([[1.0, 4.0, 4.5], [2.0, 2.0, 9.0]])
    assert border_scores(d).tolist() == [0.5, 0.0]
    assert np.allclose(inner_scores(d), np.log(d).sum(axis=1))


def test_centre_distances_are_euclidean():
    assert np.allclose(centre_distances(np.array([[3.0, 4.0]]), np.array([[0.0, 0.0], [3.0, 0.0]])), [[5.0, 4.0]])


def test_dbss_needs_two_labelled_classes():
    with pytest.raises(ActiveLearningError, match="at least two classes"):
        dbss_select(np.zeros((3, 2)), np.zeros((2, 2)), np.array([1, 1]), n=1)


def test_ssas_pseudo_labels_only_where_two_cycles_agree():
    previous = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    current = np.array([[0.7, 0.3], [0.9, 0.1], [0.55, 0.45], [0.1, 0.9]])
    index, labels = ssas_pseudo_labels(previous, current)
    assert index.tolist() == [0, 2, 3]
    assert labels.tolist() == [0, 0, 1]


def test_pseudo_labels_are_capped_with_the_classes_taking_turns():
    labels = np.array([3, 3, 3, 3, 3, 3, 7, 7, 9])
    confidence = np.array([0.9, 0.8, 0.95, 0.7, 0.6, 0.85, 0.5, 0.9, 0.4])
    # five places: each class its most confident first (2, 7, 8), then again (0, 6)
    assert balanced_cap(labels, confidence, 5).tolist() == [0, 2, 6, 7, 8]
    assert balanced_cap(labels, confidence, 20).tolist() == list(range(9))  # under the cap: all kept
    assert balanced_cap(labels, confidence, 0).tolist() == []


def test_ssas_candidates_never_share_a_pixel_with_a_held_out_window():
    from affine import Affine

    from models.checkpoint import read_card
    from models.finetune import ssas_pool
    from models.imagery import Imagery, overlapping
    from pipeline.plan import DEMO_WEIGHTS

    card = read_card(DEMO_WEIGHTS)
    image = Imagery(np.full((3, 480, 480), 0.1, np.float32), Affine(10, 0, 0, 0, -10, 4800), None, Path("x.tif"), (1, 2, 3))
    labelled = [(0, 0), (0, 120), (240, 240)]
    pool = ssas_pool(image, card, labelled, held_out=np.array([2]))
    assert len(pool) and not overlapping(pool.origins, [(240, 240)], 120).any()
    assert (0, 60) in pool.origins and (0, 0) not in pool.origins  # half-window steps; no labelled window twice
    assert overlapping([(0, 0)], [(0, 119)], 120).tolist() == [True]
    assert overlapping([(0, 0)], [(0, 120)], 120).tolist() == [False]  # touching is not sharing


def test_simulated_cycles_spend_the_same_budget_for_every_strategy():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 4, (4, 8))
    labels = rng.integers(0, 4, 400)
    emb = centres[labels] + rng.normal(0, 1.5, (400, 8))
    initial = np.concatenate([np.flatnonzero(labels[:300] == c)[:2] for c in range(4)])
    curves = [
        simulate(emb[:300], labels[:300], emb[300:], labels[300:], strategy=s, initial=initial,
                 per_cycle=10, cycles=3, use_ssas=(s == "dbss"))
        for s in ("dbss", "random")
    ]
    assert curves[0].n_labelled == curves[1].n_labelled == [8, 18, 28, 38]
    assert all(0.25 < a <= 1.0 for c in curves for a in c.accuracy)


def test_to_label_layer_opens_with_guess_and_an_empty_class_field(tmp_path):
    import pyogrio

    pool, labelled, labels, boundary, far = toy_embedding()
    q = dbss_select(pool, labelled, labels, n=2, p_in=0.5)
    probs = np.zeros((len(pool), 19))
    probs[:, 9] = 0.8
    probs[:, 2] = 0.2
    geoms = [box(i * 1200, 0, (i + 1) * 1200, 1200) for i in range(len(pool))]
    frame = to_label_frame(geoms, "EPSG:32632", [f"p{i}" for i in range(len(pool))], probs, q)
    out = tmp_path / "queries.gpkg"
    write_to_label(frame, out)
    back = pyogrio.read_dataframe(out, layer="to_label")
    assert back["patch_id"].tolist() == [f"p{far}", f"p{boundary}"]
    assert back["guess"].tolist() == ["Coniferous forest"] * 2
    assert back["guess_code"].tolist() == [10, 10]
    assert back["class"].fillna("").tolist() == ["", ""]
    assert back.crs.to_epsg() == 32632
    assert not list(tmp_path.glob("*.tmp*"))


def test_before_any_labels_each_predicted_class_lends_its_more_confident_half():
    from cli.train import confident_share

    # Label smoothing caps confidence well below 0.9, so the stand-in labels are relative.
    probs = np.array([[0.80, 0.20], [0.60, 0.40], [0.70, 0.30], [0.25, 0.75], [0.45, 0.55]])
    assert confident_share(probs).tolist() == [True, False, True, True, False]
