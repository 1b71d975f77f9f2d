"""The Discrepancies screen: findings filtered and paged in SQL, and one finding in full (both sides, the
event and the app's log of it, the outages around it, the timeline, the link to Stripe)."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
from sqlalchemy import JSON, Connection, Engine, case, cast, false, func, or_, select

from monitor.app_db import AppDatabase
from monitor.clock import now_utc
from monitor.rules.outages import Outage
from monitor.rules.root_cause import AFTER_PAYMENT, BEFORE_PAYMENT
from monitor.rules.timefmt import to_utc
from monitor.rules.webhook_health import countdown_text, delivery_state
from monitor.store.lifecycle import ACKNOWLEDGED, OPEN, StoredFinding
from monitor.store.models import FindingRow
from monitor.views.common import (
    AppReads,
    contains,
    like_pattern,
    loads,
    named_frame,
    nullable_int,
    records,
    unindexed,
)
from monitor.views.links import stripe_dashboard_url
from monitor.views.payment_reads import events_by_id, payments_by_id, repairs_for, stripe_object
from monitor.views.probe_history import outages_between
from monitor.views.timeline import (
    event_entries,
    finding_entries,
    log_entries,
    ordered,
    outage_entries,
    payment_entries,
    repair_entries,
    row_entries,
)

FINDING_COLUMNS = (
    "id",
    "kind",
    "severity",
    "status",
    "payment_id",
    "customer_email",
    "amount",
    "currency",
    "occurred_at",
    "first_seen",
    "last_seen",
    "hint",
    "event_id",
    "subscription_ids",
    "ack_note",
)
_FROM_PAYLOAD = {"hint": "", "event_id": None, "subscription_ids": None}  # the rest are columns
CURRENT = (OPEN, ACKNOWLEDGED)
MAX_PAGE = 1000
_f = FindingRow.__table__
_STRONG_KEYS = ("checkout_session_id", "payment_intent_id", "stripe_subscription_id")


def _hint(dialect: str):
    """The hint inside the finding's JSON payload, extracted in SQL."""
    if dialect == "sqlite":
        return func.json_extract(_f.c.payload, "$.hint")
    return func.json_extract_path_text(cast(_f.c.payload, JSON), "hint")


def _filters(
    dialect: str,
    *,
    kinds: Collection[str] | None,
    severities: Collection[str] | None,
    statuses: Collection[str] | None,
    since: datetime | None,
    until: datetime | None,
    text: str | None,
) -> tuple[list, dict]:
    where, params = [], {}
    if statuses:
        # With a date range the (occurred_at or first_seen) index narrows best; SQLite's planner, without
        # statistics, would take the status index instead, which matches most findings.
        status = unindexed(_f.c.status) if since is not None or until is not None else _f.c.status
        where.append(status.in_([str(s) for s in statuses]))
    if kinds:
        where.append(_f.c.kind.in_([str(k) for k in kinds]))
    if severities:
        where.append(_f.c.severity.in_([str(s) for s in severities]))
    when = func.coalesce(_f.c.occurred_at, _f.c.first_seen)
    if since is not None:
        where.append(when >= to_utc(since))
    if until is not None:
        where.append(when <= to_utc(until))
    search = (text or "").strip()
    if "\x00" in search:  # no stored text holds NUL (PostgreSQL cannot), and psycopg refuses to send it
        where.append(false())
    elif search:
        # Every searched field is also in the payload (JSON, ASCII-escaped as lifecycle writes it), so a
        # plain LIKE on it first rules out most rows cheaply; the JSON is parsed only for those left. CASE
        # keeps that order on PostgreSQL too, whose planner may otherwise parse every payload first.
        params["search"] = like_pattern(search)
        params["search_json"] = like_pattern(json.dumps(search)[1:-1])
        fields = (_f.c.payment_id, _f.c.customer_email, _f.c.kind, _f.c.key, _hint(dialect))
        where.append(
            case(
                (
                    contains(_f.c.payload, "search_json", dialect),
                    or_(*(contains(c, "search", dialect) for c in fields)),
                ),
                else_=false(),
            )
        )
    return where, params


def find_findings(
    engine: Engine,
    *,
    kinds: Collection[str] | None = None,
    severities: Collection[str] | None = None,
    statuses: Collection[str] | None = CURRENT,
    since: datetime | None = None,
    until: datetime | None = None,
    text: str | None = None,
    limit: int = 50,
    offset: int = 0,
    critical_first: bool = False,
) -> tuple[pd.DataFrame, int]:
    """(one page of findings as a frame of FINDING_COLUMNS, how many match in all).

    Newest first by last_seen, then first_seen (then id, so pages never overlap); with `critical_first`,
    critical findings before warnings (triage: many webhook_missing warnings must not bury a payment). None or an empty
    collection means "any" for kinds, severities and statuses. since/until bound occurred_at (first_seen
    when the finding has none), inclusive. `text` is searched literally and case-insensitively in the
    payment id, the e-mail, the kind, the finding's key (the ids it is about: event, row) and the hint."""
    limit = max(0, min(int(limit), MAX_PAGE))
    offset = max(0, int(offset))
    with engine.connect() as conn:
        where, params = _filters(
            conn.dialect.name,
            kinds=kinds,
            severities=severities,
            statuses=statuses,
            since=since,
            until=until,
            text=text,
        )
        # The page's ids first, sorted through the covering (status, last_seen, first_seen, id) index
        # rather than with the payloads; then those rows in full. A text search reads every payload
        # anyway, so it counts in the same pass (a window count); otherwise the count is an index count
        # and the ordered scan stops at the page.
        order = (_f.c.last_seen.desc(), _f.c.first_seen.desc(), _f.c.id.desc())
        if critical_first:
            order = (case((_f.c.severity == "critical", 0), else_=1), *order)
        page = select(_f.c.id).where(*where).order_by(*order).limit(limit).offset(offset)
        total = None
        if "search" in params:
            found = conn.execute(page.add_columns(func.count().over().label("total")), params).all()
            total = found[0].total if found else (0 if offset == 0 and limit else None)
            ids = [r.id for r in found]
        else:
            ids = conn.execute(page, params).scalars().all()
        if total is None:
            total = conn.execute(select(func.count()).select_from(_f).where(*where), params).scalar_one()
        columns = [_f.c[c] for c in FINDING_COLUMNS if c not in _FROM_PAYLOAD]
        rows = conn.execute(select(*columns, _f.c.payload).where(_f.c.id.in_(ids))).all()
    position = {finding_id: i for i, finding_id in enumerate(ids)}
    page = []
    for r in sorted(rows, key=lambda r: position[r.id]):
        payload = loads(r.payload, {})
        row = dict(r._mapping)
        row.update({c: payload.get(c, default) for c, default in _FROM_PAYLOAD.items()})
        row["subscription_ids"] = list(row["subscription_ids"] or [])
        page.append(row)
    df = named_frame(page, FINDING_COLUMNS, times=("occurred_at", "first_seen", "last_seen"))
    return nullable_int(df, "amount"), int(total)


def _finding(conn: Connection, finding_id) -> StoredFinding | None:
    finding_id = str(finding_id or "")
    if not finding_id or len(finding_id) > 64 or "\x00" in finding_id:  # ids are 16 hex digits
        return None
    row = conn.execute(select(_f).where(_f.c.id == str(finding_id))).first()
    return None if row is None else StoredFinding.from_row(row)


def _app_rows(app: AppDatabase, reads: AppReads, finding: StoredFinding, payment: dict | None):
    """(rows linked to the finding: by the payment's session, intent or subscription id, or the finding's
    own row ids; other rows of the same customer or e-mail: candidates)."""
    strong = {k: (payment or {}).get(k) for k in _STRONG_KEYS}
    row_ids = [str(i) for i in finding.subscription_ids]
    email = (payment or {}).get("customer_email") or finding.customer_email
    customer = (payment or {}).get("customer_id") or finding.customer_id
    parts = [
        reads(
            lambda: app.find_rows(
                **strong, email=email, customer_id=customer, id=row_ids[0] if row_ids else None
            )
        )
    ]
    parts += [reads(lambda i=i: app.find_rows(id=i)) for i in row_ids[1:]]
    found = [p for p in parts if p is not None and len(p)]
    if not found:
        return [], []
    rows = pd.concat(found, ignore_index=True).drop_duplicates("id")
    linked = rows["id"].astype(str).isin(row_ids)
    for key in _STRONG_KEYS:
        if strong[key]:
            linked |= rows[key] == strong[key]
    return records(rows[linked]), records(rows[~linked])


def _event(stored: dict | None, event_id: str | None, log: pd.DataFrame | None, *, now: datetime):
    """(the event as a dict with its delivery state and the app's log rows for it, those log rows)."""
    if not event_id:
        return None, None
    event = (
        dict(stored) if stored else {"id": event_id, "type": None, "created": None, "pending_webhooks": None}
    )
    event["in_store"] = stored is not None
    if log is not None:
        log = log[log["event_id"] == event_id].sort_values("received_at", kind="stable")
    event["log"] = records(log)
    event["delivery"] = event["countdown"] = None
    if stored:
        event["delivery"] = delivery_state(
            stored["type"], event_id, stored["pending_webhooks"], stored["created"], now=now
        )
        if stored["pending_webhooks"] > 0:
            event["countdown"] = countdown_text(stored["created"], now=now, livemode=stored["livemode"])
    return event, log


@dataclass(frozen=True)
class FindingDetail:
    """One finding in full. `payment`: the payment as snapshot.read_payments joins it (or None);
    `stripe_object`: the payment object's raw JSON (or None); `rows`: the app's rows linked to it;
    `candidate_rows`: other rows of the same customer or e-mail; `event`: {id, type, created,
    pending_webhooks, livemode, object_id, in_store, delivery, countdown, log: [the app's log rows]} (or
    None); `outages`: the outages around the payment; `repairs`: its ledger rows; `timeline`: [{"at", "what",
    "detail", "kind", "title", "ref"}] oldest first; `stripe_url`: the payment (else event, customer) in
    Stripe's dashboard (or None); `app_error`: why the app's side could not be read (None when it was)."""

    finding: StoredFinding
    payment: dict | None = None
    stripe_object: dict | None = None
    rows: list[dict] = field(default_factory=list)
    candidate_rows: list[dict] = field(default_factory=list)
    event: dict | None = None
    outages: list[Outage] = field(default_factory=list)
    repairs: list[dict] = field(default_factory=list)
    timeline: list[dict] = field(default_factory=list)
    stripe_url: str | None = None
    app_error: str | None = None


def finding_detail(
    engine: Engine, app: AppDatabase, finding_id: str, *, now: datetime | None = None
) -> FindingDetail | None:
    """One finding in full (FindingDetail), or None for an unknown id."""
    now = to_utc(now or now_utc())
    reads = AppReads()
    with engine.connect() as conn:
        finding = _finding(conn, finding_id)
        if finding is None:
            return None
        payment_id = finding.payment_id
        payments, extras = payments_by_id(conn, [payment_id] if payment_id else [])
        payment = records(payments)[0] if len(payments) else None
        raw = stripe_object(conn, payment_id)
        event_id = finding.event_id or (payment or {}).get("event_id")
        stored = events_by_id(conn, [event_id]).get(event_id) if event_id else None
        repairs = repairs_for(conn, [payment_id] if payment_id else [])
        around = (payment or {}).get("created") or finding.occurred_at
        outages = outages_between(conn, around - BEFORE_PAYMENT, around + AFTER_PAYMENT) if around else []
    # The app's side is read after the store's connection is given back (on SQLite it holds a lock).
    event, log = _event(stored, event_id, reads(app.read_webhook_log) if event_id else None, now=now)
    rows, candidates = _app_rows(app, reads, finding, payment)
    livemode = payment["livemode"] if payment else (event or {}).get("livemode")
    linked_to = payment_id or (event or {}).get("id") or finding.customer_id
    entries = ordered(
        [
            *payment_entries(payments, extras),
            *event_entries([event] if event and event["in_store"] else [], now=now),
            *log_entries(log),
            *row_entries(pd.DataFrame(rows) if rows else None),
            *outage_entries(outages, now=now),
            *finding_entries([finding]),
            *repair_entries(repairs),
        ]
    )
    return FindingDetail(
        finding=finding,
        payment=payment,
        stripe_object=raw,
        rows=rows,
        candidate_rows=candidates,
        event=event,
        outages=outages,
        repairs=repairs,
        timeline=[{"at": e["at"], "what": e["title"], **e} for e in entries],
        stripe_url=stripe_dashboard_url(linked_to, livemode) if linked_to else None,
        app_error=reads.error,
    )
