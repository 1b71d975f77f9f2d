"""The demo scenario: deterministic, shaped like Stripe, internally consistent, and holding the incident and
one case of every finding kind; and the demo app database, written once and keeping its anchor."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from monitor.emulator import shapes
from monitor.emulator.demo import ENABLED_EVENTS, Demo, build_demo, ensure_demo_app_db
from monitor.emulator.demo_names import DEMO_EXPECTED_WEBHOOK_URL, DEMO_STAGING_WEBHOOK_URL, INCIDENT_EMAIL
from monitor.errors import AppDatabaseError
from monitor.rules.findings import KINDS
from tests.stripe_cast import REDIS_ERROR

ANCHOR = datetime(2026, 11, 26, 11, 20, tzinfo=UTC)
NOW = int(ANCHOR.timestamp())
REPO_ROOT = Path(__file__).resolve().parent.parent


@cache
def demo() -> Demo:
    return build_demo(ANCHOR)


def objects_of(kind: str) -> list[dict]:
    return [o for o in demo().objects if o["object"] == kind]


def by_id() -> dict[str, dict]:
    return {o["id"]: o for o in demo().objects}


def ts(value: str) -> int:
    return int(datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp())


def case_rows(name: str) -> list[dict]:
    ids = set(demo().cases[name]["row_ids"])
    return [r for r in demo().rows if r["id"] in ids]


# --- determinism ---------------------------------------------------------------------------------------


def test_the_same_anchor_and_seed_build_identical_demos():
    again = build_demo(ANCHOR)
    assert again == demo()
    assert json.dumps(again.objects) == json.dumps(demo().objects)


def test_another_seed_gives_other_ids():
    other = build_demo(ANCHOR, seed=7)
    assert not {o["id"] for o in other.objects} & {o["id"] for o in demo().objects}


def test_a_naive_or_fractional_anchor_is_taken_as_whole_utc_seconds():
    built = build_demo(datetime(2026, 11, 26, 11, 20, 0, 999_000))
    assert built.anchor == ANCHOR
    assert built == demo()


def test_another_process_builds_the_same_objects():
    """The CLI rebuilds the emulator in every process, so nothing may depend on hash seeds or the clock."""
    script = (
        "import hashlib, json; from datetime import datetime, UTC; "
        "from monitor.emulator.demo import build_demo; "
        "d = build_demo(datetime(2026, 11, 26, 11, 20, tzinfo=UTC)); "
        "print(hashlib.sha256(json.dumps([d.objects, d.rows, d.webhook_log, d.cases]).encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    d = demo()
    here = hashlib.sha256(json.dumps([d.objects, d.rows, d.webhook_log, d.cases]).encode()).hexdigest()
    assert out.stdout.strip() == here


# --- shape and consistency -----------------------------------------------------------------------------


def test_every_object_has_the_keys_of_stripes_example_of_its_type():
    incomplete = {o["id"]: shapes.missing_keys(o) for o in demo().objects if shapes.missing_keys(o)}
    assert incomplete == {}


def test_the_scenario_has_a_month_of_ordinary_traffic():
    sessions = objects_of("checkout.session")
    in_month = [s for s in sessions if s["created"] >= NOW - 30 * 86400]
    assert 300 <= len(in_month) <= 450
    per_day = [
        sum(1 for s in in_month if NOW - (d + 1) * 86400 <= s["created"] < NOW - d * 86400) for d in range(29)
    ]
    assert min(per_day) >= 5 and max(per_day) <= 25
    assert {s["mode"] for s in sessions} == {"payment", "subscription"}
    assert {s["currency"] for s in sessions} >= {"usd", "eur", "gbp"}
    assert any(i["billing_reason"] == "subscription_cycle" for i in objects_of("invoice"))
    assert len({c["email"] for c in objects_of("customer")}) == len(objects_of("customer"))


def test_ids_look_like_stripes():
    for o in demo().objects:
        prefix, _, rest = o["id"].rpartition("_")
        assert prefix and rest.isalnum() and len(rest) >= 14, o["id"]


def test_nothing_happens_after_the_anchor():
    assert all(o["created"] <= NOW for o in demo().objects)
    assert all(ts(r["created_at"]) <= NOW for r in demo().rows)
    assert all(ts(e["received_at"]) <= NOW for e in demo().webhook_log)


def test_every_reference_between_objects_resolves():
    known = by_id()
    refs: list[tuple[str, str | None]] = []
    for o in demo().objects:
        kind = o["object"]
        if kind == "checkout.session":
            refs += [(o["id"], o[k]) for k in ("customer", "payment_intent", "subscription", "invoice")]
        elif kind == "payment_intent":
            refs += [(o["id"], o["customer"]), (o["id"], o["latest_charge"])]
        elif kind == "charge":
            refs += [(o["id"], o["customer"]), (o["id"], o["payment_intent"])]
            refs += [(o["id"], r["id"]) for r in o["refunds"]["data"]]
        elif kind in ("refund", "dispute"):
            refs += [(o["id"], o["charge"]), (o["id"], o["payment_intent"])]
        elif kind == "subscription":
            refs += [(o["id"], o["customer"]), (o["id"], o["latest_invoice"])]
        elif kind == "invoice":
            refs += [(o["id"], o["customer"]), (o["id"], o["subscription"])]
            refs.append((o["id"], o["parent"]["subscription_details"]["subscription"]))
            refs += [(o["id"], p["payment"]["payment_intent"]) for p in o["payments"]["data"]]
        elif kind == "event":
            refs.append((o["id"], o["data"]["object"]["id"]))
    dangling = [(source, target) for source, target in refs if target is not None and target not in known]
    assert dangling == []


def test_rows_point_at_existing_stripe_objects_except_the_orphan():
    known = by_id()
    orphan = demo().cases["orphan_row"]["dangling_checkout_session_id"]
    columns = (
        "stripe_customer_id",
        "stripe_checkout_session_id",
        "stripe_payment_intent_id",
        "stripe_subscription_id",
    )
    dangling = [r[c] for r in demo().rows for c in columns if r[c] and r[c] not in known]
    assert dangling == [orphan]


def test_each_event_carries_a_snapshot_of_its_object():
    known = by_id()
    for e in objects_of("event"):
        inner = e["data"]["object"]
        assert inner["object"] == known[inner["id"]]["object"]
        assert inner is not known[inner["id"]]
        assert e["api_version"] == "2026-10-28.endive" and e["livemode"] is False
        assert set(e["request"]) == {"id", "idempotency_key"}
        assert e["id"].startswith("evt_")
    sessions = [e for e in objects_of("event") if e["type"] == "checkout.session.completed"]
    assert all(e["data"]["object"] == known[e["data"]["object"]["id"]] for e in sessions)
    assert all(0 < e["created"] - known[e["data"]["object"]["id"]]["created"] < 600 for e in sessions)


def test_subscription_payments_are_shaped_like_api_2025_and_later():
    known = by_id()
    for s in (s for s in objects_of("checkout.session") if s["mode"] == "subscription"):
        assert s["payment_intent"] is None
        invoice, sub = known[s["invoice"]], known[s["subscription"]]
        assert invoice["billing_reason"] == "subscription_create" and invoice["status"] == "paid"
        assert invoice["parent"]["type"] == "subscription_details"
        assert invoice["amount_paid"] == s["amount_total"]
        item = sub["items"]["data"][0]
        assert item["current_period_end"] == _latest_invoice_period_end(sub)
        assert sub["billing_cycle_anchor"] == invoice["lines"]["data"][0]["period"]["start"]
    for invoice in objects_of("invoice"):
        payment_intent = known[invoice["payments"]["data"][0]["payment"]["payment_intent"]]
        assert payment_intent["status"] == "succeeded" and payment_intent["amount"] == invoice["amount_paid"]
        assert invoice["status_transitions"]["paid_at"] >= invoice["created"]


def _latest_invoice_period_end(sub: dict) -> int:
    invoices = [i for i in objects_of("invoice") if i["subscription"] == sub["id"]]
    return max(i["lines"]["data"][0]["period"]["end"] for i in invoices)


# Month ends and a leap day: renewals are calendar months, so these are where periods could go wrong.
EDGE_ANCHORS = [
    ANCHOR,
    datetime(2027, 3, 31, 0, 5, tzinfo=UTC),
    datetime(2028, 2, 29, 23, 59, tzinfo=UTC),
    datetime(2027, 7, 30, 20, 0, tzinfo=UTC),
    datetime(2026, 12, 31, 12, 0, tzinfo=UTC),
]


@pytest.mark.parametrize("anchor", EDGE_ANCHORS, ids=lambda a: a.strftime("%Y-%m-%d"))
def test_ordinary_rows_agree_with_their_payments(anchor):
    """Outside the cases, every paid session has exactly one active row with its ids, amount and period,
    and every subscription's current period holds the anchor (a renewal due earlier would be missing)."""
    built = demo() if anchor == ANCHOR else build_demo(anchor)
    now = int(built.anchor.timestamp())
    known = {o["id"]: o for o in built.objects}
    in_cases = {c.get("checkout_session_id") for c in built.cases.values()}
    rows_by_session: dict[str, list[dict]] = {}
    for r in built.rows:
        rows_by_session.setdefault(r["stripe_checkout_session_id"], []).append(r)
    for s in (o for o in built.objects if o["object"] == "checkout.session"):
        if s["id"] in in_cases:
            continue
        [row] = rows_by_session[s["id"]]
        assert row["status"] == "active"
        assert (row["amount"], row["currency"]) == (s["amount_total"], s["currency"])
        assert row["customer_email"] == known[s["customer"]]["email"]
        assert row["stripe_payment_intent_id"] == s["payment_intent"]
        assert row["stripe_subscription_id"] == s["subscription"]
        if s["subscription"]:
            item = known[s["subscription"]]["items"]["data"][0]
            assert item["current_period_start"] <= now < item["current_period_end"]
            assert ts(row["current_period_end"]) == item["current_period_end"]
        else:
            assert ts(row["current_period_end"]) > now
        assert 0 < ts(row["created_at"]) - known[s["payment_intent"] or s["invoice"]]["created"] < 60
    case = built.cases["renewal_not_extended"]
    renewal = known[case["renewal_invoice_id"]]
    moved = ts(built.cases["endpoint_at_staging"]["moved_at"])
    assert moved < renewal["created"] < renewal["status_transitions"]["paid_at"] < now - 3600


# --- the incident and the cases ------------------------------------------------------------------------


def test_the_incident_is_as_the_owners_wrote_it_down():
    case = demo().cases["incident"]
    known = by_id()
    session = known[case["checkout_session_id"]]
    assert case["email"] == INCIDENT_EMAIL == session["customer_details"]["email"]
    assert (session["amount_total"], session["currency"]) == (14900, "usd")
    assert (session["status"], session["payment_status"], session["mode"]) == ("complete", "paid", "payment")
    assert timedelta(hours=1) < ANCHOR - datetime.fromtimestamp(session["created"], UTC) < timedelta(hours=3)
    assert known[session["payment_intent"]]["status"] == "succeeded"
    charge = known[known[session["payment_intent"]]["latest_charge"]]
    assert charge["paid"] and charge["captured"] and charge["amount_refunded"] == 0
    [event] = [
        e
        for e in objects_of("event")
        if e["type"] == "checkout.session.completed" and e["data"]["object"]["id"] == session["id"]
    ]
    assert event["pending_webhooks"] == 1 and event["id"] == case["failed_event_id"]
    [logged] = [e for e in demo().webhook_log if e["stripe_event_id"] == event["id"]]
    assert logged["status"] == "failed" and logged["error"] == REDIS_ERROR
    assert logged["type"] == "checkout.session.completed" and logged["processed_at"] is None
    assert not [r for r in demo().rows if r["customer_email"] == INCIDENT_EMAIL]
    assert not [r for r in demo().rows if session["id"] in r.values() or session["customer"] in r.values()]


def test_every_finding_kind_has_a_case():
    kinds = {k for case in demo().cases.values() for k in case["kinds"]}
    assert kinds == set(KINDS)


@pytest.mark.parametrize(
    "name",
    [
        "incident",
        "weak_match",
        "pending_row",
        "renewal_not_extended",
        "amount_mismatch",
        "triple_fallback",
        "orphan_row",
        "refunded_active",
        "dispute_lost",
        "delivered_to_staging",
        "endpoint_at_staging",
        "partial_refund",
        "open_dispute",
        "within_grace",
    ],
)
def test_each_case_is_present_with_its_objects_and_rows(name):
    case = demo().cases[name]
    known = by_id()
    for key in ("checkout_session_id", "payment_intent_id", "charge_id", "subscription_id", "invoice_id"):
        assert case.get(key) is None or case[key] in known, key
    assert case["payment_id"] is None or case["payment_id"] in known
    assert all(e in known for e in case["event_ids"])
    assert len(case_rows(name)) == len(case["row_ids"])
    if case.get("email") and name != "endpoint_at_staging":
        customers = [c for c in objects_of("customer") if c["email"] == case["email"]]
        assert [c["id"] for c in customers] == [case["customer_id"]]
        strangers = [
            r for r in demo().rows if r["customer_email"] == case["email"] and r["id"] not in case["row_ids"]
        ]
        assert strangers == []


def test_the_weak_match_row_has_the_email_and_no_stripe_ids():
    [row] = case_rows("weak_match")
    assert row["customer_email"] == demo().cases["weak_match"]["email"] and row["status"] == "pending"
    assert not any(row[c] for c in row if c.startswith("stripe_"))
    assert demo().cases["weak_match"]["amount"] != 14900  # the USD 149 finding stays the incident's alone


def test_the_pending_row_is_linked_by_session_and_not_expired():
    [row] = case_rows("pending_row")
    assert row["stripe_checkout_session_id"] == demo().cases["pending_row"]["checkout_session_id"]
    assert row["status"] == "pending" and ts(row["current_period_end"]) > NOW


def test_the_renewal_was_paid_but_the_row_keeps_the_old_period_end():
    case = demo().cases["renewal_not_extended"]
    renewal = by_id()[case["renewal_invoice_id"]]
    [row] = case_rows("renewal_not_extended")
    period = renewal["lines"]["data"][0]["period"]
    assert renewal["billing_reason"] == "subscription_cycle" and renewal["status"] == "paid"
    assert renewal["status_transitions"]["paid_at"] < NOW - 3600
    assert period["end"] > NOW
    assert ts(row["current_period_end"]) == period["start"] < period["end"] - 86400
    assert row["stripe_subscription_id"] == case["subscription_id"] and row["status"] == "active"


def test_the_mismatch_duplicate_and_orphan_rows():
    [cheap] = case_rows("amount_mismatch")
    assert (cheap["amount"], demo().cases["amount_mismatch"]["amount"]) == (9900, 14900)
    twins = case_rows("triple_fallback")
    assert len(twins) == 2 and {r["status"] for r in twins} == {"active"}
    assert len({r["stripe_checkout_session_id"] for r in twins}) == 1
    [orphan] = case_rows("orphan_row")
    assert orphan["status"] == "active" and ts(orphan["created_at"]) < NOW - 86400
    assert orphan["stripe_checkout_session_id"] not in by_id()


def test_refunds_and_disputes():
    known = by_id()
    full = known[demo().cases["refunded_active"]["charge_id"]]
    assert full["refunded"] and full["amount_refunded"] == full["amount"]
    assert known[demo().cases["refunded_active"]["refund_id"]]["amount"] == full["amount"]
    partial = known[demo().cases["partial_refund"]["charge_id"]]
    assert not partial["refunded"] and 0 < partial["amount_refunded"] < partial["amount"]
    assert known[demo().cases["dispute_lost"]["dispute_id"]]["status"] == "lost"
    assert known[demo().cases["open_dispute"]["dispute_id"]]["status"] == "needs_response"
    for name in ("refunded_active", "dispute_lost", "partial_refund", "open_dispute"):
        assert [r["status"] for r in case_rows(name)] == ["active"]
    assert len(objects_of("refund")) == 2 and len(objects_of("dispute")) == 2


def test_the_payment_within_grace_has_no_row_yet():
    case = demo().cases["within_grace"]
    session = by_id()[case["checkout_session_id"]]
    assert NOW - 600 < by_id()[case["payment_intent_id"]]["created"] == NOW - 120
    assert session["status"] == "complete" and session["payment_status"] == "paid"
    assert case_rows("within_grace") == []


def test_the_endpoint_was_moved_to_staging():
    endpoints = objects_of("webhook_endpoint")
    enabled = [e for e in endpoints if e["status"] == "enabled"]
    assert [e["url"] for e in enabled] == [DEMO_STAGING_WEBHOOK_URL]
    assert enabled[0]["enabled_events"] == ENABLED_EVENTS and enabled[0]["livemode"] is False
    assert [e["status"] for e in endpoints if e not in enabled] == ["disabled"]
    assert DEMO_EXPECTED_WEBHOOK_URL not in {e["url"] for e in endpoints}


def test_production_logged_events_until_the_move_and_none_after():
    moved = ts(demo().cases["endpoint_at_staging"]["moved_at"])
    assert timedelta(days=2) < timedelta(seconds=NOW - moved) < timedelta(days=3)
    logged = {e["stripe_event_id"]: e for e in demo().webhook_log}
    delivered = [e for e in objects_of("event") if e["type"] in ENABLED_EVENTS and e["pending_webhooks"] == 0]
    assert all(logged[e["id"]]["status"] == "processed" for e in delivered if e["created"] < moved)
    missing = [e["id"] for e in delivered if e["created"] >= moved]
    assert not set(missing) & set(logged)
    assert missing == demo().cases["delivered_to_staging"]["all_missing_event_ids"]
    assert set(demo().cases["delivered_to_staging"]["event_ids"]) & set(missing)
    pending = [e["id"] for e in objects_of("event") if e["pending_webhooks"]]
    assert sorted(pending) == sorted([demo().cases["incident"]["failed_event_id"], _grace_event()])
    assert [e["status"] for e in demo().webhook_log if e["status"] != "processed"] == ["failed"]


def _grace_event() -> str:
    session = demo().cases["within_grace"]["checkout_session_id"]
    return next(e["id"] for e in objects_of("event") if e["data"]["object"]["id"] == session)


# --- the demo app database -----------------------------------------------------------------------------


def read(url: str, sql: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def test_ensure_demo_app_db_writes_the_scenario_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'not' / 'yet' / 'app.db'}"
    anchor = ensure_demo_app_db(url, now=ANCHOR + timedelta(microseconds=500))
    assert anchor == ANCHOR
    rows = read(url, "SELECT * FROM subscriptions ORDER BY id")
    assert rows == [tuple(r.values()) for r in demo().rows]
    log = read(url, "SELECT * FROM webhook_events ORDER BY received_at, stripe_event_id")
    assert log == [tuple(e.values()) for e in demo().webhook_log]
    assert read(url, "SELECT anchor FROM demo_scenario") == [("2026-11-26 11:20:00",)]

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE subscriptions SET status = 'canceled' WHERE id = 1"))
    engine.dispose()
    assert ensure_demo_app_db(url, now=ANCHOR + timedelta(days=3)) == ANCHOR
    assert ensure_demo_app_db(url) == ANCHOR
    assert read(url, "SELECT COUNT(*) FROM subscriptions") == [(len(demo().rows),)]
    assert read(url, "SELECT status FROM subscriptions WHERE id = 1") == [("canceled",)]


def test_ensure_demo_app_db_anchors_a_new_database_at_the_current_minute(tmp_path):
    before = datetime.now(UTC)
    anchor = ensure_demo_app_db(f"sqlite:///{tmp_path / 'app.db'}")
    assert anchor.tzinfo == UTC and anchor.second == 0 and anchor.microsecond == 0
    assert before - timedelta(minutes=1) <= anchor <= datetime.now(UTC)


def test_ensure_demo_app_db_refuses_a_database_that_is_not_a_demo(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE subscriptions (id INTEGER PRIMARY KEY, status TEXT)"))
    engine.dispose()
    with pytest.raises(AppDatabaseError, match="not a demo database"):
        ensure_demo_app_db(url)
    assert read(url, "SELECT COUNT(*) FROM subscriptions") == [(0,)]
