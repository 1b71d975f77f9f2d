"""Cached reads of monitor.views for the pages: short TTLs, keyed by the two databases, cleared after
every action (`refresh()`). The views filter and paginate in SQL; nothing here re-decides anything."""

from __future__ import annotations

from datetime import datetime, timedelta

import streamlit as st

from monitor import demo, views
from monitor.clock import now_utc
from monitor.views import incidents as incident_reads
from ui import context

STATUS_TTL = 10  # seconds: the status strip and the numbers on the Overview
TTL = 30  # everything else


def refresh() -> None:
    """Forget every cached read (after an action, so the page shows its effect at once)."""
    st.cache_data.clear()


@st.cache_data(ttl=STATUS_TTL, show_spinner=False)
def status_strip(db: tuple) -> list[dict]:
    return views.status_strip(context.reader())


@st.cache_data(ttl=STATUS_TTL, show_spinner=False)
def findings_summary(db: tuple) -> dict:
    return views.findings_summary(context.reader())


@st.cache_data(ttl=STATUS_TTL, show_spinner=False)
def freshness(db: tuple) -> dict:
    cfg = context.config()
    return views.freshness(
        context.reader(), now=now_utc(), sync_interval=cfg.sync_interval, probe_interval=cfg.probe_interval
    )


@st.cache_data(ttl=TTL, show_spinner=False)
def parity_history(db: tuple, days: int):
    return views.parity_history(context.reader(), since=now_utc() - timedelta(days=days))


@st.cache_data(ttl=TTL, show_spinner=False)
def find_findings(
    db: tuple,
    kinds: tuple | None,
    severities: tuple | None,
    statuses: tuple,
    since: datetime | None,
    until: datetime | None,
    text: str | None,
    limit: int,
    offset: int,
):
    return views.find_findings(
        context.reader(),
        kinds=list(kinds) if kinds else None,
        severities=list(severities) if severities else None,
        statuses=statuses,
        since=since,
        until=until,
        text=text or None,
        limit=limit,
        offset=offset,
        critical_first=True,  # triage: a paid customer without access before a missing log line
    )


@st.cache_data(ttl=TTL, show_spinner=False)
def finding_detail(db: tuple, finding_id: str):
    return views.finding_detail(context.reader(), context.app(), finding_id)


@st.cache_data(ttl=TTL, show_spinner=False)
def customer_lookup(db: tuple, query: str):
    return views.customer_lookup(context.reader(), context.app(), query, now=now_utc())


@st.cache_data(ttl=TTL, show_spinner=False)
def webhook_overview(db: tuple):
    cfg = context.config()
    return views.webhook_overview(
        context.reader(), context.app(), cfg, now=now_utc(), expected_url=demo.expected_webhook_url(cfg)
    )


@st.cache_data(ttl=TTL, show_spinner=False)
def infrastructure(db: tuple, days: int):
    now = now_utc()
    return views.infrastructure(context.reader(), now=now, since=now - timedelta(days=days))


@st.cache_data(ttl=TTL, show_spinner=False)
def finance(db: tuple, period: str, since: datetime, until: datetime):
    scope = context.config().payment_scope
    return views.finance(context.reader(), period=period, since=since, until=until, scope=scope)


@st.cache_data(ttl=TTL, show_spinner=False)
def audit_log(db: tuple, limit: int, background: bool = False):
    return views.audit_log(context.reader(), limit=limit, background=background)


@st.cache_data(ttl=STATUS_TTL, show_spinner=False)
def open_incidents(db: tuple):
    """The open incidents (monitor.views.incidents), refreshed with the Overview's numbers."""
    return incident_reads.open_incidents(context.reader(), context.app(), context.config(), now=now_utc())


def stripe_url(object_id: str | None) -> str | None:
    if not object_id or not isinstance(object_id, str):
        return None
    return views.stripe_dashboard_url(object_id, context.config().livemode)
