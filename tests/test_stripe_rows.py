"""Stripe's published example objects, and the shapes of other API versions, parse into store rows."""

import copy

import pytest

from monitor import store
from monitor.emulator.shapes import examples
from monitor.store.rows import (
    invoice_payment_intent,
    invoice_period_end,
    invoice_subscription,
    object_type,
    row_for,
    subscription_period_end,
)

KEPT = [
    "checkout.session",
    "invoice",
    "payment_intent",
    "charge",
    "refund",
    "dispute",
    "customer",
    "subscription",
    "event",
    "webhook_endpoint",
]


@pytest.mark.parametrize("resource", KEPT)
def test_stripes_example_of_every_kept_type_parses_into_a_row(resource):
    obj = copy.deepcopy(examples()[resource])
    assert object_type(obj) == resource
    row = row_for(obj, snapshot_at=1)
    assert row["id"] == obj["id"]
    assert row["created"] == obj["created"]


def test_every_example_saves_into_a_real_store_and_saving_twice_changes_nothing(sqlite_url):
    engine = store.open_store(sqlite_url)
    objects = [copy.deepcopy(examples()[r]) for r in KEPT]
    with engine.begin() as conn:
        assert store.save_objects(conn, objects, snapshot_at=10) == len(KEPT)
    with engine.begin() as conn:
        store.save_objects(conn, objects, snapshot_at=20)
        assert all(store.count_objects(conn, r) >= 1 for r in KEPT)
    engine.dispose()


def test_a_type_the_store_does_not_keep_is_skipped():
    assert object_type(copy.deepcopy(examples()["plan"])) is None
    assert object_type({"object": "checkout.session"}) is None  # no id


def test_an_invoice_names_its_subscription_in_the_new_and_the_old_shape():
    new = {"parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_new"}}}
    assert invoice_subscription(new) == "sub_new"
    assert invoice_subscription({"parent": None, "subscription": "sub_old"}) == "sub_old"
    assert (
        invoice_subscription({"subscription": {"id": "sub_expanded", "object": "subscription"}})
        == "sub_expanded"
    )


def test_an_invoice_names_its_payment_intent_through_payments_or_the_old_field():
    payments = {
        "data": [{"payment": {"type": "payment_intent", "payment_intent": "pi_new"}, "status": "paid"}]
    }
    assert invoice_payment_intent({"payments": payments}) == "pi_new"
    assert invoice_payment_intent({"payment_intent": "pi_old"}) == "pi_old"
    assert invoice_payment_intent({"payments": {"data": []}}) is None


def test_an_invoices_period_is_the_latest_line_period_not_its_own_period_end():
    invoice = {
        "period_end": 1_000,  # Stripe: the end of the period before the one billed
        "lines": {
            "data": [{"period": {"start": 1_000, "end": 2_000}}, {"period": {"start": 1_000, "end": 3_000}}]
        },
    }
    assert invoice_period_end(invoice) == 3_000
    assert invoice_period_end({"lines": {"data": []}}) is None


def test_a_subscriptions_period_end_is_read_from_its_items_or_the_old_field():
    assert subscription_period_end({"items": {"data": [{"current_period_end": 500}]}}) == 500
    assert subscription_period_end({"items": {"data": []}, "current_period_end": 400}) == 400


def test_an_events_row_names_the_object_it_carries():
    event = copy.deepcopy(examples()["event"])
    event["data"]["object"] = {"id": "cs_1", "object": "checkout.session"}
    event["pending_webhooks"] = 2
    row = row_for(event, snapshot_at=1)
    assert (row["object_id"], row["object_type"], row["pending_webhooks"]) == ("cs_1", "checkout.session", 2)


def test_a_fresher_copy_replaces_an_older_one_and_an_older_one_does_not(sqlite_url):
    engine = store.open_store(sqlite_url)
    charge = copy.deepcopy(examples()["charge"])
    with engine.begin() as conn:
        store.save_objects(conn, [dict(charge, amount_refunded=0)], snapshot_at=100)
        store.save_objects(conn, [dict(charge, amount_refunded=500)], snapshot_at=50)  # a stale event
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT amount_refunded FROM stripe_charges").scalar() == 0
    with engine.begin() as conn:
        store.save_objects(conn, [dict(charge, amount_refunded=900)], snapshot_at=150)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT amount_refunded FROM stripe_charges").scalar() == 900
    engine.dispose()
