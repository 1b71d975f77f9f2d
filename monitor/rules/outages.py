"""Outage windows: each component's runs of failing probes, from the probe history. Pure; `now` passed in.

A component's results are read in order of `checked_at`. A run of consecutive "down" or "degraded" results
is one outage, from its first result to the first later "up" (its end), or still going when no "up"
follows. "unknown" (the probe could not tell) neither opens nor closes an outage; other statuses are
ignored the same way. An outage's status is "down" when any result of the run was down, else "degraded";
its error is the detail of the first failing result that has one (*interpretation*: a first result with
an empty detail would leave the window unexplained).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from monitor.rules.timefmt import to_utc

UP, DOWN, DEGRADED = "up", "down", "degraded"
_KNOWN = (UP, DOWN, DEGRADED)


@dataclass(frozen=True)
class Outage:
    component: str
    start: datetime
    end: datetime | None  # None: still down
    error: str  # the detail of the first failing probe in the window
    status: str  # "down" or "degraded"

    def overlaps(self, start: datetime, end: datetime) -> bool:
        """Whether the outage shares any moment with [start, end]."""
        return self.start <= to_utc(end) and (self.end is None or self.end >= to_utc(start))


def outage_windows(probe_history: pd.DataFrame | None) -> list[Outage]:
    """Every component's outages, sorted by start (then component); see the module docstring."""
    if probe_history is None or probe_history.empty:
        return []
    detail = probe_history["detail"] if "detail" in probe_history.columns else pd.Series(None, dtype="str")
    h = pd.DataFrame(
        {
            "component": probe_history["component"].astype("str"),
            "status": probe_history["status"].astype("str").str.strip().str.lower(),
            "detail": detail.astype("str").reindex(probe_history.index).fillna(""),
            "checked_at": pd.to_datetime(probe_history["checked_at"], utc=True),
        }
    )
    h = h[h["status"].isin(_KNOWN) & h["checked_at"].notna() & h["component"].notna()]
    h = h.sort_values(["component", "checked_at"], kind="stable").reset_index(drop=True)
    if h.empty:
        return []

    bad = h["status"] != UP
    same_component = h["component"].eq(h["component"].shift())
    prev_bad = bad.shift(fill_value=False) & same_component
    opens, closes = bad & ~prev_bad, ~bad & prev_bad
    run = opens.cumsum()  # the run each failing result belongs to

    failing = h[bad].assign(run=run[bad])
    worst = failing["status"].eq(DOWN).groupby(failing["run"]).any()
    blank = failing["detail"].str.strip() == ""
    error = failing["detail"].mask(blank).groupby(failing["run"]).first().fillna("")

    # Within a component opens and closes alternate, so the k-th open ends at the k-th close, if any.
    starts = h[opens].assign(run=run[opens])
    starts = starts.assign(k=starts.groupby("component").cumcount())
    ends = h[closes][["component", "checked_at"]].rename(columns={"checked_at": "end"})
    ends = ends.assign(k=ends.groupby("component").cumcount())
    windows = starts.merge(ends, on=["component", "k"], how="left")

    out = [
        Outage(
            component=component,
            start=start.to_pydatetime(),
            end=None if pd.isna(end) else end.to_pydatetime(),
            error=str(error[r]),
            status=DOWN if worst[r] else DEGRADED,
        )
        for component, start, end, r in zip(
            windows["component"], windows["checked_at"], windows["end"], windows["run"], strict=True
        )
    ]
    out.sort(key=lambda o: (o.start, o.component))
    return out


def format_time(t: datetime, *, now: datetime) -> str:
    """'10:58 UTC' on the day of `now`, '2026-11-25 23:50 UTC' on any other day."""
    t = to_utc(t)
    return f"{t:%H:%M} UTC" if t.date() == to_utc(now).date() else f"{t:%Y-%m-%d %H:%M} UTC"


def format_window(outage: Outage, *, now: datetime) -> str:
    """'10:58–11:20 UTC' (the date in front when not the day of `now`), '2026-11-25 23:50–2026-11-26 00:10
    UTC' across days, 'since 10:58 UTC' while ongoing."""
    start = to_utc(outage.start)
    if outage.end is None:
        return "since " + format_time(start, now=now)
    end = to_utc(outage.end)
    if start.date() != end.date():
        return f"{start:%Y-%m-%d %H:%M}–{end:%Y-%m-%d %H:%M} UTC"
    day = "" if start.date() == to_utc(now).date() else f"{start:%Y-%m-%d} "
    return f"{day}{start:%H:%M}–{end:%H:%M} UTC"
