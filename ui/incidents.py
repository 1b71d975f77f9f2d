"""Incidents on the dashboard: the Overview's status line and incident cards, "Recover all" with its dry-run
plan and progress, and the incident(s) a finding or a customer belongs to.

The grouping is monitor.rules.incidents (read through ui.data); recovery is monitor.actions.plan_recovery
(a dry run of the activation repair for every recoverable payment) and monitor.actions.recover_incident,
which check the operator's role themselves at every call: the disabled button is only a courtesy.
The dialog stays open through reruns while `session_state[OPEN]` names its incident, as ui.activate's does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import SimpleNamespace

import pandas as pd
import streamlit as st

from monitor import actions, pipeline
from monitor.clock import now_utc
from monitor.errors import MonitorError
from monitor.rules.incidents import ENDPOINT, OUTAGE, Incident
from monitor.rules.money import format_money
from monitor.views.status import FindingsSummary
from ui import activate, context, data, tables
from ui.text import md_code, md_escape, money, one_line, short, utc, with_major

OPEN = "recover:open"  # the incident whose dialog is open
PLAN = "recover:plan"  # (incident id, the dry run shown in the open dialog)
RUN = "recover:run"  # the incident whose "Confirm" was clicked: the next dialog run recovers it
DONE = "recover:done"  # (incident id, the Recovery or the MonitorError), shown until closed
NOTE = "recover:note"  # one line for the page after the dialog closes
ENDPOINT_PROBLEM = "webhook endpoint misconfigured"  # as monitor.rules.incidents.Cause.title says it
ENDPOINT_COMPONENT = "webhook_endpoint"
WEBHOOKS_PAGE = "pages/3_Webhooks.py"
INFRASTRUCTURE_PAGE = "pages/4_Infrastructure.py"
DISCREPANCIES_URL = (
    "Discrepancies"  # the page's URL path, as Streamlit names it from pages/1_Discrepancies.py
)
MAX_CUSTOMERS_SHOWN = 8
MAX_FINDINGS = 1000  # monitor.views.discrepancies.MAX_PAGE: every open finding, to group by incident
VERDICT_BOXES = {"CRITICAL": st.error, "WARNING": st.warning, "UNKNOWN": st.info, "OK": st.success}
VERDICT_ICONS = {
    "CRITICAL": ":material/crisis_alert:",
    "WARNING": ":material/warning:",
    "UNKNOWN": ":material/help:",
    "OK": ":material/check_circle:",
}
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


# --- the status line ---------------------------------------------------------------------------------


def status_line(strip: Iterable[Mapping], summary: FindingsSummary) -> tuple[str, str]:
    """(verdict, one line): the verdict `monitor check` gives (pipeline.verdict) for these components and open
    findings, and what makes it so, worst first: components down, then the webhook endpoint problem, then
    components degraded; with none of those, the open findings, else the components whose state is unknown.
    'CRITICAL — redis:channels down, webhook endpoint misconfigured'."""
    strip = list(strip)
    by_kind = dict(summary.by_kind)
    verdict = pipeline.verdict(
        [SimpleNamespace(status=str(c.get("status") or "unknown")) for c in strip], by_kind, store_read=True
    )

    def named(status: str) -> list[str]:
        return [
            f"{c.get('name')} {status}"
            for c in strip
            if c.get("status") == status and c.get("name") != ENDPOINT_COMPONENT
        ]

    endpoint = by_kind.get("endpoint_misconfigured", 0) > 0 or any(
        c.get("name") == ENDPOINT_COMPONENT and c.get("status") in ("down", "degraded") for c in strip
    )
    parts = named("down") + ([ENDPOINT_PROBLEM] if endpoint else []) + named("degraded")
    if not parts:
        severity = summary.by_severity
        for level in ("critical", "warning"):
            n = int(severity.get(level) or 0)
            if n:
                parts.append(f"{n} {level} finding{'s' if n != 1 else ''} open")
    if not parts:
        parts = named("unknown")
    if not strip:
        parts.append("no probe has run yet")
    return verdict, f"{verdict} — " + (", ".join(parts) or "every component up, no open finding")


def show_status_line(strip: list[dict], summary: FindingsSummary) -> None:
    verdict, line = status_line(strip, summary)
    head, _, rest = line.partition(" — ")
    VERDICT_BOXES.get(verdict, st.info)(
        f"**{md_escape(head)}** — {md_escape(rest, 600)}", icon=VERDICT_ICONS.get(verdict)
    )


# --- what an incident adds up to ------------------------------------------------------------------------


def amounts(at_risk: Mapping[str, int]) -> str:
    """'USD 347.00, EUR 12.00', or 'nothing' (money taken without access, each payment once)."""
    return ", ".join(format_money(int(a), c) for c, a in sorted(at_risk.items())) or "nothing"


def customers_text(incident: Incident, emails: list[str], limit: int = MAX_CUSTOMERS_SHOWN) -> str:
    """'3 customers: a@example.com, b@example.com and 1 more': by e-mail where its findings give one, else by
    the key the grouping counted them by (their Stripe customer id)."""
    names = emails or list(incident.customer_keys)
    shown = ", ".join(short(k, 80) for k in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{incident.customers} customer{'s' if incident.customers != 1 else ''}" + (
        f": {shown}{more}" if names else ""
    )


def facts(incident: Incident) -> str:
    """One line: customers, money at risk, the payments' span, findings and how many can be recovered."""
    span = (
        f"payments {utc(incident.first_payment_at)} to {utc(incident.last_payment_at)}"
        if incident.first_payment_at is not None
        else "no payment"
    )
    n = len(incident.finding_ids)
    return (
        f"{amounts(incident.amount_at_risk)} at risk · {span} · {n} finding{'s' if n != 1 else ''}, "
        f"{incident.recoverable} recoverable"
    )


def title(incident: Incident) -> str:
    return incident.cause.title(now=now_utc())


# --- the Overview's cards ------------------------------------------------------------------------------


def overview(db: tuple) -> None:
    """The open incidents, each a card with its cause, who and how much, and "Recover all"."""
    incidents = data.open_incidents(db)
    st.subheader(f"Open incidents ({len(incidents)})")
    if not incidents:
        st.success("No open incident: no open finding shares a cause.", icon=":material/check_circle:")
    for incident in incidents:
        card(incident, key="overview")
    render()


def card(incident: Incident, *, key: str) -> None:
    """One incident: its cause (for an endpoint, where Stripe delivers beside where it should), its facts,
    and Recover all."""
    with st.container(border=True):
        left, right = st.columns([5, 1], vertical_alignment="center")
        with left:
            icon = ":red[:material/crisis_alert:]" if incident.recoverable else ":orange[:material/error:]"
            st.markdown(f"{icon} **Incident: {md_escape(title(incident))}**")
            st.caption(
                f"{md_escape(incident.cause.kind)} · {md_code(incident.id)} · opened "
                f"{md_escape(utc(incident.opened_at))} · last seen {md_escape(utc(incident.last_seen))}"
            )
            st.text(short(facts(incident), 400))
            mine = _findings(incident)
            emails = sorted({e for e in mine["customer_email"].dropna() if e}, key=str.lower)
            st.text(short(customers_text(incident, emails), 600))
            _cause_detail(incident)
        findings_of(incident, key=key)
        with right:
            recover_button(incident, key=f"{key}:recover:{incident.id}")


def _findings(incident: Incident) -> pd.DataFrame:
    """The incident's open findings as the Discrepancies list has them (one cached read of every open one)."""
    frame, _ = data.find_findings(context.key(), None, None, ("open",), None, None, None, MAX_FINDINGS, 0)
    return frame[frame["id"].isin(set(incident.finding_ids))]


def grouped(db: tuple) -> None:
    """The open findings grouped by incident (Discrepancies' "Group by incident"): each cause in a line,
    then its findings; a finding in two incidents is listed under both."""
    found = data.open_incidents(db)
    if not found:
        st.info("No open incident: no open finding shares a cause.", icon=":material/check_circle:")
    for incident in found:
        st.markdown(f"**{md_escape(title(incident))}** · {md_code(incident.id)}")
        st.text(short(facts(incident), 400))
        findings_of(incident, key="grouped", expanded=True)


def findings_of(incident: Incident, *, key: str, expanded: bool = False) -> None:
    """The incident's findings, behind an expander: the Discrepancies list grouped by this incident, each
    row linking to the finding on the Discrepancies page."""
    n = len(incident.finding_ids)
    with st.expander(f"Its {n} finding{'s' if n != 1 else ''}", expanded=expanded):
        mine = _findings(incident)
        shown = with_major(
            mine.assign(finding=[f"{DISCREPANCIES_URL}?finding={i}" for i in mine["id"]]), "amount"
        )
        tables.show(
            shown,
            {
                "finding": st.column_config.LinkColumn(
                    "Finding", display_text=r"finding=(.+)$", width="small"
                ),
                "severity": tables.text_col("Severity", width="small"),
                "kind": tables.text_col("Kind"),
                "customer_email": tables.text_col("Customer"),
                "amount_major": tables.money_col("Amount", mine["currency"].dropna().unique()),
                "currency": tables.text_col("Cur.", width="small"),
                "payment_id": tables.text_col("Payment"),
                "occurred_at": tables.time_col("Occurred (UTC)"),
                "hint": tables.text_col("Hint", width="large"),
            },
            key=f"{key}:findings:{incident.id}",
            empty="Its findings are no longer open.",
        )


def _cause_detail(incident: Incident) -> None:
    cause = incident.cause
    if cause.kind == ENDPOINT:
        where = endpoint_urls()
        if where is not None:
            expected, delivers = where
            st.markdown(
                f"Stripe delivers to {', '.join(md_code(u, 200) for u in delivers) or '**no enabled endpoint**'}"
                f"; expected: {md_code(expected, 200) if expected else '**EXPECTED_WEBHOOK_URL is not set**'}"
            )
        else:
            st.text(short(cause.detail, 400))
        st.page_link(WEBHOOKS_PAGE, label="Webhooks", icon=":material/webhook:")
    elif cause.kind == OUTAGE:
        st.text(short(f"{cause.component}: {cause.detail}", 400))
        st.page_link(INFRASTRUCTURE_PAGE, label="Infrastructure", icon=":material/dns:")
    elif cause.detail:
        st.text(short(cause.detail, 400))


def endpoint_urls() -> tuple[str | None, list[str]] | None:
    """(the expected URL, the URLs of the enabled endpoints Stripe delivers to that are not it), from the
    Webhooks screen's endpoint audit; None when it cannot be read."""
    try:
        audit = data.webhook_overview(context.key()).audit
    except MonitorError:
        return None
    delivers = [
        str(e.get("url"))
        for e in audit.endpoints
        if e.get("status") == "enabled" and not e.get("at_expected_url") and e.get("url")
    ]
    return audit.expected_url, delivers


# --- the finding's and the customer's incidents ----------------------------------------------------------


def of_finding(finding_id: str) -> None:
    """The open incident(s) this finding is part of, each named by its whole cause (Discrepancies)."""
    incidents = [i for i in data.open_incidents(context.key()) if finding_id in i.finding_ids]
    _belongs(incidents, "This finding is part of", key=f"finding:{finding_id}")


def of_customer(view) -> None:
    """The open incident(s) that affect this customer's open findings (Customer lookup)."""
    ids = {f.id for f in view.findings}
    incidents = [i for i in data.open_incidents(context.key()) if ids & set(i.finding_ids)]
    _belongs(incidents, "This customer is affected by", key="customer")


def _belongs(incidents: list[Incident], lead: str, *, key: str) -> None:
    if not incidents:
        return
    n = len(incidents)
    st.markdown(f"**{lead} {n} open incident{'s' if n != 1 else ''}**")
    for incident in incidents:
        card(incident, key=key)
    render()


# --- Recover all -------------------------------------------------------------------------------------------


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


def render() -> None:
    """Call once per page, after the Recover all buttons: the note of the last recovery, and the dialog
    when open."""
    note = st.session_state.pop(NOTE, None)
    if note:
        st.success(md_escape(note, None), icon=":material/healing:")
    incident_id = st.session_state.get(OPEN)
    if incident_id:
        _dialog(incident_id)


@st.dialog("Recover all", width="large", on_dismiss=_close)
def _dialog(incident_id: str) -> None:
    who = context.operator()
    incident = next((i for i in data.open_incidents(context.key()) if i.id == incident_id), None)
    if incident is not None:
        st.markdown(f"**{md_escape(title(incident))}** · {md_code(incident.id)}")
        st.caption(md_escape(facts(incident), None))
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
        f"{'s' if len(plan.results) != 1 else ''} ({amounts(plan.amount)}).",
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
