"""Times and text for people, one way everywhere (hints, probe details, alerts, the dashboard, JSON):
times in UTC, ISO times, durations, quotes. Pure: the clock is read only by monitor.clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def to_utc(t: datetime) -> datetime:
    """`t` in UTC; a naive time is taken as UTC already."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """A time as DESIGN's JSON writes it, `2026-11-26T11:20:00Z`, in UTC; None stays None."""
    if value is None:
        return None
    return to_utc(value).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def format_duration(d: timedelta) -> str:
    """'45 s', '3 min', '2 h 3 min', '2 d 21 h': the two largest units, rounded down; negative is '0 s'."""
    seconds = max(int(d.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def quote(text: str) -> str:
    """Someone else's words, verbatim, in typographic quotes: “Error 111 connecting to …”.

    Not ASCII double quotes: a hint travels inside JSON, logs and shell scripts, where `"` comes back as
    `\\"` and breaks naive embedding; the words themselves are kept exactly."""
    return f"\u201c{text}\u201d"
