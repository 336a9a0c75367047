"""`landcover demo generate`: builds the world and lists its scenes."""

from __future__ import annotations

from typer.testing import CliRunner

from cli.demo import demo_app


def test_generate_lists_every_scene_and_where_the_world_is(tmp_path):
    result = CliRunner().invoke(demo_app, ["generate", "--size", "240", "--cache-dir", str(tmp_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for item_id in ("S2A_32TQR_20210820_0_L2A", "S2B_33TTL_20240707_0_L2A"):
        assert item_id in result.output
    assert f"items: {tmp_path}" in result.output


def test_generate_refuses_an_odd_size(tmp_path):
    result = CliRunner().invoke(demo_app, ["generate", "--size", "1201", "--cache-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "even number of pixels" in str(result.exception)
