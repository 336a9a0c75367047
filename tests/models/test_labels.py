import numpy as np
import pytest

from models.classes import CLASS_NAMES, NUM_CLASSES
from models.labels import (
    BEN43_NAMES,
    BEN43_TO_19,
    DROPPED_43,
    LabelError,
    class_index,
    index19,
    multi_hot,
    single_label,
)


def test_the_43_labels_group_into_the_19_classes_with_ten_dropped():
    assert len(BEN43_NAMES) == 43
    assert len(DROPPED_43) == 10
    assert sorted(set(BEN43_TO_19.values())) == list(range(NUM_CLASSES))


@pytest.mark.parametrize(
    ("name43", "name19"),
    [
        ("Continuous urban fabric", "Urban fabric"),
        ("Discontinuous urban fabric", "Urban fabric"),
        ("Rice fields", "Arable land"),
        ("Annual crops associated with permanent crops", "Permanent crops"),
        ("Sparsely vegetated areas", "Natural grassland and sparsely vegetated areas"),
        ("Sclerophyllous vegetation", "Moors, heathland and sclerophyllous vegetation"),
        ("Transitional woodland/shrub", "Transitional woodland, shrub"),
        ("Peatbogs", "Inland wetlands"),
        ("Intertidal flats", "Coastal wetlands"),
        ("Water bodies", "Inland waters"),
        ("Estuaries", "Marine waters"),
    ],
)
def test_43_labels_map_to_their_19_class(name43, name19):
    assert index19(name43) == CLASS_NAMES.index(name19)


@pytest.mark.parametrize("dropped", ["Airports", "Bare rock", "Burnt areas", "Road and rail networks and associated land"])
def test_labels_without_a_19_class_are_dropped(dropped):
    assert index19(dropped) is None
    assert multi_hot([dropped]).sum() == 0
    assert single_label(multi_hot([dropped])) == -1


def test_19_class_names_map_to_themselves():
    assert [index19(n) for n in CLASS_NAMES] == list(range(NUM_CLASSES))


def test_multi_hot_merges_labels_of_one_class():
    target = multi_hot(["Water courses", "Water bodies", "Coniferous forest"])
    assert target.dtype == np.float32
    assert np.flatnonzero(target).tolist() == [9, 17]


def test_single_label_is_the_seed_argmax_lowest_index_on_ties():
    assert single_label(multi_hot(["Marine waters", "Mixed forest", "Pastures"])) == 4


def test_unknown_label_is_refused_with_the_fix():
    with pytest.raises(LabelError, match="unknown BigEarthNet label 'Lava'"):
        index19("Lava")


def test_class_index_reads_names_and_map_codes():
    assert class_index("Coniferous forest") == 9
    assert class_index(10) == 9
    assert class_index("10") == 9
    with pytest.raises(LabelError, match="outside 1..19"):
        class_index(0)
