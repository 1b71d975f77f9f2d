"""Recover all: an incident's dry-run plan, the recovery with its progress, and what was done, in one dialog.

Recovery is monitor.actions.plan_recovery (a dry run of the activation repair for every recoverable payment)
and monitor.actions.recover_incident, which check the operator's role themselves at every call: the disabled
button is only a courtesy. The dialog stays open through reruns while `session_state[OPEN]` names its
incident, as ui.activate's does. ui.incidents puts the buttons on its cards and calls `render` once per page,
passing how an incident is described (its title and its facts), so this module never imports it.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from monitor import actions
from monitor.errors import MonitorError
from monitor.rules.incidents import Incident
from monitor.rules.money import format_amounts
from ui import activate, context, data, tables
from ui.text import md_code, md_escape, money, one_line

OPEN = "recover:open"  # the incident whose dialog is open
PLAN = "recover:plan"  # (incident id, the dry run shown in the open dialog)
RUN = "recover:run"  # the incident whose "Confirm" was clicked: the next dialog run recovers it
DONE = "recover:done"  # (incident id, the Recovery or the MonitorError), shown until closed
NOTE = "recover:note"  # one line for the page after the dialog closes
# What one payment's repair does (actions.step_of), in words: a dry run's plan, then what was done.
STEP_WORDS = {
    "activate": "will activate its row",
    "create": "will create an active row",
    "already_active": "already active",
    "activated": "activated",
    "created": "active row created",
    "refused": "refused",
    "failed": "failed",
    "in_progress": "in progress elsewhere",
}
WRITES = ("activate", "create")

Describe = Callable[[Incident], tuple[str, str]]  # an incident -> (its title, its facts in one line)


def _open(incident_id: str) -> None:
    st.session_state.pop(activate.OPEN, None)  # one dialog at a time
    st.session_state[OPEN] = incident_id
    for name in (PLAN, RUN, DONE):
        st.session_state.pop(name, None)


def _close() -> None:
    for name in (OPEN, PLAN, RUN, DONE):
        st.session_state.pop(name, None)


def _confirm(incident_id: str) -> None:
    st.session_state[RUN] = incident_id


def recover_button(incident: Incident, *, key: str) -> None:
    """ "Recover all" for an incident with something to recover; disabled, with why, for who may not."""
    if incident.recoverable <= 0:
        st.caption("Nothing to recover: no payment of it lacks access.")
        return
    who = context.operator()
    st.button(
        "Recover all",
        key=key,
        type="primary",
        icon=":material/healing:",
        disabled=not who.may_activate,
        help=f"Re-checks each of its {incident.recoverable} payments at Stripe and shows the plan first."
        if who.may_activate
        else who.why_not("recover incidents"),
        on_click=_open,
        args=(incident.id,),
        width="stretch",
    )


def render(describe: Describe) -> None:
    """Call once per page, after the Recover all buttons: the note of the last recovery, and the dialog
    when open, headed by what `describe` says of its incident."""
    note = st.session_state.pop(NOTE, None)
    if note:
        st.success(md_escape(note, None), icon=":material/healing:")
    incident_id = st.session_state.get(OPEN)
    if incident_id:
        _dialog(incident_id, describe)


@st.dialog("Recover all", width="large", on_dismiss=_close)
def _dialog(incident_id: str, describe: Describe) -> None:
    who = context.operator()
    incident = next((i for i in data.open_incidents(context.key()) if i.id == incident_id), None)
    if incident is not None:
        title, facts = describe(incident)
        st.markdown(f"**{md_escape(title)}** · {md_code(incident.id)}")
        st.caption(md_escape(facts, None))
    if st.session_state.get(RUN) == incident_id:
        st.session_state.pop(RUN, None)
        _recover(incident_id)
        return
    done = st.session_state.get(DONE)
    if done is not None and done[0] == incident_id:
        _outcome(incident_id, done[1])
        return
    _plan(incident_id)
    st.caption(f"Acting as {md_escape(who.name or 'nobody')} ({md_escape(who.role or 'no role')}).")


def _plan(incident_id: str) -> None:
    cfg, who = context.config(), context.operator()
    held = st.session_state.get(PLAN)
    if held is None or held[0] != incident_id:
        try:
            with st.spinner("Asking Stripe about each payment now (dry run, nothing changes)…"):
                plan = actions.plan_recovery(cfg, incident_id, who.name or "", engine=context.engine())
        except MonitorError as e:
            st.error(md_escape(cfg.mask(str(e)), None))
            _close_button("recover:close-error")
            return
        held = (incident_id, plan)
        st.session_state[PLAN] = held
    plan = held[1]
    counts = plan.counts
    writes = sum(counts.get(step, 0) for step in WRITES)
    st.info(
        f"**Plan (dry run):** {_counted(counts)} — of {len(plan.results)} recoverable payment"
        f"{'s' if len(plan.results) != 1 else ''} ({format_amounts(plan.amount, none='nothing')}).",
        icon=":material/checklist:",
    )
    _table(plan.results)
    if plan.refused:
        st.warning("**Will be refused:**\n" + _reasons(plan.refused))
    st.caption(
        "Each payment is re-checked at Stripe again when it is its turn, and activated exactly once: a second "
        "run, or one from another place, finds it active and changes nothing. Every attempt is in the audit log."
    )
    left, right = st.columns(2)
    left.button(
        f"Confirm: recover {writes}",
        key="recover:confirm",
        type="primary",
        width="stretch",
        disabled=not writes,
        on_click=_confirm,
        args=(incident_id,),
    )
    if right.button("Cancel", key="recover:cancel", width="stretch"):
        _close()
        st.rerun()


def _counted(counts: dict[str, int]) -> str:
    """'2 will create an active row, 1 already active', or 'nothing to do'."""
    return ", ".join(f"{n} {STEP_WORDS.get(step, step)}" for step, n in counts.items()) or "nothing to do"


def _reasons(results: list) -> str:
    return "\n".join(
        f"- {md_code(r.payment_id or r.requested_id)}: {md_escape(r.reason, 400)}" for r in results
    )


def _table(results: list, why: str = "What will be written, or why not") -> None:
    """One row per payment: who, how much, and what its repair does or did, and why."""
    rows = []
    for r in results:
        state = r.stripe_state or {}
        rows.append(
            {
                "payment": r.payment_id or r.requested_id,
                "customer": one_line(state.get("email") or state.get("customer_id")),
                "amount": money(state.get("amount"), state.get("currency")),
                "step": STEP_WORDS.get(actions.step_of(r), actions.step_of(r)),
                "why": one_line(r.reason),
            }
        )
    tables.show(
        pd.DataFrame(rows, columns=["payment", "customer", "amount", "step", "why"]),
        {
            "payment": tables.text_col("Payment"),
            "customer": tables.text_col("Customer"),
            "amount": tables.text_col("Amount"),
            "step": tables.text_col("What it does"),
            "why": tables.text_col(why, width="large"),
        },
        empty="No payment of it lacks access now.",
    )


def _recover(incident_id: str) -> None:
    cfg, who = context.config(), context.operator()
    bar = st.progress(0.0, text="Recovering…")

    def progress(done: int, total: int, result) -> None:
        said = STEP_WORDS.get(actions.step_of(result), result.outcome)
        bar.progress(
            min(done / max(total, 1), 1.0),
            text=md_escape(f"{done} of {total}: {result.payment_id or result.requested_id} {said}"),
        )

    try:
        recovery = actions.recover_incident(
            cfg, incident_id, who.name or "", progress=progress, engine=context.engine()
        )
    except MonitorError as e:
        recovery = e
    st.session_state[DONE] = (incident_id, recovery)
    st.session_state.pop(PLAN, None)
    data.refresh()
    _outcome(incident_id, recovery)


def _outcome(incident_id: str, recovery) -> None:
    cfg = context.config()
    if isinstance(recovery, MonitorError):
        st.error(md_escape(cfg.mask(str(recovery)), None))
        _close_button("recover:close-failed")
        return
    said = _counted(recovery.counts)
    (st.success if recovery.exit_status == 0 else st.warning)(
        f"**Done:** {md_escape(said, None)}."
        + (
            f" {len(recovery.closed)} webhook findings closed with a note naming the repair."
            if recovery.closed
            else ""
        )
    )
    _table(recovery.results, "What was done, or why not")
    if recovery.refused:
        st.error("**Not recovered:**\n" + _reasons(recovery.refused))
    st.caption("The incident's findings resolve at the next reconcile (the scheduler's next run, or now).")
    st.session_state[NOTE] = f"Recovered: {said}."
    left, right = st.columns(2)
    if left.button("Reconcile now", key="recover:reconcile", type="primary", width="stretch"):
        try:
            # The role again, at the click, and the run recorded: see monitor.actions.reconcile_now.
            report = actions.reconcile_now(cfg, context.operator().name, engine=context.engine())
        except MonitorError as e:
            st.error(md_escape(cfg.mask(str(e)), None))
            return
        data.refresh()
        open_now = sum(report.summary["open_by_kind"].values())
        left_open = next((i for i in data.open_incidents(context.key()) if i.id == incident_id), None)
        st.session_state[NOTE] = (
            f"Recovered: {said}. Reconciled: "
            + (
                f"incident {incident_id} is resolved"
                if left_open is None
                else f"incident {incident_id} is still open, {left_open.recoverable} recoverable"
            )
            + f"; {open_now} findings open in all."
        )
        _close_keep_note()
        st.rerun()
    if right.button("Close", key="recover:close", width="stretch"):
        _close_keep_note()
        st.rerun()


def _close_keep_note() -> None:
    note = st.session_state.get(NOTE)
    _close()
    if note:
        st.session_state[NOTE] = note


def _close_button(key: str) -> None:
    if st.button("Close", key=key):
        _close()
        st.rerun()
