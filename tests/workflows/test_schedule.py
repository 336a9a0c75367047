"""When a region is due, and the crontab line / systemd units that run `run-due`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from workflow_helpers import REPO, landcover_cli

from workflows.schedule import SchedulePlan, ScheduleError, crontab_line, is_due, last_fire, systemd_timer

DAILY_4AM = "0 4 * * *"


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_region_that_never_ran_is_due():
    assert is_due(DAILY_4AM, None, t("2024-07-08T00:00"))


@pytest.mark.parametrize(
    ("last_run", "now", "due"),
    [
        ("2024-07-07T04:00", "2024-07-08T03:59", False),  # ran at yesterday's fire, next not yet
        ("2024-07-07T04:00", "2024-07-08T04:00", True),  # fires exactly now
        ("2024-07-07T04:00", "2024-07-08T09:15", True),  # fired this morning, missed (machine off)
        ("2024-07-08T04:00", "2024-07-08T09:15", False),  # already ran for this morning's fire
        ("2024-07-01T04:00", "2024-07-08T09:15", True),  # many fires missed: one run catches up
    ],
)
def test_a_region_is_due_when_its_schedule_fired_since_it_last_ran(last_run, now, due):
    assert is_due(DAILY_4AM, t(last_run), t(now)) is due


def test_naive_times_are_utc():
    assert last_fire(DAILY_4AM, datetime(2024, 7, 8, 5, 0)) == t("2024-07-08T04:00")


def test_the_crontab_line_and_the_timer_check_every_few_minutes(tmp_path):
    plan = SchedulePlan(Path("/opt/lc/bin/landcover"), Path("/srv/regions"), Path("/srv"), 15, Path("/var/log/lc.log"))
    assert crontab_line(plan) == (
        "*/15 * * * * cd /srv && /opt/lc/bin/landcover run-due /srv/regions >> /var/log/lc.log 2>&1"
    )
    timer = systemd_timer(plan)
    assert "OnCalendar=*:0/15" in timer and "Persistent=true" in timer and "WantedBy=timers.target" in timer
    with pytest.raises(ScheduleError, match="must divide an hour"):
        SchedulePlan(Path("landcover"), Path("."), Path("."), 7)


def test_schedule_print_emits_a_crontab_line_and_a_systemd_service_and_timer():
    proc = landcover_cli("schedule", "print", "workflows/regions", "--every", "10")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    regions = str((REPO / "workflows" / "regions").resolve())
    cron = [line for line in out.splitlines() if line and not line.startswith("#") and line.startswith("*/10")]
    assert len(cron) == 1 and f"run-due {regions}" in cron[0]
    assert "[Service]\nType=oneshot\n" in out and "ExecStart=" in out and f"run-due {regions}" in out
    assert "[Timer]\nOnCalendar=*:0/10\n" in out
    assert "/dev/null" not in cron[0] and cron[0].endswith("run-due.log 2>&1")  # logged to a file by default


def test_a_failed_run_is_retried_at_the_next_check_after_a_growing_wait():
    from workflows.schedule import next_attempt, retry_after

    failed = t("2024-07-08T04:00")
    assert retry_after([]) is None
    assert retry_after([failed]) == t("2024-07-08T04:15")
    assert retry_after([failed - timedelta(hours=1), failed]) == t("2024-07-08T04:30")
    assert retry_after([failed] * 20) == failed + timedelta(hours=12)  # capped
    # Due since 04:00 (its map is from yesterday), failed at 04:00: not before 04:15, then at once.
    yesterday = t("2024-07-07T04:00")
    assert next_attempt(DAILY_4AM, yesterday, [failed], t("2024-07-08T04:05")) == t("2024-07-08T04:15")
    assert next_attempt(DAILY_4AM, yesterday, [failed], t("2024-07-08T04:20")) == t("2024-07-08T04:20")
    # Not due: its next fire.
    assert next_attempt(DAILY_4AM, t("2024-07-08T04:01"), [], t("2024-07-08T05:00")) == t("2024-07-09T04:00")
