"""The `payments` table: every payment of the Stripe snapshot with all that reconciliation asks of it, kept up
to date as objects are saved, so reading every payment is one pass over a narrow table.

What counts as a payment is the store's `payment_sources` view (DESIGN.md "What counts as a payment": a
complete Checkout Session that is paid or, in subscription mode, needs no payment; a paid invoice no session
names; a succeeded PaymentIntent that belongs to neither; defined in migration 0006).
Each payment's row adds what other objects say about it:
- amount_refunded: the larger of its refunds (succeeded or pending; a refund belongs to its own
  payment_intent, else to its charge's) and its charges' own `amount_refunded`, over every PaymentIntent of
  the payment (an invoice may be paid by several: `stripe_invoice_payments`); 0 without a PaymentIntent;
- dispute_status: the status of its latest dispute (by created, then id), found the same way as refunds;
- stripe_subscription_status: the stored Stripe subscription's status;
- event_id: the event announcing it, by PAYMENT_EVENT_TYPES' order of preference, then the earliest.

The view stays the single definition; the table is its materialisation. `store.save_objects` calls
`refresh` with the objects it saved, in the same transaction: the payments those objects belong to or say
something about are recomputed from the view, by id, through indexes. `rebuild` recomputes all of them in
one pass (the migration that created the table; the tests compare the two).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Mapping

from sqlalchemy import Connection, String, bindparam, delete, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY

from monitor.rules.reconcile import PAYMENT_COLUMNS
from monitor.store.models import UnmatchedPayment

# Events that announce a payment, in order of preference for a payment's `event_id`. A session paid by an
# async method (ACH, SEPA, …) completes unpaid; the event whose copy says paid is the async one.
PAYMENT_EVENT_TYPES = (
    "checkout.session.async_payment_succeeded",
    "checkout.session.completed",
    "invoice.paid",
    "invoice.payment_succeeded",
    "payment_intent.succeeded",
)
REFUND_STATUSES = ("succeeded", "pending")  # refunds that take the money back (or are about to)


def _quoted(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


_PI = "v.payment_intent_id"
_REFUNDING = f"r.status IN ({_quoted(REFUND_STATUSES)})"
# Each lookup goes through an index: by payment_intent_id, or by charge ids found by payment_intent_id
# (`COALESCE(.., '') = ''` rather than `IS NULL`, so SQLite does not walk every refund without an intent).
_OF_PI_CHARGES = f"(SELECT ch.id FROM stripe_charges ch WHERE ch.payment_intent_id = {_PI})"
# An invoice paid by several PaymentIntents: the others than the payment's own, joined to what refers to them
# (their refunds name them: refunds without an intent are of older charges, before invoices had several).
# (`v.invoice_id IS NOT NULL` first: a one-time filter, so payments without an invoice skip the scan.)
_OTHERS = f"""stripe_invoice_payments ip JOIN {{table}} ON {{alias}}.payment_intent_id = ip.payment_intent_id
      WHERE v.invoice_id IS NOT NULL AND ip.invoice_id = v.invoice_id AND ip.payment_intent_id <> {_PI}"""
_REFUNDS = f"""COALESCE((SELECT SUM(r.amount) FROM stripe_refunds r WHERE r.payment_intent_id = {_PI} AND {_REFUNDING}), 0)
    + COALESCE((SELECT SUM(r.amount) FROM stripe_refunds r
      WHERE r.charge_id IN {_OF_PI_CHARGES} AND COALESCE(r.payment_intent_id, '') = '' AND {_REFUNDING}), 0)
    + COALESCE((SELECT SUM(r.amount) FROM {_OTHERS.format(table="stripe_refunds r", alias="r")}
      AND {_REFUNDING}), 0)"""
_CHARGE_REFUNDS = f"""COALESCE((SELECT SUM(ch.amount_refunded) FROM stripe_charges ch
      WHERE ch.payment_intent_id = {_PI} AND ch.amount_refunded > 0), 0)
    + COALESCE((SELECT SUM(ch.amount_refunded) FROM {_OTHERS.format(table="stripe_charges ch", alias="ch")}
      AND ch.amount_refunded > 0), 0)"""
# The larger of the refunds and the charges' own `amount_refunded`.
_REFUNDED = f"""CASE WHEN {_PI} IS NULL THEN 0 ELSE (
    SELECT CASE WHEN x.refunds >= x.charges THEN x.refunds ELSE x.charges END
    FROM (SELECT {_REFUNDS} AS refunds, {_CHARGE_REFUNDS} AS charges) x) END"""
# The status of the latest dispute (by created, then id).
_DISPUTE = f"""(SELECT d.status FROM (
      SELECT d.status, d.created, d.id FROM stripe_disputes d WHERE d.payment_intent_id = {_PI}
      UNION ALL
      SELECT d.status, d.created, d.id FROM stripe_disputes d
      WHERE d.charge_id IN {_OF_PI_CHARGES} AND COALESCE(d.payment_intent_id, '') = ''
      UNION ALL
      SELECT d.status, d.created, d.id FROM {_OTHERS.format(table="stripe_disputes d", alias="d")}
    ) d ORDER BY d.created DESC, d.id DESC LIMIT 1)"""
_PREFERENCE = " ".join(f"WHEN '{t}' THEN {i}" for i, t in enumerate(PAYMENT_EVENT_TYPES))
_EVENT = f"""(SELECT e.id FROM stripe_events e
    WHERE e.object_id = v.payment_id AND e.type IN ({_quoted(PAYMENT_EVENT_TYPES)})
    ORDER BY CASE e.type {_PREFERENCE} END, e.created, e.id LIMIT 1)"""

_SELECT = f"""
SELECT v.payment_id, v.source, v.checkout_session_id, v.payment_intent_id, v.invoice_id, v.stripe_subscription_id,
  (SELECT b.status FROM stripe_subscriptions b WHERE b.id = v.stripe_subscription_id),
  v.customer_id, v.customer_email, v.amount, v.currency, v.created,
  {_REFUNDED},
  {_DISPUTE},
  v.billing_reason, v.period_end,
  {_EVENT},
  v.livemode,
  v.zero_reason
FROM payment_sources v"""
_INSERT = f"INSERT INTO payments ({', '.join(PAYMENT_COLUMNS)})"  # the columns in _SELECT's order
_REFRESH = f"{_INSERT} {_SELECT} WHERE v.payment_id {{ids}}"
_DELETE = "DELETE FROM payments WHERE payment_id {ids}"
CHUNK = 500  # ids per statement: well under SQLite's bound-parameter limit


@functools.cache
def _by_ids(template: str, dialect: str):
    """`template` with its `{ids}` bound to a list of ids. On PostgreSQL one array parameter (`= ANY`), so
    the statement's text is the same whatever the number of ids and psycopg prepares it once per connection
    (planning this statement costs more than running it for a page); on SQLite an expanded `IN` list."""
    if dialect == "postgresql":
        return text(template.replace("{ids}", "= ANY(:ids)")).bindparams(
            bindparam("ids", type_=ARRAY(String()))
        )
    return text(template.replace("{ids}", "IN :ids")).bindparams(bindparam("ids", expanding=True))


def rebuild(conn: Connection) -> int:
    """Recompute every payment's row. Returns how many payments there are."""
    conn.execute(text("DELETE FROM payments"))
    conn.execute(text(f"{_INSERT} {_SELECT}"))
    return conn.execute(text("SELECT COUNT(*) FROM payments")).scalar_one()


def refresh(conn: Connection, saved: Mapping[str, Iterable[Mapping]]) -> int:
    """Recompute the rows of the payments that the just-saved objects (rows by object type, as
    `monitor.store.rows.row_for` makes them) belong to or say something about. Returns how many ids
    were recomputed (a payment that is no longer one disappears)."""
    dialect = conn.dialect.name
    with _by_index(conn):
        ids = sorted(affected_payments(conn, saved))
        for chunk in _chunks(ids):
            conn.execute(_by_ids(_DELETE, dialect), {"ids": chunk})
            conn.execute(_by_ids(_REFRESH, dialect), {"ids": chunk})
    return len(ids)


@contextlib.contextmanager
def _by_index(conn: Connection) -> Iterator[None]:
    """Every read of a refresh is a look-up by id. During a backfill PostgreSQL's statistics lag far behind
    the tables' growth (autovacuum analyses them a minute later), and it then chooses to scan `payments`
    whole for each page, so the refresh costs more as the table grows. Inside the refresh PostgreSQL is
    told to scan only when no index serves."""
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.execute(text("SET LOCAL enable_seqscan = off"))
    yield  # on an error the transaction rolls back, and the setting with it
    conn.execute(text("SET LOCAL enable_seqscan TO DEFAULT"))


def affected_payments(conn: Connection, saved: Mapping[str, Iterable[Mapping]]) -> set[str]:
    """The ids whose row in `payments` may differ after these objects were saved: the payments they are,
    the payments whose row quotes them, and ids that stop being payments because of them (an invoice once
    a session names it, an intent once a session or invoice names it)."""
    rows = {kind: list(found) for kind, found in saved.items()}
    ids: set[str] = set()
    intents: set[str] = set()
    for s in rows.get("checkout.session", ()):
        ids.update(_present(s["id"], s["invoice_id"], s["payment_intent_id"]))
    invoices = [i["id"] for i in rows.get("invoice", ())]
    for i in rows.get("invoice", ()):
        ids.update(_present(i["id"], i["payment_intent_id"]))
    for ip in rows.get("invoice_payment", ()):
        invoices += _present(ip["invoice_id"])
        ids.update(_present(ip["invoice_id"], ip["payment_intent_id"]))
    for p in rows.get("payment_intent", ()):
        ids.add(p["id"])
        intents.add(p["id"])
    for ch in rows.get("charge", ()):
        intents.update(_present(ch["payment_intent_id"]))
    for kind in ("refund", "dispute"):
        for r in rows.get(kind, ()):
            intents.update(_present(r["payment_intent_id"]))
        charges = [r["charge_id"] for r in rows.get(kind, ()) if r["charge_id"]]
        intents.update(
            _lookup(
                conn,
                "SELECT payment_intent_id FROM stripe_charges WHERE id {ids} AND payment_intent_id IS NOT NULL",
                charges,
            )
        )
    # An intent may be any one of an invoice's payments, not only the one the payment row names.
    invoices += _lookup(
        conn,
        "SELECT invoice_id FROM stripe_invoice_payments WHERE payment_intent_id {ids} AND invoice_id IS NOT NULL",
        intents,
    )
    ids.update(invoices)
    ids.update(_lookup(conn, "SELECT id FROM stripe_checkout_sessions WHERE invoice_id {ids}", invoices))
    ids.update(_lookup(conn, "SELECT payment_id FROM payments WHERE payment_intent_id {ids}", intents))
    customers = [c["id"] for c in rows.get("customer", ())]
    ids.update(_lookup(conn, "SELECT payment_id FROM payments WHERE customer_id {ids}", customers))
    subscriptions = [b["id"] for b in rows.get("subscription", ())]
    ids.update(
        _lookup(conn, "SELECT payment_id FROM payments WHERE stripe_subscription_id {ids}", subscriptions)
    )
    for e in rows.get("event", ()):
        if e["type"] in PAYMENT_EVENT_TYPES:
            ids.update(_present(e["object_id"]))
    return ids


def _present(*values) -> list[str]:
    return [v for v in values if v]


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(values), CHUNK):
        yield values[i : i + CHUNK]


def _lookup(conn: Connection, sql: str, values: Iterable[str]) -> set[str]:
    wanted = sorted(set(values))
    found: set[str] = set()
    statement = _by_ids(sql, conn.dialect.name)
    for chunk in _chunks(wanted):
        found.update(v for (v,) in conn.execute(statement, {"ids": chunk}))
    return found


def save_unmatched(conn: Connection, unmatched: Iterable[str]) -> dict[str, int]:
    """Make `unmatched_payments` hold exactly `unmatched` (the payments the reconcile just counted as not
    matching), changing only what changed: reconcile runs every few minutes and the set moves little.
    Returns {"added": n, "removed": n}."""
    t = UnmatchedPayment.__table__
    now = set(unmatched)
    before = set(conn.execute(select(t.c.payment_id)).scalars())
    gone, new = sorted(before - now), sorted(now - before)
    for chunk in _chunks(gone):
        conn.execute(delete(t).where(t.c.payment_id.in_(chunk)))
    for chunk in _chunks(new):
        conn.execute(insert(t), [{"payment_id": p} for p in chunk])
    return {"added": len(new), "removed": len(gone)}
