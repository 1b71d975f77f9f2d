"""Webhooks: is Stripe delivering to the right URL, and which payment events are stuck, failed or missing."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from monitor.rules.timefmt import format_duration
from ui import charts, context, data, tables
from ui.text import md_escape, one_line

context.page(
    "Webhooks",
    ":material/webhook:",
    "Stripe delivers each event to the registered endpoint URLs; the app acts only on what reaches it.",
)
db = context.key()
overview = data.webhook_overview(db)
audit = overview.audit

# --- the endpoint audit ------------------------------------------------------------------------------
st.subheader("Endpoint audit")
if not audit.configured:
    st.warning(md_escape(audit.summary, 600), icon=":material/warning:")
elif audit.ok:
    st.success(md_escape(audit.summary, 600), icon=":material/check_circle:")
else:
    for problem in audit.problems:
        st.error(md_escape(problem, 600), icon=":material/error:")

expected, registered = st.columns(2)
with expected:
    st.markdown("**Expected URL** (`EXPECTED_WEBHOOK_URL`)")
    st.code(audit.expected_url or "not configured", language=None, wrap_lines=True)
with registered:
    st.markdown("**Registered at Stripe** (enabled endpoints)")
    enabled = [e for e in audit.endpoints if e.get("status") == "enabled"]
    st.code("\n".join(one_line(e.get("url")) for e in enabled) or "none", language=None, wrap_lines=True)

endpoints = pd.DataFrame(audit.endpoints)
if len(endpoints):
    endpoints = endpoints.assign(
        link=tables.linkify(endpoints, "id")["id"],
        mode=endpoints["livemode"].map(
            lambda v: "unknown" if v is None or pd.isna(v) else ("live" if v else "test")
        ),
        events=endpoints["enabled_events"].map(lambda ev: ", ".join(ev) if isinstance(ev, list) else ""),
        missing=endpoints["missing_types"].map(lambda ev: ", ".join(ev) if isinstance(ev, list) else ""),
    )
tables.show(
    endpoints,
    {
        "link": tables.link_col("Endpoint"),
        "url": tables.text_col("URL", width="large"),
        "status": tables.text_col("Status", width="small"),
        "mode": tables.text_col("Mode", width="small"),
        "at_expected_url": st.column_config.CheckboxColumn("At the expected URL"),
        "events": tables.text_col("Event types"),
        "missing": tables.text_col("Required types missing"),
    },
    empty="No webhook endpoint is registered at Stripe.",
)


def _left(value) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "test mode: a few retries over hours"
    return format_duration(pd.Timedelta(value).to_pytimedelta())


# --- events in trouble -------------------------------------------------------------------------------
undelivered = overview.undelivered
failed = overview.failed
missing = overview.missing
counts = overview.counts
if overview.app_error:
    st.error(
        f"The app's webhook log could not be read: {md_escape(context.config().mask(overview.app_error), 600)}"
    )
m = st.columns(3)
m[0].metric(
    "Undelivered",
    counts.get("undelivered", len(undelivered)),
    help="pending_webhooks > 0 after the grace period",
)
m[1].metric(
    "Failed in the app",
    counts.get("failed", len(failed)),
    help="the app's webhook log has a failure and no later success",
)
m[2].metric(
    "Missing from the app's log",
    counts.get("missing", len(missing)),
    help="Stripe says delivered; the app never logged it",
)

st.subheader("Undelivered")
if len(undelivered):
    undelivered = tables.linkify(undelivered, "payment_id").assign(
        event=tables.linkify(undelivered, "event_id")["event_id"],
        retry=undelivered["retry_left"].map(_left),
        window=undelivered["window_left"].map(_left),
    )
tables.show(
    undelivered,
    {
        "event": tables.link_col("Event"),
        "type": tables.text_col("Type"),
        "created": tables.time_col("Created (UTC)"),
        "pending_webhooks": st.column_config.NumberColumn("Pending at (endpoints)", format="%d"),
        "payment_id": tables.link_col("Payment"),
        "customer_email": tables.text_col("Customer"),
        "retry": tables.text_col("Stripe retries for"),
        "window": tables.text_col("Leaves the 30-day Events list in"),
    },
    empty="Every payment event was delivered.",
)

st.subheader("Failed in the app")
if len(failed):
    failed = failed.assign(event=tables.linkify(failed, "event_id")["event_id"])
tables.show(
    failed,
    {
        "event": tables.link_col("Event"),
        "type": tables.text_col("Type"),
        "received_at": tables.time_col("Received (UTC)"),
        "attempts": st.column_config.NumberColumn("Attempts", format="%d", width="small"),
        "customer_email": tables.text_col("Customer"),
        "error": tables.text_col("The app's error", width="large"),
    },
    empty="No failure in the app's webhook log.",
)

st.subheader("Missing from the app's log")
if len(missing):
    missing = tables.linkify(missing, "payment_id").assign(
        event=tables.linkify(missing, "event_id")["event_id"]
    )
tables.show(
    missing,
    {
        "event": tables.link_col("Event"),
        "type": tables.text_col("Type"),
        "created": tables.time_col("Created (UTC)"),
        "payment_id": tables.link_col("Payment"),
        "customer_email": tables.text_col("Customer"),
        "hint": tables.text_col("Hint", width="large"),
    },
    empty="Every delivered event is in the app's log.",
    height=300,
)

# --- delivery over time ------------------------------------------------------------------------------
st.subheader("Delivery over the last 30 days")
daily = overview.daily
if daily is None or daily.empty:
    st.caption("No events in the last 30 days.")
else:
    long = daily.melt(id_vars=["day"], value_vars=["delivered", "pending"], var_name="state", value_name="n")
    long = charts.with_utc_text(long, "day", "date", "%Y-%m-%d")
    chart = (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=charts.utc_axis("day", "day (UTC)"),
            y=alt.Y("n:Q", title="events", stack="zero"),
            color=alt.Color(
                "state:N", scale=alt.Scale(domain=["delivered", "pending"], range=["#2ca02c", "#d62728"])
            ),
            tooltip=["date", "state", "n"],
        )
    )
    st.altair_chart(chart, width="stretch")
