"""Whether the scheduler (`python -m jobs`) is alive: one rule, used by `check`, the Overview's freshness and
the demo's first-view refresh. Pure."""

from __future__ import annotations

from datetime import datetime, timedelta

# The jobs the scheduler process records; a run of any of them, whatever its outcome, is its heartbeat.
SCHEDULED_JOBS = ("jobs:sync", "jobs:probes", "jobs:retention")


def scheduler_max_age(*, sync_interval: int, probe_interval: int) -> timedelta:
    """How long the scheduler may go without starting a job before it counts as down: twice the shorter
    of its two intervals (one missed run is tolerated, two are not)."""
    return timedelta(seconds=2 * min(sync_interval, probe_interval))


def scheduler_alive(
    last_started: datetime | None, *, now: datetime, sync_interval: int, probe_interval: int
) -> bool:
    """True when a scheduled job started within scheduler_max_age of `now`."""
    if last_started is None:
        return False
    return now - last_started <= scheduler_max_age(sync_interval=sync_interval, probe_interval=probe_interval)
