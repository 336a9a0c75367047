"""`landcover run REGION --plan`: the blocks the region's earlier runs stored count as done."""

from __future__ import annotations

from workflow_helpers import FIRST_AS_OF, quiet, write_region

from workflows.region import load_region
from workflows.runner import plan_region


def test_a_region_plan_counts_the_stored_blocks_as_done(incremental_runs):
    region = load_region(incremental_runs.region_file)
    _, plan = plan_region(region, as_of=FIRST_AS_OF, console=quiet())
    assert plan.blocks == incremental_runs.first.blocks_total > 0
    assert plan.blocks_done == plan.blocks and plan.windows == 0


def test_a_region_that_never_ran_has_everything_to_do_and_gets_no_folder(tmp_path, demo_world):
    region = load_region(write_region(tmp_path / "regions", tmp_path / "maps"))
    _, plan = plan_region(region, as_of=FIRST_AS_OF, console=quiet())
    assert plan.blocks_done == 0 and plan.windows == plan.cells > 0
    assert not (tmp_path / "maps").exists()
