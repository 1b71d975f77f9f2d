"""Time axes for Altair charts in 24-hour UTC. Vega-Lite draws a temporal axis in the browser's local time
with 12-hour labels ("12 PM") unless told otherwise: a `utc` scale places ticks and labels in UTC, the
format dict keeps every tick level 24-hour, and tooltips carry text made here in Python."""

from __future__ import annotations

import altair as alt
import pandas as pd

# One format per tick level (Vega's time format specifier object): 24-hour clock, ISO dates.
AXIS_FORMAT = {
    "year": "%Y",
    "quarter": "%Y-%m",
    "month": "%Y-%m",
    "week": "%Y-%m-%d",
    "date": "%m-%d",
    "hours": "%H:%M",
    "minutes": "%H:%M",
    "seconds": "%H:%M:%S",
    "milliseconds": "%H:%M:%S.%L",
}
TOOLTIP_FORMAT = "%Y-%m-%d %H:%M UTC"


def utc_axis(field: str, title: str, *, channel=alt.X, **kw):
    """A temporal position channel (alt.X, alt.X2 excluded) in UTC with 24-hour labels."""
    return channel(
        f"{field}:T",
        title=title,
        scale=alt.Scale(type="utc"),
        axis=alt.Axis(format=AXIS_FORMAT, labelOverlap=True),
        **kw,
    )


def with_utc_text(frame: pd.DataFrame, field: str, into: str, fmt: str = TOOLTIP_FORMAT) -> pd.DataFrame:
    """`frame` with `into`: `field` as UTC text for a tooltip ("2026-12-02 13:05 UTC"), '' when missing."""
    times = pd.to_datetime(frame[field], utc=True)
    return frame.assign(**{into: times.dt.strftime(fmt).fillna("")})
