"""Audit log: every repair and refusal (who, when, what Stripe said, the rows before and after), every job
run with its error, and every alert sent."""

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
limit = st.selectbox(
    "Show the newest", LIMITS, index=1, key="audit:limit", format_func=lambda n: f"{n} of each", width=240
)
log = data.audit_log(db, limit)

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

st.subheader("Job runs")
runs = log.get("job_runs")
if runs is not None and len(runs) and "counts" in runs.columns:
    runs = runs.assign(counts=runs["counts"].map(lambda c: c if isinstance(c, str) or c is None else str(c)))
tables.show(
    runs,
    {
        "job": tables.text_col("Job"),
        "started_at": tables.time_col("Started (UTC)"),
        "finished_at": tables.time_col("Finished (UTC)"),
        "outcome": tables.text_col("Outcome", width="small"),
        "error": tables.text_col("Error", width="medium"),
        "counts": tables.text_col("Counts", width="large"),
    },
    empty="No job has run.",
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
