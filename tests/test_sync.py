"""Sync over HTTP with the real stripe SDK against the emulator: paging, faults, a killed sync, idempotence,
incremental runs, a rejected key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select, text

from monitor import store
from monitor.emulator import server
from monitor.emulator.api import json_response
from monitor.emulator.shapes import example
from monitor.errors import StripeAuthError, StripeUnavailable
from monitor.store.models import STRIPE_TABLES, SyncWindow
from monitor.stripe_api.source import RESOURCES, StripeSource
from monitor.stripe_api.sync import STOP_AFTER_FAILURES, SyncIncomplete, sync
from tests.conftest import REPO_ROOT
from tests.services import clean_env
from tests.stripe_cast import Account, many_sessions

KEY = "sk_test_sync"
NOW = int(time.time())


def account() -> Account:
    a = Account(NOW)
    a.checkout_payment("alice@example.com")
    a.checkout_payment("dave@example.com", refunded=14900)
    a.checkout_payment("erin@example.com", dispute="lost")
    a.objects += many_sessions(NOW - 3600, 430)
    a.objects.append(
        {
            **example("webhook_endpoint"),
            "id": "we_1",
            "url": "https://staging.example.com/hook",
            "status": "enabled",
            "created": NOW - 90 * 86400,
        }
    )
    return a


def dump(engine) -> dict[str, list[tuple]]:
    """Every stored Stripe object's id and JSON, by table: what "the store" means when comparing runs."""
    with engine.connect() as conn:
        return {
            name: conn.execute(select(model.id, model.raw).order_by(model.id)).all()
            for name, model in STRIPE_TABLES.items()
        }


def source(running, *, sleep=lambda s: None, **options) -> StripeSource:
    return StripeSource(KEY, running.base_url, sleep=sleep, **options)


@pytest.fixture
def engine(sqlite_store):
    return sqlite_store


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The store after one fault-free sync of `account()`."""
    url = f"sqlite:///{tmp_path_factory.mktemp('ref') / 'monitor.db'}"
    e = store.open_store(url)
    with server.start(account().objects, api_key=KEY) as running:
        sync(e, source(running), now=NOW)
    result = dump(e)
    e.dispose()
    return result


def test_it_pages_through_every_object_of_every_resource(engine, reference):
    with server.start(account().objects, api_key=KEY) as running:
        result = sync(engine, source(running), now=NOW)
    assert result.objects["checkout_sessions"] == 433
    assert result.pages >= 5 + len(RESOURCES) - 1  # 433 sessions take 5 pages or more (split windows)
    assert len(reference["checkout.session"]) == 433
    assert len(reference["event"]) == 3
    assert len(reference["webhook_endpoint"]) == 1
    assert dump(engine) == reference


def test_a_second_sync_changes_nothing(engine, reference):
    with server.start(account().objects, api_key=KEY) as running:
        sync(engine, source(running), now=NOW)
        with engine.connect() as conn:
            before = conn.execute(
                text("SELECT id, snapshot_at FROM stripe_checkout_sessions ORDER BY id")
            ).all()
        sync(engine, source(running), now=NOW + 60)
        with engine.connect() as conn:
            after = conn.execute(
                text("SELECT id, snapshot_at FROM stripe_checkout_sessions ORDER BY id")
            ).all()
    assert after == before
    assert dump(engine) == reference


def test_injected_500s_and_429s_leave_the_same_store_as_a_fault_free_run(engine, reference):
    # Sixteen workers against 10 requests/s: 429s for sure. The source backs off between retries at a
    # twentieth of its usual schedule (25 ms, 50 ms, … 1.6 s): with no backoff at all, retries of a 429
    # come back before the emulator's bucket refills, and attempts can follow each other so fast that
    # every one of them is refused.
    with server.start(account().objects, api_key=KEY, error_rate=0.25, rate_limit=10, seed=7) as running:
        for _attempt in range(30):
            try:
                sync(
                    engine,
                    source(running, max_network_retries=1, sleep=lambda s: time.sleep(s / 20)),
                    now=NOW,
                )
                break
            except (StripeUnavailable, SyncIncomplete):
                continue
        else:
            pytest.fail("sync never completed under injected faults")
        stats = running.emulator.stats()
    assert stats["errors_injected"] > 0 and stats["rate_limited"] > 0
    assert dump(engine) == reference


def test_a_resource_stripe_keeps_failing_on_does_not_stop_the_others(engine, reference):
    with server.start(account().objects, api_key=KEY) as running:
        answer = running.emulator.handle

        def invoices_down(method, target, headers, body=b""):
            if target.startswith("/v1/invoices"):
                return json_response(500, {"error": {"type": "api_error", "message": "Invoices are down."}})
            return answer(method, target, headers, body)

        running.emulator.handle = invoices_down
        with pytest.raises(SyncIncomplete, match="invoices") as failure:
            sync(engine, source(running, max_network_retries=0), now=NOW)
        assert set(failure.value.failed) == {"invoices"}
        assert isinstance(failure.value.failed["invoices"], StripeUnavailable)
        # Every other resource's pages came in all the same (this account has no invoices to miss).
        assert dump(engine) == reference
        with engine.connect() as conn:
            unfinished = conn.execute(select(SyncWindow.resource).where(SyncWindow.done.is_(False))).scalars()
            assert set(unfinished) == {"invoices"}  # the next run asks again for the invoices only


def test_stripe_going_down_mid_backfill_stops_the_run_within_a_few_requests(engine):
    # One worker, so no request begun before the outage can succeed after it and count as a page between
    # the failures: the count is exact.
    with server.start(many_sessions(NOW - 3600, 3000), api_key=KEY) as running:

        def progress(resource, objects, pages):
            if pages == 2:
                running.emulator.reset_stats()
                running.emulator.error_rate = 1.0

        with pytest.raises(StripeUnavailable):
            sync(engine, source(running, max_network_retries=0), now=NOW, progress=progress, workers=1)
        stats = running.emulator.stats()
    # Windows of most resources were still queued: only the failures in a row that tell it is down are asked.
    assert stats["requests"] == STOP_AFTER_FAILURES
    assert "/v1/webhook_endpoints" not in stats["by_path"]  # a run that stopped asks for nothing more


def test_a_timeout_mid_sync_fails_cleanly_and_the_next_run_completes_the_store(engine, reference):
    with server.start(account().objects, api_key=KEY) as running:
        slow = source(running, max_network_retries=0, timeout=(1, 0.3))
        pages = 0

        def progress(resource, objects, n):
            nonlocal pages
            pages = n
            if n == 3:  # the server hangs from the fourth page on
                running.emulator.latency_ms = 1000

        with pytest.raises((StripeUnavailable, SyncIncomplete)):
            sync(engine, slow, now=NOW, progress=progress)
        running.emulator.latency_ms = 0
        with engine.connect() as conn:
            saved = conn.execute(select(func.count()).select_from(STRIPE_TABLES["checkout.session"])).scalar()
        assert 0 < saved < 433
        sync(engine, source(running), now=NOW)
    assert dump(engine) == reference


def test_a_sync_killed_with_sigkill_resumes_where_it_stopped(tmp_path, reference):
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    engine = store.open_store(url)
    with server.start(account().objects, api_key=KEY, latency_ms=150) as running:
        env = clean_env(
            {
                "STRIPE_API_KEY": KEY,
                "STRIPE_API_BASE": running.base_url,
                "MONITOR_DATABASE_URL": url,
                "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
            }
        )
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "sync"], cwd=REPO_ROOT, env=env)
        deadline = time.monotonic() + 60
        pages = 0
        while time.monotonic() < deadline and pages < 3:
            time.sleep(0.05)
            with engine.connect() as conn:
                pages = conn.execute(select(func.coalesce(func.sum(SyncWindow.pages), 0))).scalar()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert pages >= 3, "the sync never got going"
        running.emulator.latency_ms = 0
        resumed = sync(engine, source(running), now=NOW)
    assert dump(engine) == reference
    # The resumed run fetched only what the killed one had not saved (the windows' cursors held).
    assert resumed.objects["checkout_sessions"] < 433, "the resumed run fetched everything again"
    engine.dispose()


def test_an_incremental_run_fetches_only_what_is_new(engine):
    with server.start(account().objects, api_key=KEY) as running:
        sync(engine, source(running), now=NOW)
        running.emulator.reset_stats()
        result = sync(engine, source(running), now=NOW + 600)
        # one request per resource plus the endpoints; no event is stored pending, so no undelivered list
        assert running.emulator.stats()["requests"] == len(RESOURCES) + 1
        assert result.objects["checkout_sessions"] == 0

        newer = many_sessions(NOW + 10_000, 150, start=5000)
        running.emulator.upsert(newer)
        running.emulator.reset_stats()
        result = sync(engine, source(running), now=NOW + 10_100)
        by_path = running.emulator.stats()["by_path"]
    assert result.objects["checkout_sessions"] == 150
    assert sum(n for path, n in by_path.items() if "checkout" in path) == 2
    with engine.connect() as conn:
        assert (
            conn.execute(select(func.count()).select_from(STRIPE_TABLES["checkout.session"])).scalar() == 583
        )


def test_a_refund_made_after_the_payment_was_synced_arrives_through_its_event(engine):
    a = Account(NOW)
    pay = a.checkout_payment("late@example.com", age_s=7 * 86400)
    with server.start(a.objects, api_key=KEY) as running:
        sync(engine, source(running), now=NOW)
        charge = next(o for o in a.objects if o["id"] == pay["ch"])
        refunded = {**charge, "amount_refunded": 14900, "refunded": True}
        refunded_at = int(time.time()) + 1  # after the first sync's copy was taken
        event = {
            **next(o for o in a.objects if o["object"] == "event"),
            "id": "evt_refund",
            "type": "charge.refunded",
            "created": refunded_at,
            "data": {"object": refunded},
        }
        running.emulator.upsert([refunded, event])
        sync(engine, source(running), now=refunded_at + 30)
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT amount_refunded FROM stripe_charges WHERE id = :i"), {"i": pay["ch"]}
        )
        assert stored.scalar() == 14900


def test_a_rejected_key_is_an_auth_error_and_the_store_is_untouched(engine, reference):
    with server.start(account().objects, api_key=KEY) as running:
        sync(engine, source(running), now=NOW)
        with pytest.raises(StripeAuthError, match="401") as error:
            sync(engine, StripeSource("sk_test_wrong_key_0000", running.base_url), now=NOW + 60)
    assert "wrong_key_0000" not in str(error.value)
    assert dump(engine) == reference


def test_an_event_delivered_since_the_last_sync_is_no_longer_pending(engine):
    a = Account(NOW)
    pay = a.checkout_payment("pending@example.com")
    event = next(o for o in a.objects if o["id"] == pay["evt"])
    event["pending_webhooks"] = 1
    with server.start(a.objects, api_key=KEY) as running:
        sync(engine, source(running), now=NOW)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pending_webhooks FROM stripe_events")).scalar() == 1
        running.emulator.upsert([{**event, "pending_webhooks": 0}])
        sync(engine, source(running), now=NOW + 3600)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pending_webhooks FROM stripe_events")).scalar() == 0


def test_a_concurrent_backfill_stores_exactly_what_a_sequential_one_stores(tmp_path):
    a = Account(NOW)
    for i in range(20):
        a.checkout_payment(f"p{i}@example.com", age_s=86400 * (i + 1))
    a.objects += many_sessions(NOW - 3600, 2500)
    dumps = []
    for workers in (1, 16):
        engine = store.open_store(f"sqlite:///{tmp_path / f'w{workers}.db'}")
        with server.start(a.objects, api_key=KEY) as running:
            result = sync(engine, source(running), now=NOW, workers=workers)
        assert result.objects["checkout_sessions"] == 2520
        dumps.append(dump(engine))
        engine.dispose()
    assert dumps[0] == dumps[1]


def test_a_429_storm_ends_and_the_store_is_complete(engine, reference):
    # The emulator allows 5 requests/s and this source has no limiter of its own: most requests are
    # answered 429 at first, and the backoff must carry the sync through to the same store.
    with server.start(account().objects, api_key=KEY, rate_limit=5) as running:
        sync(engine, StripeSource(KEY, running.base_url), now=NOW, workers=8)
        assert running.emulator.stats()["rate_limited"] > 0
    assert dump(engine) == reference


def test_the_sync_never_exceeds_its_rate_limit(engine):
    from monitor.stripe_api.ratelimit import RateLimiter

    with server.start(account().objects, api_key=KEY, rate_limit=10) as running:
        sync(engine, StripeSource(KEY, running.base_url, limiter=RateLimiter(10)), now=NOW, workers=16)
        assert running.emulator.stats()["rate_limited"] == 0


def test_pages_parsed_once_by_orjson_equal_what_the_sdks_raw_request_gives():
    import stripe

    with server.start(account().objects, api_key=KEY) as running:
        ours = source(running).get("/v1/checkout/sessions", limit=100, expand=["data.customer"])
        sdk = stripe.StripeClient(KEY, base_addresses={"api": running.base_url}).raw_request(
            "get", "/v1/checkout/sessions", limit=100, expand=["data.customer"]
        )
    assert ours == sdk.data


def test_a_second_sync_of_the_same_store_waits_for_the_first_or_says_who_holds_it(engine):
    from monitor.store.leases import Lease
    from monitor.stripe_api import sync as sync_module

    other = Lease(engine, "elsewhere:1:abc", name="sync", duration=60)
    assert other.acquire()
    sync_module.SYNC_WAIT_S, waited = 0.5, sync_module.SYNC_WAIT_S
    try:
        with (
            server.start(account().objects, api_key=KEY) as running,
            pytest.raises(sync_module.SyncBusy, match="elsewhere:1:abc"),
        ):
            sync(engine, source(running), now=NOW)
    finally:
        sync_module.SYNC_WAIT_S = waited
    other.release()
