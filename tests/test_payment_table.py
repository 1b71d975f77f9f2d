"""The store's `payments` table, kept up to date object by object, against the same table computed in one
pass; on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import inspect, text

from monitor import store
from monitor.emulator.demo import build_demo
from monitor.store import payment_table, snapshot
from monitor.store.rows import object_type, row_for, table_for

ANCHOR = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NOW = int(ANCHOR.timestamp())


@pytest.fixture
def url(sqlite_or_postgres_url):
    return sqlite_or_postgres_url


@pytest.fixture
def engine(store_engine):
    return store_engine


def table(conn) -> list[tuple]:
    return [tuple(r) for r in conn.execute(text("SELECT * FROM payments ORDER BY payment_id"))]


def recomputed(engine) -> list[tuple]:
    """The table as one full pass computes it (rolled back: the stored table is left as it was)."""
    with engine.connect() as conn, conn.begin() as txn:
        payment_table.rebuild(conn)
        rows = table(conn)
        txn.rollback()
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_objects_saved_in_any_order_and_batches_leave_the_table_a_full_pass_computes(engine, seed):
    """The demo's objects (sessions, invoices and their subscriptions, refunds, disputes, events carrying
    later states) saved shuffled, in batches of 1 to 40, each batch in its own transaction."""
    alone = {
        "id": "pi_alone",
        "object": "payment_intent",
        "status": "succeeded",
        "amount": 500,
        "amount_received": 500,
        "currency": "usd",
        "created": NOW - 900,
        "livemode": False,
    }
    objects = [*build_demo(ANCHOR).objects, alone]
    rng = random.Random(seed)
    rng.shuffle(objects)
    i = 0
    while i < len(objects):
        size = rng.randint(1, 40)
        with engine.begin() as conn:
            store.save_objects(conn, objects[i : i + size], snapshot_at=NOW + i)
        i += size
    with engine.connect() as conn:
        kept = table(conn)
    assert len(kept) > 50
    assert kept == recomputed(engine)
    sources = {r[1] for r in kept}
    assert sources == {"checkout_session", "invoice", "payment_intent"}
    assert any(r[12] > 0 for r in kept), "some payment is refunded"
    assert any(r[13] for r in kept), "some payment is disputed"


def test_a_session_arriving_after_its_invoice_takes_the_invoices_place(engine):
    invoice = {
        "id": "in_late",
        "object": "invoice",
        "status": "paid",
        "customer": "cus_late",
        "customer_email": "pat@example.com",
        "subscription": "sub_late",
        "payment_intent": "pi_late",
        "amount_paid": 2900,
        "currency": "usd",
        "billing_reason": "subscription_create",
        "created": NOW - 600,
        "livemode": False,
    }
    session = {
        "id": "cs_late",
        "object": "checkout.session",
        "status": "complete",
        "payment_status": "paid",
        "mode": "subscription",
        "invoice": "in_late",
        "customer": "cus_late",
        "amount_total": 2900,
        "currency": "usd",
        "created": NOW - 700,
        "livemode": False,
    }
    with engine.begin() as conn:
        store.save_objects(conn, [invoice], snapshot_at=NOW)
        assert [r[0] for r in table(conn)] == ["in_late"]
    with engine.begin() as conn:
        store.save_objects(conn, [session], snapshot_at=NOW)
        [row] = table(conn)
    assert row[0] == "cs_late"
    assert (row[3], row[4], row[5]) == (
        "pi_late",
        "in_late",
        "sub_late",
    )  # the invoice's, through the session


def test_later_objects_change_the_rows_that_quote_them(engine):
    """A refund through its charge, a dispute, the customer's new e-mail and the subscription's status
    each reach the payment's row when saved on their own."""
    session = {
        "id": "cs_1",
        "object": "checkout.session",
        "status": "complete",
        "payment_status": "paid",
        "mode": "subscription",
        "customer": "cus_1",
        "payment_intent": "pi_1",
        "subscription": "sub_1",
        "amount_total": 14900,
        "currency": "usd",
        "created": NOW - 3600,
        "livemode": False,
    }
    customer = {"id": "cus_1", "object": "customer", "email": "old@example.com", "created": NOW - 4000}
    charge = {"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount": 14900, "created": NOW}
    with engine.begin() as conn:
        store.save_objects(conn, [customer, session, charge], snapshot_at=NOW)
    steps = [
        (
            {"id": "re_1", "object": "refund", "charge": "ch_1", "amount": 4900, "status": "succeeded"},
            12,
            4900,
        ),
        (
            {"id": "dp_1", "object": "dispute", "charge": "ch_1", "status": "needs_response"},
            13,
            "needs_response",
        ),
        ({**customer, "email": "new@example.com"}, 8, "new@example.com"),
        ({"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "past_due"}, 6, "past_due"),
        (
            {
                "id": "evt_1",
                "object": "event",
                "type": "checkout.session.completed",
                "data": {"object": session},
            },
            16,
            "evt_1",
        ),
    ]
    for at, (obj, column, expected) in enumerate(steps, start=1):
        obj = {"created": NOW + at, "livemode": False, **obj}
        with engine.begin() as conn:
            store.save_objects(conn, [obj], snapshot_at=NOW + at)
            [row] = table(conn)
        assert row[column] == expected, obj["object"]
    assert table_now(engine) == recomputed(engine)


def table_now(engine) -> list[tuple]:
    with engine.connect() as conn:
        return table(conn)


def test_refunds_of_unknown_charges_refund_no_payment_without_an_intent(engine):
    """A paid invoice without a PaymentIntent (paid out of band) is not refunded by refunds whose
    payment cannot be found: missing keys never match one another."""
    invoice = {
        "id": "in_oob",
        "object": "invoice",
        "status": "paid",
        "amount_paid": 1000,
        "currency": "usd",
        "created": NOW - 600,
    }
    orphan = {"id": "re_x", "object": "refund", "charge": "ch_unknown", "amount": 1000, "status": "succeeded"}
    with engine.begin() as conn:
        store.save_objects(
            conn, [{**invoice, "livemode": False}, {**orphan, "created": NOW}], snapshot_at=NOW
        )
    with engine.connect() as conn:
        payments = snapshot.read_payments(conn)
    assert payments.set_index("payment_id").loc["in_oob", "amount_refunded"] == 0


def test_the_migration_fills_the_table_for_a_store_written_before_it(url):
    """A store at revision 0004 (payments were a view) with objects in it: opening it at head computes the
    table from what is stored."""
    engine = store.make_engine(url)
    cfg = store._alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
    objects = build_demo(ANCHOR).objects
    by_kind: dict[str, dict[str, dict]] = {}
    for obj in objects:
        kind = object_type(obj)
        if kind:
            by_kind.setdefault(kind, {})[obj["id"]] = row_for(obj, NOW)
    with engine.begin() as conn:
        for kind, rows in by_kind.items():
            if kind == "invoice_payment":
                continue  # no such table at 0004: the migration makes the rows from the invoices' JSON
            name = table_for(kind).__tablename__
            columns = [c["name"] for c in inspect(conn).get_columns(name)]  # as they were at 0004
            insert = (
                f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"
            )
            conn.execute(text(insert), [{c: r[c] for c in columns} for r in rows.values()])
        before = conn.execute(text("SELECT COUNT(*) FROM payments")).scalar_one()  # the old view
    engine.dispose()
    migrated = store.open_store(url)
    try:
        kept = table_now(migrated)
        assert len(kept) == before > 50
        assert kept == recomputed(migrated)
    finally:
        migrated.dispose()
