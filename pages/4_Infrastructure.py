"""Infrastructure: every component the payment path needs, now and over time, with the exact error text of
each outage (the incident's was "Error 111 connecting to localhost:6379. Connection refused.")."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from monitor.clock import now_utc
from monitor.rules.timefmt import format_duration
from ui import charts, context, data, settings, status, tables

PERIODS = {"24 hours": 1, "7 days": 7, "30 days": 30}
STATUS_SCALE = alt.Scale(
    domain=["up", "degraded", "down", "unknown"], range=["#2ca02c", "#ff9f1c", "#d62728", "#9e9e9e"]
)

context.page(
    "Infrastructure",
    ":material/dns:",
    "Redis, the databases, Stripe's API, the webhook URL and the scheduler, as the probes saw them.",
)
db = context.key()

period = st.segmented_control("Period", list(PERIODS), default="7 days", key="infra:period") or "7 days"
infra = data.infrastructure(db, PERIODS[period])


@st.fragment(run_every="30s")
def now_strip() -> None:
    st.subheader("Now")
    status.tiles(data.status_strip(db))


now_strip()

st.subheader(f"Outages in the last {period}")
outages = infra.get("outages") or []
now = now_utc()
if outages:
    table = pd.DataFrame(
        [
            {
                "component": o.component,
                "status": o.status,
                "start": o.start,
                "end": o.end,
                "duration": format_duration((o.end or now) - o.start) + ("" if o.end else " (ongoing)"),
                "error": o.error,
            }
            for o in outages
        ]
    )
    table["start"] = pd.to_datetime(table["start"], utc=True)
    table["end"] = pd.to_datetime(table["end"], utc=True)
    tables.show(
        table,
        {
            "component": tables.text_col("Component"),
            "status": tables.text_col("Status", width="small"),
            "start": tables.time_col("From (UTC)"),
            "end": tables.time_col("To (UTC)"),
            "duration": tables.text_col("Lasted"),
            "error": tables.text_col("Exact error", width="large"),
        },
    )
    bars = table.assign(end=table["end"].fillna(pd.Timestamp(now)))
    bars = charts.with_utc_text(charts.with_utc_text(bars, "start", "from"), "end", "to")
    chart = (
        alt.Chart(bars)
        .mark_bar()
        .encode(
            x=charts.utc_axis("start", "UTC"),
            x2="end:T",
            y=alt.Y("component:N", title=None),
            color=alt.Color("status:N", scale=STATUS_SCALE, legend=None),
            tooltip=["component", "status", "from", "to", "duration", "error"],
        )
    )
    st.altair_chart(chart, width="stretch")
else:
    st.success(f"No outage in the last {period}.")

st.subheader("History")
history = infra.get("history")
if history is None or history.empty:
    st.caption("No probe results in this period.")
else:
    history = charts.with_utc_text(history, "checked_at", "checked")
    timeline = (
        alt.Chart(history)
        .mark_tick(thickness=3, size=18)
        .encode(
            x=charts.utc_axis("checked_at", "UTC"),
            y=alt.Y("component:N", title=None),
            color=alt.Color("status:N", scale=STATUS_SCALE),
            tooltip=["checked", "component", "status", "latency_ms"],
        )
        .properties(title="Status of each probe")
    )
    st.altair_chart(timeline, width="stretch")
    latency = history.dropna(subset=["latency_ms"])
    if len(latency):
        chart = (
            alt.Chart(latency)
            .mark_line()
            .encode(
                x=charts.utc_axis("checked_at", "UTC"),
                y=alt.Y("latency_ms:Q", title="latency (ms)"),
                color=alt.Color("component:N"),
                tooltip=["checked", "component", "latency_ms"],
            )
            .properties(title="Latency")
        )
        st.altair_chart(chart, width="stretch")

st.subheader("Settings in force")
st.caption(
    "Secrets are masked: the Stripe key and webhook secret by their last characters, passwords as ****."
)
tables.show(
    settings.frame(context.config(), context.sign_in_method(context.config())),
    {
        "setting": tables.text_col("Setting"),
        "value": tables.text_col("Value", width="large"),
        "meaning": tables.text_col("Meaning", width="large"),
    },
    key="infra:settings",
)
