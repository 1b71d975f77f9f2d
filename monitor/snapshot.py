"""Reads the Stripe snapshot out of the store as the DataFrames the pure decisions take. Bulk reads only:
a handful of queries whatever the number of payments."""

from __future__ import annotations

import json

import pandas as pd
from sqlalchemy import Connection, bindparam, text

from monitor.db import read_frame

# Events that announce a payment, in order of preference for a payment's `event_id`.
PAYMENT_EVENT_TYPES = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "invoice.paid",
    "invoice.payment_succeeded",
    "payment_intent.succeeded",
)

_REFUNDED = text("""
SELECT COALESCE(r.payment_intent_id, ch.payment_intent_id) AS payment_intent_id, SUM(r.amount) AS refunded
FROM stripe_refunds r LEFT JOIN stripe_charges ch ON ch.id = r.charge_id
WHERE r.status IN ('succeeded', 'pending')
GROUP BY COALESCE(r.payment_intent_id, ch.payment_intent_id)
""")
_CHARGE_REFUNDED = text("""
SELECT payment_intent_id, SUM(amount_refunded) AS charge_refunded FROM stripe_charges
WHERE payment_intent_id IS NOT NULL AND amount_refunded > 0 GROUP BY payment_intent_id
""")
_PAYMENT_EVENTS = text(
    "SELECT object_id AS payment_id, id AS event_id, type, created AS event_created FROM stripe_events "
    "WHERE type IN :types"
).bindparams(bindparam("types", expanding=True))
_SUBSCRIPTIONS = text(
    "SELECT id AS stripe_subscription_id, status AS stripe_subscription_status FROM stripe_subscriptions"
)
_DISPUTES = text("""
SELECT COALESCE(d.payment_intent_id, ch.payment_intent_id) AS payment_intent_id, d.status AS dispute_status,
       d.created AS dispute_created
FROM stripe_disputes d LEFT JOIN stripe_charges ch ON ch.id = d.charge_id
""")


def _utc(seconds: pd.Series) -> pd.Series:
    return pd.to_datetime(pd.to_numeric(seconds, errors="coerce"), unit="s", utc=True)


def read_payments(conn: Connection) -> pd.DataFrame:
    """Every payment in the snapshot, with its refunded amount, dispute state, Stripe subscription
    status and announcing event: the `payments` frame `monitor.reconcile` takes."""
    from monitor.reconcile import PAYMENT_COLUMNS

    payments = read_frame(conn, text("SELECT * FROM payments"))
    if payments.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in PAYMENT_COLUMNS}).pipe(_typed)

    refunded = read_frame(conn, _REFUNDED)
    charge_refunded = read_frame(conn, _CHARGE_REFUNDED)
    payments = payments.merge(refunded, on="payment_intent_id", how="left")
    payments = payments.merge(charge_refunded, on="payment_intent_id", how="left")
    payments["amount_refunded"] = (
        payments[["refunded", "charge_refunded"]].apply(pd.to_numeric).max(axis=1).fillna(0).astype("int64")
    )

    disputes = read_frame(conn, _DISPUTES)
    if not disputes.empty:
        latest = disputes.sort_values("dispute_created").drop_duplicates("payment_intent_id", keep="last")
        payments = payments.merge(
            latest[["payment_intent_id", "dispute_status"]], on="payment_intent_id", how="left"
        )
    else:
        payments["dispute_status"] = None

    subs = read_frame(conn, _SUBSCRIPTIONS)
    payments = payments.merge(subs, on="stripe_subscription_id", how="left")

    events = read_frame(conn, _PAYMENT_EVENTS, {"types": list(PAYMENT_EVENT_TYPES)})
    if not events.empty:
        rank = {t: i for i, t in enumerate(PAYMENT_EVENT_TYPES)}
        events["rank"] = events["type"].map(rank)
        events = events.sort_values(["rank", "event_created"]).drop_duplicates("payment_id", keep="first")
        payments = payments.merge(events[["payment_id", "event_id"]], on="payment_id", how="left")
    else:
        payments["event_id"] = None
    return _typed(payments[list(PAYMENT_COLUMNS)])


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["created"] = _utc(df["created"])
    df["period_end"] = _utc(df["period_end"])
    df["amount"] = pd.to_numeric(df["amount"], errors="coerce").fillna(0).astype("int64")
    df["amount_refunded"] = pd.to_numeric(df["amount_refunded"], errors="coerce").fillna(0).astype("int64")
    df["livemode"] = df["livemode"].fillna(False).astype(bool)
    df["currency"] = df["currency"].str.lower()
    return df


_EVENTS = text(
    "SELECT id, type, created, pending_webhooks, object_id, object_type, livemode FROM stripe_events"
)


def read_events(conn: Connection) -> pd.DataFrame:
    """Every stored event: id, type, created (UTC), pending_webhooks, object_id, object_type, livemode."""
    events = read_frame(conn, _EVENTS)
    events["created"] = _utc(events["created"])
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
