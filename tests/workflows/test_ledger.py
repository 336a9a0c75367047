"""The ledger: what a run recorded survives the run's death, and what schedules read from it."""

from __future__ import annotations

from datetime import date

from workflows.ledger import Ledger


def test_runs_left_running_are_marked_interrupted_and_do_not_count_as_attempts(tmp_path):
    with Ledger.in_root(tmp_path) as ledger:
        done = ledger.start_run("lagoon", date(2024, 7, 5))
        ledger.finish(done, status="finished", out_dir=tmp_path / "a", blocks_total=4, blocks_computed=4)
        finished_at = ledger.run(done).started
        dead = ledger.start_run("lagoon", date(2024, 7, 6), "schedule")
        ledger.record_chunk(dead, "k1", "computed")
    with Ledger.in_root(tmp_path) as ledger:  # a new process opens the same file
        assert ledger.chunks(dead) == {"k1": "computed"}
        assert ledger.mark_interrupted("lagoon") == [dead]
        assert ledger.run(dead).status == "interrupted"
        assert ledger.last_attempt("lagoon") == finished_at
        assert ledger.last_attempt("elsewhere") is None


def test_previous_run_is_the_latest_finished_one_of_an_earlier_date(tmp_path):
    with Ledger.in_root(tmp_path) as ledger:
        ids = {}
        for day, status in ((1, "finished"), (3, "reused"), (4, "failed"), (6, "finished")):
            run_id = ledger.start_run("lagoon", date(2024, 7, day))
            if status == "failed":
                ledger.fail(run_id, "boom")
            else:
                ledger.finish(run_id, status=status, out_dir=tmp_path / str(day), blocks_total=1, blocks_computed=0)
            ids[day] = run_id
        assert ledger.previous_done("lagoon", date(2024, 7, 6)).id == ids[3]  # not the failed 4th
        assert ledger.previous_done("lagoon", date(2024, 7, 1)) is None
        assert ledger.run(ids[4]).error == "boom" and ledger.run(ids[4]).seconds >= 0
