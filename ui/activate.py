"""The Activate button and its confirmation dialog, shared by the Discrepancies and Customer lookup pages.

Clicking Activate opens a dialog that first asks monitor.repair.activate for a dry run (Stripe is asked
again now; the plan says what would change), then, on "Confirm activation", calls the same function for
real. The role is checked by that function at every call; the disabled button is only a courtesy.
The dialog stays open through reruns while `session_state[OPEN]` names its payment (Streamlit reruns
the whole page on a click in AppTest, and on "Confirm" in the browser).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from monitor import actions, repair
from monitor.errors import MonitorError
from ui import context, data
from ui.text import md_escape, money, one_line, short

OPEN = "activate:open"  # the payment id whose dialog is open
PLAN = "activate:plan"  # the dry run shown in the open dialog
RESULT = "activate:result"  # the last real activation, shown on the page until the next one
NOTE = "activate:note"  # what the re-check after it found, shown once
ACTIVATABLE_KINDS = ("paid_without_subscription", "subscription_not_active")
_PAYMENT_PREFIXES = ("cs_", "in_", "pi_")


def can_activate(payment_id: object) -> bool:
    return isinstance(payment_id, str) and payment_id.startswith(_PAYMENT_PREFIXES)


def _open(payment_id: str) -> None:
    st.session_state[OPEN] = payment_id
    st.session_state.pop(PLAN, None)


def _close() -> None:
    st.session_state.pop(OPEN, None)
    st.session_state.pop(PLAN, None)


def button(payment_id: str, *, key: str, label: str = "Activate", primary: bool = True) -> None:
    """The Activate button for one payment; disabled (with the reason) for who may not activate."""
    who = context.operator()
    st.button(
        label,
        key=key,
        type="primary" if primary else "secondary",
        icon=":material/bolt:",
        disabled=not who.may_activate,
        help="Re-checks the payment at Stripe, shows the plan, then asks you to confirm."
        if who.may_activate
        else who.why_not("activate subscriptions"),
        on_click=_open,
        args=(payment_id,),
    )


def render() -> None:
    """Call once per page, after its buttons: the last activation's result, and the dialog when open."""
    note = st.session_state.pop(NOTE, None)
    if note:
        st.success(md_escape(note, None))
    result = st.session_state.get(RESULT)
    if result is not None:
        _result(result)
    payment_id = st.session_state.get(OPEN)
    if payment_id:
        _dialog(payment_id)


def _stripe_side(state: dict | None) -> None:
    if not state:
        return
    rows = [
        ("payment", state.get("payment_id")),
        ("Stripe says", state.get("status")),
        ("amount", money(state.get("amount"), state.get("currency"))),
        ("refunded", money(state.get("amount_refunded"), state.get("currency"))),
        ("disputes", ", ".join(state.get("disputes") or []) or "none"),
        ("customer", state.get("customer_id")),
        ("e-mail", state.get("email")),
        ("checkout session", state.get("checkout_session_id")),
        ("payment intent", state.get("payment_intent_id")),
        ("subscription", state.get("stripe_subscription_id")),
    ]
    frame = pd.DataFrame([(k, one_line(v)) for k, v in rows if v not in (None, "")], columns=["", "value"])
    st.dataframe(frame, hide_index=True, width="stretch")


def _rows(rows: list[dict], caption: str) -> None:
    st.caption(caption)
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    else:
        st.text("none")


@st.dialog("Activate subscription", width="large", on_dismiss=_close)
def _dialog(payment_id: str) -> None:
    cfg, who = context.config(), context.operator()
    plan = st.session_state.get(PLAN)
    if plan is None or plan.payment_id != payment_id:
        try:
            with st.spinner("Asking Stripe about the payment now (dry run, nothing changes)…"):
                plan = repair.activate(cfg, payment_id, who.name or "", dry_run=True, engine=context.engine())
        except MonitorError as e:
            st.error(md_escape(cfg.mask(str(e)), None))
            if st.button("Close", key="activate:close-error"):
                _close()
                st.rerun()
            return
        st.session_state[PLAN] = plan
    state = plan.stripe_state or {}
    st.text(
        short(
            f"{money(state.get('amount'), state.get('currency')) or 'Payment'} from "
            f"{state.get('email') or 'an unknown customer'} · {payment_id} · acting as {who.name or 'nobody'}",
            300,
        )
    )
    if plan.outcome != "planned":
        st.error(f"**Not possible: {md_escape(plan.outcome)}.** {md_escape(plan.reason, None)}")
        _stripe_side(state)
        if st.button("Close", key="activate:close-refused"):
            _close()
            st.rerun()
        return
    action = (plan.plan or {}).get("action")
    if action == "none":
        st.success(md_escape(plan.reason, None))
        _rows(plan.rows_before, "The app's rows for this payment")
        if st.button("Close", key="activate:close-none"):
            _close()
            st.rerun()
        return
    st.info(f"**Plan (dry run):** {md_escape(plan.reason, None)}", icon=":material/checklist:")
    stripe_now, change = st.columns(2)
    with stripe_now:
        st.caption("Stripe, asked just now")
        _stripe_side(state)
    with change:
        if action == "create":
            values = dict((plan.plan or {}).get("row") or {})
            if values.get("amount") is not None:
                values["amount"] = f"{money(values['amount'], values.get('currency'))} ({values['amount']})"
            st.caption("The row it will create (status active)")
            st.dataframe(
                pd.DataFrame(
                    [(k, one_line(v)) for k, v in values.items() if v is not None], columns=["", "value"]
                ),
                hide_index=True,
                width="stretch",
            )
        _rows(plan.rows_before, "The app's rows for this payment now")
    st.caption(
        "Exactly once: the app's rows are re-read inside one serialized transaction, so a second click finds "
        "the row active and changes nothing. Every attempt is in the audit log."
    )
    left, right = st.columns(2)
    if left.button("Confirm activation", key="activate:confirm", type="primary", width="stretch"):
        with st.spinner("Activating…"):
            try:
                result = repair.activate(cfg, payment_id, who.name or "", engine=context.engine())
            except MonitorError as e:
                result = e
        st.session_state[RESULT] = result
        _close()
        data.refresh()
        st.rerun()
    if right.button("Cancel", key="activate:cancel", width="stretch"):
        _close()
        st.rerun()


def _result(result) -> None:
    """The outcome of the last activation, with a way to re-check the findings at once."""
    cfg = context.config()
    box = st.container(border=True)
    if isinstance(result, MonitorError):
        box.error(md_escape(cfg.mask(str(result)), None))
    elif result.ok:
        box.success(
            f"**{md_escape(result.outcome.replace('_', ' ').capitalize())}** for "
            f"{md_escape(result.payment_id)}: {md_escape(result.reason, None)} (audit log entry "
            f"{result.ledger_id}, by {md_escape(result.operator)})."
        )
        if result.rows_after:
            with box.expander("The app's rows now"):
                st.dataframe(pd.DataFrame(result.rows_after), hide_index=True, width="stretch")
        box.caption("Its finding is resolved by the next reconcile (the scheduler's next run, or now):")
    else:
        box.error(
            f"**{md_escape(result.outcome.replace('_', ' ').capitalize())}**: {md_escape(result.reason, None)}"
        )
    left, right = box.columns([1, 4])
    if (
        not isinstance(result, MonitorError)
        and result.ok
        and left.button("Reconcile now", key="activate:reconcile")
    ):
        with st.spinner("Reconciling…"):
            try:
                # The role again, at the click (support or admin), and the run recorded: see monitor.actions.
                report = actions.reconcile_now(cfg, context.operator().name, engine=context.engine())
            except MonitorError as e:
                st.error(md_escape(cfg.mask(str(e)), None))
            else:
                still = [
                    f
                    for f in report.findings
                    if f.payment_id == result.payment_id and f.kind in ACTIVATABLE_KINDS
                ]
                st.session_state.pop(RESULT, None)
                st.session_state[NOTE] = (
                    f"Reconciled: {result.payment_id} has no open activation finding any more."
                    if not still
                    else f"Reconciled: {result.payment_id} still has an open finding; see its hint."
                )
                data.refresh()
                st.rerun()
    if right.button("Dismiss", key="activate:dismiss", type="tertiary"):
        st.session_state.pop(RESULT, None)
        st.rerun()
