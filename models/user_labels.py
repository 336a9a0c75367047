"""The user's labels: the labelled rows of a GeoPackage layer (the ``to_label`` layer that
``landcover active-learn`` wrote, filled in QGIS) as windows of the model card's footprint cut
from the imagery they sit on.

``class`` holds a row's own class, ``class_2``/``class_3`` further classes of multi-label models:
names of the card's classes, BigEarthNet names (either nomenclature) or map codes. Fine-tuning
learns from these windows, evaluation measures a model on them and active learning takes its class
centres from them: one reading for the three.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.card import ModelCard
from models.errors import LandcoverError
from models.imagery import Imagery

MIN_LABELS = 10  # fewer labelled rows teach a network nothing it can be measured on


class LabelsError(LandcoverError):
    """The labels cannot be read: missing file or layer, unknown class, too few labelled rows."""


@dataclass
class LabelledWindows:
    """Windows of the card's bands with labels in the card's output order.

    ``targets`` (N, C) are 1 for a class present, 0 for absent; ``known`` (N, C) says which of them
    are labels at all (False for the classes a user row does not list); ``main`` (N,) is each
    window's own class (a user row's first field, a replay window's majority class), the one
    agreement is judged by. ``windows`` hold reflectance, or integer DN when ``dn_scale`` is not 1
    (0 = no data).
    """

    windows: np.ndarray
    targets: np.ndarray
    known: np.ndarray
    main: np.ndarray
    ids: list[str]
    bounds_4326: list[tuple[float, float, float, float]] | None = None
    dn_scale: float = 1.0

    def __len__(self) -> int:
        return len(self.ids)

    def reflectance(self, index: np.ndarray | None = None) -> np.ndarray:
        w = self.windows if index is None else self.windows[index]
        if self.dn_scale == 1.0:
            return np.asarray(w, np.float32)
        return np.where(w == 0, np.nan, w.astype(np.float32) * np.float32(self.dn_scale)).astype(np.float32)

    def subset(self, index: np.ndarray) -> LabelledWindows:
        return LabelledWindows(self.windows[index], self.targets[index], self.known[index], self.main[index],
                               [self.ids[i] for i in index],
                               None if self.bounds_4326 is None else [self.bounds_4326[i] for i in index], self.dn_scale)



def _class_index(value: object, card: ModelCard) -> int:
    """Output index of a class given by name (the card's, or BigEarthNet's either nomenclature) or map code."""
    from models.classes import CLASS_NAMES
    from models.labels import LabelError, index19

    text = str(value).strip()
    if text.isdigit():
        codes = card.class_codes
        if int(text) in codes:
            return codes.index(int(text))
        raise LabelsError(f"class code {text} is not one of the model's classes (codes {min(codes)}..{max(codes)})")
    if text in card.classes:
        return card.classes.index(text)
    try:
        idx = index19(text)
    except LabelError:
        idx = None
    if idx is not None and CLASS_NAMES[idx] in card.classes:
        return card.classes.index(CLASS_NAMES[idx])
    raise LabelsError(f"label {text!r} is not one of the model's classes: pick a name from the form's list "
                        f"(e.g. {card.classes[0]!r})")


def read_labels(gpkg: Path, layer: str, card: ModelCard, fields: Sequence[str], *, minimum: int = MIN_LABELS,
                purpose: str = "fine-tuning") -> tuple[list, np.ndarray, list[str], list[list[str]]]:
    """([window centres, their CRS], positives (N, C) bool, ids, the classes as written - the first
    is the row's own class) of the labelled rows of ``layer``."""
    import pyogrio
    import pyogrio.errors

    if not Path(gpkg).is_file():
        raise LabelsError(f"labels not found: {gpkg}; give the GeoPackage active-learn wrote (e.g. maps/x/landcover.gpkg)")
    try:
        frame = pyogrio.read_dataframe(gpkg, layer=layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise LabelsError(f"cannot read layer {layer!r} of {gpkg} ({str(exc).splitlines()[0]}); "
                            "give --layer the layer you labelled") from None
    present = [f for f in fields if f in frame.columns]
    if not present:
        raise LabelsError(f"layer {layer!r} of {gpkg} has no {fields[0]!r} field: label the to_label layer "
                            "that `landcover active-learn` wrote")
    centres, positives, ids, written = [], [], [], []
    for i, row in frame.iterrows():
        values = [str(row[f]).strip() for f in present if row[f] is not None and str(row[f]).strip() not in ("", "nan", "None")]
        if not values:
            continue
        pos = np.zeros(len(card.classes), bool)
        for v in values:
            pos[_class_index(v, card)] = True
        point = row.geometry.representative_point()
        centres.append((point.x, point.y))
        positives.append(pos)
        written.append(values)
        ids.append(str(row["patch_id"]) if "patch_id" in frame.columns and row["patch_id"] else f"{layer}/{i}")
    if len(ids) < minimum:
        raise LabelsError(f"only {len(ids)} rows of {layer!r} in {gpkg} are labelled; {purpose} needs at least "
                            f"{minimum} (fill the {present[0]!r} field of more rows in QGIS, 30 or more is better)")
    crs = frame.crs.to_wkt() if frame.crs is not None else None
    return [centres, crs], np.array(positives), ids, written


def main_classes(written: Sequence[Sequence[str]], card: ModelCard) -> np.ndarray:
    """Output index of each labelled row's own class: its first field."""
    return np.array([_class_index(w[0], card) for w in written], np.int64)


def labels_digest(ids: Sequence[str], written: Sequence[Sequence[str]], centres: Sequence[tuple[float, float]]) -> str:
    """sha256 of the labelled rows as used: id, classes and window centre (to the centimetre), in order."""
    rows = [[i, list(w), [round(x, 2), round(y, 2)]] for i, w, (x, y) in zip(ids, written, centres, strict=True)]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


@dataclass(frozen=True)
class UserLabels:
    """The labelled rows of a layer as windows of the card's footprint cut from the imagery."""

    windows: LabelledWindows  # in the card's output order, footprints in EPSG:4326
    origins: list[tuple[int, int]]  # top-left (row, col) of each window in the imagery
    written: list[list[str]]  # the classes as written, the row's own class first
    centres: list[tuple[float, float]]  # window centres in the imagery's CRS
    image: Imagery


def read_user_windows(labels: Path, layer: str, imagery: Path, card: ModelCard, *, bands: Sequence[int] | None = None,
                      minimum: int = MIN_LABELS, purpose: str = "fine-tuning") -> UserLabels:
    """The labelled rows of ``layer`` (see :func:`read_labels`) as windows of ``imagery``'s card bands,
    centred on each row's polygon (label and image CRS may differ)."""
    from models.active import label_fields
    from models.imagery import read_imagery, windows_at

    (centres, label_crs), positives, ids, written = read_labels(labels, layer, card, label_fields(card.task),
                                                                minimum=minimum, purpose=purpose)
    image = read_imagery(imagery, card, bands=bands)
    if label_crs is not None and image.crs is not None:
        from pyproj import CRS, Transformer

        if not CRS.from_wkt(label_crs).equals(CRS.from_wkt(image.crs)):
            tx = Transformer.from_crs(label_crs, image.crs, always_xy=True)
            centres = [tx.transform(x, y) for x, y in centres]
    cut = windows_at(image, card, centres, ids)
    known = positives if card.task == "multi-label" else np.ones_like(positives)
    windows = LabelledWindows(cut.data, positives.astype(np.float32), known, main_classes(written, card), ids,
                              bounds_to_4326(cut.bounds, image.crs))
    return UserLabels(windows, cut.origins, written, centres, image)



def bounds_to_4326(bounds: Sequence[tuple[float, float, float, float]], crs: str | None) -> list[tuple[float, float, float, float]]:
    from pyproj import Transformer

    if crs is None:
        raise LabelsError("the imagery has no CRS: give the map's composite.tif (georeferenced)")
    tx = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    out = []
    for x0, y0, x1, y1 in bounds:
        xs, ys = tx.transform([x0, x1, x1, x0], [y0, y0, y1, y1])
        out.append((min(xs), min(ys), max(xs), max(ys)))
    return out
