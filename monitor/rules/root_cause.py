"""Root-cause hints: why a payment has no working subscription. Pure; `now` passed in.

Each payment finding (paid_without_subscription, subscription_not_active, period_not_extended) gets its hint
extended with " Why: " and, joined by "; ":
1. its event's delivery state: "checkout.session.completed evt_… pending at 1 endpoint for 2 h 3 min",
   "… delivered", "event evt_… is not among Stripe's listed events", or "no event found";
2. the app log's word on that event, when the app keeps a log and the event is known: its latest row,
   'app log: failed "…the error word for word…"', "app log: processed", or "app log: no record";
3. every outage that overlaps [created − 10 min, created + 30 min] of the payment:
   "redis:channels down 10:58–11:20 UTC".
The event is the payment's `event_id` (from `payments`), else the finding's, else (*interpretation*) the
event about the payment's objects whose type fulfils a payment (checkout.session.completed first). Applying
`explain` again replaces the earlier "Why:" part instead of adding a second one. Other findings come back
unchanged (as copies); a payment finding without an event id gets the one found.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta

import pandas as pd

from monitor.rules.findings import Finding
from monitor.rules.outages import Outage, format_window
from monitor.rules.timefmt import quote, to_utc
from monitor.rules.webhook_health import delivery_state, latest_log_entries, prepare_events, py

EXPLAINED_KINDS: tuple[str, ...] = (
    "paid_without_subscription",
    "subscription_not_active",
    "period_not_extended",
)
WHY = " Why: "
# The payment's time window an outage must overlap to be named: handlers run within seconds of payment,
# and the success-page fallback and Stripe's first retries within about half an hour.
BEFORE_PAYMENT = timedelta(minutes=10)
AFTER_PAYMENT = timedelta(minutes=30)
# Event types that fulfil a payment, in order of preference, for a payment without a known event.
FULFILMENT_EVENT_TYPES: tuple[str, ...] = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "invoice.paid",
    "invoice.payment_succeeded",
    "payment_intent.succeeded",
)
_PAYMENT_KEYS = ("payment_id", "checkout_session_id", "invoice_id", "payment_intent_id")


def explain(
    findings: list[Finding],
    payments: pd.DataFrame | None,
    events: pd.DataFrame | None,
    webhook_log: pd.DataFrame | None,
    outages: list[Outage],
    *,
    now: datetime,
    ok_statuses: Sequence[str] = ("processed",),
) -> list[Finding]:
    """The findings with the "Why:" part added to each payment finding's hint; see the module docstring."""
    now = to_utc(now)
    todo = [f for f in findings if f.kind in EXPLAINED_KINDS]
    if not todo:
        return [dataclasses.replace(f) for f in findings]
    pays = _payments_of(payments, {f.payment_id for f in todo if f.payment_id})
    ev = prepare_events(events).drop_duplicates("id")

    event_of = {}
    for f in todo:
        pay = pays.get(f.payment_id, {})
        event_of[f.key] = pay.get("event_id") or f.event_id
    unknown = {f.payment_id for f in todo if not event_of[f.key] and f.payment_id in pays}
    fallback = _fulfilment_events(ev, {p: pays[p] for p in unknown})
    for f in todo:
        event_of[f.key] = event_of[f.key] or fallback.get(f.payment_id)

    wanted = {e for e in event_of.values() if e}
    known = {r["id"]: r for r in ev[ev["id"].isin(wanted)].to_dict("records")}
    log = None
    if webhook_log is not None:
        log = latest_log_entries(webhook_log, ok_statuses=ok_statuses, event_ids=wanted)

    out = []
    for f in findings:
        if f.kind not in EXPLAINED_KINDS:
            out.append(dataclasses.replace(f))
            continue
        event_id = event_of[f.key]
        created = pays.get(f.payment_id, {}).get("created") or f.occurred_at
        parts = [_delivery(event_id, known.get(event_id), now=now)]
        if log is not None and event_id:
            parts.append(_app_log(log, event_id))
        parts += _outages(outages, created, now=now)
        base = f.hint.split(WHY)[0].rstrip()
        hint = base + ("" if not base or base.endswith((".", "!", "?")) else ".") + WHY + "; ".join(parts)
        out.append(dataclasses.replace(f, hint=hint, event_id=f.event_id or event_id))
    return out


def _payments_of(payments: pd.DataFrame | None, ids: set[str]) -> dict[str, dict]:
    """The payments with these ids as plain dicts (the first one of an id listed twice)."""
    if payments is None or payments.empty or not ids:
        return {}
    columns = [c for c in (*_PAYMENT_KEYS, "event_id", "created") if c in payments.columns]
    part = payments.loc[payments["payment_id"].isin(ids), columns].drop_duplicates("payment_id")
    return {r["payment_id"]: {k: py(v) for k, v in r.items()} for r in part.to_dict("records")}


def _fulfilment_events(ev: pd.DataFrame, pays: dict[str, dict]) -> dict[str, str]:
    """For payments without an event id: the event about one of their objects that fulfils them."""
    owner = {}
    for payment_id, pay in pays.items():
        for key in _PAYMENT_KEYS:
            if pay.get(key):
                owner.setdefault(pay[key], payment_id)
    if not owner:
        return {}
    rank = {t: i for i, t in enumerate(FULFILMENT_EVENT_TYPES)}
    hits = ev[ev["object_id"].isin(set(owner)) & ev["type"].isin(FULFILMENT_EVENT_TYPES)]
    hits = hits.assign(payment=hits["object_id"].map(owner), rank=hits["type"].map(rank))
    hits = hits.sort_values(["payment", "rank", "created", "id"], kind="stable")
    first = hits.drop_duplicates("payment")
    return dict(zip(first["payment"], first["id"], strict=True))


def _delivery(event_id: str | None, event: dict | None, *, now: datetime) -> str:
    if not event_id:
        return "no event found"
    if event is None:
        return f"event {event_id} is not among Stripe's listed events"
    created = py(event["created"])
    return delivery_state(event["type"], event_id, int(event["pending_webhooks"]), created, now=now)


def _app_log(log: pd.DataFrame, event_id: str) -> str:
    if event_id not in log.index:
        return "app log: no record"
    row = log.loc[event_id]
    status = py(row["status"]) or "no status"
    if row["ok"]:
        return f"app log: {status}"
    error = py(row["error"])
    return f"app log: {status} {quote(error)}" if error else f"app log: {status} (no error text)"


def _outages(outages: list[Outage], created: datetime | None, *, now: datetime) -> list[str]:
    if created is None:
        return []
    start, end = to_utc(created) - BEFORE_PAYMENT, to_utc(created) + AFTER_PAYMENT
    hit = sorted((o for o in outages if o.overlaps(start, end)), key=lambda o: (o.start, o.component))
    return [f"{o.component} {o.status} {format_window(o, now=now)}" for o in hit]
