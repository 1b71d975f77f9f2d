"""Stripe objects (plain JSON dicts, as the API returns them) into store rows. Pure.

Stripe moves fields between API versions; each reader below accepts the shapes this project has met:
- an invoice's subscription is `parent.subscription_details.subscription` since 2025-03-31 (basil), and
  the top-level `subscription` before;
- an invoice's PaymentIntent is in `payments.data[].payment.payment_intent` (an includable field since
  basil, so the sync expands `data.payments`), and the top-level `payment_intent` before;
- a subscription's `current_period_end` moved onto its items in basil.
A reference may be an id or, when expanded, the object itself.
"""

from __future__ import annotations

import json

import orjson

from monitor.models import STRIPE_TABLES

# Dispute statuses that end with the money taken back from the merchant.
DISPUTE_LOST = "lost"


def ref(value) -> str | None:
    """The id behind a reference that may be an id, an expanded object, or nothing."""
    if isinstance(value, dict):
        return value.get("id")
    return value if isinstance(value, str) and value else None


def _lower(value) -> str | None:
    return value.lower() if isinstance(value, str) else None


def _session(o: dict) -> dict:
    details = o.get("customer_details") or {}
    return {
        "status": o.get("status"),
        "payment_status": o.get("payment_status"),
        "mode": o.get("mode"),
        "amount_total": o.get("amount_total"),
        "currency": _lower(o.get("currency")),
        "customer_id": ref(o.get("customer")),
        "customer_email": details.get("email") or o.get("customer_email"),
        "payment_intent_id": ref(o.get("payment_intent")),
        "invoice_id": ref(o.get("invoice")),
        "subscription_id": ref(o.get("subscription")),
    }


def invoice_subscription(o: dict) -> str | None:
    parent = o.get("parent") or {}
    details = parent.get("subscription_details") or {}
    return ref(details.get("subscription")) or ref(o.get("subscription"))


def invoice_payment_intent(o: dict) -> str | None:
    payments = o.get("payments") or {}
    for payment in payments.get("data") or []:
        inner = payment.get("payment") or {}
        if inner.get("type", "payment_intent") == "payment_intent" and ref(inner.get("payment_intent")):
            return ref(inner.get("payment_intent"))
    return ref(o.get("payment_intent"))


def invoice_period_end(o: dict) -> int | None:
    """The end of the service period an invoice pays for: the latest end among its lines.

    Not the invoice's own `period_end`, which for subscription invoices is the end of the period
    *before* the one billed (Stripe docs, "Invoice.period_end").
    """
    lines = (o.get("lines") or {}).get("data") or []
    ends = [(line.get("period") or {}).get("end") for line in lines]
    ends = [e for e in ends if isinstance(e, int)]
    return max(ends) if ends else None


def _invoice(o: dict) -> dict:
    transitions = o.get("status_transitions") or {}
    return {
        "status": o.get("status"),
        "customer_id": ref(o.get("customer")),
        "customer_email": o.get("customer_email"),
        "subscription_id": invoice_subscription(o),
        "payment_intent_id": invoice_payment_intent(o),
        "amount_paid": o.get("amount_paid"),
        "currency": _lower(o.get("currency")),
        "billing_reason": o.get("billing_reason"),
        "line_period_end": invoice_period_end(o),
        "paid_at": transitions.get("paid_at"),
    }


def _payment_intent(o: dict) -> dict:
    return {
        "status": o.get("status"),
        "amount": o.get("amount"),
        "amount_received": o.get("amount_received"),
        "currency": _lower(o.get("currency")),
        "customer_id": ref(o.get("customer")),
        "receipt_email": o.get("receipt_email"),
        "invoice_id": ref(o.get("invoice")),
        "latest_charge": ref(o.get("latest_charge")),
    }


def _charge(o: dict) -> dict:
    return {
        "payment_intent_id": ref(o.get("payment_intent")),
        "amount": o.get("amount"),
        "amount_refunded": o.get("amount_refunded") or 0,
        "refunded": bool(o.get("refunded")),
        "disputed": bool(o.get("disputed")),
    }


def _refund(o: dict) -> dict:
    return {
        "charge_id": ref(o.get("charge")),
        "payment_intent_id": ref(o.get("payment_intent")),
        "amount": o.get("amount"),
        "status": o.get("status"),
    }


def _dispute(o: dict) -> dict:
    return {
        "charge_id": ref(o.get("charge")),
        "payment_intent_id": ref(o.get("payment_intent")),
        "amount": o.get("amount"),
        "status": o.get("status"),
    }


def _customer(o: dict) -> dict:
    return {"email": o.get("email"), "name": o.get("name")}


def subscription_period_end(o: dict) -> int | None:
    items = (o.get("items") or {}).get("data") or []
    ends = [i.get("current_period_end") for i in items if isinstance(i.get("current_period_end"), int)]
    if ends:
        return max(ends)
    value = o.get("current_period_end")
    return value if isinstance(value, int) else None


def _subscription(o: dict) -> dict:
    return {
        "customer_id": ref(o.get("customer")),
        "status": o.get("status"),
        "current_period_end": subscription_period_end(o),
    }


def _event(o: dict) -> dict:
    inner = (o.get("data") or {}).get("object") or {}
    return {
        "type": o.get("type") or "",
        "pending_webhooks": o.get("pending_webhooks") or 0,
        "object_id": inner.get("id"),
        "object_type": inner.get("object"),
        "api_version": o.get("api_version"),
    }


def _endpoint(o: dict) -> dict:
    return {
        "url": o.get("url") or "",
        "status": o.get("status"),
        "enabled_events": json.dumps(o.get("enabled_events") or []),
    }


_COLUMNS = {
    "checkout.session": _session,
    "invoice": _invoice,
    "payment_intent": _payment_intent,
    "charge": _charge,
    "refund": _refund,
    "dispute": _dispute,
    "customer": _customer,
    "subscription": _subscription,
    "event": _event,
    "webhook_endpoint": _endpoint,
}


def object_type(obj: dict) -> str | None:
    """The stored type of a Stripe object, or None for a type the store does not keep."""
    kind = obj.get("object")
    return kind if kind in _COLUMNS and isinstance(obj.get("id"), str) else None


def row_for(obj: dict, snapshot_at: int, raw: str | None = None) -> dict:
    """The store row of a Stripe object of a kept type (see `object_type`)."""
    created = obj.get("created")
    row = {
        "id": obj["id"],
        "created": created if isinstance(created, int) else 0,
        "livemode": bool(obj.get("livemode")),
        "snapshot_at": snapshot_at,
        "raw": raw if raw is not None else orjson.dumps(obj).decode(),
    }
    row.update(_COLUMNS[obj["object"]](obj))
    return row


def table_for(kind: str):
    return STRIPE_TABLES[kind]
