"""The payments of a subscription business and its app's rows, built in memory with about 1 % anomalies;
the Stripe objects behind them; and both written where a reconciliation reads them (a store, as the sync
saves it, and an app database of the default schema)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, text

from benchmarks.sessions import DAY, PRICES, chunks, session_base
from monitor import store
from monitor.app_db import create_default_schema
from monitor.emulator.shapes import example
from monitor.rules.reconcile import PAYMENT_COLUMNS, SUBSCRIPTION_COLUMNS


def _ids(prefix: str, numbers: np.ndarray) -> pd.Series:
    return prefix + pd.Series(numbers).astype("str").str.zfill(8)


def _utc_seconds(values: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(values, unit="s", utc=True)).astype("datetime64[us, UTC]")


def synthetic_frames(n: int, now: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`n` payments and `n` subscription rows, the way a subscription business has them, about 1 % of
    them anomalies.

    Payment k: four in five are Checkout Sessions (k % 5 == 0 starts a subscription, the rest are one-off
    purchases), one in five a renewal invoice of the subscription started 4 payments earlier. Rows: one
    per session, except ~0.4 % missing (paid_without_subscription); ~0.2 % not active
    (subscription_not_active), ~0.2 % with another amount (amount_mismatch), ~0.1 % doubled
    (duplicate_subscription); ~0.25 % of payments fully refunded and ~0.05 % disputes lost
    (refunded_but_active); 0.1 % active rows without any payment (active_without_payment); the rest up to
    `n` are old canceled rows."""
    k = np.arange(n, dtype=np.int64)
    invoice = k % 5 == 4
    owner = np.where(invoice, k - 4, k)  # whose customer and subscription the payment belongs to
    subscribed = owner % 5 == 0
    step = max(1, (400 * DAY) // max(n, 1))
    created = (now - 7200) - (n - 1 - k) * step
    amount = PRICES[owner % 4]
    refunded = np.where(k % 400 == 13, amount, 0)
    cs = _ids("cs_", k)
    sub = _ids("sub_", owner)
    payments = pd.DataFrame(
        {
            "payment_id": cs.where(~invoice, _ids("in_", k)),
            "source": pd.Series(np.where(invoice, "invoice", "checkout_session")).astype("str"),
            "checkout_session_id": cs.where(~invoice),
            "payment_intent_id": _ids("pi_", k),
            "invoice_id": _ids("in_", k).where(invoice),
            "stripe_subscription_id": sub.where(subscribed),
            "stripe_subscription_status": pd.Series(np.where(subscribed, "active", "")).astype("str"),
            "customer_id": _ids("cus_", owner),
            "customer_email": "c" + pd.Series(owner).astype("str") + "@example.com",
            "amount": amount,
            "currency": pd.Series(np.where(owner % 10 == 3, "eur", "usd")).astype("str"),
            "created": _utc_seconds(created),
            "amount_refunded": refunded,
            "dispute_status": pd.Series(np.where(k % 2000 == 17, "lost", "")).astype("str"),
            "billing_reason": pd.Series(np.where(invoice, "subscription_cycle", "")).astype("str"),
            "period_end": _utc_seconds(created + 30 * DAY).where(invoice),
            "event_id": _ids("evt_", k),
            "livemode": np.zeros(n, dtype=bool),
            "zero_reason": pd.Series([None] * n, dtype="str"),
        }
    )
    for c in ("stripe_subscription_status", "dispute_status", "billing_reason"):
        payments[c] = payments[c].mask(payments[c] == "")
    payments = payments[list(PAYMENT_COLUMNS)]

    has_row = ~invoice & (k % 250 != 1)
    r = k[has_row]
    renewal = np.minimum(r + 4, n - 1)
    period_end = np.where(r % 5 == 0, np.where(r + 4 < n, created[renewal], created[r]) + 30 * DAY, 0)
    rows = pd.DataFrame(
        {
            "email": "c" + pd.Series(r).astype("str") + "@example.com",
            "customer_id": _ids("cus_", r),
            "checkout_session_id": _ids("cs_", r),
            "payment_intent_id": _ids("pi_", r),
            "stripe_subscription_id": _ids("sub_", r).where(r % 5 == 0),
            "amount": PRICES[r % 4] + np.where(r % 500 == 7, 100, 0),
            "currency": pd.Series(np.where(r % 10 == 3, "eur", "usd")).astype("str"),
            "status": pd.Series(np.where(r % 500 == 3, "incomplete", "active")).astype("str"),
            "created_at": _utc_seconds(created[r] + 5),
            "activated_at": _utc_seconds(created[r] + 5),
            "current_period_end": _utc_seconds(period_end).where(r % 5 == 0),
        }
    )
    doubled = rows[(r % 1000) == 11]
    orphans = max(1, n // 1000)
    j = np.arange(orphans, dtype=np.int64)
    orphan_rows = _unlinked_rows(
        "orphan", j, 9900, "active", np.full(orphans, now - 30 * DAY), np.full(orphans, now + 30 * DAY)
    )
    filler = max(0, n - len(rows) - len(doubled) - orphans)
    j = np.arange(filler, dtype=np.int64)
    old_rows = _unlinked_rows("old", j, 4900, "canceled", now - 800 * DAY + j, now - 700 * DAY + j)
    subscriptions = pd.concat([rows, doubled, orphan_rows, old_rows], ignore_index=True)
    subscriptions["amount"] = subscriptions["amount"].astype("Int64")
    subscriptions.insert(0, "id", pd.Series(np.arange(1, len(subscriptions) + 1), dtype="object"))
    return payments, subscriptions[list(SUBSCRIPTION_COLUMNS)]


def _unlinked_rows(
    prefix: str, j: np.ndarray, amount: int, status: str, created: np.ndarray, period_end: np.ndarray
) -> pd.DataFrame:
    """App rows linked to no payment (only a customer and a Stripe subscription of their own)."""
    n = len(j)
    return pd.DataFrame(
        {
            "email": prefix + pd.Series(j).astype("str") + "@example.com",
            "customer_id": _ids(f"cus_{prefix}", j),
            "checkout_session_id": pd.Series([None] * n, dtype="str"),
            "payment_intent_id": pd.Series([None] * n, dtype="str"),
            "stripe_subscription_id": _ids(f"sub_{prefix}", j),
            "amount": np.full(n, amount),
            "currency": pd.Series(["usd"] * n, dtype="str"),
            "status": pd.Series([status] * n, dtype="str"),
            "created_at": _utc_seconds(created),
            "activated_at": _utc_seconds(created),
            "current_period_end": _utc_seconds(period_end),
        }
    )


def nonempty_text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _epoch(value) -> int | None:
    return None if value is None or pd.isna(value) else int(pd.Timestamp(value).timestamp())


def stripe_objects(payments: pd.DataFrame, now: int) -> Iterator[dict]:
    """The Stripe objects behind `payments` (synthetic_frames'): sessions, invoices, subscriptions,
    refunds, disputes, then the events that announced each payment, shaped like Stripe's own examples."""
    session = session_base()
    details = session.get("customer_details") or {}
    invoice_base = example("invoice", status="paid", livemode=False, subscription=None)
    subscription_base = example("subscription", status="active", livemode=False)
    refund_base = example("refund", status="succeeded", charge=None)
    dispute_base = example("dispute", status="lost", charge=None, livemode=False)
    event_base = example("event", pending_webhooks=0, livemode=False)
    records = payments.to_dict("records")
    for p in records:
        created = _epoch(p["created"])
        pid, email, sub = (
            p["payment_id"],
            nonempty_text(p["customer_email"]),
            nonempty_text(p["stripe_subscription_id"]),
        )
        if p["source"] == "checkout_session":
            obj = dict(session)
            obj.update(
                id=pid,
                created=created,
                mode="subscription" if sub else "payment",
                amount_total=int(p["amount"]),
                amount_subtotal=int(p["amount"]),
                currency=p["currency"],
                customer=p["customer_id"],
                customer_email=email,
                customer_details={**details, "email": email},
                payment_intent=p["payment_intent_id"],
                subscription=sub,
            )
            yield obj
            if sub:
                item = {"object": "subscription_item", "current_period_end": created + 30 * DAY}
                yield {
                    **subscription_base,
                    "id": sub,
                    "created": created,
                    "customer": p["customer_id"],
                    "items": {
                        "object": "list",
                        "data": [item],
                        "has_more": False,
                        "url": "/v1/subscription_items",
                    },
                }
        else:
            obj = dict(invoice_base)
            obj.update(
                id=pid,
                created=created,
                customer=p["customer_id"],
                customer_email=email,
                amount_paid=int(p["amount"]),
                currency=p["currency"],
                billing_reason=p["billing_reason"],
                parent={
                    "type": "subscription_details",
                    "quote_details": None,
                    "subscription_details": {"metadata": {}, "subscription": sub},
                },
                payments={
                    "object": "list",
                    "data": [
                        {"payment": {"type": "payment_intent", "payment_intent": p["payment_intent_id"]}}
                    ],
                    "has_more": False,
                },
                lines={
                    "object": "list",
                    "data": [
                        {"object": "line_item", "period": {"start": created, "end": _epoch(p["period_end"])}}
                    ],
                    "has_more": False,
                },
                status_transitions={"paid_at": created},
            )
            yield obj
        if p["amount_refunded"]:
            yield {
                **refund_base,
                "id": "re_" + pid,
                "created": created + 3600,
                "amount": int(p["amount_refunded"]),
                "payment_intent": p["payment_intent_id"],
            }
        if nonempty_text(p["dispute_status"]):
            yield {
                **dispute_base,
                "id": "dp_" + pid,
                "created": created + 7200,
                "payment_intent": p["payment_intent_id"],
                "status": p["dispute_status"],
            }
    for p in records:  # last: an event's snapshot of its payment is older than the payment's own copy
        kind = "checkout.session" if p["source"] == "checkout_session" else "invoice"
        yield {
            **event_base,
            "id": p["event_id"],
            "created": _epoch(p["created"]),
            "type": "checkout.session.completed" if kind == "checkout.session" else "invoice.paid",
            "data": {"object": {"id": p["payment_id"], "object": kind}},
        }


def app_rows(subscriptions: pd.DataFrame) -> list[dict]:
    """synthetic_frames' rows as rows of the default app schema (times as the app writes them)."""
    out = pd.DataFrame(
        {
            "id": subscriptions["id"].astype("int64"),
            "customer_email": subscriptions["email"],
            "stripe_customer_id": subscriptions["customer_id"],
            "stripe_checkout_session_id": subscriptions["checkout_session_id"],
            "stripe_payment_intent_id": subscriptions["payment_intent_id"],
            "stripe_subscription_id": subscriptions["stripe_subscription_id"],
            "amount": subscriptions["amount"],
            "currency": subscriptions["currency"],
            "status": subscriptions["status"],
            **{
                c: subscriptions[c].dt.strftime("%Y-%m-%d %H:%M:%S")
                for c in ("created_at", "activated_at", "current_period_end")
            },
        }
    )
    out = out.astype(object).where(out.notna(), None)
    return out.to_dict("records")


def build_recon_store(store_url: str, n: int, now: int) -> tuple[int, list[dict]]:
    """A store holding `n` synthetic payments, saved as the sync saves them; (objects saved, their app
    rows in the default schema)."""
    payments, subscriptions = synthetic_frames(n, now)
    engine = store.open_store(store_url)
    saved = 0
    try:
        for chunk in chunks(stripe_objects(payments, now), 5000):
            with engine.begin() as conn:
                saved += store.save_objects(conn, chunk, snapshot_at=now)
    finally:
        engine.dispose()
    return saved, app_rows(subscriptions)


def build_app_db(url: str, rows: list[dict]) -> None:
    """An app database of the default schema holding `rows`, with the indexes any app has on the ids
    it looks rows up by (the naive loop uses them; the bulk read does not)."""
    create_default_schema(url, rows)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for column in (
                "stripe_checkout_session_id",
                "stripe_payment_intent_id",
                "stripe_subscription_id",
            ):
                conn.execute(text(f"CREATE INDEX bench_{column} ON subscriptions ({column})"))
            if conn.dialect.name == "postgresql":
                conn.execute(text("ANALYZE subscriptions"))
    finally:
        engine.dispose()
