"""The Infrastructure screen: each component now, its outages with their exact error, and its history."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from monitor.rules.timefmt import to_utc
from monitor.views.probe_history import history_frame, latest_results, outages_between


def infrastructure(engine: Engine, *, now: datetime, since: datetime) -> dict:
    """{"current": the status strip (see status_strip), "outages": every monitor.rules.outages.Outage that overlaps
    [since, now], oldest first, with its true start and end even outside that range, "history": component,
    status, checked_at, latency_ms of the probes in [since, now], downsampled in SQL past 4,000 rows (each
    point then the worst status of its time bucket)}."""
    now, since = to_utc(now), to_utc(since)
    with engine.connect() as conn:
        return {
            "current": latest_results(conn),
            "outages": outages_between(conn, since, now),
            "history": history_frame(conn, since, now),
        }
