"""The cast as the pure rules see it: a customer's payment and the app's row for it as rows of the frames
reconcile() takes (`PAYMENT_COLUMNS`, `SUBSCRIPTION_COLUMNS`), and the finding the rules make about them.

For tests that judge small tables without a store or Stripe; tests that need Stripe's objects or an app
database take the same people from tests/stripe_cast.py. Customer `name` is cus_{name} and {name}@example.com,
and pays USD 149 through Checkout Session cs_{name} and PaymentIntent pi_{name}, announced by event evt_{name}.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from monitor.rules.findings import WEBHOOK_KINDS, Finding
from monitor.rules.reconcile import PAYMENT_COLUMNS, SUBSCRIPTION_COLUMNS, empty_payments, empty_subscriptions

NOW = datetime(2026, 11, 26, 11, 20, tzinfo=UTC)
DAY = timedelta(days=1)
MONTH = timedelta(days=30)
EXPECTED_WEBHOOK_URL = "https://app.example-saas.com/stripe/webhook"


def checkout(name: str, **fields) -> dict:
    """A paid one-time Checkout Session, a day old, USD 149."""
    return {c: None for c in PAYMENT_COLUMNS} | {
        "payment_id": f"cs_{name}",
        "source": "checkout_session",
        "checkout_session_id": f"cs_{name}",
        "payment_intent_id": f"pi_{name}",
        "customer_id": f"cus_{name}",
        "customer_email": f"{name}@example.com",
        "amount": 14900,
        "currency": "usd",
        "created": NOW - DAY,
        "amount_refunded": 0,
        "period_end": pd.NaT,
        "event_id": f"evt_{name}",
        "livemode": False,
        **fields,
    }


def invoices(name: str, count: int, **fields) -> list[dict]:
    """`count` monthly USD 29 invoices of Stripe subscription sub_{name}, the last paid a day ago."""
    out = []
    for n in range(1, count + 1):
        paid = NOW - DAY - (count - n) * MONTH
        out.append(
            checkout(
                name,
                payment_id=f"in_{name}_{n}",
                source="invoice",
                checkout_session_id=None,
                payment_intent_id=f"pi_{name}_{n}",
                invoice_id=f"in_{name}_{n}",
                stripe_subscription_id=f"sub_{name}",
                stripe_subscription_status="active",
                amount=2900,
                created=paid,
                billing_reason="subscription_create" if n == 1 else "subscription_cycle",
                period_end=paid + MONTH,
                event_id=f"evt_{name}_{n}",
            )
            | fields
        )
    return out


def row(row_id, name: str, *, by: str = "session", **fields) -> dict:
    """The app's row for customer `name`, linked to their payment by session, intent, subscription or nothing."""
    return {
        "id": row_id,
        "email": f"{name}@example.com",
        "customer_id": f"cus_{name}",
        "checkout_session_id": f"cs_{name}" if by == "session" else None,
        "payment_intent_id": f"pi_{name}" if by == "intent" else None,
        "stripe_subscription_id": f"sub_{name}" if by == "subscription" else None,
        "amount": 14900,
        "currency": "usd",
        "status": "active",
        "created_at": NOW - DAY + timedelta(seconds=5),
        "activated_at": NOW - DAY + timedelta(seconds=6),
        "current_period_end": NOW + 300 * DAY,
        **fields,
    }


def payments_frame(payments: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(payments, columns=list(PAYMENT_COLUMNS)) if payments else empty_payments()


def tables(payments: list[dict], rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The payments and subscriptions frames reconcile() takes."""
    subs = pd.DataFrame(rows, columns=list(SUBSCRIPTION_COLUMNS)) if rows else empty_subscriptions()
    return payments_frame(payments), subs


def finding(name: str = "dana", kind: str = "paid_without_subscription", **fields) -> Finding:
    """The finding of `kind` the rules make about customer `name`, `fields` written over it: a payment kind
    is about their `checkout(name)` (its ids, e-mail, amount and time), a webhook kind about their event,
    and endpoint_misconfigured about the app's endpoint, whoever `name` is."""
    if kind == "endpoint_misconfigured":
        about = {"key": f"{kind}:{EXPECTED_WEBHOOK_URL}"}
    elif kind in WEBHOOK_KINDS:
        about = {
            "key": f"{kind}:evt_{name}",
            "event_id": f"evt_{name}",
            "customer_email": f"{name}@example.com",
        }
    else:
        paid = checkout(name)
        said = (
            "payment_id",
            "payment_intent_id",
            "customer_id",
            "customer_email",
            "amount",
            "currency",
            "event_id",
        )
        about = {"key": f"{kind}:cs_{name}", "occurred_at": paid["created"]} | {k: paid[k] for k in said}
    return Finding(kind=kind, **(about | fields))
