"""Discrepancies: every finding, filtered and paged in SQL; choosing one shows both sides, the root-cause
hint, the timeline, a link to Stripe, and the actions (Activate, Acknowledge)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pandas as pd
import streamlit as st

from monitor import actions
from monitor.errors import MonitorError
from monitor.rules.findings import KINDS
from ui import activate, context, data, incidents, tables
from ui.text import md_escape, money, one_line, short, too_long, utc, with_major

PAGE_SIZES = (25, 50, 100)
MAX_SEARCH = 320  # characters: an e-mail address at most, and any id
SEARCH_CAP = 4 * MAX_SEARCH  # what the box takes, so a longer search is refused in words, not cut
MAX_FINDING_ID = 64
STATUSES = ("open", "acknowledged", "resolved")

who = context.page(
    "Discrepancies",
    ":material/rule:",
    "Every place where Stripe and the app's subscriptions disagree. Choose a row for both sides and the fix.",
)
db = context.key()
cfg = context.config()

# --- filters ---------------------------------------------------------------------------------------
# Every filter, the page and the chosen finding live in the URL (bind="query-params", the key being the
# parameter's name), so Back, Forward, reload and a shared link show the same list.


def _first_page() -> None:
    """A changed filter starts again at page 1 (only the person's change: Back restores the URL's page)."""
    st.session_state["page"] = 1


with st.container(border=True):
    text = st.text_input(
        "Search",
        placeholder="e-mail, payment id (cs_, in_, pi_), event id, kind or words of the hint",
        max_chars=SEARCH_CAP,  # more than MAX_SEARCH: an over-long search is said, not silently cut
        key="search",
        bind="query-params",
        on_change=_first_page,
    )
    c1, c2, c3, c4, c5 = st.columns([3, 2, 3, 2, 1])
    kinds = c1.multiselect(
        "Kind", list(KINDS), key="kind", placeholder="any kind", bind="query-params", on_change=_first_page
    )
    severities = c2.multiselect(
        "Severity",
        ["critical", "warning"],
        key="severity",
        placeholder="any",
        bind="query-params",
        on_change=_first_page,
    )
    statuses = c3.multiselect(
        "Status",
        STATUSES,
        default=["open", "acknowledged"],
        key="status",
        bind="query-params",
        on_change=_first_page,
    )
    dates = c4.date_input(
        "Occurred between (UTC)",
        value=(),
        key="dates",
        format="YYYY-MM-DD",
        bind="query-params",
        on_change=_first_page,
    )
    size = c5.selectbox(
        "Rows per page", PAGE_SIZES, index=1, key="size", bind="query-params", on_change=_first_page
    )


def _bounds(value) -> tuple[datetime | None, datetime | None]:
    """A date range (0, 1 or 2 dates) as inclusive UTC datetimes."""
    picked = [d for d in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(d, date)]
    if not picked:
        return None, None
    start = datetime.combine(picked[0], time.min, UTC)
    end = datetime.combine(picked[-1], time.min, UTC) + timedelta(days=1) - timedelta(microseconds=1)
    return start, end


text = (text or "").strip()
if len(text) > MAX_SEARCH:
    st.error(
        md_escape(too_long("The search", len(text), MAX_SEARCH, SEARCH_CAP), None), icon=":material/error:"
    )
    st.stop()
since, until = _bounds(dates)
size = size or PAGE_SIZES[1]
filters = (
    tuple(kinds) or None,
    tuple(severities) or None,
    tuple(statuses) or STATUSES,
    since,
    until,
    text,
)
first, total = data.find_findings(db, *filters, size, 0)
pages = max(1, -(-total // size))
asked_page = str(st.query_params.get("page", "") or "")

if st.toggle(
    "Group by incident",
    key="group",
    bind="query-params",
    help="The open findings by their cause (an outage, an endpoint problem, an app error), as on the Overview.",
):
    incidents.grouped(db)
    st.stop()
st.subheader(f"{total} finding{'s' if total != 1 else ''}")
table_box = st.container()
page_no = st.pagination(pages, key="page", bind="query-params", max_visible_pages=9) if pages > 1 else 1
if asked_page and asked_page != str(page_no) and not (asked_page.isdigit() and 1 <= int(asked_page) <= pages):
    st.warning(
        f"There is no page {md_escape(asked_page, 20)} of this list: it has {pages}. Showing page {page_no}.",
        icon=":material/link_off:",
    )
frame = first if page_no == 1 else data.find_findings(db, *filters, size, (page_no - 1) * size)[0]
table_key = f"disc:table:{hash(filters)}:{size}:{page_no}"
shown_ids = [str(i) for i in frame["id"]] if len(frame) else []


def _choose() -> None:
    """The chosen row becomes `?finding=` (a new history entry: Back returns to the list); none, none."""
    rows = list(st.session_state[table_key].selection.rows or [])
    if rows and rows[0] < len(shown_ids):
        st.query_params["finding"] = shown_ids[rows[0]]
    else:
        st.query_params.pop("finding", None)


with table_box:
    shown = with_major(tables.linkify(frame, "payment_id"), "amount")
    tables.show(
        shown,
        {
            **tables.kind_cols(),
            "customer_email": tables.text_col("Customer"),
            **tables.amount_cols(frame),
            "payment_id": tables.link_col("Payment (Stripe)"),
            "occurred_at": tables.time_col("Occurred (UTC)"),
            "last_seen": tables.time_col("Last seen (UTC)"),
            "hint": tables.text_col("Hint", width="large"),
        },
        key=table_key,
        select=_choose,
        empty="No finding matches these filters.",
    )

# --- the chosen finding ----------------------------------------------------------------------------
chosen = str(st.query_params.get("finding") or "") or None
if chosen is not None and len(chosen) > MAX_FINDING_ID:
    st.error(f"No finding has an id that long ({len(chosen):,} characters).", icon=":material/error:")
    st.stop()

activate.render()

if chosen is None:
    st.caption("Choose a row (the box at its left) to see the finding in full.")
    st.stop()

detail = data.finding_detail(db, chosen)
if detail is None:
    st.warning(f"No finding with id {md_escape(chosen)}.")
    st.stop()

f = detail.finding
payment = detail.payment or {}
st.divider()
st.header(md_escape(f.kind.replace("_", " ").capitalize()), anchor=False)
st.caption(
    f"{md_escape(f.severity)} · {md_escape(f.status)} · finding {md_escape(f.id)} · "
    f"first seen {md_escape(utc(f.first_seen))} · last seen {md_escape(utc(f.last_seen))}"
)
m1, m2, m3 = st.columns(3)
m1.metric("Amount", money(f.amount, f.currency) or "-")
# A metric's value is Markdown (e-mails become links): Stripe's and the customer's text goes in st.text.
with m2:
    st.caption("Customer")
    st.text(short(f.customer_email or payment.get("customer_email") or "-", 80))
with m3:
    st.caption("Payment")
    st.text(short(f.payment_id or "-", 80))

st.markdown("**Why (root-cause hint)**")
hint = one_line(f.hint)
st.warning(md_escape(hint, 1500), icon=":material/explore:")
if len(hint) > 1500:
    with st.expander("The whole hint"):
        st.code(hint, language=None, wrap_lines=True)
incidents.of_finding(f.id)
if f.ack_note:
    st.info(
        f"Acknowledged by {md_escape(f.ack_by)}: {md_escape(f.ack_note, 1000)}",
        icon=":material/chat:",
    )

if detail.stripe_url:
    st.link_button("Open in Stripe's dashboard", detail.stripe_url, icon=":material/open_in_new:")

# --- actions -----------------------------------------------------------------------------------------
if f.status != "resolved":
    a1, a2 = st.columns([1, 3])
    with a1:
        if f.kind in activate.ACTIVATABLE_KINDS and activate.can_activate(f.payment_id):
            activate.button(f.payment_id, key=f"disc:activate:{f.id}")
        else:
            st.caption("Activate applies to paid payments without an active row.")
    with a2, st.form(f"ack:{f.id}", border=False):
        note = st.text_input(
            "Acknowledge with a note (alerts skip it; it stays visible)",
            max_chars=500,
            placeholder="e.g. refund agreed with the customer, ticket #123",
            key=f"ack:note:{f.id}",
        )
        ack = st.form_submit_button(
            "Acknowledge",
            key=f"ack:submit:{f.id}",
            disabled=not who.may_acknowledge,
            help=None if who.may_acknowledge else who.why_not("acknowledge findings"),
        )
    if ack:
        try:
            actions.acknowledge(context.engine(), cfg, f.id, who.name or "", note.strip())
        except MonitorError as e:
            st.error(md_escape(cfg.mask(str(e)), None))
        else:
            data.refresh()
            st.rerun()

# --- both sides ------------------------------------------------------------------------------------
stripe_side, app_side = st.columns(2)
with stripe_side:
    st.subheader("Stripe side")
    if payment:
        p = pd.DataFrame(
            [
                ("payment", payment.get("payment_id")),
                ("source", payment.get("source")),
                ("amount", money(payment.get("amount"), payment.get("currency"))),
                ("refunded", money(payment.get("amount_refunded"), payment.get("currency"))),
                ("dispute", payment.get("dispute_status")),
                ("customer", payment.get("customer_id")),
                ("e-mail", payment.get("customer_email")),
                ("paid at", utc(payment.get("created"))),
                ("checkout session", payment.get("checkout_session_id")),
                ("payment intent", payment.get("payment_intent_id")),
                ("invoice", payment.get("invoice_id")),
                ("subscription", payment.get("stripe_subscription_id")),
                ("subscription status", payment.get("stripe_subscription_status")),
            ],
            columns=["", "value"],
        )
        p["value"] = p["value"].map(one_line)
        st.dataframe(p[p["value"] != ""], hide_index=True, width="stretch")
    else:
        st.caption("This finding is not about one payment.")
    ev = detail.event
    if ev:
        st.markdown("**Event and its delivery**")
        st.text(short(ev.get("delivery") or f"{ev.get('type') or 'event'} {ev.get('id')}", 300))
        if ev.get("countdown"):
            st.caption(md_escape(ev["countdown"], 300))
        log = pd.DataFrame(ev.get("log") or [])
        st.caption("The app's webhook log for it")
        tables.show(
            log,
            {
                "received_at": tables.time_col("Received (UTC)"),
                "status": tables.text_col("Status"),
                "error": tables.text_col("Error", width="large"),
                "processed_at": tables.time_col("Processed (UTC)"),
            },
            empty="No record: the app never logged this event.",
        )
    if detail.stripe_object:
        with st.expander("Raw Stripe object"):
            st.json(detail.stripe_object, expanded=False)
with app_side:
    st.subheader("App side")
    if detail.app_error:
        st.error(f"The app's database could not be read: {md_escape(cfg.mask(detail.app_error), 600)}")
    row_columns = {
        "id": st.column_config.NumberColumn("Row", format="%d", width="small"),
        "status": tables.text_col("Status", width="small"),
        "email": tables.text_col("E-mail"),
        "amount_major": tables.money_col("Amount", ["usd"]),
        "currency": tables.text_col("Cur.", width="small"),
        "created_at": tables.time_col("Created (UTC)"),
        "activated_at": tables.time_col("Activated (UTC)"),
        "current_period_end": tables.time_col("Period end (UTC)"),
    }
    rows = pd.DataFrame(detail.rows)
    st.caption("Rows linked to this payment")
    tables.show(with_major(rows, "amount") if len(rows) else rows, row_columns, empty="No row links to it.")
    candidates = pd.DataFrame(detail.candidate_rows)
    if len(candidates):
        st.caption("Other rows of the same customer or e-mail (weak matches)")
        tables.show(with_major(candidates, "amount"), row_columns)

st.subheader("Timeline")
timeline = pd.DataFrame(detail.timeline)
tables.show(
    timeline,
    {
        "at": tables.time_col("When (UTC)"),
        "kind": tables.text_col("What", width="small"),
        "what": tables.text_col("Event"),
        "detail": tables.text_col("Detail", width="large"),
    },
    empty="Nothing recorded.",
)
outages = detail.outages
if outages:
    st.caption("Outages around the payment")
    tables.show(
        pd.DataFrame([o.__dict__ for o in outages]),
        {
            "component": tables.text_col("Component"),
            "start": tables.time_col("From (UTC)"),
            "end": tables.time_col("To (UTC)"),
            "error": tables.text_col("Error", width="large"),
        },
    )
