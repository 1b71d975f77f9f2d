"""Reads the Stripe snapshot out of the store as the DataFrames the pure decisions take. Bulk reads only:
a handful of queries whatever the number of payments."""

from __future__ import annotations

import json

import pandas as pd
from sqlalchemy import Connection, select, text

from monitor.rules.completeness import ENDPOINTS, LISTS, ResourceGap, SnapshotState
from monitor.rules.reconcile import PAYMENT_COLUMNS
from monitor.store.db import read_bulk
from monitor.store.models import SyncResource, SyncState

_PAYMENTS = f"SELECT {', '.join(PAYMENT_COLUMNS)} FROM payments"


def utc_seconds(seconds: pd.Series) -> pd.Series:
    """Unix seconds (as the store keeps Stripe's times) as UTC datetimes; missing stays missing."""
    return pd.to_datetime(pd.to_numeric(seconds, errors="coerce"), unit="s", utc=True)


def read_payments(conn: Connection) -> pd.DataFrame:
    """Every payment in the snapshot, with its refunded amount, dispute state, Stripe subscription
    status and announcing event: the `payments` frame `monitor.rules.reconcile` takes. Column-wise when `conn`
    has not begun a transaction yet (`monitor.store.db.read_bulk`)."""
    return _typed(read_bulk(conn, _PAYMENTS, rows_of="payments"))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["created"] = utc_seconds(df["created"])
    df["period_end"] = utc_seconds(df["period_end"])
    df["amount"] = pd.to_numeric(df["amount"], errors="coerce").fillna(0).astype("int64")
    df["amount_refunded"] = pd.to_numeric(df["amount_refunded"], errors="coerce").fillna(0).astype("int64")
    df["livemode"] = df["livemode"].fillna(False).astype(bool)
    df["currency"] = df["currency"].str.lower()
    return df


_EVENTS = "SELECT id, type, created, pending_webhooks, object_id, object_type, livemode FROM stripe_events"


def read_events(conn: Connection) -> pd.DataFrame:
    """Every stored event: id, type, created (UTC), pending_webhooks, object_id, object_type, livemode.
    Column-wise when `conn` has not begun a transaction yet (`monitor.store.db.read_bulk`)."""
    events = read_bulk(conn, _EVENTS, rows_of="stripe_events")
    events["created"] = utc_seconds(events["created"])
    events["pending_webhooks"] = pd.to_numeric(events["pending_webhooks"]).fillna(0).astype("int64")
    events["livemode"] = events["livemode"].fillna(False).astype(bool)
    return events


def read_endpoints(conn: Connection) -> list[dict]:
    """Stripe's webhook endpoints as stored: id, url, status, enabled_events, livemode, created."""
    rows = conn.execute(
        text(
            "SELECT id, url, status, enabled_events, livemode, created FROM stripe_webhook_endpoints ORDER BY id"
        )
    ).all()
    return [
        {
            "id": r.id,
            "url": r.url,
            "status": r.status,
            "enabled_events": json.loads(r.enabled_events or "[]"),
            "livemode": bool(r.livemode),
            "created": r.created,
        }
        for r in rows
    ]


def read_state(conn: Connection) -> SnapshotState:
    """How complete the snapshot is (monitor.rules.completeness.SnapshotState): a list never synced completely
    has no cursor (sync_state); the webhook endpoints, fetched whole on every run, are missing when their
    last outcome (sync_resources) has never been a success. A resource that failed in its latest sync but
    came in before is `failing`."""
    done = {r for (r,) in conn.execute(select(SyncState.resource))}
    outcomes = {r.resource: r for r in conn.execute(select(SyncResource.__table__))}
    missing, failing = [], []
    for name in (*LISTS, ENDPOINTS):
        row = outcomes.get(name)
        never = name not in done if name != ENDPOINTS else row is not None and row.ok_at is None
        gap = _gap(name, row)
        if never:
            missing.append(gap)
        elif row is not None and row.failed_at is not None:
            failing.append(gap)
    oks = [r.ok_at for r in outcomes.values() if r.ok_at is not None]
    return SnapshotState(synced_at=max(oks, default=None), missing=tuple(missing), failing=tuple(failing))


def _gap(name: str, row) -> ResourceGap:
    if row is None or row.failed_at is None:
        return ResourceGap(name)
    return ResourceGap(name, row.error, row.http_status, row.permission, row.failed_at)
