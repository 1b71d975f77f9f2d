"""Activation repair, with the real stripe SDK over HTTP to the emulator and
real SQLite and PostgreSQL app databases: exactly once under 104 concurrent callers (and a naive
check-then-insert caught by the same harness), a race with the app's own insert, every refusal recorded
and harmless, the outcomes and the ledger, roles, the webhook strategy against a receiver that verifies
Stripe's signature, and the command line."""

from __future__ import annotations

import contextlib
import gc
import http.server
import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from monitor import config, repair, store, views
from monitor.app_db import AppDatabase, load_mapping
from monitor.clock import now_utc
from monitor.emulator import server
from monitor.rules.reconcile import reconcile
from monitor.store import snapshot
from monitor.stripe_api.payment_state import PaymentState, fetch_payment_state
from monitor.stripe_api.source import StripeSource
from monitor.stripe_api.sync import sync
from tests.services import free_port
from tests.stripe_cast import Account
from tests.webhook_receiver import WebhookReceiver, insert_active_row

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
    emulator_url: str

    def activate(self, payment_id: str, operator: str = SUPPORT, **options) -> repair.RepairResult:
        return repair.activate(self.cfg, payment_id, operator, engine=self.engine, **options)

    def ledger(self, payment_id: str) -> list:
        return repair.ledger(self.engine, payment_id)

    def sync(self) -> None:
        sync(self.engine, StripeSource(KEY, self.emulator_url))


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
        return Scene(config.load(env, toml_path=toml), engine, app_url, env, toml, running.base_url)

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
    except Exception as e:  # noqa: BLE001 - the parent waits on the barrier: say why and let it go on
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
    state = fetch_payment_state(StripeSource(KEY, scene.emulator_url), pay["cs"])
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


# --- refusals: each recorded with its reason, none changes the app's database ---------------------------


def refusal_case(name: str) -> tuple[Account, str, dict]:
    """(the account, the payment id to repair, extra settings) for one refusal. Each paid-looking payment
    has a pending row a wrongful activation would flip, and paid_and_active@ has a row that must stay."""
    a = Account(NOW)
    a.row(a.checkout_payment("paid_and_active@example.com"), "paid_and_active@example.com")
    email = f"{name}@example.com"
    options = {
        "fully_refunded": {"refunded": 14900},
        "open_dispute": {"dispute": "needs_response"},
        "lost_dispute": {"dispute": "lost"},
    }.get(name, {})
    pay = a.checkout_payment(email, **options)
    a.row(pay, email, status="pending", amount=9900 if name == "row_says_less" else None)
    if name == "row_in_euros":
        a.rows[-1]["currency"] = "eur"
    if name == "unpaid_session":
        session_of(a, pay)["payment_status"] = "unpaid"
    if name == "open_session":
        session_of(a, pay).update(status="open", payment_status="unpaid")
    if name == "unknown_id":
        return a, "cs_test_NoSuchSessionAtStripe", {}
    if name == "stripe_unreachable":
        return a, pay["cs"], {"STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}"}
    return a, pay["cs"], {}


@pytest.mark.parametrize(
    "case, why",
    [
        ("unpaid_session", "is not paid (Stripe says complete/unpaid)"),
        ("open_session", "is not paid (Stripe says open/unpaid)"),
        ("fully_refunded", "was refunded in full (USD 149.00 of USD 149.00)"),
        ("open_dispute", "is disputed (needs_response)"),
        ("lost_dispute", "is disputed (lost)"),
        ("row_says_less", "says USD 99.00 but Stripe was paid USD 149.00"),
        ("row_in_euros", "says EUR 149.00 but Stripe was paid USD 149.00"),
        ("unknown_id", "unknown payment id: Stripe has no checkout_session cs_test_NoSuchSessionAtStripe"),
        ("stripe_unreachable", "Stripe unreachable, so nothing was changed"),
    ],
)
def test_a_refusal_is_recorded_with_its_reason_and_changes_nothing(stage, app_url, case, why):
    account, payment_id, settings = refusal_case(case)
    scene = stage(account, **settings)
    scene.sync()  # the snapshot knows every payment (as paid): a refusal must come from Stripe, live
    before = subscriptions(app_url)
    result = scene.activate(payment_id)
    assert (result.outcome, result.exit_status) == ("refused", 1)
    assert why in result.reason
    assert subscriptions(app_url) == before
    [entry] = scene.ledger(payment_id)
    assert (entry.outcome, entry.reason, entry.operator, entry.role) == (
        "refused",
        result.reason,
        SUPPORT,
        "support",
    )


@contextlib.contextmanager
def stripe_answering(status: int, error: dict):
    """A Stripe that answers every request with `status` and Stripe's error envelope around `error`: the
    HTTP seam, for answers the emulator never gives. Yields its base URL."""
    body = json.dumps({"error": error}).encode()

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}"
        finally:
            httpd.shutdown()
            thread.join()


@pytest.mark.parametrize(
    "status, error, why",
    [
        (  # Stripe's status and code say "no such object", whatever the words (here not Stripe's usual)
            404,
            {"type": "invalid_request_error", "code": "resource_missing", "param": "id", "message": "Gone"},
            "unknown payment id: Stripe has no checkout_session cs_test_GoneFromStripe",
        ),
        (  # words that read like a missing object, but Stripe's status and code say otherwise
            400,
            {
                "type": "invalid_request_error",
                "code": "parameter_unknown",
                "message": "No such parameter (404)",
            },
            "Stripe refused to show cs_test_GoneFromStripe: ",
        ),
    ],
    ids=["404_resource_missing", "400_worded_like_a_404"],
)
def test_a_missing_payment_is_refused_by_stripes_status_and_code_not_by_its_wording(
    stage, app_url, status, error, why
):
    scene = stage(Account(NOW))
    with stripe_answering(status, error) as url:
        result = scene.activate(
            "cs_test_GoneFromStripe", source=lambda cfg: contextlib.nullcontext(StripeSource(KEY, url))
        )
    assert (result.outcome, result.exit_status) == ("refused", 1)
    assert result.reason.startswith(why), result.reason
    assert subscriptions(app_url) == []
    [entry] = scene.ledger("cs_test_GoneFromStripe")
    assert (entry.outcome, entry.reason) == ("refused", result.reason)


# --- outcomes, dry run and the ledger ------------------------------------------------------------------


@both_databases
def test_a_pending_row_is_activated(stage, app_url):
    a = Account(NOW)
    pay = a.checkout_payment("paid_pending@example.com")
    row_id = a.row(pay, "paid_pending@example.com", status="pending")
    result = stage(a).activate(pay["cs"])
    assert (result.outcome, result.exit_status) == ("activated", 0)
    [row] = rows_of(app_url, pay)
    assert (row["id"], row["status"]) == (row_id, "active")
    assert row["activated_at"] is not None


@both_databases
def test_a_missing_row_is_created_from_what_stripe_says(stage, app_url):
    a = Account(NOW)
    pay = a.checkout_payment("paid_never_activated@example.com", amount=29900)
    result = stage(a).activate(pay["cs"])
    assert (result.outcome, result.exit_status) == ("created", 0)
    [row] = rows_of(app_url, pay)
    assert {k: row[k] for k in ("customer_email", "stripe_customer_id", "stripe_checkout_session_id")} == {
        "customer_email": "paid_never_activated@example.com",
        "stripe_customer_id": pay["cus"],
        "stripe_checkout_session_id": pay["cs"],
    }
    assert (row["stripe_payment_intent_id"], row["amount"], row["currency"]) == (pay["pi"], 29900, "usd")
    assert row["status"] == "active" and row["activated_at"] is not None


def test_an_active_row_is_already_active_and_nothing_is_written(stage, app_url):
    a = Account(NOW)
    pay = a.checkout_payment("paid_and_active@example.com")
    a.row(pay, "paid_and_active@example.com")
    scene = stage(a)
    before = subscriptions(app_url)
    result = scene.activate(pay["cs"])
    assert (result.outcome, result.exit_status) == ("already_active", 0)
    assert subscriptions(app_url) == before


def test_a_second_activation_is_already_active_and_adds_no_row(stage, app_url):
    a = Account(NOW)
    pay = a.checkout_payment("paid_never_activated@example.com")
    scene = stage(a)
    assert scene.activate(pay["cs"]).outcome == "created"
    after_first = subscriptions(app_url)
    assert scene.activate(pay["cs"]).outcome == "already_active"
    assert subscriptions(app_url) == after_first and len(after_first) == 1
    assert [e.outcome for e in scene.ledger(pay["cs"])] == ["already_active", "created"]  # newest first


def test_a_dry_run_returns_the_plan_changes_nothing_and_is_recorded_as_planned(stage, app_url):
    a = Account(NOW)
    missing = a.checkout_payment("paid_never_activated@example.com")
    pending = a.checkout_payment("paid_pending@example.com")
    row_id = a.row(pending, "paid_pending@example.com", status="pending")
    scene = stage(a)
    before = subscriptions(app_url)
    create = scene.activate(missing["cs"], dry_run=True)
    activate = scene.activate(pending["cs"], dry_run=True)
    assert subscriptions(app_url) == before
    assert (create.outcome, create.exit_status) == ("planned", 0)
    assert create.plan == {
        "action": "create",
        "row": {
            "email": "paid_never_activated@example.com",
            "customer_id": missing["cus"],
            "checkout_session_id": missing["cs"],
            "payment_intent_id": missing["pi"],
            "stripe_subscription_id": None,
            "amount": 14900,
            "currency": "usd",
        },
    }
    assert activate.plan == {"action": "activate", "row": {"id": row_id, "status": "pending"}}
    for pay in (missing, pending):
        [entry] = scene.ledger(pay["cs"])
        assert (entry.outcome, entry.dry_run) == ("planned", True)


def test_the_ledger_row_holds_operator_role_strategy_stripe_state_and_the_rows_before_and_after(stage):
    a = Account(NOW)
    pay = a.checkout_payment("paid_pending@example.com")
    row_id = a.row(pay, "paid_pending@example.com", status="pending")
    scene = stage(a)
    result = scene.activate(pay["cs"], operator="Admin@Example.com")
    [entry] = scene.ledger(pay["cs"])
    assert entry.id == result.ledger_id
    assert (entry.operator, entry.role, entry.strategy, entry.dry_run, entry.outcome) == (
        "Admin@Example.com",
        "admin",
        "db",
        False,
        "activated",
    )
    seen = json.loads(entry.stripe_state)
    assert {
        k: seen[k] for k in ("payment_id", "paid", "amount", "currency", "amount_refunded", "disputes")
    } == {
        "payment_id": pay["cs"],
        "paid": True,
        "amount": 14900,
        "currency": "usd",
        "amount_refunded": 0,
        "disputes": [],
    }
    assert [(r["id"], r["status"]) for r in json.loads(entry.rows_before)] == [(row_id, "pending")]
    assert [(r["id"], r["status"]) for r in json.loads(entry.rows_after)] == [(row_id, "active")]
    assert entry.started_at <= entry.finished_at


@pytest.mark.parametrize(
    "case",
    ["upper_case_currency_on_the_row", "partially_refunded", "dispute_won"],
)
def test_a_payment_that_only_looks_odd_is_activated(stage, app_url, case):
    a = Account(NOW)
    email = f"{case}@example.com"
    pay = a.checkout_payment(
        email,
        refunded=4900 if case == "partially_refunded" else 0,
        dispute="won" if case == "dispute_won" else None,
    )
    a.row(pay, email, status="pending")
    if case == "upper_case_currency_on_the_row":
        a.rows[-1]["currency"] = "USD"  # "USD" and "usd" are one currency
    result = stage(a).activate(pay["cs"])
    assert result.outcome == "activated", result.reason
    assert [r["status"] for r in rows_of(app_url, pay)] == ["active"]


# --- roles ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "operator, role",
    [("viewer@example.com", "viewer"), ("finance@example.com", "finance"), ("stranger@example.com", None)],
)
def test_only_support_and_admin_may_activate_and_a_refused_operator_is_recorded(
    stage, app_url, operator, role
):
    a = Account(NOW)
    pay = a.checkout_payment("paid_never_activated@example.com")
    scene = stage(a)
    result = scene.activate(pay["cs"], operator=operator)
    assert result.outcome == "refused"
    assert f"{operator} may not activate subscriptions" in result.reason
    assert subscriptions(app_url) == []
    [entry] = scene.ledger(pay["cs"])
    assert (entry.operator, entry.role, entry.outcome) == (operator, role, "refused")


@pytest.mark.parametrize("operator", ["support@example.com", "admin@example.com"])
def test_support_and_admin_may_activate(stage, app_url, operator):
    a = Account(NOW)
    pay = a.checkout_payment("paid_never_activated@example.com")
    assert stage(a).activate(pay["cs"], operator=operator).outcome == "created"
    assert len(rows_of(app_url, pay)) == 1


def test_without_operator_roles_nobody_may_activate_outside_demo_mode(stage, app_url):
    a = Account(NOW)
    pay = a.checkout_payment("paid_never_activated@example.com")
    result = stage(a, OPERATOR_ROLES=None).activate(pay["cs"], operator="admin@example.com")
    assert result.outcome == "refused" and "not in OPERATOR_ROLES" in result.reason
    assert subscriptions(app_url) == []


# --- the webhook strategy ------------------------------------------------------------------------------


def test_the_webhook_strategy_resends_the_signed_event_and_the_apps_row_appears(stage, app_url):
    a = Account(NOW)
    pay = a.checkout_payment("webhook_never_arrived@example.com")
    with WebhookReceiver(app_url, WEBHOOK_SECRET) as hook:
        scene = stage(a, EXPECTED_WEBHOOK_URL=hook.url, WEBHOOK_SECRET=WEBHOOK_SECRET)
        scene.sync()
        result = scene.activate(pay["cs"], strategy="webhook")
    assert (result.outcome, result.strategy) == ("activated", "webhook"), result.reason
    assert [(d.status, d.event_type) for d in hook.deliveries] == [(200, "checkout.session.completed")]
    assert hook.deliveries[0].signature.startswith("t=") and ",v1=" in hook.deliveries[0].signature
    [row] = rows_of(app_url, pay)
    assert (row["status"], row["amount"], row["customer_email"]) == (
        "active",
        14900,
        "webhook_never_arrived@example.com",
    )
    [entry] = scene.ledger(pay["cs"])
    assert (entry.strategy, entry.outcome) == ("webhook", "activated")


def test_an_event_signed_with_the_wrong_secret_is_rejected_and_the_repair_failed(stage, app_url):
    a = Account(NOW)
    pay = a.checkout_payment("webhook_never_arrived@example.com")
    with WebhookReceiver(app_url, WEBHOOK_SECRET) as hook:
        scene = stage(a, EXPECTED_WEBHOOK_URL=hook.url, WEBHOOK_SECRET="whsec_not_the_endpoints_secret")
        scene.sync()
        result = scene.activate(pay["cs"], strategy="webhook")
    assert [d.status for d in hook.deliveries] == [400]
    assert (result.outcome, result.exit_status) == ("failed", 1)
    assert "answered 400" in result.reason
    assert subscriptions(app_url) == []
    [entry] = scene.ledger(pay["cs"])
    assert (entry.strategy, entry.outcome) == ("webhook", "failed")


def test_the_webhook_strategy_sends_nothing_for_an_active_row(stage, app_url):
    a = Account(NOW)
    pay = a.checkout_payment("paid_and_active@example.com")
    a.row(pay, "paid_and_active@example.com")
    with WebhookReceiver(app_url, WEBHOOK_SECRET) as hook:
        scene = stage(a, EXPECTED_WEBHOOK_URL=hook.url, WEBHOOK_SECRET=WEBHOOK_SECRET)
        scene.sync()
        result = scene.activate(pay["cs"], strategy="webhook")
    assert result.outcome == "already_active"
    assert hook.deliveries == []


def test_the_webhook_strategy_without_the_event_in_the_store_fails_and_says_to_sync(stage, app_url):
    a = Account(NOW)
    pay = a.checkout_payment("webhook_never_arrived@example.com")
    with WebhookReceiver(app_url, WEBHOOK_SECRET) as hook:
        scene = stage(a, EXPECTED_WEBHOOK_URL=hook.url, WEBHOOK_SECRET=WEBHOOK_SECRET)
        result = scene.activate(pay["cs"], strategy="webhook")
    assert result.outcome == "failed" and "sync first" in result.reason
    assert hook.deliveries == [] and subscriptions(app_url) == []


# --- the command line ----------------------------------------------------------------------------------


def test_the_repair_command_exits_0_when_done_1_when_refused_2_for_bad_input(stage, cli_main):
    a = Account(NOW)
    pay = a.checkout_payment("paid_never_activated@example.com")
    refunded = a.checkout_payment("fully_refunded@example.com", refunded=14900)
    scene = stage(a)
    runs = [
        (["repair", pay["cs"], "--operator", SUPPORT], 0, "CREATED"),
        (["repair", pay["cs"], "--operator", SUPPORT], 0, "ALREADY ACTIVE"),
        (["repair", refunded["cs"], "--operator", SUPPORT], 1, "REFUSED"),
        (["repair", pay["cs"], "--operator", "viewer@example.com"], 1, "REFUSED"),
        (["repair", "bogus", "--operator", SUPPORT], 2, "error: 'bogus' is not a Checkout Session"),
        (["repair", pay["cs"]], 2, "the following arguments are required: --operator"),
        (["repair", pay["cs"], "--operator", SUPPORT, "--strategy", "fax"], 2, "invalid choice"),
    ]
    for args, status, says in runs:
        run = cli_main(args, env=scene.env)
        assert run.returncode == status, (args, run.stdout, run.stderr)
        assert says in run.stdout + run.stderr, (args, run.stdout, run.stderr)
        assert "Traceback" not in run.stdout + run.stderr
    assert len(rows_of(scene.app_url, pay)) == 1


def demo_case(tmp_env: dict, name: str) -> dict:
    """A case of the demo scenario, as the CLI in demo mode will serve it (creates the demo app database)."""
    from monitor.emulator.demo import build_demo, ensure_demo_app_db

    return build_demo(ensure_demo_app_db(tmp_env["APP_DATABASE_URL"])).cases[name]


def test_in_demo_mode_any_operator_is_admin(cli_main, tmp_env):
    incident = demo_case(tmp_env, "incident")
    run = cli_main(["repair", incident["payment_id"], "--operator", "anyone@example.org", "--dry-run"])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "DRY RUN" in run.stdout and "role admin" in run.stdout


def test_in_demo_mode_the_refunded_payment_is_refused_with_status_1_and_a_ledger_row(cli_main, tmp_env):
    refunded = demo_case(tmp_env, "refunded_active")
    run = cli_main(["repair", refunded["payment_id"], "--operator", SUPPORT])
    assert run.returncode == 1, run.stdout + run.stderr
    assert "REFUSED" in run.stdout and "refunded in full" in run.stdout
    engine = store.open_store(tmp_env["MONITOR_DATABASE_URL"])
    try:
        [entry] = repair.ledger(engine, refunded["payment_id"])
    finally:
        engine.dispose()
    assert (entry.outcome, entry.operator) == ("refused", SUPPORT)


def test_in_demo_mode_the_usd_149_incident_is_activated_once_and_its_finding_resolves(cli_main, tmp_env):
    assert cli_main(["sync"]).returncode == 0

    def open_findings(pid: str) -> set[str]:
        run = cli_main(["reconcile", "--json"])
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        return {f["kind"] for f in report["findings"] if f["payment_id"] == pid and f["status"] == "open"}

    incident = demo_case(tmp_env, "incident")
    pid = incident["payment_id"]
    assert "paid_without_subscription" in open_findings(pid)
    first = cli_main(["repair", pid, "--operator", SUPPORT])
    assert first.returncode == 0 and "CREATED" in first.stdout, first.stdout + first.stderr
    rows = subscriptions(tmp_env["APP_DATABASE_URL"])
    again = cli_main(["repair", pid, "--operator", SUPPORT])
    assert again.returncode == 0 and "ALREADY ACTIVE" in again.stdout, again.stdout + again.stderr
    assert subscriptions(tmp_env["APP_DATABASE_URL"]) == rows
    assert [r["status"] for r in rows if r["stripe_checkout_session_id"] == pid] == ["active"]
    assert not open_findings(pid) & {"paid_without_subscription", "subscription_not_active"}


def open_files(prefix: str) -> list[str]:
    """This process's open file descriptors on files whose path starts with `prefix` (Linux /proc)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith(prefix):
                found.append(os.readlink(fd))
    return found


def test_racing_repairs_leave_no_app_connection_open_once_the_app_database_is_disposed(tmp_path):
    app_url = f"sqlite:///{tmp_path / 'app.db'}"
    Account(NOW).write_app_db(app_url)
    gc.disable()  # a leaked connection must still be open when counted, not closed by a collection
    try:
        for _ in range(10):
            app = AppDatabase(app_url, load_mapping("default"))
            start = threading.Barrier(50)

            def enter(app=app, start=start):
                start.wait()
                with app.serialized("cs_cast000001"):
                    pass

            threads = [threading.Thread(target=enter) for _ in range(50)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            app.dispose()
            assert open_files(str(tmp_path / "app.db")) == []
    finally:
        gc.enable()
        gc.collect()


# --- one payment, whichever of its ids: cs_, in_ or pi_ --------------------------------------------------


def slow_inserts(app_url: str, seconds: float = 0.5) -> None:
    """Every INSERT into the app's subscriptions sleeps first (a BEFORE INSERT trigger), so two repairs that
    are not serialized against each other both get past their check before either commits: the race is
    certain, not likely."""
    engine = create_engine(app_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$$ BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER slow_insert BEFORE INSERT ON subscriptions "
                    "FOR EACH ROW EXECUTE FUNCTION slow_insert()"
                )
            )
    finally:
        engine.dispose()


def at_once(scene: Scene, payment_ids: list[str]) -> list[repair.RepairResult]:
    """One repair per id, all started at the same moment (one thread each); their results in that order."""
    start = threading.Barrier(len(payment_ids))

    def run(payment_id: str) -> repair.RepairResult:
        start.wait()
        return scene.activate(payment_id)

    with ThreadPoolExecutor(max_workers=len(payment_ids)) as pool:
        return list(pool.map(run, payment_ids))


def assert_repaired_once(scene: Scene, results: list[repair.RepairResult], given: list[str], canonical: str):
    """One active row, one repair that made it, the other done already; the ledger names the id each was
    given and the one payment they both are."""
    rows = subscriptions(scene.app_url)
    assert [r["status"] for r in rows] == ["active"], [(r["id"], r["status"]) for r in rows]
    outcomes = sorted(r.outcome for r in results)
    assert outcomes in (["already_active", "created"], ["created", "in_progress"]), [
        (r.outcome, r.reason) for r in results
    ]
    assert [r.payment_id for r in results] == [canonical, canonical]
    entries = scene.ledger(canonical)
    assert sorted((e.requested_id, e.payment_id) for e in entries) == sorted((g, canonical) for g in given)
    for other in set(given) - {canonical}:  # the ledger is also read by the id that was given
        assert [(e.requested_id, e.payment_id) for e in scene.ledger(other)] == [(other, canonical)]


SYNCED = pytest.mark.parametrize("synced", [False, True], ids=["only_stripe_knows", "store_synced"])


@pytest.mark.parametrize("app_url", ["postgresql"], indirect=True)
@SYNCED
def test_a_payment_repaired_at_once_by_its_session_and_its_intent_gets_one_row(stage, synced):
    a = Account(NOW)
    pay = a.checkout_payment("paid_never_activated@example.com")
    scene = stage(a)
    if synced:
        scene.sync()
    slow_inserts(scene.app_url)
    results = at_once(scene, [pay["cs"], pay["pi"]])
    assert_repaired_once(scene, results, [pay["cs"], pay["pi"]], pay["cs"])
    [row] = subscriptions(scene.app_url)
    assert (row["stripe_checkout_session_id"], row["stripe_payment_intent_id"]) == (pay["cs"], pay["pi"])


@pytest.mark.parametrize("app_url", ["postgresql"], indirect=True)
@SYNCED
@pytest.mark.parametrize("other", ["in", "pi"])
def test_a_subscription_checkout_repaired_at_once_by_its_session_and_its_invoice_or_intent_gets_one_row(
    stage, synced, other
):
    a = Account(NOW)
    pay = a.subscription_checkout("subscribed_never_activated@example.com")
    first = pay["invoices"][0]
    scene = stage(a)
    if synced:
        scene.sync()
    slow_inserts(scene.app_url)
    given = [pay["cs"], first["in"] if other == "in" else first["pis"][0]]
    results = at_once(scene, given)
    assert_repaired_once(scene, results, given, pay["cs"])
    [row] = subscriptions(scene.app_url)
    assert (row["stripe_checkout_session_id"], row["stripe_subscription_id"]) == (pay["cs"], pay["sub"])


@pytest.mark.parametrize("app_url", ["postgresql"], indirect=True)
@SYNCED
def test_a_renewal_repaired_at_once_by_its_invoice_and_its_intent_is_the_invoices_payment(stage, synced):
    a = Account(NOW)
    pay = a.subscription_checkout("renewed@example.com", age_s=40 * 86400, renewals=1)
    renewal = pay["invoices"][1]
    scene = stage(a)
    if synced:
        scene.sync()
    slow_inserts(scene.app_url)
    results = at_once(scene, [renewal["in"], renewal["pis"][0]])
    assert_repaired_once(scene, results, [renewal["in"], renewal["pis"][0]], renewal["in"])


def test_a_repair_by_the_intent_of_a_session_writes_the_sessions_row_and_says_so(stage, app_url):
    a = Account(NOW)
    pay = a.checkout_payment("paid_never_activated@example.com", amount=29900)
    scene = stage(a)
    result = scene.activate(pay["pi"])
    assert (result.outcome, result.payment_id, result.requested_id) == ("created", pay["cs"], pay["pi"])
    assert f"{pay['pi']} is part of payment {pay['cs']}" in result.reason
    [row] = rows_of(app_url, pay)
    assert (row["stripe_checkout_session_id"], row["stripe_payment_intent_id"], row["amount"]) == (
        pay["cs"],
        pay["pi"],
        29900,
    )
    assert scene.activate(pay["cs"]).outcome == "already_active"
    assert [(e.requested_id, e.payment_id, e.outcome) for e in scene.ledger(pay["pi"])] == [
        (pay["pi"], pay["cs"], "created")
    ]
    audit = views.audit_log(scene.engine)["repairs"]
    assert audit[["requested_id", "payment_id", "outcome"]].values.tolist() == [
        [pay["cs"], pay["cs"], "already_active"],
        [pay["pi"], pay["cs"], "created"],
    ]


def test_a_refusal_before_stripe_is_asked_still_names_the_payment_the_store_knows(stage, app_url):
    a = Account(NOW)
    pay = a.checkout_payment("paid_never_activated@example.com")
    scene = stage(a)
    scene.sync()
    result = scene.activate(pay["pi"], operator="viewer@example.com")
    assert (result.outcome, result.payment_id, result.requested_id) == ("refused", pay["cs"], pay["pi"])
    [entry] = scene.ledger(pay["cs"])
    assert (entry.requested_id, entry.payment_id) == (pay["pi"], pay["cs"])
