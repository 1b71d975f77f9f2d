"""Activation repair (DESIGN.md "Activation repair"), with the real stripe SDK over HTTP to the emulator and
real SQLite and PostgreSQL app databases: exactly once under 104 concurrent callers (and a naive
check-then-insert caught by the same harness), a race with the app's own insert, every refusal recorded
and harmless, the outcomes and the ledger, roles, the webhook strategy against a receiver that verifies
Stripe's signature, and the command line."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from monitor import config, repair, snapshot, store
from monitor.app_db import AppDatabase, load_mapping
from monitor.emulator import server
from monitor.models import now_utc
from monitor.payment_state import PaymentState, fetch_payment_state
from monitor.reconcile import reconcile
from monitor.stripe_source import StripeSource
from monitor.sync import sync
from tests.stripe_cast import Account
from tests.webhook_receiver import insert_active_row

KEY = "sk_test_repair"
NOW = int(time.time())
SUPPORT = "support@example.com"
ROLES = "support@example.com=support,viewer@example.com=viewer,finance@example.com=finance,admin@example.com=admin"
WEBHOOK_SECRET = "whsec_repair_tests_0123456789"
THREADS, PROCESSES = 100, 4


# --- the stage: an emulator, an app database, a store, a configuration ---------------------------------


def subscriptions(app_url: str) -> list[dict]:
    """The app's whole subscriptions table, in id order."""
    engine = create_engine(app_url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(text("SELECT * FROM subscriptions ORDER BY id")).mappings()]
    finally:
        engine.dispose()


def rows_of(app_url: str, pay: dict) -> list[dict]:
    return [
        r
        for r in subscriptions(app_url)
        if r["stripe_checkout_session_id"] == pay["cs"] or r["stripe_payment_intent_id"] == pay["pi"]
    ]


def session_of(account: Account, pay: dict) -> dict:
    return next(o for o in account.objects if o["id"] == pay["cs"])


@dataclass
class Scene:
    cfg: config.Config
    engine: Engine  # the monitor's store
    app_url: str
    env: dict[str, str]
    toml: Path

    def activate(self, payment_id: str, operator: str = SUPPORT, **options) -> repair.RepairResult:
        return repair.activate(self.cfg, payment_id, operator, engine=self.engine, **options)

    def ledger(self, payment_id: str) -> list:
        return repair.ledger(self.engine, payment_id)

    def sync(self) -> None:
        sync(self.engine, StripeSource(KEY, self.cfg.stripe_api_base))


@pytest.fixture
def app_url(request, tmp_path) -> str:
    """The app's database: a SQLite file, or a fresh PostgreSQL database (parametrized indirectly)."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def stage(tmp_path, app_url):
    """`stage(account, **settings) -> Scene`: serve `account` from the emulator, write its rows to the app
    database, open a store. A setting given as None is left unset."""
    closing = []

    def build(account: Account, **settings) -> Scene:
        running = server.start(account.objects, api_key=KEY)
        closing.append(running.stop)
        account.write_app_db(app_url)
        engine = store.open_store(f"sqlite:///{tmp_path / 'monitor.db'}")
        closing.append(engine.dispose)
        env = {
            "STRIPE_API_KEY": KEY,
            "STRIPE_API_BASE": running.base_url,
            "APP_DATABASE_URL": app_url,
            "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'monitor.db'}",
            "OPERATOR_ROLES": ROLES,
            **settings,
        }
        env = {k: v for k, v in env.items() if v is not None}
        toml = tmp_path / "none.toml"
        return Scene(config.load(env, toml_path=toml), engine, app_url, env, toml)

    yield build
    for close in reversed(closing):
        close()


both_databases = pytest.mark.parametrize("app_url", ["sqlite", "postgresql"], indirect=True)


# --- exactly once: one harness for 100 threads and 4 processes ---------------------------------------------


def naive_activation(app: AppDatabase, state: PaymentState) -> str:
    """The bug the design forbids (the incident's "triple fallback"): the same decision and the same INSERT
    as the repair, but the check in one transaction and the write in another."""
    with app.engine.connect() as conn:
        action, values = repair._decide(app, state, repair._rows_for(app, conn, state))
    if action == "none":
        return "already_active"
    time.sleep(0.02)  # the round trip a real app makes between its check and its write
    with app.engine.begin() as conn:
        app.create_row(conn, values, now_utc())
    return "created"


@dataclass(frozen=True)
class StepRacer:
    """Each caller runs one activation step against the app's database: repair's own serialized step
    (no claim in the store in front of it) or the naive check-then-insert."""

    app_url: str
    state: dict
    naive: bool

    def open(self) -> AppDatabase:
        return AppDatabase(self.app_url, load_mapping("default"))

    def run(self, app: AppDatabase) -> str:
        state = PaymentState(**self.state)
        if self.naive:
            return naive_activation(app, state)
        result = repair.RepairResult(state.payment_id, SUPPORT, "support", "db", False, "refused", "")
        repair._apply_in_app(app, state, result)
        return result.outcome

    def close(self, app: AppDatabase) -> None:
        app.dispose()


@dataclass(frozen=True)
class ActivateRacer:
    """Each caller runs the whole repair.activate, as the dashboard's button and the CLI do."""

    env: dict
    toml: str
    payment_id: str

    def open(self) -> tuple:
        cfg = config.load(self.env, toml_path=Path(self.toml))
        return (
            cfg,
            store.open_store(cfg.monitor_database_url),
            AppDatabase(cfg.app_database_url, load_mapping("default")),
        )

    def run(self, opened: tuple) -> str:
        cfg, engine, app = opened
        return repair.activate(cfg, self.payment_id, SUPPORT, engine=engine, app=app).outcome

    def close(self, opened: tuple) -> None:
        opened[1].dispose()
        opened[2].dispose()


def _released(barrier, racer, opened) -> str:
    try:
        barrier.wait()
        return racer.run(opened)
    except Exception as e:  # noqa: BLE001 - reported as an outcome, so the counts still show
        return f"error: {type(e).__name__}: {e}"


def _race_in_child(racer, barrier, answers) -> None:
    try:
        opened = racer.open()
    except Exception as e:  # noqa: BLE001
        barrier.abort()
        answers.put(f"error: {type(e).__name__}: {e}")
        return
    try:
        answers.put(_released(barrier, racer, opened))
    finally:
        racer.close(opened)


def race(racer, *, threads: int = THREADS, processes: int = PROCESSES) -> list[str]:
    """Run `racer` in `threads` threads here and in `processes` spawned processes, all released at the same
    moment by one barrier (each opened its databases before it); the outcome of every caller."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(threads + processes, timeout=90)
    answers = ctx.Queue()
    children = [ctx.Process(target=_race_in_child, args=(racer, barrier, answers)) for _ in range(processes)]
    for child in children:
        child.start()
    try:
        opened = racer.open()
        try:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                outcomes = list(pool.map(lambda _: _released(barrier, racer, opened), range(threads)))
        finally:
            racer.close(opened)
        outcomes += [answers.get(timeout=90) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    return outcomes


@both_databases
@pytest.mark.parametrize("naive", [False, True], ids=["serialized_step", "naive_check_then_insert"])
def test_104_racing_activation_steps_leave_one_row_and_check_then_insert_does_not(stage, naive):
    a = Account(NOW)
    pay = a.checkout_payment("paid_never_activated@example.com")
    scene = stage(a)
    state = fetch_payment_state(StripeSource(KEY, scene.cfg.stripe_api_base), pay["cs"])
    outcomes = race(StepRacer(scene.app_url, state.to_json(), naive))
    rows = rows_of(scene.app_url, pay)
    assert not [o for o in outcomes if o.startswith("error")], outcomes
    if naive:
        # The harness catches the bug: without serialization, racing callers each insert a row.
        assert len(rows) > 1, f"the naive version left {len(rows)} row: the harness did not race"
        assert outcomes.count("created") == len(rows)
    else:
        assert [r["status"] for r in rows] == ["active"]
        assert sorted(set(outcomes)) == ["already_active", "created"]
        assert outcomes.count("created") == 1


@both_databases
def test_100_threads_and_4_processes_activating_one_payment_leave_exactly_one_active_row(stage):
    a = Account(NOW)
    pay = a.checkout_payment("paid_never_activated@example.com")
    scene = stage(a)
    outcomes = race(ActivateRacer(scene.env, str(scene.toml), pay["cs"]))
    assert [r["status"] for r in rows_of(scene.app_url, pay)] == ["active"]
    assert outcomes.count("created") == 1
    assert set(outcomes) <= {"created", "already_active", "in_progress"}, outcomes
    ledger = scene.ledger(pay["cs"])
    assert len(ledger) == THREADS + PROCESSES  # every call is recorded
    assert [r.outcome for r in ledger].count("created") == 1


@both_databases
def test_a_repair_racing_the_apps_own_insert_ends_with_one_row_or_a_reported_duplicate(stage):
    a = Account(NOW)
    pays = [a.checkout_payment(f"raced_by_the_app_{i}@example.com") for i in range(8)]
    scene = stage(a)
    outcomes = {}
    app_engine = create_engine(scene.app_url)
    try:
        for i, pay in enumerate(pays):
            start = threading.Barrier(2)

            def app_fulfils(pay=pay, delay=i * 0.01, start=start):
                start.wait()
                time.sleep(delay)  # from "at once" to "a little after the repair began"
                with app_engine.begin() as conn:  # the app's own transaction: no advisory lock
                    insert_active_row(conn, session_of(a, pay))

            app = threading.Thread(target=app_fulfils)
            app.start()
            start.wait()
            outcomes[pay["cs"]] = scene.activate(pay["cs"]).outcome
            app.join()
    finally:
        app_engine.dispose()

    scene.sync()
    with scene.engine.connect() as conn:
        payments = snapshot.read_payments(conn)
    db = AppDatabase(scene.app_url, load_mapping("default"))
    try:
        found = reconcile(payments, db.read_subscriptions(), now=now_utc(), grace=timedelta(minutes=10))
    finally:
        db.dispose()
    duplicated = {f.payment_id for f in found.findings if f.kind == "duplicate_subscription"}
    for pay in pays:
        active = [r for r in rows_of(scene.app_url, pay) if r["status"] == "active"]
        if outcomes[pay["cs"]] == "already_active":  # the app's row was committed first: the repair saw it
            assert len(active) == 1 and pay["cs"] not in duplicated
        else:  # the repair created its row first (or beside it), and the app inserted anyway
            assert outcomes[pay["cs"]] == "created"
            assert len(active) == 2 and pay["cs"] in duplicated
