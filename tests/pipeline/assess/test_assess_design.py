"""The sample: stratified random points by map class, allocated by the paper's advice, reproducible."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
from conftest import FIVE_CLASS_TRANSFORM, five_class_codes
from typer.testing import CliRunner

from cli.assess import assess_app
from pipeline.assess.design import (
    DesignError,
    allocate_proportional,
    design_sample,
    parse_users_accuracy,
    units_per_side,
)
from pipeline.assess.legend import read_legend
from pipeline.assess.samples import read_samples
from pipeline.errors import LandcoverError
from pipeline.export.qgis import read_qgz


def test_proportional_allocation_raises_small_classes_to_the_minimum_and_keeps_the_total():
    units = np.array([1_000_000, 500_000, 20_000, 5_000])
    counts = allocate_proportional(units, 1000, 50)
    assert counts.sum() == 1000
    assert list(counts[2:]) == [50, 50]
    assert counts[0] / counts[1] == pytest.approx(2, rel=0.01)  # the rest stays proportional


def test_allocation_never_asks_more_points_than_a_class_has():
    assert list(allocate_proportional(np.array([10_000, 20]), 500, 50)) == [480, 20]


def test_minimums_above_the_total_win():
    assert list(allocate_proportional(np.array([100, 100, 100]), 60, 50)) == [50, 50, 50]


def test_the_unit_must_divide_the_map_cell():
    assert units_per_side(100, 10) == 10
    with pytest.raises(DesignError, match="does not divide"):
        units_per_side(100, 30)


def test_points_fall_in_cells_of_their_stratum_at_unit_centres(five_class_map):
    design = design_sample(five_class_map, per_class=12, unit_m=10, seed=3)
    points = design.samples
    assert len(points) == 5 * 12 and sorted(points["sample_id"]) == list(range(1, 61))
    col, row = ~FIVE_CLASS_TRANSFORM * (points.geometry.x.to_numpy(), points.geometry.y.to_numpy())
    codes = five_class_codes()[row.astype(int), col.astype(int)]
    assert (codes == points["map_class"]).all() and (points["stratum"] == points["map_class"]).all()
    # 20 m cells hold 2 x 2 units of 10 m: a point sits at a quarter or three quarters of its cell.
    assert set(np.round(col % 1, 6)) <= {0.25, 0.75} and set(np.round(row % 1, 6)) <= {0.25, 0.75}
    assert points["reference"].isna().all()


def test_inclusion_probability_is_points_over_units_of_the_stratum(five_class_map):
    design = design_sample(five_class_map, per_class=10, unit_m=20, seed=1)
    by_code = {s.code: s for s in design.strata}
    assert by_code[5].units == 2 * 60  # two rows of 60 cells, one unit per 20 m cell
    assert by_code[1].units == 30 * 60 - 100  # the nodata corner is not sampled
    for _, point in design.samples.iterrows():
        assert point["inclusion_prob"] == pytest.approx(10 / by_code[point["stratum"]].units)


def test_the_same_seed_draws_the_same_points_and_another_seed_others(five_class_map):
    first, again, other = (design_sample(five_class_map, n=100, min_per_class=5, seed=s) for s in (7, 7, 8))
    assert first.samples.geometry.geom_equals(again.samples.geometry).all()
    assert first.samples["sample_id"].tolist() == again.samples["sample_id"].tolist()
    assert not first.samples.geometry.geom_equals(other.samples.geometry).all()


def test_the_size_follows_the_target_standard_error_and_assumed_users_accuracy(five_class_map):
    legend = read_legend(five_class_map)
    loose = design_sample(five_class_map, target_se=0.05, min_per_class=0, seed=0)
    tight = design_sample(five_class_map, target_se=0.025, min_per_class=0, seed=0)
    assert len(tight.samples) == pytest.approx(4 * len(loose.samples), abs=4)  # n ~ 1 / SE^2 (eq. 13)
    sure = design_sample(five_class_map, target_se=0.05, min_per_class=0, seed=0,
                         users_accuracy=parse_users_accuracy(["Open water=0.99"], legend))
    assert len(sure.samples) < len(loose.samples)


def test_bad_users_accuracy_is_a_one_line_error(five_class_map):
    with pytest.raises(LandcoverError, match="--users-accuracy 'Forest=0.9'"):
        parse_users_accuracy(["Forest=0.9"], read_legend(five_class_map))


def test_design_writes_a_styled_layer_with_a_value_map_of_the_maps_own_names(five_class_map):
    (five_class_map / "landcover.qgz").unlink(missing_ok=True)
    result = CliRunner().invoke(assess_app, ["design", str(five_class_map), "--per-class", "8", "--seed", "2"])
    assert result.exit_code == 0, result.output
    path = five_class_map / "assessment.gpkg"
    samples = read_samples(path)
    assert set(samples.points["map_name"]) == {"Open water", "Tree cover", "Cropland", "Built-up", "Bare ground"}
    assert samples.points.geometry.geom_type.unique().tolist() == ["Point"]
    assert list(samples.strata["samples"]) == [8] * 5 and set(samples.strata["seed"]) == {"2"}
    styles = pyogrio.read_dataframe(path, layer="layer_styles", read_geometry=False)
    qml = styles.loc[styles["f_table_name"] == "assessment", "styleQML"].item()
    assert 'editWidget type="ValueMap"' in qml and 'name="Bare ground" value="5"' in qml
    again = CliRunner().invoke(assess_app, ["design", str(five_class_map), "--seed", "2"])
    assert again.exit_code != 0 and "already holds a sample" in str(again.exception)


def test_design_lists_the_layer_in_the_maps_project(demo_map_copy):
    result = CliRunner().invoke(assess_app, ["design", str(demo_map_copy), "--n", "300", "--seed", "0"])
    assert result.exit_code == 0, result.output
    project = read_qgz(demo_map_copy / "landcover.qgz")
    assert project.count('source="./assessment.gpkg|layername=assessment"') == 1
    assert 'wkbType="Point"' in project and "ValueMap" in project
    with rasterio.open(demo_map_copy / "landcover.tif") as src:
        points = read_samples(demo_map_copy / "assessment.gpkg").points
        mapped = [v[0] for v in src.sample(list(zip(points.geometry.x, points.geometry.y)))]
    assert (np.array(mapped) == points["map_class"].to_numpy()).all()
    # Drawing again replaces the layer in the project rather than adding a second one.
    CliRunner().invoke(assess_app, ["design", str(demo_map_copy), "--n", "300", "--seed", "1", "--overwrite"])
    redrawn = read_qgz(demo_map_copy / "landcover.qgz")
    assert redrawn.count('source="./assessment.gpkg|layername=assessment"') == 1
    assert redrawn.count("<id>assessment_samples</id>") == 1 and redrawn.count('<layer id="assessment_samples"') == 1
