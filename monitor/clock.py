"""The one place that reads the clock. Everything else is given `now` (the pure rules always are), so a
test or a replay can pass any time; times are UTC everywhere. Turning times into UTC and into text is pure
and lives with the rules (`monitor.rules.timefmt.to_utc`, `iso`)."""

from __future__ import annotations

from datetime import UTC, datetime


def now_exact() -> datetime:
    """Now, in UTC, to the microsecond: for latencies, leases and schedules."""
    return datetime.now(UTC)


def now_utc() -> datetime:
    """Now, in UTC, in whole seconds: the time stored rows, findings and ledgers carry."""
    return now_exact().replace(microsecond=0)
