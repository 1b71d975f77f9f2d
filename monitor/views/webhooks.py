"""The Webhooks screen: the endpoint audit, the events whose delivery is in trouble (from the open findings
of the webhook kinds: decided once by monitor.rules.webhook_health, not again here) with their countdowns, and
delivery over the last 30 days."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, case, func, select

from monitor.app_db import AppDatabase
from monitor.config import Config
from monitor.rules.timefmt import to_utc
from monitor.rules.webhook_health import (
    PAYMENT_EVENT_TYPES,
    EndpointAudit,
    audit_endpoints,
    countdown_text,
    delivery_countdowns,
    latest_log_entries,
)
from monitor.store.models import Event, FindingRow
from monitor.store.snapshot import read_endpoints
from monitor.views.common import AppReads, epoch, frame, loads, named_frame, plain
from monitor.views.discrepancies import CURRENT
from monitor.views.payment_reads import events_by_id

UNDELIVERED_COLUMNS = (
    "event_id",
    "type",
    "created",
    "pending_webhooks",
    "payment_id",
    "customer_email",
    "amount",
    "currency",
    "retry_left",
    "window_left",
    "countdown",
    "finding_id",
    "status",
)
FAILED_COLUMNS = (
    "event_id",
    "type",
    "received_at",
    "error",
    "attempts",
    "payment_id",
    "customer_email",
    "finding_id",
    "status",
)
MISSING_COLUMNS = (
    "event_id",
    "type",
    "created",
    "payment_id",
    "customer_email",
    "hint",
    "finding_id",
    "status",
)
DAILY_COLUMNS = ("day", "events", "delivered", "pending")
DAILY_DAYS = 30
_f = FindingRow.__table__
_e = Event.__table__


def _findings(conn: Connection, kind: str, limit: int) -> tuple[list[dict], int]:
    where = (_f.c.kind == kind, _f.c.status.in_(CURRENT))
    total = conn.execute(select(func.count()).select_from(_f).where(*where)).scalar_one()
    rows = conn.execute(
        select(
            _f.c.id,
            _f.c.status,
            _f.c.payment_id,
            _f.c.customer_email,
            _f.c.amount,
            _f.c.currency,
            _f.c.payload,
        )
        .where(*where)
        .order_by(_f.c.last_seen.desc(), _f.c.first_seen.desc(), _f.c.id.desc())
        .limit(limit)
    ).all()
    out = []
    for r in rows:
        payload = loads(r.payload, {})
        out.append({**r._asdict(), "event_id": payload.get("event_id"), "hint": payload.get("hint", "")})
    return out, int(total)


def _daily(conn: Connection, *, now: datetime) -> pd.DataFrame:
    """Events of the payment types by UTC day over the last DAILY_DAYS days: how many, how many delivered
    everywhere (pending_webhooks = 0), how many still pending somewhere."""
    first_day = epoch(now) // 86400 - (DAILY_DAYS - 1)
    day = (_e.c.created // 86400).label("day")
    rows = conn.execute(
        select(
            day,
            func.count().label("events"),
            func.sum(case((_e.c.pending_webhooks == 0, 1), else_=0)).label("delivered"),
            func.sum(case((_e.c.pending_webhooks > 0, 1), else_=0)).label("pending"),
        )
        .where(_e.c.created >= first_day * 86400, _e.c.type.in_(bindparam("types", expanding=True)))
        .group_by(day)
        .order_by(day),
        {"types": list(PAYMENT_EVENT_TYPES)},
    ).all()
    by_day = {int(r.day): (int(r.events), int(r.delivered or 0), int(r.pending or 0)) for r in rows}
    days = range(first_day, first_day + DAILY_DAYS)
    df = frame(
        [(pd.Timestamp(d * 86400, unit="s", tz="UTC"), *by_day.get(d, (0, 0, 0))) for d in days],
        DAILY_COLUMNS,
    )
    df["day"] = pd.to_datetime(df["day"], utc=True)
    return df


@dataclass(frozen=True)
class WebhookOverview:
    """The Webhooks screen. `audit`: monitor.rules.webhook_health.EndpointAudit for the expected URL;
    `undelivered`: UNDELIVERED_COLUMNS (retry_left: time until Stripe stops retrying, NaT in test mode;
    window_left: until the event leaves the 30-day Events list); `failed`: FAILED_COLUMNS (the app log's
    latest row for the event); `missing`: MISSING_COLUMNS; `daily`: DAILY_COLUMNS for the last 30 days;
    `counts`: {"undelivered", "failed", "missing"} in all (the tables show the newest `limit` of each);
    `app_error`: why the app's log could not be read (None when it was)."""

    audit: EndpointAudit
    undelivered: pd.DataFrame
    failed: pd.DataFrame
    missing: pd.DataFrame
    daily: pd.DataFrame
    counts: dict[str, int]
    app_error: str | None = None


def webhook_overview(
    engine: Engine,
    app: AppDatabase,
    config: Config,
    *,
    now: datetime,
    expected_url: str | None,
    limit: int = 500,
) -> WebhookOverview:
    """The Webhooks screen for `expected_url` (the caller's: in demo mode the demo's production URL), from
    the open and acknowledged findings of the webhook kinds: see WebhookOverview."""
    now = to_utc(now)
    reads = AppReads()
    with engine.connect() as conn:
        audit = audit_endpoints(read_endpoints(conn), expected_url=expected_url, livemode=config.livemode)
        undelivered, n_undelivered = _findings(conn, "webhook_undelivered", limit)
        failed, n_failed = _findings(conn, "webhook_failed", limit)
        missing, n_missing = _findings(conn, "webhook_missing", limit)
        events = events_by_id(
            conn, {f["event_id"] for f in (*undelivered, *failed, *missing) if f["event_id"]}
        )
        daily = _daily(conn, now=now)

    rows = []
    for f in undelivered:
        e = events.get(f["event_id"]) or {}
        created, retry, window, countdown = e.get("created"), None, None, None
        if created is not None:
            live = e["livemode"] if e.get("livemode") is not None else bool(config.livemode)
            retry, window = delivery_countdowns(created, now=now, livemode=live)
            countdown = countdown_text(created, now=now, livemode=live)
        rows.append(
            {
                **_about(f),
                "type": e.get("type"),
                "created": created,
                "pending_webhooks": e.get("pending_webhooks"),
                "amount": f["amount"],
                "currency": f["currency"],
                "retry_left": retry,
                "window_left": window,
                "countdown": countdown,
            }
        )
    undelivered_df = named_frame(rows, UNDELIVERED_COLUMNS, times=("created",))
    for column in ("retry_left", "window_left"):
        undelivered_df[column] = pd.to_timedelta(undelivered_df[column])

    latest = None
    if failed:
        log = reads(app.read_webhook_log)
        if log is not None:
            latest = latest_log_entries(
                log, ok_statuses=app.mapping.ok_statuses, event_ids=[f["event_id"] for f in failed]
            )
    rows = []
    for f in failed:
        entry = latest.loc[f["event_id"]] if latest is not None and f["event_id"] in latest.index else None
        e = events.get(f["event_id"]) or {}
        rows.append(
            {
                **_about(f),
                "type": e.get("type") or (None if entry is None else entry["type"]),
                "received_at": None if entry is None else plain(entry["received_at"]),
                "error": None if entry is None else plain(entry["error"]),
                "attempts": None if entry is None else int(entry["attempts"]),
            }
        )
    failed_df = named_frame(rows, FAILED_COLUMNS, times=("received_at",))

    rows = [
        {
            **_about(f),
            "type": (events.get(f["event_id"]) or {}).get("type"),
            "created": (events.get(f["event_id"]) or {}).get("created"),
            "hint": f["hint"],
        }
        for f in missing
    ]
    missing_df = named_frame(rows, MISSING_COLUMNS, times=("created",))
    return WebhookOverview(
        audit=audit,
        undelivered=undelivered_df,
        failed=failed_df,
        missing=missing_df,
        daily=daily,
        counts={"undelivered": n_undelivered, "failed": n_failed, "missing": n_missing},
        app_error=reads.error,
    )


def _about(f: dict) -> dict:
    """The columns every table of the screen takes from the finding itself."""
    return {
        "event_id": f["event_id"],
        "payment_id": f["payment_id"],
        "customer_email": f["customer_email"],
        "finding_id": f["id"],
        "status": f["status"],
    }
