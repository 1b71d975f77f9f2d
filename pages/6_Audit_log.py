"""Audit log: every repair and refusal (who, when, what Stripe said, the rows before and after), what the
operators did (acknowledgements, exports, runs asked for), the background checks when asked for, and every
alert sent. Readable columns; the raw JSON stays in the store."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import context, data, tables

LIMITS = (50, 200, 1000)

context.page(
    "Audit log",
    ":material/history:",
    "What the monitor and its operators did, newest first. Nothing here is ever edited.",
)
db = context.key()
left, right = st.columns([1, 2], vertical_alignment="bottom")
limit = left.selectbox(
    "Show the newest", LIMITS, index=1, key="limit", format_func=lambda n: f"{n} of each", bind="query-params"
)
background = right.toggle(
    "Background checks too (sync, reconcile, probes, the scheduler's jobs)",
    key="background",
    bind="query-params",
    help="Off: only what operators did. On: also every run of the monitor's own checks.",
)
log = data.audit_log(db, limit, background)

st.subheader("Repairs and refusals")
repairs = log.get("repairs")
if repairs is not None and len(repairs):
    repairs = tables.linkify(repairs, "payment_id")
outcomes = sorted(repairs["outcome"].dropna().unique()) if repairs is not None and len(repairs) else []
chosen = st.multiselect("Outcome", outcomes, key="audit:outcomes", placeholder="any outcome", width=480)
if chosen:
    repairs = repairs[repairs["outcome"].isin(chosen)]
tables.show(
    repairs,
    {
        "started_at": tables.time_col("When (UTC)"),
        "payment_id": tables.link_col("Payment"),
        "requested_id": tables.text_col("Asked as"),
        "operator": tables.text_col("Operator"),
        "role": tables.text_col("Role", width="small"),
        "strategy": tables.text_col("Strategy", width="small"),
        "dry_run": st.column_config.CheckboxColumn("Dry run", width="small"),
        "outcome": tables.text_col("Outcome"),
        "reason": tables.text_col("Reason", width="large"),
        "rows_before": tables.text_col("Rows before"),
        "rows_after": tables.text_col("Rows after"),
        "id": st.column_config.NumberColumn("Entry", format="%d", width="small"),
    },
    empty="No repair has been attempted.",
)

st.subheader("Operator actions and background checks" if background else "Operator actions")
runs = log.get("job_runs")
tables.show(
    runs,
    {
        "started_at": tables.time_col("When (UTC)"),
        "job": tables.text_col("What"),
        "operator": tables.text_col("Operator"),
        "role": tables.text_col("Role", width="small"),
        "outcome": tables.text_col("Outcome", width="small"),
        "error": tables.text_col("Why it failed", width="medium"),
        "details": tables.text_col("Details", width="large"),
        "duration_s": st.column_config.NumberColumn("Took (s)", format="%.1f", width="small"),
    },
    empty=(
        "Nothing has run."
        if background
        else "No operator has acted yet. Turn on “Background checks too” for the monitor's own runs."
    ),
)

st.subheader("Alerts sent")
alerts = log.get("alerts")
tables.show(
    alerts if alerts is not None else pd.DataFrame(),
    {
        "sent_at": tables.time_col("Sent (UTC)"),
        "status": tables.text_col("Status", width="small"),
        "target": tables.text_col("Target (masked)"),
        "title": tables.text_col("Title"),
        "error": tables.text_col("Error", width="large"),
    },
    empty="No alert has been sent (set ALERT_URLS and run python -m jobs).",
)
