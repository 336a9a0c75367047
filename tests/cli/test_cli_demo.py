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


def test_generate_lists_whole_scene_ids_on_a_narrow_terminal_and_gives_the_extent(demo_world):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "COLUMNS": "80"}
    proc = subprocess.run([str(Path(sys.executable).with_name("landcover")), "demo", "generate"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    for item in demo_world.items():
        assert item["id"] in proc.stdout  # never cut with an ellipsis
    west, south, east, north = demo_world.extent()
    assert f"lon {west:.4f}..{east:.4f}, lat {south:.4f}..{north:.4f}" in proc.stdout
