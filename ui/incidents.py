"""Incidents on the dashboard: the Overview's status line and incident cards, and the incident(s) a finding
or a customer belongs to; each card's "Recover all" and its dialog are ui.recover.

The grouping is monitor.rules.incidents (read through ui.data); the status line is
monitor.views.status.status_line, only shown here.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from monitor.clock import now_utc
from monitor.errors import MonitorError
from monitor.rules.incidents import ENDPOINT, OUTAGE, Incident
from monitor.rules.money import format_amounts
from monitor.views.status import FindingsSummary, status_line
from ui import context, data, recover, tables
from ui.text import md_code, md_escape, short, utc, with_major

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


# --- the status line ---------------------------------------------------------------------------------


def show_status_line(strip: list[dict], summary: FindingsSummary) -> None:
    """The verdict in its colour, then what makes it so (monitor.views.status.status_line)."""
    line = status_line(strip, summary)
    head, _, rest = line.text.partition(" — ")
    VERDICT_BOXES.get(line.verdict, st.info)(
        f"**{md_escape(head)}** — {md_escape(rest, 600)}", icon=VERDICT_ICONS.get(line.verdict)
    )


# --- what an incident adds up to ------------------------------------------------------------------------


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
        f"{format_amounts(incident.amount_at_risk, none='nothing')} at risk · {span} · {n} finding{'s' if n != 1 else ''}, "
        f"{incident.recoverable} recoverable"
    )


def title(incident: Incident) -> str:
    return incident.cause.title(now=now_utc())


def describe(incident: Incident) -> tuple[str, str]:
    """(its title, its facts): the head of its Recover all dialog."""
    return title(incident), facts(incident)


# --- the Overview's cards ------------------------------------------------------------------------------


def overview(db: tuple) -> None:
    """The open incidents, each a card with its cause, who and how much, and "Recover all"."""
    incidents = data.open_incidents(db)
    st.subheader(f"Open incidents ({len(incidents)})")
    if not incidents:
        st.success("No open incident: no open finding shares a cause.", icon=":material/check_circle:")
    for incident in incidents:
        card(incident, key="overview")
    recover.render(describe)


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
            recover.recover_button(incident, key=f"{key}:recover:{incident.id}")


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
    return audit.expected_url, audit.delivered_elsewhere


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
    recover.render(describe)
