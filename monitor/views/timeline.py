"""Timeline entries, one shape for the finding detail and the customer lookup: {"at", "kind", "title",
"detail", "ref"}, where `kind` is payment | event | webhook_log | row | repair | outage | finding and `ref`
the id the entry is about."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import pandas as pd

from monitor.rules.money import format_money
from monitor.rules.outages import Outage, format_window
from monitor.rules.timefmt import quote
from monitor.rules.webhook_health import delivery_state
from monitor.store.lifecycle import StoredFinding
from monitor.views.common import from_epoch, plain

TIMELINE_COLUMNS = ("at", "kind", "title", "detail", "ref")
_SOURCES = {"checkout_session": "Checkout Session", "invoice": "invoice", "payment_intent": "PaymentIntent"}


def _entry(at, kind: str, title: str, detail: str = "", ref=None) -> dict | None:
    at = plain(at)
    if at is None:
        return None
    return {
        "at": at,
        "kind": kind,
        "title": title,
        "detail": detail,
        "ref": None if ref is None else str(ref),
    }


def payment_entries(payments: pd.DataFrame, extras: dict) -> list[dict]:
    out = []
    for p in payments.to_dict("records"):
        money = format_money(plain(p["amount"]), p["currency"])
        source = _SOURCES.get(p["source"], p["source"])
        who = f" by {p['customer_email']}" if plain(p["customer_email"]) else ""
        out.append(
            _entry(
                p["created"], "payment", f"Paid {money}", f"{source} {p['payment_id']}{who}", p["payment_id"]
            )
        )
    currency = {p["payment_intent_id"]: p["currency"] for p in payments.to_dict("records")}
    for r in extras.get("refunds", []):
        money = format_money(r["amount"], currency.get(r["payment_intent_id"]))
        out.append(
            _entry(
                from_epoch(r["created"]), "payment", f"Refund of {money} ({r['status']})", r["id"], r["id"]
            )
        )
    for d in extras.get("disputes", []):
        money = format_money(d["amount"], currency.get(d["payment_intent_id"]))
        out.append(
            _entry(
                from_epoch(d["created"]), "payment", f"Dispute of {money}", f"status {d['status']}", d["id"]
            )
        )
    return out


def event_entries(events: Iterable[dict], *, now: datetime) -> list[dict]:
    return [
        _entry(
            e["created"],
            "event",
            e["type"],
            delivery_state(e["type"], e["id"], e["pending_webhooks"], e["created"], now=now),
            e["id"],
        )
        for e in events
    ]


def log_entries(log: pd.DataFrame | None) -> list[dict]:
    if log is None:
        return []
    out = []
    for r in log.to_dict("records"):
        error = plain(r.get("error"))
        detail = f"{r['event_id']}: {quote(error)}" if error else str(r["event_id"])
        out.append(
            _entry(
                r["received_at"], "webhook_log", f"App's webhook log: {r['status']}", detail, r["event_id"]
            )
        )
    return out


def row_entries(rows: pd.DataFrame | None) -> list[dict]:
    if rows is None:
        return []
    out = []
    for r in rows.to_dict("records"):
        money = format_money(plain(r.get("amount")), plain(r.get("currency")))
        detail = f"{r.get('email') or 'no e-mail'}, {money}, now {r.get('status')}"
        out.append(_entry(r.get("created_at"), "row", f"App row {r['id']} created", detail, r["id"]))
        out.append(_entry(r.get("activated_at"), "row", f"App row {r['id']} activated", detail, r["id"]))
    return out


def outage_entries(outages: Iterable[Outage], *, now: datetime) -> list[dict]:
    return [
        _entry(
            o.start,
            "outage",
            f"{o.component} {o.status} {format_window(o, now=now)}",
            quote(o.error) if o.error else "",
            o.component,
        )
        for o in outages
    ]


def finding_entries(findings: Iterable[StoredFinding]) -> list[dict]:
    out = []
    for f in findings:
        out.append(_entry(_second(f.first_seen), "finding", f"Finding: {f.kind}", f.hint, f.id))
        if f.ack_at:
            title = f"Acknowledged by {f.ack_by}"
            out.append(_entry(_second(f.ack_at), "finding", title, f.ack_note or "", f.id))
        if f.resolved_at:
            out.append(_entry(_second(f.resolved_at), "finding", f"Resolved: {f.kind}", "", f.id))
    return out


def repair_entries(repairs: Iterable[dict]) -> list[dict]:
    return [
        _entry(
            r["started_at"],
            "repair",
            f"Repair {r['outcome']}{' (dry run)' if r['dry_run'] else ''} by {r['operator']}",
            r["reason"],
            r["payment_id"],
        )
        for r in repairs
    ]


def _second(moment: datetime | None) -> datetime | None:
    """A finding's time to the second, as DESIGN's JSON gives it."""
    return None if moment is None else moment.replace(microsecond=0)


def ordered(entries: Iterable[dict | None]) -> list[dict]:
    """The entries by time, oldest first (stable: equal times keep the order given)."""
    return sorted((e for e in entries if e is not None), key=lambda e: e["at"])


def timeline_frame(entries: Iterable[dict | None]) -> pd.DataFrame:
    df = pd.DataFrame(ordered(entries), columns=list(TIMELINE_COLUMNS))
    df["at"] = pd.to_datetime(df["at"], utc=True)
    return df
