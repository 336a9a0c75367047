"""The legend comes from the map folder: item.json's classification classes, else landcover.tif."""

from __future__ import annotations

import json

import pytest
from conftest import FIVE_CLASSES, write_five_class_map

from pipeline.assess.legend import LegendError, read_legend
from pipeline.errors import LandcoverError


def test_item_json_classes_give_codes_names_and_colours(five_class_map):
    legend = read_legend(five_class_map)
    assert legend.codes == (1, 2, 3, 4, 5) and legend.nodata == 0
    assert [c.name for c in legend.classes] == [n for _, n, _ in FIVE_CLASSES]
    assert legend.get(1).rgb == (0x1F, 0x78, 0xB4)


def test_item_json_wins_over_the_raster(five_class_map):
    item = json.loads((five_class_map / "item.json").read_text())
    item["assets"]["landcover"]["classification:classes"][1]["title"] = "Lakes and rivers"
    (five_class_map / "item.json").write_text(json.dumps(item))
    assert read_legend(five_class_map).name(1) == "Lakes and rivers"


def test_without_item_json_the_colour_table_and_category_names_serve(tmp_path):
    folder = write_five_class_map(tmp_path / "bare", with_item=False)
    legend = read_legend(folder)
    assert legend.codes == (1, 2, 3, 4, 5)
    assert legend.name(4) == "Built-up" and legend.get(4).rgb == (0xE3, 0x1A, 0x1C)


def test_labels_are_codes_or_names_in_any_spelling(five_class_map):
    legend = read_legend(five_class_map)
    assert [legend.code_of(x) for x in (3, "3", 3.0, "Cropland", "cropland", " tree_cover ", "built up")] == [3, 3, 3, 3, 3, 2, 4]
    assert [legend.code_of(x) for x in (0, 9, "Forest", "", None, float("nan"), 2.5)] == [None] * 7


def test_a_folder_without_a_map_is_a_one_line_error(tmp_path):
    with pytest.raises(LandcoverError, match="holds no landcover.tif"):
        read_legend(tmp_path)
    assert issubclass(LegendError, LandcoverError)
