"""A few payments read by id from the store's `payments` table (monitor/store/payment_table.py), with the charges,
refunds and disputes behind them for their timelines; every read bounded by the ids: index lookups, never a
pass over the snapshot."""

from __future__ import annotations

from collections.abc import Collection

import pandas as pd
from sqlalchemy import Connection, bindparam, select, text

from monitor.rules.reconcile import PAYMENT_COLUMNS
from monitor.store.models import RepairRecord
from monitor.store.snapshot import utc_seconds
from monitor.views.common import from_epoch, loads

# id prefix -> the table holding that Stripe object
OBJECT_TABLES = {
    "cs": "stripe_checkout_sessions",
    "in": "stripe_invoices",
    "pi": "stripe_payment_intents",
    "ch": "stripe_charges",
    "cus": "stripe_customers",
    "sub": "stripe_subscriptions",
    "evt": "stripe_events",
    "re": "stripe_refunds",
    "dp": "stripe_disputes",
    "du": "stripe_disputes",
    "we": "stripe_webhook_endpoints",
}


def _expanding(sql: str, *names: str):
    return text(sql).bindparams(*(bindparam(n, expanding=True) for n in names))


_PAYMENTS = _expanding(f"SELECT {', '.join(PAYMENT_COLUMNS)} FROM payments WHERE payment_id IN :ids", "ids")
_CHARGES = _expanding(
    "SELECT id, payment_intent_id, amount_refunded FROM stripe_charges WHERE payment_intent_id IN :pis", "pis"
)
_REFUNDS = _expanding(
    "SELECT id, charge_id, payment_intent_id, amount, status, created FROM stripe_refunds "
    "WHERE payment_intent_id IN :pis OR charge_id IN :charges",
    "pis",
    "charges",
)
_DISPUTES = _expanding(
    "SELECT id, charge_id, payment_intent_id, amount, status, created FROM stripe_disputes "
    "WHERE payment_intent_id IN :pis OR charge_id IN :charges",
    "pis",
    "charges",
)
_EVENTS = _expanding(
    "SELECT id, type, created, pending_webhooks, object_id, livemode FROM stripe_events "
    "WHERE object_id IN :objects",
    "objects",
)


def _ids(values) -> list[str]:
    return sorted({v for v in values if isinstance(v, str) and v})


def payments_by_id(conn: Connection, payment_ids: Collection[str]) -> tuple[pd.DataFrame, dict]:
    """(the payments among `payment_ids` as a frame of monitor.rules.reconcile.PAYMENT_COLUMNS, newest first,
    {"charges", "refunds", "disputes"}: lists of dicts about them, for timelines)."""
    ids = _ids(payment_ids)
    rows = conn.execute(_PAYMENTS, {"ids": ids}).all() if ids else []
    df = pd.DataFrame([tuple(r) for r in rows], columns=list(PAYMENT_COLUMNS))
    pis = _ids(df["payment_intent_id"].tolist())
    charges = [dict(r) for r in conn.execute(_CHARGES, {"pis": pis}).mappings()] if pis else []
    charge_ids = _ids(c["id"] for c in charges) or [""]
    refunds = disputes = []
    if pis:
        refunds = [dict(r) for r in conn.execute(_REFUNDS, {"pis": pis, "charges": charge_ids}).mappings()]
        disputes = [dict(r) for r in conn.execute(_DISPUTES, {"pis": pis, "charges": charge_ids}).mappings()]
    pi_of_charge = {c["id"]: c["payment_intent_id"] for c in charges}
    for r in (*refunds, *disputes):
        r["payment_intent_id"] = r["payment_intent_id"] or pi_of_charge.get(r["charge_id"])
    df = df[list(PAYMENT_COLUMNS)].copy()
    df["created"] = utc_seconds(df["created"])
    df["period_end"] = utc_seconds(df["period_end"])
    df["amount"] = pd.to_numeric(df["amount"]).astype("Int64")
    df["amount_refunded"] = pd.to_numeric(df["amount_refunded"]).astype("int64")
    df["livemode"] = df["livemode"].fillna(False).astype(bool)
    df["currency"] = df["currency"].str.lower()
    df = df.sort_values(["created", "payment_id"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )
    return df, {"charges": charges, "refunds": refunds, "disputes": disputes}


def stripe_object(conn: Connection, object_id: str | None) -> dict | None:
    """The raw Stripe JSON of one stored object, by its id's prefix; None when not stored."""
    if not object_id or "_" not in object_id:
        return None
    table = OBJECT_TABLES.get(object_id.split("_", 1)[0])
    if table is None:
        return None
    raw = conn.execute(text(f"SELECT raw FROM {table} WHERE id = :id"), {"id": object_id}).scalar()
    return loads(raw)


def events_by_id(conn: Connection, event_ids: Collection[str]) -> dict[str, dict]:
    """Stored events by id: id, type, created (UTC datetime), pending_webhooks, object_id, livemode."""
    ids = _ids(event_ids)
    if not ids:
        return {}
    q = _expanding(
        "SELECT id, type, created, pending_webhooks, object_id, livemode FROM stripe_events WHERE id IN :ids",
        "ids",
    )
    out = {}
    for r in conn.execute(q, {"ids": ids}).mappings():
        e = dict(r)
        e["created"] = from_epoch(e["created"])
        e["pending_webhooks"] = int(e["pending_webhooks"] or 0)
        e["livemode"] = bool(e["livemode"])
        out[e["id"]] = e
    return out


def events_about(conn: Connection, object_ids: Collection[str]) -> list[dict]:
    """Stored events whose object is one of `object_ids`, oldest first (same fields as events_by_id)."""
    ids = _ids(object_ids)
    if not ids:
        return []
    rows = [dict(r) for r in conn.execute(_EVENTS, {"objects": ids}).mappings()]
    for e in rows:
        e["created"] = from_epoch(e["created"])
        e["pending_webhooks"] = int(e["pending_webhooks"] or 0)
        e["livemode"] = bool(e["livemode"])
    return sorted(rows, key=lambda e: (e["created"], e["id"]))


REPAIR_FIELDS = (
    "id",
    "started_at",
    "finished_at",
    "payment_id",
    "operator",
    "role",
    "strategy",
    "dry_run",
    "outcome",
    "reason",
    "stripe_state",
    "rows_before",
    "rows_after",
)


def repair_dict(row) -> dict:
    d = {k: getattr(row, k) for k in REPAIR_FIELDS}
    for k in ("stripe_state", "rows_before", "rows_after"):
        d[k] = loads(d[k])
    d["dry_run"] = bool(d["dry_run"])
    return d


def repairs_for(conn: Connection, payment_ids: Collection[str], limit: int = 200) -> list[dict]:
    """The repair ledger's rows about `payment_ids`, newest first, JSON columns parsed."""
    ids = _ids(payment_ids)
    if not ids:
        return []
    t = RepairRecord.__table__
    rows = conn.execute(select(t).where(t.c.payment_id.in_(ids)).order_by(t.c.id.desc()).limit(limit))
    return [repair_dict(r) for r in rows]
