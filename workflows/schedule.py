"""When regions are due, and the one crontab line or systemd timer that serves them all.

The system scheduler only wakes ``landcover run-due`` every few minutes; each region's own cron
expression (UTC) then decides whether it runs: due when the expression fired after the region's
last run. A run missed while the machine was off runs at the next check.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from croniter import croniter

from pipeline.errors import LandcoverError

SERVICE_NAME = "landcover-run-due"
_SECOND = timedelta(seconds=1)


class ScheduleError(LandcoverError):
    """The schedule cannot be written as asked."""


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def last_fire(cron: str, now: datetime) -> datetime:
    """The latest time at or before ``now`` when ``cron`` fired (UTC)."""
    now = _utc(now)
    # croniter's get_prev is strict; step a second past ``now`` so a fire at exactly ``now`` counts.
    return croniter(cron, now.replace(microsecond=0) + _SECOND).get_prev(datetime).astimezone(UTC)


def next_fire(cron: str, now: datetime) -> datetime:
    return croniter(cron, _utc(now)).get_next(datetime).astimezone(UTC)


def is_due(cron: str, last_run: datetime | None, now: datetime) -> bool:
    """Due when the schedule fired after the last run began (or the region never ran)."""
    return last_run is None or _utc(last_run) < last_fire(cron, now)


# A failed run is tried again at the next check after this long, doubling with each failure in a
# row up to RETRY_MAX: a network blip costs minutes, not a whole schedule period.
RETRY_FIRST = timedelta(minutes=15)
RETRY_MAX = timedelta(hours=12)


def retry_after(failures: list[datetime]) -> datetime | None:
    """When a region whose runs failed at ``failures`` (since its last map, oldest first) may try
    again: the last failure plus 15 min, 30 min, 1 h, ... up to 12 h; None after no failure."""
    if not failures:
        return None
    wait = min(RETRY_FIRST * 2 ** (len(failures) - 1), RETRY_MAX)
    return _utc(failures[-1]) + wait


def next_attempt(cron: str, last_map: datetime | None, failures: list[datetime], now: datetime) -> datetime:
    """When the region should next run: now if due, else its next fire or retry time.

    Due when the schedule fired after its last map began (or it never made one) and, if runs
    failed since, once the retry wait after the last failure has passed."""
    now = _utc(now)
    if is_due(cron, last_map, now):
        retry = retry_after(failures)
        return now if retry is None or retry <= now else retry
    return next_fire(cron, now)


@dataclass(frozen=True)
class SchedulePlan:
    """Where the scheduled job runs from and how often it checks the regions."""

    landcover: Path  # the `landcover` executable
    regions: Path  # the folder of region files
    workdir: Path
    every_minutes: int = 15
    log_file: Path | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.every_minutes <= 59 or 60 % self.every_minutes:
            raise ScheduleError(
                f"--every {self.every_minutes} must divide an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 minutes)"
            )

    @property
    def command(self) -> str:
        return f"{shlex.quote(str(self.landcover))} run-due {shlex.quote(str(self.regions))}"


def crontab_line(plan: SchedulePlan) -> str:
    """One crontab entry checking every region every ``every_minutes`` minutes."""
    minutes = "*" if plan.every_minutes == 1 else f"*/{plan.every_minutes}"
    log = shlex.quote(str(plan.log_file)) if plan.log_file else "/dev/null"
    return f"{minutes} * * * * cd {shlex.quote(str(plan.workdir))} && {plan.command} >> {log} 2>&1"


def systemd_service(plan: SchedulePlan) -> str:
    return (
        "[Unit]\n"
        "Description=landcover: run the regional land-cover maps that are due\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={plan.workdir}\n"
        f"ExecStart={plan.command}\n"
        "Nice=10\n"
    )


def systemd_timer(plan: SchedulePlan) -> str:
    return (
        "[Unit]\n"
        f"Description=landcover: check every {plan.every_minutes} min which regions are due\n"
        "\n"
        "[Timer]\n"
        f"OnCalendar=*:0/{plan.every_minutes}\n"
        "Persistent=true\n"
        f"Unit={SERVICE_NAME}.service\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )


def schedule_text(plan: SchedulePlan) -> str:
    """What `landcover schedule print` shows: the crontab line, or the systemd pair."""
    return (
        "# crontab -e, then add:\n"
        f"{crontab_line(plan)}\n"
        "\n"
        f"# or systemd: ~/.config/systemd/user/{SERVICE_NAME}.service\n"
        f"{systemd_service(plan)}"
        "\n"
        f"# ~/.config/systemd/user/{SERVICE_NAME}.timer\n"
        f"{systemd_timer(plan)}"
        "\n"
        f"# then: systemctl --user daemon-reload && systemctl --user enable --now {SERVICE_NAME}.timer\n"
    )

