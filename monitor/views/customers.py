"""Customer lookup, where a support ticket starts: one box that takes whatever the customer or the ticket
gives (an e-mail in any case, a Stripe id, the app's row id) and one timeline of everything about them.

The search box is hostile input: it is matched against fixed shapes first (anything else is not looked
up at all), and every value reaches SQL as a bound parameter."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, func, or_, select, text

from monitor.app_db import SUBSCRIPTION_COLUMNS, AppDatabase
from monitor.rules.outages import Outage
from monitor.rules.root_cause import AFTER_PAYMENT, BEFORE_PAYMENT
from monitor.rules.timefmt import to_utc
from monitor.store.lifecycle import ACKNOWLEDGED, OPEN, StoredFinding
from monitor.store.models import CheckoutSession, Customer, FindingRow, Invoice, PaymentIntent
from monitor.views.common import MAX_QUERY_LENGTH, AppReads, plain, unindexed
from monitor.views.links import stripe_dashboard_url
from monitor.views.payment_reads import events_about, payments_by_id, repairs_for
from monitor.views.probe_history import outages_between
from monitor.views.timeline import (
    event_entries,
    finding_entries,
    log_entries,
    outage_entries,
    payment_entries,
    repair_entries,
    row_entries,
    timeline_frame,
)

PAYMENT_VIEW_COLUMNS = (
    "payment_id",
    "source",
    "created",
    "amount",
    "currency",
    "amount_refunded",
    "dispute_status",
    "status_in_app",
    "event_id",
    "open_findings",
    "livemode",
    "stripe_url",
)
_EMAIL = re.compile(r"[^@\s]{1,200}@[^@\s]{1,200}")
_STRIPE_ID = re.compile(r"(cs|pi|in|sub|cus|evt|ch)_[A-Za-z0-9_]{1,250}")
_ROW_ID = re.compile(r"\d{1,18}")
MAX_APP_QUERIES = 20  # find_rows calls per lookup: e-mails, customer ids, payments
_EXPANSIONS = 2  # rounds of "these payments name another customer id or e-mail"


@dataclass
class CustomerView:
    """Everything about one customer. `customer`: {"email", "emails", "customer_ids", "name"}; `payments`:
    PAYMENT_VIEW_COLUMNS, newest first; `rows`: the app's rows (monitor.app_db.SUBSCRIPTION_COLUMNS);
    `findings`: open and acknowledged findings about them (monitor.store.lifecycle.StoredFinding); `timeline`: at, kind,
    title, detail, ref, oldest first; `repairs`: ledger rows; `outages`: those overlapping a payment's
    window (monitor.rules.root_cause's: 10 min before to 30 min after); `app_error`: why the app's side could
    not be read (None when it was)."""

    customer: dict
    payments: pd.DataFrame
    rows: pd.DataFrame
    findings: list[StoredFinding]
    timeline: pd.DataFrame
    repairs: list[dict]
    outages: list[Outage] = field(default_factory=list)
    app_error: str | None = None


@dataclass
class _Seeds:
    emails: set[str] = field(default_factory=set)  # lower case
    customer_ids: set[str] = field(default_factory=set)
    objects: set[str] = field(default_factory=set)  # cs_, in_, pi_ ids
    subscription_ids: set[str] = field(default_factory=set)
    rows: list[pd.DataFrame] = field(default_factory=list)  # app rows found while resolving

    def add(self, email=None, customer_id=None, objects=(), subscription_id=None) -> None:
        if isinstance(email, str) and email.strip():
            self.emails.add(email.strip().lower())
        if isinstance(customer_id, str) and customer_id:
            self.customer_ids.add(customer_id)
        self.objects |= {o for o in objects if isinstance(o, str) and o}
        if isinstance(subscription_id, str) and subscription_id:
            self.subscription_ids.add(subscription_id)


def _lower_in(column, name: str):
    return func.lower(column).in_(bindparam(name, expanding=True))


def _resolve_stripe_id(conn: Connection, seeds: _Seeds, object_id: str, depth: int = 0) -> None:
    prefix = object_id.split("_", 1)[0]
    if prefix == "cus":
        seeds.customer_ids.add(object_id)
    elif prefix in ("cs", "in", "pi"):
        table = {"cs": CheckoutSession, "in": Invoice, "pi": PaymentIntent}[prefix].__table__
        email = table.c.receipt_email if prefix == "pi" else table.c.customer_email
        row = conn.execute(select(table.c.customer_id, email).where(table.c.id == object_id)).first()
        if row is not None:
            seeds.add(email=row[1], customer_id=row[0], objects=[object_id])
    elif prefix == "sub":
        q = text(
            "SELECT customer_id, NULL AS email FROM stripe_subscriptions WHERE id = :s "
            "UNION ALL SELECT customer_id, customer_email FROM stripe_checkout_sessions WHERE subscription_id = :s "
            "UNION ALL SELECT customer_id, customer_email FROM stripe_invoices WHERE subscription_id = :s"
        )
        for customer_id, email in conn.execute(q, {"s": object_id}):
            seeds.add(email=email, customer_id=customer_id, subscription_id=object_id)
        seeds.subscription_ids.add(object_id)
    elif prefix == "ch":
        pi = conn.execute(
            text("SELECT payment_intent_id FROM stripe_charges WHERE id = :c"), {"c": object_id}
        ).scalar()
        if pi and depth < 2:
            _resolve_stripe_id(conn, seeds, pi, depth + 1)
    elif prefix == "evt":
        about = conn.execute(
            text("SELECT object_id FROM stripe_events WHERE id = :e"), {"e": object_id}
        ).scalar()
        if about and _STRIPE_ID.fullmatch(about) and depth < 2:
            _resolve_stripe_id(conn, seeds, about, depth + 1)


def _seed(conn: Connection, query: str) -> _Seeds | None:
    """What an e-mail or a Stripe id names; None for any other shape."""
    seeds = _Seeds()
    if _EMAIL.fullmatch(query):
        seeds.add(email=query)
    elif _STRIPE_ID.fullmatch(query):
        _resolve_stripe_id(conn, seeds, query)
    else:
        return None
    return seeds


def _seed_from_row(app: AppDatabase, row_id: str) -> _Seeds:
    """What an app row names. The app being unreachable is an error here, not "no such customer": it is
    raised to the page."""
    seeds = _Seeds()
    rows = app.find_rows(id=row_id)
    for r in rows.to_dict("records"):
        seeds.add(
            email=r["email"],
            customer_id=r["customer_id"],
            objects=[r["checkout_session_id"], r["payment_intent_id"]],
            subscription_id=r["stripe_subscription_id"],
        )
    seeds.rows.append(rows)
    return seeds


def _expand(conn: Connection, seeds: _Seeds) -> dict:
    """Grow the seeds into the customer: their Stripe customers, and every payment object naming one of
    their customer ids, e-mails or subscriptions. Returns {customer id: name}."""
    c, s, i, p = (m.__table__ for m in (Customer, CheckoutSession, Invoice, PaymentIntent))
    names: dict[str, str | None] = {}
    for _ in range(_EXPANSIONS):
        before = (len(seeds.emails), len(seeds.customer_ids), len(seeds.objects))
        params = {
            "emails": sorted(seeds.emails) or [""],
            "cids": sorted(seeds.customer_ids) or [""],
            "subs": sorted(seeds.subscription_ids) or [""],
        }
        for cid, email, name in conn.execute(
            select(c.c.id, c.c.email, c.c.name).where(
                or_(c.c.id.in_(bindparam("cids", expanding=True)), _lower_in(c.c.email, "emails"))
            ),
            params,
        ):
            seeds.add(email=email, customer_id=cid)
            names[cid] = name
        params["cids"] = sorted(seeds.customer_ids) or [""]
        params["emails"] = sorted(seeds.emails) or [""]
        for table, email in ((s, s.c.customer_email), (i, i.c.customer_email), (p, p.c.receipt_email)):
            where = [table.c.customer_id.in_(bindparam("cids", expanding=True)), _lower_in(email, "emails")]
            if table is not p:
                where.append(table.c.subscription_id.in_(bindparam("subs", expanding=True)))
            for oid, cid, mail in conn.execute(
                select(table.c.id, table.c.customer_id, email).where(or_(*where)), params
            ):
                seeds.add(email=mail, customer_id=cid, objects=[oid])
        if (len(seeds.emails), len(seeds.customer_ids), len(seeds.objects)) == before:
            break
    return names


def _app_rows(app: AppDatabase, reads: AppReads, seeds: _Seeds, payments: pd.DataFrame) -> pd.DataFrame:
    queries = [{"email": e} for e in sorted(seeds.emails)]
    queries += [{"customer_id": c} for c in sorted(seeds.customer_ids)]
    queries += [{"stripe_subscription_id": s} for s in sorted(seeds.subscription_ids)]
    for pay in payments.to_dict("records"):
        queries.append(
            {
                "checkout_session_id": pay["checkout_session_id"],
                "payment_intent_id": pay["payment_intent_id"],
                "stripe_subscription_id": pay["stripe_subscription_id"],
            }
        )
    parts = list(seeds.rows)
    for criteria in queries[:MAX_APP_QUERIES]:
        found = reads(lambda criteria=criteria: app.find_rows(**criteria))
        if found is not None:
            parts.append(found)
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=list(SUBSCRIPTION_COLUMNS))
    rows = pd.concat(parts, ignore_index=True).drop_duplicates("id")
    return rows.sort_values("id", key=lambda ids: ids.map(_id_key), kind="stable").reset_index(drop=True)


def _id_key(row_id):
    """Numbers before text, each in its natural order (row ids are whatever the app's schema uses)."""
    row_id = plain(row_id)
    return (0, row_id, "") if isinstance(row_id, int | float) else (1, 0, str(row_id))


def _status_in_app(pay: dict, rows: pd.DataFrame) -> str:
    """'no row', 'active row 7', 'active rows 294, 295', 'pending row 315; active row 4'."""
    if rows.empty:
        return "no row"
    linked = pd.Series(False, index=rows.index)
    for key in ("checkout_session_id", "payment_intent_id", "stripe_subscription_id"):
        if isinstance(pay.get(key), str) and pay[key]:
            linked |= rows[key] == pay[key]
    mine = rows[linked]
    if mine.empty:
        return "no row"
    parts = []
    for status, group in mine.groupby("status", sort=True, dropna=False):
        ids = ", ".join(str(plain(i)) for i in group["id"])
        parts.append(f"{status} row{'s' if len(group) > 1 else ''} {ids}")
    return "; ".join(parts)


def _findings(conn: Connection, seeds: _Seeds, payment_ids: list[str]) -> list[StoredFinding]:
    f = FindingRow.__table__
    q = select(f).where(
        unindexed(f.c.status).in_((OPEN, ACKNOWLEDGED)),
        or_(f.c.payment_id.in_(bindparam("pids", expanding=True)), _lower_in(f.c.customer_email, "emails")),
    )
    rows = conn.execute(q, {"pids": payment_ids or [""], "emails": sorted(seeds.emails) or [""]})
    return sorted(
        (StoredFinding.from_row(r) for r in rows), key=lambda f: (f.first_seen.replace(microsecond=0), f.id)
    )


def _outages(conn: Connection, payments: pd.DataFrame) -> list[Outage]:
    """The outages overlapping any payment's window, read once per group of overlapping windows."""
    windows = sorted((t - BEFORE_PAYMENT, t + AFTER_PAYMENT) for t in payments["created"].dropna().map(plain))
    merged: list[list] = []
    for start, end in windows:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    seen, out = set(), []
    for start, end in merged:
        for o in outages_between(conn, start, end):
            if (o.component, o.start) not in seen:
                seen.add((o.component, o.start))
                out.append(o)
    return sorted(out, key=lambda o: (o.start, o.component))


def customer_lookup(engine: Engine, app: AppDatabase, query: str, *, now: datetime) -> CustomerView | None:
    """The customer that `query` names: an e-mail (any case), cus_, cs_, pi_, in_, sub_, ch_ or evt_ id, or
    an app subscription row id (digits). None when the query has none of these shapes or nothing is known
    about it. An unreachable app database is raised for a row id (it alone can answer) and otherwise
    reported in `app_error` beside the Stripe side."""
    query = (query or "").strip()
    if not query or len(query) > MAX_QUERY_LENGTH or "\x00" in query:
        return None
    now = to_utc(now)
    reads = AppReads()
    # The app is read outside the store's connection, which on SQLite holds a lock while open.
    seeds = _seed_from_row(app, query) if _ROW_ID.fullmatch(query) else None
    with engine.connect() as conn:
        seeds = seeds or _seed(conn, query)
        if seeds is None:
            return None
        names = _expand(conn, seeds)
        payments, extras = payments_by_id(conn, seeds.objects)
        payment_ids = payments["payment_id"].tolist()
        findings = _findings(conn, seeds, payment_ids)
        repairs = repairs_for(conn, payment_ids)
        object_ids = set(payment_ids) | seeds.customer_ids | seeds.subscription_ids
        object_ids |= {
            x for col in ("payment_intent_id", "invoice_id", "stripe_subscription_id") for x in payments[col]
        }
        object_ids |= {x["id"] for part in extras.values() for x in part}
        events = events_about(conn, {x for x in object_ids if isinstance(x, str)})
        outages = _outages(conn, payments)
    rows = _app_rows(app, reads, seeds, payments)
    if payments.empty and rows.empty and not names and not findings:
        return None
    for r in rows.to_dict("records"):
        seeds.add(email=r["email"], customer_id=r["customer_id"])

    log = reads(app.read_webhook_log)
    if log is not None:
        log = log[log["event_id"].isin({e["id"] for e in events})]
    open_kinds: dict[str, list[str]] = {}
    for f in findings:
        if f.payment_id:
            open_kinds.setdefault(f.payment_id, []).append(f.kind)
    view = payments.assign(
        status_in_app=[_status_in_app(p, rows) for p in payments.to_dict("records")],
        open_findings=[sorted(set(open_kinds.get(p, []))) for p in payments["payment_id"]],
        stripe_url=[
            stripe_dashboard_url(p, live)
            for p, live in zip(payments["payment_id"], payments["livemode"], strict=True)
        ],
    )[list(PAYMENT_VIEW_COLUMNS)]
    timeline = timeline_frame(
        [
            *payment_entries(payments, extras),
            *event_entries(events, now=now),
            *log_entries(log),
            *row_entries(rows),
            *repair_entries(repairs),
            *outage_entries(outages, now=now),
            *finding_entries(findings),
        ]
    )
    asked = query.lower()
    emails = sorted(seeds.emails, key=lambda e: (e != asked, e))  # the e-mail asked for first
    customer_ids = sorted(seeds.customer_ids)
    named = [n for n in (names.get(c) for c in customer_ids) if n]
    return CustomerView(
        customer={
            "email": emails[0] if emails else None,
            "emails": emails,
            "customer_ids": customer_ids,
            "name": named[0] if named else None,
        },
        payments=view.reset_index(drop=True),
        rows=rows,
        findings=findings,
        timeline=timeline,
        repairs=repairs,
        outages=outages,
        app_error=reads.error,
    )
