"""Customer lookup, where a support ticket starts: one box (e-mail, cus_, cs_, pi_, in_, sub_, evt_ or the
app's row id), one timeline of everything about that customer, and Activate for a payment that needs it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from monitor import demo
from monitor.errors import MonitorError
from monitor.rules.findings import KINDS
from ui import activate, context, data, incidents, tables
from ui.text import md_code, md_escape, money, one_line, short, too_long, utc, with_major

MAX_QUERY = 320  # characters: an e-mail address at most, and any id
QUERY_CAP = 4 * MAX_QUERY  # what the box takes, so a longer query is refused in words, not silently cut

context.page(
    "Customer lookup",
    ":material/person_search:",
    "Start here with a support ticket: what happened to this customer's payments, and can it be fixed now?",
)
db = context.key()
cfg = context.config()
sample = demo.sample_customer(cfg)


def _try_sample_customer() -> None:
    st.session_state["q"] = sample


# The first text input on the page (a browser test types into it): keep it first. It lives in the URL
# (`?q=`), so Back, Forward, reload and a link from the Overview show the same customer.
query = st.text_input(
    "E-mail, Stripe id (cus_, cs_, pi_, in_, sub_, evt_) or the app's subscription row id",
    key="q",
    max_chars=QUERY_CAP,
    placeholder="e.g. someone@example.com, cus_…, cs_…, pi_…, 412",
    bind="query-params",
)
query = (query or "").strip()
if not query:
    st.caption("Type what the ticket gives you and press Enter. E-mails match in any case.")
    if sample is not None:
        st.button("Try the demo's USD 149 customer", on_click=_try_sample_customer, icon=":material/person:")
    st.stop()
if len(query) > MAX_QUERY:
    st.error(
        md_escape(too_long("The e-mail or id", len(query), MAX_QUERY, QUERY_CAP), None),
        icon=":material/error:",
    )
    st.stop()

try:
    view = data.customer_lookup(db, query)
except MonitorError as e:
    st.error(f"**The lookup failed.** {md_escape(cfg.mask(str(e)), 600)}")
    st.stop()
if view is None:
    st.warning(
        f"Nothing is known about “{md_escape(query, 120)}”. Check the spelling, or try another id of theirs."
    )
    st.stop()

# --- who -----------------------------------------------------------------------------------------------
c = view.customer
name = one_line(c.get("name"))
st.header(md_escape(name or c.get("email") or "Unnamed customer", 80), anchor=False)
if len(name) > 80:
    with st.expander("Full name as Stripe has it"):
        st.code(name, language=None, wrap_lines=True)
st.text("E-mails: " + (", ".join(short(e, 120) for e in c.get("emails") or []) or "-"))
st.text("Stripe customers: " + (", ".join(short(i, 60) for i in c.get("customer_ids") or []) or "-"))
if view.app_error:
    st.error(f"The app's database could not be read: {md_escape(cfg.mask(view.app_error), 600)}")

payments = view.payments
paid_total = {}
for p in payments.to_dict("records"):
    if pd.notna(p.get("amount")) and p.get("currency"):
        paid_total[p["currency"]] = paid_total.get(p["currency"], 0) + int(p["amount"])
m = st.columns(4)
m[0].metric("Payments", len(payments))
m[1].metric("Paid in all", ", ".join(money(a, cur) for cur, a in sorted(paid_total.items())) or "-")
m[2].metric("Subscription rows", len(view.rows))
m[3].metric("Open findings", len(view.findings))
incidents.of_customer(view)

# --- what needs doing --------------------------------------------------------------------------------
status_of = dict(zip(payments["payment_id"], payments["status_in_app"], strict=True)) if len(payments) else {}
needs = [
    f for f in view.findings if f.kind in activate.ACTIVATABLE_KINDS and activate.can_activate(f.payment_id)
]
if needs:
    st.subheader("Needs action")
for f in needs:
    with st.container(border=True):
        left, right = st.columns([5, 1], vertical_alignment="center")
        in_app = str(status_of.get(f.payment_id, "no row"))
        with left:
            st.markdown(
                f":red[:material/error:] **{md_escape(money(f.amount, f.currency))}** paid "
                f"{md_escape(utc(f.occurred_at))}: {md_escape(KINDS[f.kind][1])}"
            )
            st.caption(f"{md_escape(f.kind)} · {md_code(f.payment_id)} · in the app now: {md_escape(in_app)}")
            st.text(short(f.hint, 600))
        with right:
            if in_app.startswith("active"):
                st.success("Active now; the finding resolves at the next reconcile.")
            else:
                activate.button(f.payment_id, key=f"lookup:activate:{f.payment_id}")
activate.render()

# --- everything about them -------------------------------------------------------------------------
st.subheader("Timeline")
tables.show(
    view.timeline,
    {
        "at": tables.time_col("When (UTC)"),
        "kind": tables.text_col("What", width="small"),
        "title": tables.text_col("Event"),
        "detail": tables.text_col("Detail", width="large"),
        "ref": tables.text_col("Id"),
    },
    empty="Nothing recorded.",
)

st.subheader("Payments")
shown = with_major(payments.assign(payment=payments["stripe_url"]), "amount")
shown = with_major(shown, "amount_refunded", into="refunded_major")
tables.show(
    shown,
    {
        "payment": tables.link_col("Payment (Stripe)"),
        "source": tables.text_col("Source", width="small"),
        "created": tables.time_col("Paid (UTC)"),
        "amount_major": tables.money_col("Amount", payments["currency"].dropna().unique()),
        "currency": tables.text_col("Cur.", width="small"),
        "refunded_major": tables.money_col("Refunded", payments["currency"].dropna().unique()),
        "dispute_status": tables.text_col("Dispute", width="small"),
        "status_in_app": tables.text_col("In the app"),
        "open_findings": st.column_config.ListColumn("Open findings"),
        "event_id": tables.text_col("Event"),
    },
    empty="No payment at Stripe.",
)

st.subheader("Subscription rows in the app")
rows = view.rows
tables.show(
    with_major(rows, "amount") if len(rows) else rows,
    {
        "id": st.column_config.NumberColumn("Row", format="%d", width="small"),
        "status": tables.text_col("Status", width="small"),
        "email": tables.text_col("E-mail"),
        "amount_major": tables.money_col("Amount", rows["currency"].dropna().unique() if len(rows) else ()),
        "currency": tables.text_col("Cur.", width="small"),
        "checkout_session_id": tables.text_col("Checkout Session"),
        "stripe_subscription_id": tables.text_col("Stripe subscription"),
        "created_at": tables.time_col("Created (UTC)"),
        "activated_at": tables.time_col("Activated (UTC)"),
        "current_period_end": tables.time_col("Period end (UTC)"),
    },
    empty="The app has no subscription row for this customer.",
)

st.subheader("Findings")
findings = pd.DataFrame(view.findings)
if len(findings):
    findings = with_major(findings, "amount").assign(
        first_seen=pd.to_datetime(findings["first_seen"], utc=True)
    )
tables.show(
    findings,
    {
        **tables.kind_cols(),
        "payment_id": tables.text_col("Payment"),
        **tables.amount_cols(findings),
        "first_seen": tables.time_col("First seen (UTC)"),
        "hint": tables.text_col("Hint", width="large"),
    },
    empty="No open finding about this customer.",
)

st.subheader("Repairs")
repairs = pd.DataFrame(view.repairs)
tables.show(
    repairs,
    {
        "started_at": tables.time_col("When (UTC)"),
        "payment_id": tables.text_col("Payment"),
        "operator": tables.text_col("Operator"),
        "role": tables.text_col("Role", width="small"),
        "dry_run": st.column_config.CheckboxColumn("Dry run", width="small"),
        "outcome": tables.text_col("Outcome"),
        "reason": tables.text_col("Reason", width="large"),
    },
    empty="No repair attempted.",
)
if view.outages:
    st.subheader("Outages around their payments")
    tables.show(
        pd.DataFrame([o.__dict__ for o in view.outages]),
        {
            "component": tables.text_col("Component"),
            "start": tables.time_col("From (UTC)"),
            "end": tables.time_col("To (UTC)"),
            "error": tables.text_col("Error", width="large"),
        },
    )
