"""The monitor's store on SQLite and PostgreSQL: migrations, the payments view, findings' lifecycle."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, inspect, select

from monitor import store, views
from monitor.emulator import server
from monitor.store import db, lifecycle, snapshot
from monitor.store.models import FindingRow, JobRun
from monitor.stripe_api.source import StripeSource
from monitor.stripe_api.sync import sync
from tests.stripe_cast import Account
from tests.table_cast import finding

NOW = int(time.time())
T0 = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)


@pytest.fixture
def engine(store_engine):
    return store_engine


def test_opening_a_store_creates_every_table_and_the_payment_sources_view(engine):
    names = set(inspect(engine).get_table_names())
    assert {
        "stripe_checkout_sessions",
        "stripe_events",
        "findings",
        "job_runs",
        "sync_windows",
        "payments",
    } <= names
    assert "payment_sources" in inspect(engine).get_view_names()


def test_many_processes_may_open_a_new_store_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    with ThreadPoolExecutor(8) as pool:
        engines = list(pool.map(lambda _: store.open_store(url), range(8)))
    assert all("findings" in inspect(e).get_table_names() for e in engines)
    for e in engines:
        e.dispose()


def test_a_store_opened_while_another_process_writes_it_before_it_is_in_wal_mode_waits(tmp_path):
    """SQLite answers "database is locked" at once, busy handler or not, to PRAGMA journal_mode=WAL while
    another connection writes a file still in rollback-journal mode (two processes opening a new store at
    the same moment): opening waits for that writer instead of failing."""
    path = tmp_path / "monitor.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE early (i)")  # a file in rollback-journal mode
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO early VALUES (1)")
    with ThreadPoolExecutor(1) as pool:
        opening = pool.submit(store.open_store, f"sqlite:///{path}")
        time.sleep(0.5)
        assert not opening.done()  # waiting, not failed
        other.execute("COMMIT")
        engine = opening.result(timeout=30)
    other.close()
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert "findings" in inspect(conn).get_table_names()
    finally:
        engine.dispose()


def test_payments_are_sessions_with_refunds_and_disputes_attached(engine):
    a = Account(NOW)
    fine = a.checkout_payment("alice@example.com")
    refunded = a.checkout_payment("dave@example.com", refunded=14900)
    partly = a.checkout_payment("erin@example.com", refunded=4900)
    lost = a.checkout_payment("frank@example.com", dispute="lost")
    with server.start(a.objects, api_key="sk_test_store") as running:
        sync(engine, StripeSource("sk_test_store", running.base_url), now=NOW)
    with engine.connect() as conn:
        payments = snapshot.read_payments(conn).set_index("payment_id")
    assert set(payments.index) == {fine["cs"], refunded["cs"], partly["cs"], lost["cs"]}
    assert payments.loc[fine["cs"], "payment_intent_id"] == fine["pi"]
    assert payments.loc[fine["cs"], "customer_email"] == "alice@example.com"
    assert payments.loc[fine["cs"], "event_id"] == fine["evt"]
    assert payments.loc[fine["cs"], "amount_refunded"] == 0
    assert payments.loc[refunded["cs"], "amount_refunded"] == 14900
    assert payments.loc[partly["cs"], "amount_refunded"] == 4900
    assert payments.loc[lost["cs"], "dispute_status"] == "lost"
    assert payments.loc[fine["cs"], "created"] == datetime.fromtimestamp(fine["created"], UTC)


def statuses(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(FindingRow.key, FindingRow.status)).all())


def test_a_finding_keeps_its_identity_across_runs_and_resolves_when_gone(engine):
    kinds = ["paid_without_subscription"]
    bob, carol = finding("bob"), finding("carol")
    with engine.begin() as conn:
        first = lifecycle.apply_findings(conn, [bob, carol], kinds=kinds, now=T0)
    with engine.begin() as conn:
        second = lifecycle.apply_findings(conn, [bob], kinds=kinds, now=T0 + timedelta(minutes=5))
    assert first["opened"] == 2
    assert second == {"opened": 0, "still_open": 1, "reopened": 0, "resolved": 1}
    assert statuses(engine) == {bob.key: "open", carol.key: "resolved"}
    with engine.connect() as conn:
        row = conn.execute(select(FindingRow.__table__).where(FindingRow.key == bob.key)).one()
    assert row.first_seen == T0
    assert row.last_seen == T0 + timedelta(minutes=5)


def test_a_resolved_finding_that_comes_back_is_reopened(engine):
    kinds = ["paid_without_subscription"]
    bob = finding("bob")
    for minutes, found in ((0, [bob]), (5, []), (10, [bob])):
        with engine.begin() as conn:
            lifecycle.apply_findings(conn, found, kinds=kinds, now=T0 + timedelta(minutes=minutes))
    assert statuses(engine) == {bob.key: "open"}


def test_a_run_resolves_only_findings_of_the_kinds_it_evaluated(engine):
    failed = finding("bob", "webhook_failed")
    with engine.begin() as conn:
        lifecycle.apply_findings(conn, [failed], kinds=["webhook_failed"], now=T0)
    with engine.begin() as conn:
        lifecycle.apply_findings(conn, [], kinds=["paid_without_subscription"], now=T0)
    assert statuses(engine) == {failed.key: "open"}


def test_every_job_run_is_recorded_with_its_error(engine):
    with store.RunRecorder(engine, "sync") as run:
        run.counts = {"objects": 3}
    with pytest.raises(RuntimeError), store.RunRecorder(engine, "sync"):
        raise RuntimeError("Stripe said no")
    with engine.connect() as conn:
        runs = conn.execute(select(JobRun.__table__).order_by(JobRun.id)).all()
    assert [(r.outcome, r.error and r.error.splitlines()[0]) for r in runs] == [
        ("ok", None),
        ("failed", "Stripe said no"),
    ]
    assert runs[0].finished_at is not None


def test_on_sqlite_reads_for_the_pages_go_on_while_a_job_is_writing(sqlite_store):
    """Every store transaction begins with BEGIN IMMEDIATE on SQLite, so writers queue instead of failing;
    a read through `for_reading` begins with a plain BEGIN and is answered while a writer holds the lock."""
    engine = sqlite_store
    with ThreadPoolExecutor(2) as pool:
        with engine.begin() as job:  # a job in the middle of a write
            job.execute(insert(JobRun).values(job="sync", started_at=T0, outcome="running", counts="{}"))
            queued = pool.submit(views.status_strip, engine)
            answered = pool.submit(views.status_strip, db.for_reading(engine))
            assert answered.result(timeout=10) is not None
            assert not queued.done()  # the plain engine waits for the write lock
        assert queued.result(timeout=10) == answered.result()
