"""Each map setting is declared once (pipeline.settings.MapSettings): its default reaches the
options of `landcover map`, the keys of region files and the provenance of every map from there."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from cli.options import flag, with_settings
from pipeline.settings import Blend, MapConfig, MapSettings, setting
from workflows.region import Region, parse_region

REGION = {"name": "r", "source": "local", "aoi": {"type": "Polygon", "coordinates": [[[12, 45], [12.1, 45], [12.1, 45.1], [12, 45]]]},
          "window": {"last_days": 30}, "root": "/tmp/r", "schedule": "0 3 * * *"}


def help_of(settings_model: type[MapSettings]) -> str:
    app = typer.Typer()

    @app.command()
    @with_settings(settings_model)
    def show(settings: dict | None = None) -> None:
        typer.echo(repr(settings))

    @app.command()
    def other() -> None:  # two commands: typer keeps `show` a sub-command
        pass

    return " ".join(CliRunner().invoke(app, ["show", "--help"], env={"COLUMNS": "300"}).output.split())


def test_every_setting_is_an_option_of_map_with_its_default_shown():
    text = help_of(MapSettings)
    for name, field in MapSettings.model_fields.items():
        assert flag(name) in text, name
        if field.default is not None and not isinstance(field.default, bool):
            assert f"[default: {field.default}]" in text, name


def test_a_changed_default_reaches_the_cli_help_region_files_and_provenance():
    """Changing the blend's default is one line: the field. Here a settings model that differs from
    MapSettings by that line alone shows the new default in --help."""

    class Changed(MapSettings):
        blend: Blend = setting("hann", "Weight of a window's pixels when overlapping windows are blended.")

    assert "[default: hann]" in help_of(Changed).split("--blend", 1)[1].split("--", 1)[0]
    default = MapSettings.model_fields["blend"].default
    assert f"[default: {default}]" in help_of(MapSettings).split("--blend", 1)[1].split("--", 1)[0]
    region = parse_region(REGION, Path("/tmp"))
    assert region.blend == default
    config = region.map_config(Path("out"), date(2024, 7, 1))
    assert config.provenance()["blend"] == default


def test_the_cli_hands_every_setting_to_the_command():
    app = typer.Typer()
    seen = {}

    @app.command()
    @with_settings(MapSettings)
    def show(settings: dict | None = None) -> None:
        seen.update(settings)

    @app.command()
    def other() -> None:
        pass

    result = CliRunner().invoke(app, ["show", "--blend", "box", "--no-dense", "--cell-size", "200"])
    assert result.exit_code == 0, result.output
    assert seen["blend"] == "box" and seen["dense"] is False and seen["cell_size"] == 200.0
    assert set(seen) == set(MapSettings.model_fields)
    assert CliRunner().invoke(app, ["show", "--blend", "sharp"]).exit_code == 2  # not one of the choices


def test_region_files_take_every_setting_as_a_key():
    assert set(MapSettings.model_fields) <= set(Region.model_fields)
    region = parse_region({**REGION, "cell_size": 200, "blend": "box", "save_composite": True}, Path("/tmp"))
    assert (region.cell_size, region.blend, region.save_composite) == (200, "box", True)
    assert region.map_config(Path("o"), date(2024, 7, 1)).settings == MapSettings(
        source="local", cell_size=200, blend="box", save_composite=True)


def test_the_old_cluster_key_still_names_the_scheduler():
    assert parse_region({**REGION, "cluster": "tcp://h:8786"}, Path("/tmp")).scheduler == "tcp://h:8786"


def test_the_provenance_records_every_setting_and_the_plan_lists_what_changed():
    config = MapConfig(aoi=Path("a.geojson"), out=Path("o"), cell_size=200)
    assert set(MapSettings.model_fields) <= set(config.provenance())
    assert config.settings.changed() == {"cell_size": 200.0}


@pytest.mark.parametrize(("options", "fragment"), [
    ({"read_resolution": 15}, "--read-resolution 15 is not a whole multiple"),
    ({"crs": "EPSG:4326"}, "--crs EPSG:4326 is a"),
    ({"collection": "sentinel-s2-l2a-cogs"}, "v1"),
])
def test_a_bad_setting_is_one_whole_line(options, fragment):
    with pytest.raises(ValidationError) as err:
        MapSettings(**options)
    assert fragment in err.value.errors()[0]["msg"]


def test_a_region_file_names_the_key_of_a_bad_setting():
    from workflows.region import RegionError

    with pytest.raises(RegionError) as err:
        parse_region({**REGION, "read_resolution": 15}, Path("/tmp"), "r.yaml")
    assert str(err.value).startswith("r.yaml: read_resolution: 15 is not a whole multiple")


def test_literal_choices_are_kept():
    assert MapSettings.model_fields["blend"].annotation == Literal["box", "hann", "gaussian"]
