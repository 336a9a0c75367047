"""Active learning: DBSS query selection, SSAS pseudo-labels and the ``to_label`` layer.

DBSS (distance-based sample selection, Yang et al. 2024) works in the embedding of the layer
before the output:

* class centres c_l are the mean embeddings of the labelled samples of each class;
* inner branch: s_in(e) = sum_l ln ||e - c_l|| - large for samples far from every centre,
  i.e. unlike anything labelled so far;
* border branch: s_b(e) = min over class pairs (m, n) of |d_m - d_n| with d_l = ||e - c_l|| -
  small for samples about equally close to two centres, i.e. on a class boundary;
* a share ``p_in`` of the N queries comes from the inner branch (largest s_in), the rest
  from the border branch (smallest s_b), never the same sample twice.

SSAS (self-supervised sample augmentation): an unlabelled sample gets a pseudo-label when
the models of two consecutive cycles predict the same class for it. In the real loop the two
cycles are the model that picked the windows and the model fine-tuned on their labels
(``landcover finetune --ssas``, :mod:`models.finetune`); pseudo-labels are capped per user label
and balanced by class (:func:`balanced_cap`), and never measure anything.

Every model family is queried the same way: DBSS runs in the model's own embedding (the pooled
features before its classifier). Class centres need one class per labelled sample: a user's
labelled window gives its first listed class; before any labelling each window's *top* class
(the argmax of the softmax, or of the independent sigmoids of a multi-label model) stands in,
from the more confident half of the windows of each top class (:func:`stand_in_centres`). A
window of several classes thus lends its embedding to its dominant class's centre only, which
keeps centres as tight as in the single-label case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.classes import CLASS_NAMES, class_code
from models.errors import LandcoverError
from models.files import atomic_write


class ActiveLearningError(LandcoverError):
    """Active learning cannot run on the given data."""


_EPS = 1e-12


def class_centres(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes present, their centres (C, D)) from labelled embeddings."""
    labels = np.asarray(labels)
    classes = np.unique(labels[labels >= 0])
    if classes.size < 2:
        raise ActiveLearningError("DBSS needs labelled samples of at least two classes: label more samples first")
    centres = np.stack([embeddings[labels == c].mean(axis=0) for c in classes])
    return classes, centres


def centre_distances(embeddings: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, C) Euclidean distances of every embedding to every class centre."""
    diff = embeddings[:, None, :].astype(np.float64) - centres[None, :, :]
    return np.sqrt((diff**2).sum(axis=-1))


def inner_scores(distances: np.ndarray) -> np.ndarray:
    """sum_l ln d_l: large = far from all class centres."""
    return np.log(distances + _EPS).sum(axis=1)


def border_scores(distances: np.ndarray) -> np.ndarray:
    """min over class pairs |d_m - d_n|: small = on the boundary between two classes."""
    d = np.sort(distances, axis=1)
    # the smallest pairwise gap of sorted values is between neighbours
    return np.diff(d, axis=1).min(axis=1)


@dataclass(frozen=True)
class Query:
    """Indices (into the unlabelled pool) chosen for labelling, with why and how strongly."""

    index: np.ndarray  # int64 (N,)
    branch: list[str]  # "inner" or "border" per query
    score: np.ndarray  # the branch's score per query


def dbss_select(
    unlabelled: np.ndarray,
    labelled: np.ndarray,
    labels: np.ndarray,
    n: int,
    p_in: float = 0.5,
) -> Query:
    """Pick ``n`` samples of ``unlabelled`` (N, D) to label, given labelled embeddings and labels."""
    if not 0.0 <= p_in <= 1.0:
        raise ActiveLearningError(f"p_in={p_in} must lie in [0, 1]")
    n = min(n, len(unlabelled))
    _, centres = class_centres(labelled, labels)
    dist = centre_distances(unlabelled, centres)
    s_in, s_b = inner_scores(dist), border_scores(dist)
    n_in = int(round(p_in * n))
    inner = list(np.argsort(-s_in, kind="stable")[:n_in])
    taken = set(inner)
    border = [int(i) for i in np.argsort(s_b, kind="stable") if int(i) not in taken][: n - n_in]
    index = np.array(inner + border, dtype=np.int64)
    branch = ["inner"] * len(inner) + ["border"] * len(border)
    score = np.concatenate([s_in[inner], s_b[border]]) if n else np.zeros(0)
    return Query(index, branch, score.astype(np.float64))


def confident_share(probs: np.ndarray) -> np.ndarray:
    """Stand-in labels before the user has labelled anything: per top class, the windows at or
    above that class's median confidence. Relative, not a fixed cut-off: with label smoothing
    (0.15) many windows of a well-mapped class stay below 0.9, and a class with none above a
    fixed cut-off would get no centre at all."""
    guess, confidence = probs.argmax(1), probs.max(1)
    keep = np.zeros(len(probs), dtype=bool)
    for c in np.unique(guess):
        members = guess == c
        keep |= members & (confidence >= np.median(confidence[members]))
    return keep


def stand_in_centres(probs: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, top classes) of the confident windows that stand in for labels (any task)."""
    keep = confident_share(probs)
    return embeddings[keep], probs[keep].argmax(1)


def query_shortfall(asked: int, candidates: int, windows: int, imagery: object) -> str:
    """Why fewer than ``asked`` windows can be written ('' when ``asked`` can be)."""
    if candidates >= asked:
        return ""
    labelled = windows - candidates
    return (f"{imagery} has {windows} windows with at least 90% clear pixels"
            + (f", {labelled} of them labelled already" if labelled else "")
            + f", so {candidates} can be asked for; map a larger area or lower --n")


def random_select(pool_size: int, n: int, rng: np.random.Generator) -> Query:
    """The baseline: ``n`` queries drawn uniformly without replacement."""
    index = rng.choice(pool_size, size=min(n, pool_size), replace=False).astype(np.int64)
    return Query(index, ["random"] * len(index), np.zeros(len(index)))


def ssas_pseudo_labels(previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SSAS: (indices, labels) of unlabelled samples whose predicted class (argmax of the
    probabilities, or class indices) agrees between two consecutive cycles."""
    prev = np.asarray(previous)
    curr = np.asarray(current)
    if prev.shape != curr.shape:
        raise ActiveLearningError("SSAS needs predictions of the same samples from both cycles")
    if prev.ndim == 2:
        prev, curr = prev.argmax(axis=1), curr.argmax(axis=1)
    agree = np.flatnonzero(prev == curr)
    return agree.astype(np.int64), curr[agree].astype(np.int64)


def balanced_cap(labels: np.ndarray, confidence: np.ndarray, cap: int) -> np.ndarray:
    """Positions (sorted) of at most ``cap`` pseudo-labelled samples, the classes taking turns - each
    giving its most confident remaining sample - so a class that covers most of a map cannot crowd
    out the others' pseudo-labels; below ``cap`` every sample is kept."""
    labels, confidence = np.asarray(labels), np.asarray(confidence)
    if cap >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    queues = [list(np.flatnonzero(labels == c)[np.argsort(-confidence[labels == c], kind="stable")])
              for c in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < cap:
        for queue in queues:
            if queue and len(picked) < cap:
                picked.append(int(queue.pop(0)))
    return np.sort(np.array(picked, np.int64))


# --------------------------------------------------------------------------- simulation


def fit_head(embeddings: np.ndarray, labels: np.ndarray, seed: int = 0):
    """A logistic-regression head on frozen embeddings (the cheap stand-in for retraining)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=seed)).fit(embeddings, labels)


@dataclass(frozen=True)
class Curve:
    strategy: str
    n_labelled: list[int]
    accuracy: list[float]


def simulate(
    pool: np.ndarray,
    pool_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    *,
    strategy: str,
    initial: np.ndarray,
    per_cycle: int,
    cycles: int,
    p_in: float = 0.5,
    use_ssas: bool = False,
    seed: int = 0,
) -> Curve:
    """Active-learning cycles on frozen embeddings: label ``per_cycle`` queries of the pool
    (the oracle is ``pool_labels``), refit the head, score held-out accuracy.

    Every strategy starts from the same ``initial`` labelled indices and spends the same
    budget, so the curves compare the query strategies and nothing else.
    """
    rng = np.random.default_rng(seed)
    labelled = np.zeros(len(pool), dtype=bool)
    labelled[initial] = True
    sizes, acc = [], []
    previous: np.ndarray | None = None
    for cycle in range(cycles + 1):
        x, y = pool[labelled], pool_labels[labelled]
        unl = np.flatnonzero(~labelled)
        if use_ssas and previous is not None and unl.size:
            head0 = fit_head(x, y, seed)
            current = head0.predict(pool[unl])
            agree, pseudo = ssas_pseudo_labels(previous[unl], current)
            x, y = np.concatenate([x, pool[unl[agree]]]), np.concatenate([y, pseudo])
        head = fit_head(x, y, seed)
        sizes.append(int(labelled.sum()))
        acc.append(float((head.predict(test) == test_labels).mean()))
        previous = head.predict(pool)
        if cycle == cycles or unl.size == 0:
            break
        if strategy == "dbss":
            emb = _embedding_of(head, pool)
            q = dbss_select(emb[unl], emb[labelled], pool_labels[labelled], per_cycle, p_in)
        elif strategy == "random":
            q = random_select(unl.size, per_cycle, rng)
        else:
            raise ActiveLearningError(f"unknown strategy {strategy!r}; use dbss or random")
        labelled[unl[q.index]] = True
    return Curve(strategy + "+ssas" * use_ssas, sizes, acc)


def _embedding_of(head, x: np.ndarray) -> np.ndarray:
    # DBSS distances are taken in the standardised embedding the head sees
    return head[0].transform(x)


def plot_curves(curves: Sequence[Curve], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for c in curves:
        ax.plot(c.n_labelled, [a * 100 for a in c.accuracy], marker="o", label=c.strategy)
    ax.set_xlabel("labelled samples")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


def _savefig(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))


# --------------------------------------------------------------------------- QGIS layer


LABEL_FIELD = "class"
# Multi-label models: a window may hold several classes; the user picks one per field (QGIS's
# value-map form takes one value a field), the most extensive first.
MULTI_LABEL_FIELDS: tuple[str, ...] = ("class", "class_2", "class_3")


def label_fields(task: str) -> tuple[str, ...]:
    """The fields of the ``to_label`` layer a user fills: one for single-label models, three for multi-label."""
    return MULTI_LABEL_FIELDS if task == "multi-label" else (LABEL_FIELD,)


def to_label_frame(
    geometries: Sequence,
    crs,
    patch_ids: Sequence[str],
    probabilities: np.ndarray,
    query: Query,
    *,
    class_names: Sequence[str] = CLASS_NAMES,
    class_codes: Sequence[int] | None = None,
    fields: Sequence[str] = (LABEL_FIELD,),
):
    """GeoDataFrame of the queried patches: the model's guess (its top class, by the card's
    ``class_names`` in output order, with its map code), its confidence, why it was picked, and
    empty label ``fields`` for the user to fill in QGIS."""
    import geopandas as gpd

    codes = list(class_codes) if class_codes is not None else [class_code(i) for i in range(len(class_names))]
    idx = query.index
    guess = probabilities[idx].argmax(axis=1)
    columns: dict[str, object] = {
        "patch_id": [patch_ids[i] for i in idx],
        "rank": np.arange(1, len(idx) + 1, dtype=np.int32),
        "guess": [class_names[g] for g in guess],
        "guess_code": [int(codes[g]) for g in guess],
        "confidence": probabilities[idx].max(axis=1).astype(np.float64),
        "branch": list(query.branch),
        "score": query.score,
    }
    for name in fields:
        columns[name] = [""] * len(idx)
    return gpd.GeoDataFrame(columns, geometry=[geometries[i] for i in idx], crs=crs)


def write_to_label(frame, path: Path, layer: str = "to_label", styles=None) -> None:
    """Write the layer into a GeoPackage (GPKG 1.3 for QGIS 3.22), replacing that layer only, and
    optionally its default style (``styles``: layer_styles rows, see ``pipeline.export.vector.style_rows``).

    The GeoPackage is written whole under a temporary name - a copy of the existing file (a map the
    pipeline wrote) with the layer replaced, or a new file - and renamed into place, so QGIS or a
    killed command never sees half a file.
    """
    import shutil

    import pyogrio

    path = Path(path)

    def write(tmp: Path) -> None:
        if path.exists():
            shutil.copyfile(path, tmp)
            pyogrio.write_dataframe(frame, tmp, layer=layer, driver="GPKG", layer_options={"OVERWRITE": "YES"})
        else:
            tmp.unlink()  # GDAL will not create a GeoPackage over the empty file the temporary name starts as
            pyogrio.write_dataframe(frame, tmp, layer=layer, driver="GPKG", dataset_options={"VERSION": "1.3"})
        if styles is not None:
            replace_style_rows(tmp, styles)

    atomic_write(path, write)


def replace_style_rows(gpkg: Path, styles) -> None:
    """Put ``styles`` (a DataFrame of layer_styles rows) into the GeoPackage, replacing the rows of
    the same layers and keeping every other layer's style."""
    import sqlite3

    import pyogrio

    with sqlite3.connect(gpkg) as db:
        exists = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='layer_styles'").fetchone()
        if exists:
            names = list(styles["f_table_name"])
            db.execute(f"DELETE FROM layer_styles WHERE f_table_name IN ({','.join('?' * len(names))})", names)
            columns = [c for c in styles.columns]
            rows = [tuple(_sql_value(v) for v in row) for row in styles[columns].itertuples(index=False)]
            db.executemany(f"INSERT INTO layer_styles ({','.join(columns)}) VALUES ({','.join('?' * len(columns))})", rows)
    if not exists:
        pyogrio.write_dataframe(styles, gpkg, layer="layer_styles", driver="GPKG", layer_options={"FID": "id"})


def _sql_value(value):
    import pandas as pd

    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, (np.bool_, bool)):
        return int(value)
    return value
