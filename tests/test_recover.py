"""`python -m monitor incidents` and `recover` end to end on the demo, as on-call runs them at 3 a.m.: the
Redis outage and the staging endpoint found as incidents, a dry run that changes nothing, recoveries run
at once from several processes that activate each payment exactly once, on a SQLite and on a PostgreSQL
app database, and bad input as one line with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine

from monitor import actions, config, store
from monitor.app_db import AppDatabase, load_mapping
from monitor.clock import now_utc
from monitor.repair import ledger
from monitor.store.lifecycle import current_findings
from monitor.views import find_incident, open_incidents
from tests.conftest import REPO_ROOT
from tests.services import clean_env, run_cli
from tests.test_repair import subscriptions

SUPPORT = "support@example.com"
ROLES = "support@example.com=support,viewer@example.com=viewer"
REDIS = "redis:channels"


def demo_env(tmp_path, app_url: str | None = None, cli=run_cli) -> dict[str, str]:
    """Demo mode (no STRIPE_API_KEY: the emulator in-process), its databases under tmp_path, synced and
    reconciled by `cli` (run_cli, or the cli_main fixture)."""
    env = {
        "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'monitor.db'}",
        "APP_DATABASE_URL": app_url or f"sqlite:///{tmp_path / 'app.db'}",
    }
    for step in (["sync"], ["reconcile"]):
        run = cli(step, env)
        assert run.returncode == 0, run.stdout + run.stderr
    return env


def incidents_of(env: dict[str, str], cli=run_cli) -> list[dict]:
    run = cli(["incidents", "--json"], env)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)["incidents"]


def redis_incident(incidents: list[dict]) -> dict:
    [outage] = [i for i in incidents if i["cause"]["kind"] == "outage" and i["cause"]["component"] == REDIS]
    return outage


def usd_149_payment(env: dict[str, str]) -> str:
    """The demo's incident: the USD 149 payment the Redis outage left without a subscription."""
    with opened(env["MONITOR_DATABASE_URL"]) as engine, engine.connect() as conn:
        [pid] = [
            f.payment_id
            for f in current_findings(conn, kinds=("paid_without_subscription",))
            if f.amount == 14900 and f.currency == "usd"
        ]
    return pid


class opened:
    """The monitor's store at `url`, disposed at the end of the `with`."""

    def __init__(self, url: str):
        self.engine = store.open_store(url)

    def __enter__(self):
        return self.engine

    def __exit__(self, *exc):
        self.engine.dispose()


def active_rows(app_url: str, payment_id: str) -> int:
    return sum(
        1
        for r in subscriptions(app_url)
        if payment_id in (r["stripe_checkout_session_id"], r["stripe_payment_intent_id"])
        and str(r["status"]).lower() == "active"
    )


def recoverable_payments(env: dict[str, str], incident_ids: list[str]) -> set[str]:
    """The payments of the incidents' recoverable findings, as the store has them now."""
    cfg = config.load(env, toml_path=REPO_ROOT / "no-such.toml")
    app = AppDatabase(env["APP_DATABASE_URL"], load_mapping("default"))
    try:
        with opened(env["MONITOR_DATABASE_URL"]) as engine:
            found = [find_incident(engine, app, cfg, i, now=now_utc()) for i in incident_ids]
            wanted = {f for incident in found if incident for f in incident.recoverable_ids}
            with engine.connect() as conn:
                return {f.payment_id for f in current_findings(conn) if f.id in wanted}
    finally:
        app.dispose()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, str]:
    """One synced and reconciled demo for the tests that change nothing in the app's database."""
    return demo_env(tmp_path_factory.mktemp("demo"))


# --- incidents ---------------------------------------------------------------------------------------------


def test_the_demo_lists_the_redis_outage_holding_the_usd_149_payment_and_the_staging_endpoint(cli_main, demo):
    incidents = incidents_of(demo, cli_main)
    outage = redis_incident(incidents)
    assert usd_149_payment(demo) in outage["payment_ids"]
    assert outage["status"] == "open" and outage["customers"] >= 1 and outage["recoverable"] >= 1
    assert outage["amount_at_risk"]["usd"] >= 14900
    assert outage["cause"]["from"] and "Error 111" in outage["cause"]["detail"]
    [endpoint] = [i for i in incidents if i["cause"]["kind"] == "endpoint"]
    assert "https://staging.example-saas.com/stripe/webhook" in endpoint["cause"]["detail"]
    assert endpoint["customers"] > 10  # one misconfigured endpoint, many customers


def test_the_incidents_table_names_each_cause_with_its_customers_money_and_what_can_be_recovered(
    cli_main, demo
):
    run = cli_main(["incidents"], demo)
    assert run.returncode == 0, run.stderr
    outage = redis_incident(incidents_of(demo, cli_main))
    [line] = [line for line in run.stdout.splitlines() if outage["id"] in line]
    assert f"{REDIS} down" in line and "UTC" in line and "USD 149.00" in line
    assert "webhook endpoint misconfigured" in run.stdout and "staging.example-saas.com" in run.stdout


def test_an_unreadable_app_database_leaves_out_the_app_error_incidents_and_nothing_else(
    cli_main, demo, tmp_path
):
    cfg = config.load(demo, toml_path=tmp_path / "none.toml")
    empty = tmp_path / "empty.db"
    create_engine(f"sqlite:///{empty}").connect().close()  # a database without the app's tables
    broken = AppDatabase(f"sqlite:///{empty}", load_mapping("default"))
    working = AppDatabase(demo["APP_DATABASE_URL"], load_mapping("default"))
    try:
        with opened(demo["MONITOR_DATABASE_URL"]) as engine:
            with_app = open_incidents(engine, working, cfg, now=now_utc())
            without = open_incidents(engine, broken, cfg, now=now_utc())
    finally:
        broken.dispose()
        working.dispose()
    assert "app_error" in {i.cause.kind for i in with_app}
    assert "app_error" not in {i.cause.kind for i in without}
    others = {i.id for i in with_app if i.cause.kind != "app_error"}
    assert others <= {i.id for i in without}


# --- closing a recovered customer's webhook findings ----------------------------------------------------------


def test_a_closed_finding_stays_acknowledged_while_reconcile_still_sees_it_and_resolves_when_it_goes(
    store_engine,
):
    from monitor.rules.findings import Finding
    from monitor.store.lifecycle import apply_findings, close_findings

    missing = Finding(
        "webhook_missing", "webhook_missing:evt_dana", payment_id="cs_dana", event_id="evt_dana"
    )
    other = Finding("webhook_missing", "webhook_missing:evt_eli", payment_id="cs_eli", event_id="evt_eli")
    t0 = now_utc()
    kinds = ("webhook_missing",)
    with store_engine.begin() as conn:
        apply_findings(conn, [missing, other], kinds=kinds, now=t0)
        assert close_findings(conn, [missing.id], note="recovered by repair #7", by=SUPPORT, now=t0) == [
            missing.id
        ]
        # A second recovery finds it closed already: the first note stays.
        assert close_findings(conn, [missing.id], note="recovered by repair #8", by="b", now=t0) == []
        apply_findings(conn, [missing, other], kinds=kinds, now=t0)  # still detected: not reopened
        status = {f.id: (f.status, f.ack_note) for f in current_findings(conn)}
        assert status == {missing.id: ("acknowledged", "recovered by repair #7"), other.id: ("open", None)}
        apply_findings(conn, [other], kinds=kinds, now=t0)  # no longer detected: resolved as usual
        assert {f.id for f in current_findings(conn)} == {other.id}


# --- recover: bad input, a dry run, who may -----------------------------------------------------------------


def test_an_unknown_incident_is_exit_2_with_one_line_and_no_traceback(cli_main, demo):
    run = cli_main(["recover", "inc_does_not_exist", "--operator", SUPPORT], demo)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "no incident 'inc_does_not_exist'" in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_a_dry_run_names_each_payment_and_writes_nothing_in_the_app_or_the_findings(cli_main, demo):
    outage = redis_incident(incidents_of(demo, cli_main))
    rows = subscriptions(demo["APP_DATABASE_URL"])
    with opened(demo["MONITOR_DATABASE_URL"]) as engine, engine.connect() as conn:
        findings = [(f.id, f.status) for f in current_findings(conn)]
    run = cli_main(["recover", outage["id"], "--operator", SUPPORT, "--dry-run"], demo)
    assert run.returncode == 0, run.stdout + run.stderr
    pid = usd_149_payment(demo)
    assert f"[1/1] {pid} DRY RUN: would create an active row" in run.stdout
    assert subscriptions(demo["APP_DATABASE_URL"]) == rows
    with opened(demo["MONITOR_DATABASE_URL"]) as engine:
        with engine.connect() as conn:
            assert [(f.id, f.status) for f in current_findings(conn)] == findings
        assert {(e.outcome, e.dry_run) for e in ledger(engine, pid)} == {("planned", True)}


def test_the_plan_says_per_payment_what_would_be_written(cli_main, demo):
    outage = redis_incident(incidents_of(demo, cli_main))
    cfg = config.load(demo, toml_path=REPO_ROOT / "no-such.toml")
    plan = actions.plan_recovery(cfg, outage["id"], SUPPORT)
    [result] = plan.results
    assert result.payment_id == usd_149_payment(demo) and result.plan["action"] == "create"
    assert (plan.counts, plan.amount, plan.exit_status) == ({"create": 1}, {"usd": 14900}, 0)


def test_a_viewer_may_not_recover_and_is_told_so_before_anything_is_done(cli_main, demo):
    outage = redis_incident(incidents_of(demo, cli_main))
    rows = subscriptions(demo["APP_DATABASE_URL"])
    cfg = config.load({**demo, "OPERATOR_ROLES": ROLES}, toml_path=REPO_ROOT / "no-such.toml")
    with pytest.raises(actions.Forbidden, match="viewer@example.com may not recover incidents"):
        actions.recover_incident(cfg, outage["id"], "viewer@example.com")
    run = cli_main(
        ["recover", outage["id"], "--operator", "viewer@example.com"], {**demo, "OPERATOR_ROLES": ROLES}
    )
    assert run.returncode == 1 and "may not recover incidents" in run.stderr, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert subscriptions(demo["APP_DATABASE_URL"]) == rows


# --- recover for real, from several places at once ---------------------------------------------------------


def recover_in_processes(env: dict[str, str], incident_ids: list[str]) -> list[tuple[int, str]]:
    """`python -m monitor recover` once for each of `incident_ids`, all at once, each its own process;
    (exit status, what it printed) of each."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "monitor", "recover", inc, "--operator", f"oncall{n}@example.com"],
            cwd=REPO_ROOT,
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n, inc in enumerate(incident_ids)
    ]
    return [(p.wait(timeout=180), p.communicate()[0]) for p in runs]


def recover_in_threads(env: dict[str, str], incident_ids: list[str]) -> list[tuple[int, str]]:
    """actions.recover_incident once for each of `incident_ids`, all at once, each in its own thread."""
    cfg = config.load(env, toml_path=REPO_ROOT / "no-such.toml")
    barrier = threading.Barrier(len(incident_ids))

    def recover(n: int, inc: str) -> tuple[int, str]:
        barrier.wait()
        done = actions.recover_incident(cfg, inc, f"oncall{n}@example.com")
        return done.exit_status, "\n".join(f"{r.payment_id} {r.outcome}: {r.reason}" for r in done.results)

    with ThreadPoolExecutor(len(incident_ids)) as pool:
        return list(pool.map(recover, range(len(incident_ids)), incident_ids))


@pytest.mark.parametrize(
    ("backend", "at_once"), [("sqlite", recover_in_processes), ("postgresql", recover_in_threads)]
)
def test_recoveries_run_at_once_activate_each_payment_exactly_once_and_a_rerun_finds_all_active(
    request, tmp_path, cli_main, backend, at_once
):
    app_url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    env = demo_env(tmp_path, app_url, cli=cli_main)
    app_url = env["APP_DATABASE_URL"]
    incidents = incidents_of(env, cli_main)
    outage = redis_incident(incidents)
    [unknown] = [i for i in incidents if i["cause"]["kind"] == "unknown"]
    [endpoint] = [i for i in incidents if i["cause"]["kind"] == "endpoint"]
    # The outage incident twice, and the endpoint incident, which holds the same USD 149 payment: three
    # runs race for it. The incident of no known cause twice: two runs race for each of its payments.
    targets = [outage["id"], outage["id"], endpoint["id"], unknown["id"], unknown["id"]]
    payments = recoverable_payments(env, targets)
    pid = usd_149_payment(env)
    assert pid in payments and len(payments) >= 3

    for status, said in at_once(env, targets):
        assert status == 0 and "Traceback" not in said, said
    for payment in payments:
        assert active_rows(app_url, payment) == 1, payment
    with opened(env["MONITOR_DATABASE_URL"]) as engine:
        for payment in payments:
            written = [e.outcome for e in ledger(engine, payment) if e.outcome in ("activated", "created")]
            assert len(written) == 1, (payment, written)
        with engine.connect() as conn:
            closed = {f.kind: f for f in current_findings(conn) if f.payment_id == pid and f.ack_note}
    # The customer is active again: their webhook findings are closed with a note naming the repair.
    assert {"webhook_failed", "webhook_undelivered"} <= set(closed)
    assert closed["webhook_failed"].ack_note.startswith("recovered by repair #")
    assert "(incident inc_" in closed["webhook_failed"].ack_note

    rows = subscriptions(app_url)
    again = cli_main(["recover", outage["id"], "--operator", SUPPORT], env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"[1/1] {pid} ALREADY ACTIVE" in again.stdout
    assert subscriptions(app_url) == rows

    # Reconcile: the payments are matched, the webhook findings stay closed (not reopened), the outage
    # incident is resolved, and recovering it once more is nothing to do.
    assert cli_main(["reconcile"], env).returncode == 0
    with opened(env["MONITOR_DATABASE_URL"]) as engine, engine.connect() as conn:
        now = {f.id: f.status for f in current_findings(conn, statuses=("open", "acknowledged", "resolved"))}
    assert {now[f.id] for f in closed.values()} == {"acknowledged"}
    assert outage["id"] not in {i["id"] for i in incidents_of(env, cli_main)}
    last = cli_main(["recover", outage["id"], "--operator", SUPPORT], env)
    assert last.returncode == 0 and "resolved: nothing to recover" in last.stdout, last.stdout + last.stderr
