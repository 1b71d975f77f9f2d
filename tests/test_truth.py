"""Truth on a real account (issue 13): the ten ways the monitor was seen to be wrong against an independent
Stripe and current API shapes, each as a test. The sync ones run the real stripe SDK over HTTP against the
emulator, which serves what Stripe serves: same-second events in Stripe's order, `invoice.payments` only
when expanded and never inside events, a list refused with Stripe's 403 permission error."""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from monitor import config as config_module
from monitor import pipeline, store
from monitor.app_db import AppDatabase, load_mapping
from monitor.emulator import server
from monitor.emulator.shapes import example
from monitor.rules.completeness import ResourceGap, SnapshotState
from monitor.rules.reconcile import reconcile
from monitor.store import snapshot
from monitor.store.models import SyncResource, SyncState
from monitor.store.rows import listing_ranks
from monitor.stripe_api.source import RESOURCES, StripeSource
from monitor.stripe_api.sync import SyncIncomplete, sync
from tests.stripe_cast import MONTH_S, Account
from tests.table_cast import DAY, NOW, invoices, row, tables

KEY = "sk_test_truth"
GRACE = timedelta(minutes=10)


def now_s() -> int:
    return int(time.time())


def status_of(engine, table: str, object_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT status FROM {table} WHERE id = :id"), {"id": object_id}).scalar()


def payments_of(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return snapshot.read_payments(conn)


def rows_of(a: Account) -> pd.DataFrame:
    """The app's rows of `a`, written to an app database of the default schema and read as the monitor
    reads them: the subscriptions frame reconcile() takes."""
    with tempfile.TemporaryDirectory() as where:
        url = f"sqlite:///{where}/app.db"
        a.write_app_db(url)
        app = AppDatabase(url, load_mapping("default"))
        try:
            return app.read_subscriptions()
        finally:
            app.dispose()


def synced(a: Account, engine, **emulator_options):
    """Sync `a` into `engine` from an emulator serving it; the SyncIncomplete, if any, is returned."""
    with server.start(a.objects, api_key=KEY, **emulator_options) as running:
        try:
            return sync(engine, StripeSource(KEY, running.base_url, sleep=lambda s: None))
        except SyncIncomplete as e:
            return e


def judged(a: Account, engine, **options) -> set[tuple[str, str]]:
    """(kind, payment id or row:ID) of the payment findings reconcile() makes of the store and `a`'s rows."""
    result = reconcile(payments_of(engine), rows_of(a), now=datetime.now(UTC), grace=GRACE, **options)
    return {(f.kind, f.payment_id or f"row:{f.subscription_ids[0]}") for f in result.findings}


# --- 1. events about one object in the same second -------------------------------------------------------


def test_events_of_one_second_leave_the_newest_state_even_across_a_page_boundary(sqlite_store):
    """Stripe lists events newest first; a renewal's invoice.finalized and invoice.paid share a second, and
    so do a subscription's last update and its cancellation. Saved page by page as a sync saves them (here
    through the events list alone), the newest state must win, also when a page ends between the two."""
    now = now_s()
    a = Account(now)
    second = now - 3600
    pay = a.subscription_checkout("alice@example.com", age_s=3600)
    sub = next(o for o in a.objects if o["id"] == pay["sub"])
    a.event("customer.subscription.updated", sub, second)
    sub["status"] = "canceled"
    a.event("customer.subscription.deleted", sub, second)
    invoice = pay["invoices"][0]["in"]
    # Newer events of that second, so that the subscription's pair straddles the end of the first page:
    # listed newest first, page 1 is checkout.session.completed (a second later), these 98, then
    # customer.subscription.deleted; customer.subscription.updated opens page 2.
    for n in range(98):
        a.event("customer.created", example("customer", id=f"cus_filler{n:03d}", created=second), second)
    # The invoice's events happened at `second` too: move them there, oldest first as they were added.
    for o in a.objects:
        if o["object"] == "event" and o["data"]["object"].get("id") == invoice:
            o["created"] = second
    events = [o for o in a.objects if o["object"] == "event"]
    events.sort(key=lambda e: (e["created"], e["type"] not in ("invoice.finalized", "invoice.paid")))
    result = synced(Account(now, objects=events), sqlite_store)
    assert not isinstance(result, SyncIncomplete)
    assert status_of(sqlite_store, "stripe_invoices", invoice) == "paid"
    assert status_of(sqlite_store, "stripe_subscriptions", pay["sub"]) == "canceled"


def test_listing_ranks_count_stripes_order_within_a_second_across_pages():
    page1 = [{"created": 5}, {"created": 5}, {"created": 4}]
    page2 = [{"created": 4}, {"created": 4}, {"created": 3}]
    ranks1, tie = listing_ranks(page1)
    ranks2, tie = listing_ranks(page2, tie)
    assert (ranks1, ranks2, tie) == ([0, 1, 0], [1, 2, 0], (3, 0))


@st.composite
def histories(draw):
    """A few objects, each changed several times (some changes in the same second), every change an
    event; plus list copies fetched at random moments. Returns (pages, newest state by id)."""
    versions = []  # (created second, order of creation, object)
    n_objects = draw(st.integers(1, 4))
    clock = 1_000
    order = 0
    for i in range(n_objects):
        for v in range(draw(st.integers(1, 5))):
            clock += draw(st.sampled_from([0, 0, 1, 2]))  # ties within a second are common
            order += 1
            obj = {
                "id": f"sub_{i}",
                "object": "subscription",
                "status": f"v{v}",
                "created": 900,
                "customer": None,
            }
            versions.append((clock, order, obj))
    events = [
        {
            "id": f"evt_{order:04d}",
            "object": "event",
            "type": "x.updated",
            "created": c,
            "data": {"object": o},
        }
        for c, order, o in versions
    ]
    listing = sorted(events, key=lambda e: (e["created"], e["id"]), reverse=True)  # newest first
    size = draw(st.integers(1, 4))
    pages = []
    tie = None
    for start in range(0, len(listing), size):
        page = listing[start : start + size]
        ranks, tie = listing_ranks(page, tie)
        pages.append(("events", page, ranks, int(time.time())))
    # List copies, each fetched right after some change: it shows every change made until then (those of
    # its own second included) and is stamped with that second.
    for _ in range(draw(st.integers(0, 3))):
        upto = draw(st.integers(0, len(versions) - 1))
        seen = {o["id"]: o for _, _, o in versions[: upto + 1]}
        pages.append(("list", list(seen.values()), None, versions[upto][0]))
    newest = {}
    for _, _, o in sorted(versions, key=lambda x: (x[0], x[1])):
        newest[o["id"]] = o["status"]
    return draw(st.permutations(pages)), newest


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories())
def test_any_interleaving_of_list_pages_and_event_pages_stores_the_newest_state(sqlite_store, case):
    """Property: whatever order pages of the events listing and list copies are saved in (a sync's windows
    run in parallel; an incremental run sees some events again), each object ends as its newest version."""
    pages, newest = case
    with sqlite_store.begin() as conn:
        conn.execute(text("DELETE FROM stripe_subscriptions"))
        conn.execute(text("DELETE FROM stripe_events"))
    for kind, page, ranks, at in pages:
        with sqlite_store.begin() as conn:
            if kind == "events":
                store.save_objects(conn, page, snapshot_at=at, ranks=ranks)
            else:
                store.save_objects(conn, page, snapshot_at=at)
    with sqlite_store.connect() as conn:
        stored = dict(
            conn.execute(text("SELECT id, json_extract(raw, '$.status') FROM stripe_subscriptions")).all()
        )
    assert stored == newest


# --- 2. an event's copy never erases what the list copy was expanded with -----------------------------------


def test_an_invoice_paid_event_keeps_the_invoices_payments_and_its_intent_stays_its_own(sqlite_store):
    """Invoices are listed with expand[]=data.payments; an invoice.paid event's copy has no `payments`. After
    an incremental sync that sees the event, the renewal's PaymentIntent must still belong to its invoice,
    not become a standalone payment (a false critical paid_without_subscription)."""
    now = now_s()
    a = Account(now)
    pay = a.subscription_checkout("bob@example.com", age_s=MONTH_S + 5 * 86400, renewals=1)
    a.subscription_row(pay, by=("sub",))
    with server.start(a.objects, api_key=KEY) as running:
        source = StripeSource(KEY, running.base_url)
        sync(sqlite_store, source)
        renewal = pay["invoices"][1]
        invoice = running.emulator.store.retrieve("invoice", renewal["in"]).decoded()
        time.sleep(1.1)  # the event comes after the list copy was fetched: its copy is the fresher one
        running.emulator.upsert([example("event", **_event_about(invoice, now_s()))])
        sync(sqlite_store, source)
    payments = payments_of(sqlite_store).set_index("payment_id")
    assert renewal["pis"][0] not in payments.index  # not a standalone payment
    assert payments.loc[renewal["in"], "payment_intent_id"] == renewal["pis"][0]
    with sqlite_store.connect() as conn:
        raw = json.loads(
            conn.execute(text("SELECT raw FROM stripe_invoices WHERE id = :i"), {"i": renewal["in"]}).scalar()
        )
    assert raw["payments"]["data"][0]["payment"]["payment_intent"] == renewal["pis"][0]
    assert not {k for k in judged(a, sqlite_store) if k[0] == "paid_without_subscription"}


def _event_about(invoice: dict, created: int) -> dict:
    body = {k: v for k, v in invoice.items() if k != "payments"}
    return {
        "id": "evt_truth_late_paid",
        "type": "invoice.paid",
        "created": created,
        "data": {"object": body},
        "pending_webhooks": 0,
        "livemode": False,
    }


# --- 3. one refused list stops only itself -----------------------------------------------------------------


def refused_account() -> Account:
    a = Account(now_s())
    pay = a.subscription_checkout("carol@example.com")
    a.subscription_row(pay, by=("sub",))
    a.objects.append(
        example("webhook_endpoint", id="we_truth", url="https://staging.example.com/hook", status="enabled")
    )
    return a


def test_a_list_refused_with_403_stops_only_itself_and_names_the_permission(sqlite_store):
    result = synced(refused_account(), sqlite_store, deny=["/v1/checkout/sessions"])
    assert isinstance(result, SyncIncomplete)
    assert set(result.failed) == {"checkout_sessions"}
    assert "Checkout Sessions: read" in str(result)
    with sqlite_store.connect() as conn:
        done = set(conn.execute(select(SyncState.resource)).scalars())
        outcome = {r.resource: r for r in conn.execute(select(SyncResource.__table__))}
        endpoints = conn.execute(text("SELECT id FROM stripe_webhook_endpoints")).scalars().all()
    assert done == {r.name for r in RESOURCES} - {"checkout_sessions"}
    assert endpoints == ["we_truth"]
    assert outcome["checkout_sessions"].http_status == 403
    assert outcome["checkout_sessions"].permission == "Checkout Sessions: read"
    assert outcome["webhook_endpoints"].ok_at is not None and outcome["undelivered_events"].ok_at is not None


def test_the_cli_says_which_resource_failed_and_check_says_stripe_api_is_degraded(cli_main, tmp_path):
    with server.start(refused_account().objects, api_key=KEY, deny=["/v1/checkout/sessions"]) as running:
        env = {"STRIPE_API_KEY": KEY, "STRIPE_API_BASE": running.base_url}
        run = cli_main(["sync"], env)
        check = cli_main(["check", "--json"], env)
    assert run.returncode == 1, run.stderr
    assert run.stdout.startswith("synced ")
    assert "Traceback" not in run.stderr
    assert (
        'FAILED checkout_sessions: the API key sk_test_**** lacks the permission "Checkout Sessions: read"'
        in run.stderr
    )
    stripe_api = {c["name"]: c for c in json.loads(check.stdout)["components"]}["stripe_api"]
    assert stripe_api["status"] == "degraded"
    assert "Checkout Sessions: read" in stripe_api["detail"]


# --- 4. reconcile never trusts a partial snapshot ----------------------------------------------------------


def test_reconcile_holds_back_what_a_resource_never_synced_would_decide_and_says_so(tmp_path):
    """Subscriptions never synced: a customer whose subscription is canceled at Stripe (row canceled too)
    must not be called subscription_not_active; the report says the snapshot lacks subscriptions and that
    this kind was held back."""
    a = Account(now_s())
    pay = a.subscription_checkout("dave@example.com", status="canceled")
    a.subscription_row(pay, status="canceled")
    app_url = f"sqlite:///{tmp_path / 'app.db'}"
    a.write_app_db(app_url)
    with server.start(a.objects, api_key=KEY, deny=["/v1/subscriptions"]) as running:
        cfg = config_module.load(
            {
                "STRIPE_API_KEY": KEY,
                "STRIPE_API_BASE": running.base_url,
                "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'monitor.db'}",
                "APP_DATABASE_URL": app_url,
            }
        )
        engine = store.open_store(cfg.monitor_database_url)
        with pytest.raises(SyncIncomplete):
            pipeline.run_sync(cfg, engine)
        report = pipeline.run_reconcile(cfg, engine).to_json()
        engine.dispose()
    kinds = {f["kind"] for f in report["findings"]}
    snap = report["summary"]["snapshot"]
    assert "subscription_not_active" not in kinds
    assert snap["complete"] is False
    assert [g["resource"] for g in snap["missing"]] == ["subscriptions"]
    assert snap["missing"][0]["permission"] == "Subscriptions: read"
    assert "subscription_not_active" in snap["held_back"]
    assert "subscriptions" in snap["held_back_reasons"]["subscription_not_active"]


def test_a_row_naming_a_session_the_store_lacks_is_not_called_unpaid():
    """Checkout Sessions never synced: a row naming only its session cannot be matched, so it is neither
    active_without_payment nor proof that its customer's payment lacks a row; a row naming nothing that is
    missing is still judged."""
    payments, rows = tables(
        [*invoices("erin", 1), *invoices("ivan", 1)],
        [
            row(1, "erin", checkout_session_id="cs_unknown"),
            row(
                2,
                "ivan",
                by="nothing",
                email="ivan.other@example.com",
                customer_id=None,
                created_at=NOW - 2 * DAY,
            ),
        ],
    )
    missing = SnapshotState(
        missing=(ResourceGap("checkout_sessions", "403", 403, "Checkout Sessions: read"),)
    )
    result = reconcile(payments, rows, now=NOW, grace=GRACE, snapshot=missing)
    found = {(f.kind, f.payment_id or f.subscription_ids[0]) for f in result.findings}
    assert found == {("paid_without_subscription", "in_ivan_1"), ("active_without_payment", 2)}
    assert set(result.held_back.kinds) == {"paid_without_subscription", "active_without_payment"}
    assert "Checkout Sessions: read" in result.held_back.reasons["active_without_payment"]
    complete = reconcile(payments, rows, now=NOW, grace=GRACE)
    assert {f.kind for f in complete.findings} == {"paid_without_subscription", "active_without_payment"}
    assert (
        len(complete.findings) == 3
    )  # row 1 is named in in_erin_1's hint, so it is not also without payment


# --- 5. trials and 100 %-off starts through Checkout ------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "told"), [({"trial": True}, "started a trial"), ({"discount": True}, "started with 100 % off")]
)
def test_a_start_with_nothing_to_pay_is_a_payment_of_zero_that_needs_its_row(sqlite_store, start, told):
    a = Account(now_s())
    pay = a.subscription_checkout("frank@example.com", **start)
    synced(a, sqlite_store)
    payments = payments_of(sqlite_store).set_index("payment_id")
    assert payments.loc[pay["cs"], "amount"] == 0
    assert pay["invoices"][0]["in"] not in payments.index  # the session's $0 invoice is the same payment
    result = reconcile(payments.reset_index(), rows_of(a), now=datetime.now(UTC), grace=GRACE)
    (finding,) = result.findings
    assert (finding.kind, finding.payment_id, finding.amount) == ("paid_without_subscription", pay["cs"], 0)
    assert told in finding.hint
    assert result.summary["amount_at_risk"] == {"usd": 0}


def test_a_trial_with_its_row_is_matched_not_active_without_payment(sqlite_store):
    a = Account(now_s())
    pay = a.subscription_checkout("grace@example.com", trial=True)
    a.subscription_row(pay, status="trialing")
    synced(a, sqlite_store)
    assert judged(a, sqlite_store) == set()


# --- 6. async payment methods -----------------------------------------------------------------------------


def test_an_async_payment_counts_from_when_it_was_paid_and_names_the_event_that_says_so(sqlite_store):
    """A SEPA session completes unpaid and is paid three days later: its grace period starts then, and the
    event named (and replayed by the webhook repair) is checkout.session.async_payment_succeeded."""
    a = Account(now_s())
    just_paid = a.subscription_checkout(
        "heidi@example.com", age_s=3 * 86400, async_paid_after_s=3 * 86400 - 120
    )
    paid_earlier = a.subscription_checkout("judy@example.com", age_s=3 * 86400, async_paid_after_s=2 * 86400)
    synced(a, sqlite_store)
    payments = payments_of(sqlite_store).set_index("payment_id")
    for pay in (just_paid, paid_earlier):
        assert payments.loc[pay["cs"], "created"] == pd.Timestamp(pay["paid_at"] + 1, unit="s", tz="UTC")
        assert payments.loc[pay["cs"], "event_id"] == pay["evt"]
    with sqlite_store.connect() as conn:
        evt_type = conn.execute(
            text("SELECT type FROM stripe_events WHERE id = :e"), {"e": pay["evt"]}
        ).scalar()
    assert evt_type == "checkout.session.async_payment_succeeded"
    assert judged(a, sqlite_store) == {("paid_without_subscription", paid_earlier["cs"])}


# --- 7. an invoice paid by several PaymentIntents ---------------------------------------------------------


def test_every_intent_of_an_invoice_belongs_to_it_and_their_refunds_count(store_engine):
    now = now_s()
    a = Account(now)
    cus = a.customer("kate@example.com", now - 90_000)
    inv = a.invoice(cus, None, now - 86400, amounts=(10000, 4900), reason="manual")
    a.refund(inv["pis"][1], inv["charges"][1], 4900, now - 3600)
    synced(a, store_engine)
    payments = payments_of(store_engine).set_index("payment_id")
    assert list(payments.index) == [inv["in"]]  # neither intent is a payment of its own
    assert payments.loc[inv["in"], "amount"] == 14900
    assert payments.loc[inv["in"], "amount_refunded"] == 4900


# --- 8. a row that names only the Checkout Session ---------------------------------------------------------


def test_a_row_naming_only_its_session_owns_the_subscriptions_renewals(sqlite_store):
    a = Account(now_s())
    pay = a.subscription_checkout("lina@example.com", age_s=2 * MONTH_S + 86400, renewals=2)
    a.subscription_row(pay, by=("cs",))
    synced(a, sqlite_store)
    assert judged(a, sqlite_store) == set()


# --- 9. one-off purchases beside subscriptions -------------------------------------------------------------


def test_payment_scope_subscriptions_judges_only_the_payments_that_grant_a_subscription(sqlite_store):
    a = Account(now_s())
    sub = a.subscription_checkout("mallory@example.com")
    one_off = a.one_off_intent("nina@example.com")
    synced(a, sqlite_store)
    every = judged(a, sqlite_store)
    assert every == {("paid_without_subscription", sub["cs"]), ("paid_without_subscription", one_off["pi"])}
    assert judged(a, sqlite_store, scope="subscriptions") == {("paid_without_subscription", sub["cs"])}
    result = reconcile(
        payments_of(sqlite_store), rows_of(a), now=datetime.now(UTC), grace=GRACE, scope="subscriptions"
    )
    assert result.summary["payments"] == 1


@pytest.mark.parametrize(
    ("value", "scope"), [(None, "all"), ("subscriptions", "subscriptions"), ("ALL", "all")]
)
def test_payment_scope_is_read_from_the_settings(value, scope):
    env = {"PAYMENT_SCOPE": value} if value else {}
    assert config_module.load(env, toml_path=None).payment_scope == scope


def test_a_bad_payment_scope_is_one_line_naming_it(cli_main):
    run = cli_main(["reconcile"], {"PAYMENT_SCOPE": "one-offs"})
    assert run.returncode == 2
    assert run.stderr.strip() == "error: PAYMENT_SCOPE='one-offs' is not valid: expected all or subscriptions"


# --- 10. a store filled from one account is never mixed with another ----------------------------------------


def account_named(account_id: str) -> Account:
    a = Account(now_s())
    a.subscription_checkout(f"{account_id}@example.com")
    a.objects.append(example("account", id=account_id))
    return a


def test_a_store_refuses_another_account_unless_filled_anew_with_full(cli_main, tmp_path):
    with server.start(account_named("acct_first").objects, api_key=KEY) as first:
        assert cli_main(["sync"], {"STRIPE_API_KEY": KEY, "STRIPE_API_BASE": first.base_url}).returncode == 0
    with server.start(account_named("acct_other").objects, api_key=KEY) as other:
        env = {"STRIPE_API_KEY": KEY, "STRIPE_API_BASE": other.base_url}
        refused = cli_main(["sync"], env)
        assert refused.returncode == 2
        (line,) = refused.stderr.strip().splitlines()
        assert "acct_first (test mode)" in line and "acct_other (test mode)" in line
        anew = cli_main(["sync", "--full"], env)
        assert anew.returncode == 0, anew.stderr
    engine = store.open_store(f"sqlite:///{tmp_path / 'monitor.db'}")
    with engine.connect() as conn:
        emails = set(conn.execute(text("SELECT email FROM stripe_customers")).scalars())
        assert store.stored_account(conn) == ("acct_other", False)
    engine.dispose()
    assert emails == {"acct_other@example.com"}


def test_a_store_filled_in_test_mode_refuses_a_live_key(cli_main):
    with server.start(account_named("acct_first").objects, api_key=KEY) as first:
        assert cli_main(["sync"], {"STRIPE_API_KEY": KEY, "STRIPE_API_BASE": first.base_url}).returncode == 0
    run = cli_main(
        ["reconcile"], {"STRIPE_API_KEY": "sk_live_truth0000000000", "APP_DATABASE_URL": "sqlite://"}
    )
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert "acct_first in test mode" in line and "live mode key" in line
