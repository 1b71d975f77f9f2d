"""Finance: do payments and subscriptions agree for a period, how much money is at risk, and where access
outlives the money. Every table downloads as CSV (spreadsheet formulas neutralised)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from monitor.clock import now_utc
from ui import context, data, tables
from ui.text import md_escape, money, with_major

PERIODS = {"Day": "day", "Week": "week", "Month": "month"}

context.page(
    "Finance",
    ":material/payments:",
    "Payments against activated subscriptions, by period and currency. Amounts in major units.",
)
db = context.key()

today = now_utc().date()
left, right = st.columns([1, 2])
with left:
    period_label = st.segmented_control("Period", list(PERIODS), default="Day", key="fin:period") or "Day"
with right:
    picked = st.date_input(
        "Payments made between (UTC)",
        value=(today - timedelta(days=30), today),
        max_value=today,
        key="fin:range",
        format="YYYY-MM-DD",
    )
days = [d for d in (picked if isinstance(picked, (list, tuple)) else [picked]) if isinstance(d, date)]
if not days:
    days = [today - timedelta(days=30), today]
since = datetime.combine(days[0], time.min, UTC)
until = datetime.combine(days[-1], time.max, UTC)
period = PERIODS[period_label]
fin = data.finance(db, period, since, until)
stamp = f"{days[0]:%Y%m%d}-{days[-1]:%Y%m%d}"


def _majors(frame: pd.DataFrame, *amounts: str) -> pd.DataFrame:
    out = frame
    for a in amounts:
        out = with_major(out, a)
    return out


# --- totals ----------------------------------------------------------------------------------------
totals = fin["totals"]
st.subheader("The whole range")
if totals.empty:
    st.caption("No payment in this range.")
for row in totals.to_dict("records"):
    cur = row["currency"]
    label = md_escape(str(cur).upper(), 12)  # a label is Markdown: Stripe-supplied text, escaped
    cols = st.columns(4)
    cols[0].metric(f"Paid ({label})", money(row["paid_amount"], cur), help=f"{row['payments']} payments")
    cols[1].metric(f"Activated ({label})", money(row["activated_amount"], cur))
    cols[2].metric(f"At risk ({label})", money(row["at_risk_amount"], cur), help="paid, no active row")
    cols[3].metric(f"Parity ({label})", f"{row['parity_pct']:.1f} %" if pd.notna(row["parity_pct"]) else "-")

# --- by period -------------------------------------------------------------------------------------
st.subheader(f"Parity by {period}")
parity = fin["parity"]
shown = _majors(parity, "paid_amount", "activated_amount", "at_risk_amount")
currencies = parity["currency"].dropna().unique() if len(parity) else ()
money_cols = {
    "paid_amount_major": tables.money_col("Paid", currencies),
    "activated_amount_major": tables.money_col("Activated", currencies),
    "at_risk_amount_major": tables.money_col("At risk", currencies),
}
tables.show(
    shown,
    {
        "period_start": st.column_config.DateColumn(f"{period.capitalize()} from (UTC)", format="YYYY-MM-DD"),
        "currency": tables.text_col("Cur.", width="small"),
        "payments": st.column_config.NumberColumn("Payments", format="%d"),
        "activated_payments": st.column_config.NumberColumn("Activated", format="%d"),
        **money_cols,
        "parity_pct": st.column_config.NumberColumn("Parity", format="%.1f %%"),
    },
    key="fin:parity",
    empty="No payment in this range.",
)
tables.download(shown, f"Parity by {period}", f"parity-by-{period}-{stamp}.csv", key="fin:dl:parity")

if len(parity):
    # One chart per currency: amounts in different currencies do not add up.
    for column, cur in zip(st.columns(len(currencies)), sorted(currencies), strict=True):
        part = shown[shown["currency"] == cur.upper()]
        long = part.melt(
            id_vars=["period_start"],
            value_vars=["activated_amount_major", "at_risk_amount_major"],
            var_name="what",
            value_name="amount",
        )
        long["what"] = long["what"].map(
            {"activated_amount_major": "activated", "at_risk_amount_major": "at risk"}
        )
        chart = (
            alt.Chart(long, title=f"Paid in {cur.upper()}")
            .mark_bar()
            .encode(
                x=alt.X("period_start:T", title=f"{period} (UTC)"),
                y=alt.Y("amount:Q", title=cur.upper(), stack="zero"),
                color=alt.Color(
                    "what:N",
                    scale=alt.Scale(domain=["activated", "at risk"], range=["#2ca02c", "#d62728"]),
                    legend=alt.Legend(orient="bottom", title=None),
                ),
                tooltip=[alt.Tooltip("period_start:T", format="%Y-%m-%d"), "what", "amount"],
            )
        )
        column.altair_chart(chart, width="stretch")


# --- where access outlives the money ---------------------------------------------------------------
def issues(title: str, name: str, explain: str) -> None:
    st.subheader(title)
    st.caption(explain)
    frame = fin[name]
    sums = fin.get(f"{name}_totals") or {}
    if sums:
        cols = st.columns(max(len(sums), 1))
        for column, (cur, amount) in zip(cols, sorted(sums.items()), strict=False):
            column.metric(f"Total ({md_escape(str(cur).upper(), 12)})", money(amount, cur))
    tables.show(
        _majors(tables.linkify(frame, "payment_id"), "amount") if len(frame) else frame,
        {
            "payment_id": tables.link_col("Payment"),
            "customer_email": tables.text_col("Customer"),
            "amount_major": tables.money_col(
                "Amount", frame["currency"].dropna().unique() if len(frame) else ()
            ),
            "currency": tables.text_col("Cur.", width="small"),
            "first_seen": tables.time_col("Since (UTC)"),
            "status": tables.text_col("Status", width="small"),
            "hint": tables.text_col("Hint", width="large"),
        },
        key=f"fin:{name}",
        empty="None.",
    )
    tables.download(
        _majors(frame, "amount") if len(frame) else frame, title, f"{name}-{stamp}.csv", key=f"fin:dl:{name}"
    )


issues(
    "Refunded but still active",
    "refunded_but_active",
    "Refunded in full, or the dispute was lost, and the app still gives access.",
)
issues(
    "Active without a payment",
    "active_without_payment",
    "An active row in the app with no paid Stripe payment behind it.",
)

st.subheader("Totals per currency")
tables.show(
    _majors(totals, "paid_amount", "activated_amount", "at_risk_amount"),
    {
        "currency": tables.text_col("Cur.", width="small"),
        "payments": st.column_config.NumberColumn("Payments", format="%d"),
        "activated_payments": st.column_config.NumberColumn("Activated", format="%d"),
        **money_cols,
        "parity_pct": st.column_config.NumberColumn("Parity", format="%.1f %%"),
    },
    key="fin:totals",
    empty="No payment in this range.",
)
tables.download(
    _majors(totals, "paid_amount", "activated_amount", "at_risk_amount"),
    "Totals per currency",
    f"totals-{stamp}.csv",
    key="fin:dl:totals",
)
