"""The dashboard's read models (the contract shared with the pages: notes/views_contract.md).

Every function takes the store's engine (monitor.store.open_store) and, where it needs the app's rows, a
monitor.app_db.AppDatabase. They filter, sort and paginate in SQL with bound parameters, and return plain
data (dicts, dataclasses, DataFrames with UTC datetimes and integer minor-unit amounts), never Streamlit
objects; `now` is passed in where time matters. `from monitor import views; views.find_findings(...)`.
"""

from monitor.views.audit import audit_log
from monitor.views.customers import CustomerView, customer_lookup
from monitor.views.discrepancies import FINDING_COLUMNS, FindingDetail, find_findings, finding_detail
from monitor.views.finance import finance
from monitor.views.incidents import find_incident, open_incidents
from monitor.views.infrastructure import infrastructure
from monitor.views.links import stripe_dashboard_url
from monitor.views.status import (
    FindingsSummary,
    SnapshotStatus,
    StatusLine,
    findings_summary,
    freshness,
    parity_history,
    snapshot_status,
    status_line,
    status_strip,
)
from monitor.views.webhooks import WebhookOverview, webhook_overview

__all__ = [
    "FINDING_COLUMNS",
    "CustomerView",
    "FindingDetail",
    "FindingsSummary",
    "SnapshotStatus",
    "StatusLine",
    "WebhookOverview",
    "audit_log",
    "customer_lookup",
    "find_findings",
    "finance",
    "find_incident",
    "finding_detail",
    "findings_summary",
    "freshness",
    "infrastructure",
    "open_incidents",
    "parity_history",
    "snapshot_status",
    "status_line",
    "status_strip",
    "stripe_dashboard_url",
    "webhook_overview",
]
