"""Finance: do payments and subscriptions agree for a period, how much money is at risk, and where access
outlives the money. Every table downloads as CSV (spreadsheet formulas neutralised)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import altair as alt
import pandas as pd
import streamlit as st

from monitor.clock import now_utc
from monitor.rules.findings import PARITY_DEFINITION
from monitor.views.finance import PRESETS, preset_range
from ui import charts, context, data, tables
from ui.text import md_escape, money, with_major

PERIODS = {"Day": "day", "Week": "week", "Month": "month"}

context.page(
    "Finance",
    ":material/payments:",
    "Payments against activated subscriptions, by period and currency. Amounts in major units.",
)
db = context.key()

today = now_utc().date()


def _apply_preset(name: str) -> None:
    st.session_state["dates"] = preset_range(name, today)


left, middle, right = st.columns([5, 8, 7], vertical_alignment="bottom")
with left:
    period_label = (
        st.segmented_control("Period", list(PERIODS), default="Day", key="period", bind="query-params")
        or "Day"
    )
with right:  # before the presets, which mark the one these dates are (the dates live in the URL)
    picked = st.date_input(
        "Payments made between (UTC)",
        value=preset_range(PRESETS[2], today),
        max_value=today,
        key="dates",
        format="YYYY-MM-DD",
        bind="query-params",
    )
with middle:
    chosen_days = tuple(picked) if isinstance(picked, (list, tuple)) else (picked,)
    for column, name in zip(st.columns(len(PRESETS)), PRESETS, strict=True):
        column.button(
            name,
            key=f"preset:{name}",
            type="primary" if preset_range(name, today) == chosen_days else "secondary",
            on_click=_apply_preset,
            args=(name,),
            width="stretch",
            help="Dates in UTC. Last month: the whole calendar month before this one; this month: from its 1st.",
        )
days = [d for d in (picked if isinstance(picked, (list, tuple)) else [picked]) if isinstance(d, date)]
if not days:
    days = list(preset_range(PRESETS[2], today))
since = datetime.combine(days[0], time.min, UTC)
until = datetime.combine(days[-1], time.max, UTC)
st.caption(f"Every table and every CSV below is about {days[0]:%Y-%m-%d} to {days[-1]:%Y-%m-%d} (UTC).")
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
    cols[3].metric(
        f"Parity ({label})",
        f"{row['parity_pct']:.1f} %" if pd.notna(row["parity_pct"]) else "-",
        help=PARITY_DEFINITION,
    )

# --- by period -------------------------------------------------------------------------------------
st.subheader(f"Parity by {period}", help=PARITY_DEFINITION)
parity = fin["parity"]
shown = _majors(parity, "paid_amount", "activated_amount", "at_risk_amount")
currencies = parity["currency"].dropna().unique() if len(parity) else ()
# The columns both parity tables (by period, per currency) show after their first.
parity_cols = {
    "currency": tables.text_col("Cur.", width="small"),
    "payments": st.column_config.NumberColumn("Payments", format="%d"),
    "activated_payments": st.column_config.NumberColumn("Activated", format="%d"),
    "matched_payments": st.column_config.NumberColumn("Matched", format="%d", help=PARITY_DEFINITION),
    "paid_amount_major": tables.money_col("Paid", currencies),
    "activated_amount_major": tables.money_col("Activated", currencies),
    "at_risk_amount_major": tables.money_col("At risk", currencies),
    "parity_pct": st.column_config.NumberColumn("Parity", format="%.1f %%", help=PARITY_DEFINITION),
}
tables.show(
    shown,
    {
        "period_start": st.column_config.DateColumn(f"{period.capitalize()} from (UTC)", format="YYYY-MM-DD"),
        **parity_cols,
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
        long = charts.with_utc_text(long, "period_start", "from", "%Y-%m-%d")
        long["what"] = long["what"].map(
            {"activated_amount_major": "activated", "at_risk_amount_major": "at risk"}
        )
        chart = (
            alt.Chart(long, title=f"Paid in {cur.upper()}")
            .mark_bar()
            .encode(
                x=charts.utc_axis("period_start", f"{period} (UTC)"),
                y=alt.Y("amount:Q", title=cur.upper(), stack="zero"),
                color=alt.Color(
                    "what:N",
                    scale=alt.Scale(domain=["activated", "at risk"], range=["#2ca02c", "#d62728"]),
                    legend=alt.Legend(orient="bottom", title=None),
                ),
                tooltip=["from", "what", "amount"],
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
            **tables.amount_cols(frame),
            "occurred_at": tables.time_col("Occurred (UTC)"),
            "first_seen": tables.time_col("Found (UTC)"),
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
    "Refunded in full, or the dispute was lost, and the app still gives access: payments made in the range.",
)
issues(
    "Active without a payment",
    "active_without_payment",
    "An active row in the app with no paid Stripe payment behind it: rows created in the range.",
)

st.subheader("Totals per currency")
tables.show(
    _majors(totals, "paid_amount", "activated_amount", "at_risk_amount"),
    parity_cols,
    key="fin:totals",
    empty="No payment in this range.",
)
tables.download(
    _majors(totals, "paid_amount", "activated_amount", "at_risk_amount"),
    "Totals per currency",
    f"totals-{stamp}.csv",
    key="fin:dl:totals",
)
