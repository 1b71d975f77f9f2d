"""Stripe objects (plain JSON dicts, as the API returns them) into store rows. Pure.

Stripe moves fields between API versions; each reader below accepts the shapes this project has met:
- an invoice's subscription is `parent.subscription_details.subscription` since 2025-03-31 (basil), and
  the top-level `subscription` before;
- an invoice's PaymentIntents are in `payments.data[].payment.payment_intent` (an includable field since
  basil, so the sync expands `data.payments`; an invoice may be paid by several), and the top-level
  `payment_intent` before; each `invoice.payments` item is kept as an `invoice_payment` row of its own;
- a subscription's `current_period_end` moved onto its items in basil.
A reference may be an id or, when expanded, the object itself.
"""

from __future__ import annotations

import json

import orjson

from monitor.store.models import STRIPE_TABLES

# Dispute statuses that end with the money taken back from the merchant.
DISPUTE_LOST = "lost"
# Fields Stripe returns only when asked for (`expand[]`), so a copy without them (an event's) says nothing
# about them: saving it keeps the stored value (monitor.store.save_objects).
INCLUDABLE = {"invoice": ("payments",)}
# The freshness of a copy is (snapshot_at, snapshot_seq). A list copy has seq 0. An event's copy of its
# object has seq EVENT_SEQ_TOP - rank, rank being how many events of the same second Stripe listed before
# it (Stripe lists events newest first): of the events of one second the newest wins, and any of them wins
# over a list copy fetched in that second (the list may have been read just before the event).
EVENT_SEQ_TOP = 1_000_000_000


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
        "amount_subtotal": o.get("amount_subtotal"),
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


def _payment_intent_of(payment: dict) -> str | None:
    """The PaymentIntent an `invoice_payment` was made with, if it was made with one."""
    inner = payment.get("payment") or {}
    return (
        ref(inner.get("payment_intent")) if inner.get("type", "payment_intent") == "payment_intent" else None
    )


def invoice_payment_intents(o: dict) -> list[str]:
    """Every PaymentIntent of an invoice, paid ones first: its `payments` (expanded), else the old
    top-level `payment_intent`."""
    payments = sorted(((o.get("payments") or {}).get("data") or []), key=lambda p: p.get("status") != "paid")
    found = [pi for pi in map(_payment_intent_of, payments) if pi]
    top = ref(o.get("payment_intent"))
    if top and top not in found:
        found.append(top)
    return list(dict.fromkeys(found))


def invoice_payment_intent(o: dict) -> str | None:
    """The invoice's main PaymentIntent: the first paid one (see invoice_payment_intents)."""
    found = invoice_payment_intents(o)
    return found[0] if found else None


def invoice_payments(o: dict) -> list[dict]:
    """The `invoice_payment` objects of an invoice fetched with its payments, each naming its invoice
    (an item without an id, as older shapes had, gets one made of the invoice's and its intent's)."""
    out = []
    for payment in (o.get("payments") or {}).get("data") or []:
        if not isinstance(payment, dict):
            continue
        item = dict(payment, object="invoice_payment", invoice=o.get("id"))
        item.setdefault("livemode", o.get("livemode"))
        item.setdefault("currency", o.get("currency"))
        if not isinstance(item.get("id"), str) or not item["id"]:
            item["id"] = f"{o.get('id')}:{_payment_intent_of(payment) or len(out)}"
        out.append(item)
    return out


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
        "subtotal": o.get("subtotal"),
        "total": o.get("total"),
        "currency": _lower(o.get("currency")),
        "billing_reason": o.get("billing_reason"),
        "line_period_end": invoice_period_end(o),
        "paid_at": transitions.get("paid_at"),
    }


def _invoice_payment(o: dict) -> dict:
    return {
        "invoice_id": ref(o.get("invoice")),
        "payment_intent_id": _payment_intent_of(o),
        "status": o.get("status"),
        "amount_paid": o.get("amount_paid"),
        "currency": _lower(o.get("currency")),
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
    "invoice_payment": _invoice_payment,
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


def row_for(obj: dict, snapshot_at: int, raw: str | None = None, *, seq: int = 0) -> dict:
    """The store row of a Stripe object of a kept type (see `object_type`), as fresh as
    (snapshot_at, seq)."""
    created = obj.get("created")
    row = {
        "id": obj["id"],
        "created": created if isinstance(created, int) else 0,
        "livemode": bool(obj.get("livemode")),
        "snapshot_at": snapshot_at,
        "snapshot_seq": seq,
        "raw": raw if raw is not None else orjson.dumps(obj).decode(),
    }
    row.update(_COLUMNS[obj["object"]](obj))
    return row


def table_for(kind: str):
    return STRIPE_TABLES[kind]


def listing_ranks(
    events: list[dict], previous: tuple[int, int] | None = None
) -> tuple[list[int], tuple[int, int] | None]:
    """Each event's rank within its second in a listing that is newest first, as Stripe lists events: 0
    for the first (newest) event of a second, 1 for the next, and so on. `previous` is (created, rank) of
    the last event of the listing's page before this one, so a second cut by a page boundary goes on
    counting. Returns the ranks and the (created, rank) to pass with the next page."""
    ranks = []
    for event in events:
        created = event.get("created") if isinstance(event.get("created"), int) else 0
        rank = previous[1] + 1 if previous is not None and previous[0] == created else 0
        ranks.append(rank)
        previous = (created, rank)
    return ranks, previous
