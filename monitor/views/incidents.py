"""Incidents as the dashboard and the command line read them: the store's open findings grouped by cause
(monitor.rules.incidents, DESIGN.md "Incidents"), with the outage windows read from the probe history
around them and the app's webhook-log failures.

The app's database is only needed for the app-error causes: when it cannot be read (down, a mapping that
does not fit, or None: not opened) the other causes are still found, and its webhook_failed findings fall to the cause they
otherwise have (an outage, or no known cause)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from monitor.app_db import AppDatabase
from monitor.config import Config
from monitor.rules.incidents import Incident, OpenFinding, find_incidents, log_failures, open_finding
from monitor.rules.outages import Outage
from monitor.rules.root_cause import AFTER_PAYMENT, BEFORE_PAYMENT
from monitor.rules.timefmt import to_utc
from monitor.store.lifecycle import OPEN, RESOLVED, current_findings, recent_findings
from monitor.views.common import AppReads
from monitor.views.probe_history import outages_between

# How far back a resolved incident is still known by its id (`find_incident`): as far back as reconcile
# reads the probe history for root causes (pipeline.HISTORY_DAYS).
RESOLVED_KEPT = timedelta(days=35)


def open_incidents(
    engine: Engine, app: AppDatabase | None, config: Config, *, now: datetime
) -> list[Incident]:
    """The open incidents: the open findings (acknowledged ones are someone's already, and a recovery
    closes its webhook findings that way) grouped by cause. Sorted as `find_incidents` sorts them:
    outages (ongoing first), endpoint problems, app errors, no known cause."""
    with engine.connect() as conn:
        findings = [open_finding(f) for f in current_findings(conn, statuses=(OPEN,))]
        outages = _outages(conn, findings)
    return find_incidents(findings, outages, now=to_utc(now), failures=_failures(app, config, findings))


def find_incident(
    engine: Engine, app: AppDatabase | None, config: Config, incident_id: str, *, now: datetime
) -> Incident | None:
    """The incident `incident_id`: an open one as `open_incidents` gives it, else one whose findings all
    resolved (or were acknowledged) in the last RESOLVED_KEPT, with status "resolved" and nothing left to
    recover; None when no such incident is known."""
    incident_id = (incident_id or "").strip()
    for incident in open_incidents(engine, app, config, now=now):
        if incident.id == incident_id:
            return incident
    # The same grouping over every recent finding, whatever its status: the cause, and so the id, is the
    # same as when the incident was open.
    with engine.connect() as conn:
        findings = [open_finding(f) for f in recent_findings(conn, since=to_utc(now) - RESOLVED_KEPT)]
        outages = _outages(conn, findings)
    for incident in find_incidents(
        findings, outages, now=to_utc(now), failures=_failures(app, config, findings)
    ):
        if incident.id == incident_id:
            return dataclasses.replace(incident, status=RESOLVED, recoverable=0, recoverable_ids=())
    return None


def _outages(conn: Connection, findings: list[OpenFinding]) -> list[Outage]:
    """The outages around the findings' times: those the grouping can place a finding in."""
    if not findings:
        return []
    times = [f.time for f in findings]
    return outages_between(conn, min(times) - BEFORE_PAYMENT, max(times) + AFTER_PAYMENT)


def _failures(app: AppDatabase | None, config: Config, findings: list[OpenFinding]) -> dict[str, str]:
    """Event id -> the app log's error text, for the events of the webhook_failed findings; {} when there
    are none or the app's database cannot be read. Secrets the configuration holds are masked: the text
    becomes an incident's detail, shown to anyone who may read the dashboard."""
    events = {
        f.finding.event_id for f in findings if f.finding.kind == "webhook_failed" and f.finding.event_id
    }
    if not events or app is None:
        return {}
    log = AppReads()(app.read_webhook_log)
    if log is None:
        return {}
    log = log[log["event_id"].isin(events)]
    return {
        e: config.mask(text) for e, text in log_failures(log, ok_statuses=app.mapping.ok_statuses).items()
    }
