"""The dashboard's read models (monitor.views) and actions (monitor.actions), on the demo as a new user sees
it: synced, reconciled and checked once (Redis down, as in the incident), on SQLite and on PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, func, insert, select, text

from monitor import actions, config, pipeline, repair, store, views
from monitor import demo as monitor_demo
from monitor.app_db import AppDatabase, load_mapping
from monitor.clock import now_utc
from monitor.emulator.demo import (
    DEMO_EXPECTED_WEBHOOK_URL,
    DEMO_STAGING_WEBHOOK_URL,
    INCIDENT_EMAIL,
    REDIS_ERROR,
)
from monitor.errors import AppDatabaseError, BadInput
from monitor.rules.findings import KINDS, finding_id
from monitor.rules.webhook_health import PAYMENT_EVENT_TYPES, delivery_countdowns
from monitor.store import lifecycle
from monitor.store.models import FindingRow, JobRun
from monitor.views.finance import preset_range
from tests.services import free_port
from tests.table_cast import finding

COMPONENT_ORDER = ["redis:channels", "monitor_db", "app_db", "stripe_api", "webhook_endpoint", "scheduler"]
INJECTIONS = [
    "' OR '1'='1",
    "'; DROP TABLE findings; --",
    '" OR ""="',
    "%' OR 1=1 --",
    "1) OR (1=1",
    "\\",
    "\x00",
    "evt_' UNION SELECT * FROM findings --",
]


@dataclass
class Demo:
    cfg: config.Config
    engine: Engine
    app: AppDatabase
    report: pipeline.Report
    paths: dict


def build_demo(tmp: Path, monitor_url: str) -> Demo:
    app_path = tmp / "app.db"
    cfg = config.load(
        {"MONITOR_DATABASE_URL": monitor_url, "APP_DATABASE_URL": f"sqlite:///{app_path}"},
        toml_path=tmp / "none.toml",
    )
    engine = store.open_store(cfg.monitor_database_url)
    pipeline.run_sync(cfg, engine)
    report = pipeline.run_reconcile(cfg, engine)
    pipeline.run_check(cfg)
    return Demo(cfg, engine, pipeline.open_app_database(cfg), report, {"app": app_path})


def close(demo: Demo) -> None:
    demo.app.dispose()
    demo.engine.dispose()


@pytest.fixture(scope="module")
def sqlite_demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sqlite_demo")
    demo = build_demo(tmp, f"sqlite:///{tmp / 'monitor.db'}")
    demo.paths["monitor"] = tmp / "monitor.db"
    yield demo
    close(demo)


@pytest.fixture(scope="module")
def postgresql_demo(tmp_path_factory, postgres_server):
    with postgres_server.temporary_database() as url:
        demo = build_demo(tmp_path_factory.mktemp("postgresql_demo"), url)
        yield demo
        close(demo)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def demo(request) -> Demo:
    """The demo, synced, reconciled and checked once per module and backend: read it, never change it."""
    return request.getfixturevalue(f"{request.param}_demo")


@pytest.fixture
def fresh_demo(sqlite_demo, tmp_path) -> Demo:
    """A copy of the SQLite demo (both databases) for a test that changes things."""
    for name, source in (("monitor.db", sqlite_demo.paths["monitor"]), ("app.db", sqlite_demo.paths["app"])):
        with sqlite3.connect(source) as src, sqlite3.connect(tmp_path / name) as dst:
            src.backup(dst)
    cfg = config.load(
        {
            "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'monitor.db'}",
            "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        },
        toml_path=tmp_path / "none.toml",
    )
    engine = store.open_store(cfg.monitor_database_url)
    copy = Demo(cfg, engine, pipeline.open_app_database(cfg), sqlite_demo.report, {})
    yield copy
    close(copy)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_store(request, tmp_path) -> Engine:
    url = (
        f"sqlite:///{tmp_path / 'monitor.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = store.open_store(url)
    yield engine
    engine.dispose()


def all_findings(engine: Engine) -> list[dict]:
    """Every finding with the fields the search looks in: the oracle the SQL is checked against."""
    t = FindingRow.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(t)).all()
    out = []
    for r in rows:
        d = lifecycle.StoredFinding.from_row(r).to_json()
        d["key"] = r.key
        d["when"] = r.occurred_at or r.first_seen
        out.append(d)
    return out


def matches(f: dict, text: str) -> bool:
    fields = (f["payment_id"], f["customer_email"], f["kind"], f["key"], f["hint"])
    return any(text.lower() in (v or "").lower() for v in fields)


def incident(demo: Demo, kind: str = "paid_without_subscription") -> dict:
    return next(
        f for f in all_findings(demo.engine) if f["kind"] == kind and f["customer_email"] == INCIDENT_EMAIL
    )


# --- Overview -------------------------------------------------------------------------------------------


def test_status_strip_lists_redis_first_with_redis_pys_own_words_then_the_fixed_order(demo):
    strip = views.status_strip(demo.engine)
    assert [c["name"] for c in strip] == COMPONENT_ORDER
    redis = strip[0]
    assert redis["status"] == "down"
    assert redis["detail"] == REDIS_ERROR
    assert strip[COMPONENT_ORDER.index("webhook_endpoint")]["status"] == "down"
    assert all(c["checked_at"].tzinfo is not None for c in strip)


def test_findings_summary_counts_what_the_findings_table_holds(demo):
    summary = views.findings_summary(demo.engine)
    current = [f for f in all_findings(demo.engine) if f["status"] == "open"]
    by_kind: dict[str, int] = {}
    for f in current:
        by_kind[f["kind"]] = by_kind.get(f["kind"], 0) + 1
    assert summary.open == len(current) == sum(by_kind.values())
    assert summary.by_kind == by_kind
    assert summary.by_severity == {
        s: sum(n for k, n in by_kind.items() if KINDS[k][0] == s) for s in ("critical", "warning")
    }
    assert summary.acknowledged == 0
    assert summary.amount_at_risk == demo.report.summary["amount_at_risk"]
    assert summary.amount_at_risk["usd"] >= 14900


def test_parity_history_has_a_point_per_successful_reconcile_run(demo):
    history = views.parity_history(demo.engine, since=now_utc() - timedelta(days=1))
    assert list(history.columns) == ["finished_at", "payments", "matched", "parity_pct"]
    assert len(history) == 1
    point = history.iloc[0]
    assert point["payments"] == demo.report.summary["payments"]
    assert point["matched"] == demo.report.summary["matched"]
    assert point["parity_pct"] == demo.report.summary["parity_pct"]
    assert str(history["finished_at"].dt.tz) == "UTC"
    assert views.parity_history(demo.engine, since=now_utc() + timedelta(hours=1)).empty


def test_freshness_is_stale_until_a_sync_and_the_scheduler_have_run_recently(empty_store):
    at = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    first = views.freshness(empty_store, now=at, sync_interval=300, probe_interval=30)
    assert first.stale and first.sync_stale and first.scheduler_stale
    assert first.message == "Stale: no successful sync yet; the scheduler (python -m jobs) has never run"

    for job in ("sync", "reconcile", "jobs:probes"):
        with store.RunRecorder(empty_store, job):
            pass
    with empty_store.connect() as conn:
        last = conn.execute(select(func.max(JobRun.finished_at))).scalar()
    fresh = views.freshness(
        empty_store, now=last + timedelta(seconds=20), sync_interval=300, probe_interval=30
    )
    assert not fresh.stale
    assert fresh.last_sync_at is not None and fresh.last_scheduled_run_at is not None
    assert fresh.last_sync_age_s <= 20
    assert fresh.message.startswith("Fresh: last sync")

    later = views.freshness(
        empty_store, now=last + timedelta(minutes=20), sync_interval=300, probe_interval=30
    )
    assert later.stale and later.sync_stale and later.scheduler_stale
    assert "last successful sync 20 min ago (expected every 5 min)" in later.message
    assert "the scheduler (python -m jobs) last ran a job 20 min ago" in later.message


# --- Discrepancies --------------------------------------------------------------------------------------


def test_find_findings_by_default_shows_open_and_acknowledged_newest_first(demo):
    page, total = views.find_findings(demo.engine, limit=1000)
    assert list(page.columns) == list(views.FINDING_COLUMNS)
    assert total == len(page) == len(demo.report.findings)
    assert set(page["status"]) == {"open"}
    order = list(zip(page["last_seen"], page["first_seen"], page["id"], strict=True))
    assert order == sorted(order, reverse=True)
    assert page["amount"].dtype == "Int64"
    assert str(page["first_seen"].dt.tz) == "UTC"
    usd149 = page[(page["kind"] == "paid_without_subscription") & (page["customer_email"] == INCIDENT_EMAIL)]
    assert usd149.iloc[0]["amount"] == 14900 and usd149.iloc[0]["event_id"].startswith("evt_")
    assert "Error 111" in usd149.iloc[0]["hint"]


@pytest.mark.parametrize(
    "filters",
    [
        {"kinds": ["webhook_missing"]},
        {"kinds": ["paid_without_subscription", "refunded_but_active"]},
        {"severities": ["critical"]},
        {"statuses": ["resolved"]},
        {"kinds": ["refunded_but_active"], "severities": ["critical"]},
    ],
    ids=lambda f: ",".join(f"{k}={'+'.join(v)}" for k, v in f.items()),
)
def test_find_findings_filters_by_kind_severity_and_status(demo, filters):
    page, total = views.find_findings(demo.engine, limit=1000, **filters)
    statuses = filters.get("statuses", ["open", "acknowledged"])
    expected = {
        f["id"]
        for f in all_findings(demo.engine)
        if f["status"] in statuses
        and f["kind"] in filters.get("kinds", KINDS)
        and f["severity"] in filters.get("severities", ["critical", "warning"])
    }
    assert set(page["id"]) == expected
    assert total == len(expected)


def test_find_findings_filters_by_when_it_happened(demo):
    usd149 = incident(demo)
    at = datetime.fromisoformat(usd149["occurred_at"].replace("Z", "+00:00"))
    since, until = at - timedelta(minutes=5), at + timedelta(minutes=5)
    page, total = views.find_findings(demo.engine, since=since, until=until, limit=1000)
    expected = {
        f["id"] for f in all_findings(demo.engine) if f["status"] == "open" and since <= f["when"] <= until
    }
    assert usd149["id"] in expected
    assert set(page["id"]) == expected and total == len(expected)
    assert (
        views.find_findings(demo.engine, since=at + timedelta(days=1), until=at + timedelta(days=2))[1] == 0
    )


@pytest.mark.parametrize(
    "search", ["DANA.WHITFIELD", "Error 111", "a_m", "webhook_failed", "%", "evt_", "cs_test"]
)
def test_find_findings_searches_text_literally_and_in_any_case(demo, search):
    page, total = views.find_findings(demo.engine, text=search, limit=1000)
    expected = {f["id"] for f in all_findings(demo.engine) if f["status"] == "open" and matches(f, search)}
    assert set(page["id"]) == expected
    assert total == len(expected)


def test_find_findings_treats_a_percent_and_an_underscore_as_themselves(demo):
    assert views.find_findings(demo.engine, text="%")[1] == 0
    assert views.find_findings(demo.engine, text="dana%whitfield")[1] == 0
    assert views.find_findings(demo.engine, text="dana_whitfield")[1] == 0
    assert views.find_findings(demo.engine, text="dana.whitfield")[1] == 3


@pytest.mark.parametrize("hostile", INJECTIONS)
def test_find_findings_with_an_injection_string_finds_nothing_and_changes_nothing(demo, hostile):
    before = len(all_findings(demo.engine))
    page, total = views.find_findings(demo.engine, text=hostile, statuses=None)
    assert (len(page), total) == (0, 0)
    assert len(all_findings(demo.engine)) == before


def test_find_findings_pages_cover_every_match_once_with_a_steady_total(demo):
    everything, total = views.find_findings(demo.engine, limit=1000)
    seen = []
    for offset in range(0, total + 10, 10):
        page, page_total = views.find_findings(demo.engine, limit=10, offset=offset)
        assert page_total == total
        seen += page["id"].tolist()
    assert seen == everything["id"].tolist()
    past_the_end, still = views.find_findings(demo.engine, limit=10, offset=total + 100)
    assert past_the_end.empty and still == total


def test_finding_detail_of_the_usd_149_payment_shows_both_sides_and_why(demo):
    usd149 = incident(demo)
    detail = views.finding_detail(demo.engine, demo.app, usd149["id"])
    payment_id = usd149["payment_id"]
    assert detail.finding.id == usd149["id"]
    assert detail.payment["payment_id"] == payment_id and detail.payment["amount"] == 14900
    assert detail.stripe_object["id"] == payment_id
    assert detail.stripe_object["amount_total"] == 14900
    assert detail.stripe_object["payment_status"] == "paid"
    assert detail.rows == [] and detail.candidate_rows == []
    event = detail.event
    assert event["id"] == usd149["event_id"] and event["type"] == "checkout.session.completed"
    assert event["pending_webhooks"] == 1 and "pending at 1 endpoint" in event["delivery"]
    assert [r["error"] for r in event["log"]] == [REDIS_ERROR]
    assert detail.stripe_url == f"https://dashboard.stripe.com/test/checkout/sessions/{payment_id}"
    assert [(o.component, o.error) for o in detail.outages] == [("redis:channels", REDIS_ERROR)]
    kinds = [e["kind"] for e in detail.timeline]
    assert {"payment", "event", "webhook_log", "outage", "finding"} <= set(kinds)
    assert [e["at"] for e in detail.timeline] == sorted(e["at"] for e in detail.timeline)
    assert all({"at", "what", "detail"} <= set(e) for e in detail.timeline)
    assert detail.app_error is None


def test_finding_detail_of_a_row_without_payment_shows_that_row(demo):
    orphan = next(f for f in all_findings(demo.engine) if f["kind"] == "active_without_payment")
    detail = views.finding_detail(demo.engine, demo.app, orphan["id"])
    assert detail.payment is None and detail.stripe_object is None
    assert [r["id"] for r in detail.rows] == orphan["subscription_ids"]
    assert detail.rows[0]["status"] == "active"


@pytest.mark.parametrize("unknown", ["0000000000000000", "", *INJECTIONS])
def test_finding_detail_of_an_unknown_id_is_none(demo, unknown):
    assert views.finding_detail(demo.engine, demo.app, unknown) is None


@pytest.mark.parametrize(
    "object_id, livemode, url",
    [
        ("cs_test_a1", False, "https://dashboard.stripe.com/test/checkout/sessions/cs_test_a1"),
        ("cs_live_a1", True, "https://dashboard.stripe.com/checkout/sessions/cs_live_a1"),
        ("pi_1", None, "https://dashboard.stripe.com/test/payments/pi_1"),
        ("in_1", True, "https://dashboard.stripe.com/invoices/in_1"),
        ("cus_1", False, "https://dashboard.stripe.com/test/customers/cus_1"),
        ("sub_1", False, "https://dashboard.stripe.com/test/subscriptions/sub_1"),
        ("evt_1", False, "https://dashboard.stripe.com/test/events/evt_1"),
        ("we_1", True, "https://dashboard.stripe.com/webhooks/we_1"),
        ("<script>", False, "https://dashboard.stripe.com/test/search?query=%3Cscript%3E"),
    ],
)
def test_stripe_dashboard_url_takes_the_objects_path_and_the_test_prefix_by_mode(object_id, livemode, url):
    assert views.stripe_dashboard_url(object_id, livemode) == url


# --- Customer lookup ------------------------------------------------------------------------------------


def lookup(demo: Demo, query: str):
    return views.customer_lookup(demo.engine, demo.app, query, now=now_utc())


@pytest.mark.parametrize(
    "query",
    [
        "dana.whitfield@example.com",
        "  DANA.Whitfield@Example.COM ",
        "customer_id",
        "payment_id",
        "payment_intent_id",
        "event_id",
    ],
)
def test_customer_lookup_finds_the_usd_149_customer_by_any_of_their_handles(demo, query):
    usd149 = incident(demo)
    view = lookup(demo, usd149.get(query, query))
    assert view is not None
    assert view.customer["email"] == INCIDENT_EMAIL and view.customer["name"] == "Dana Whitfield"
    assert view.customer["customer_ids"] == [usd149["customer_id"]]
    payment = view.payments.set_index("payment_id").loc[usd149["payment_id"]]
    assert payment["amount"] == 14900 and payment["status_in_app"] == "no row"
    assert "paid_without_subscription" in payment["open_findings"]
    assert payment["stripe_url"].startswith("https://dashboard.stripe.com/test/checkout/sessions/")
    assert view.rows.empty
    assert {f.kind for f in view.findings} == {
        "paid_without_subscription",
        "webhook_undelivered",
        "webhook_failed",
    }


def test_customer_lookup_by_app_row_id_finds_the_rows_customer(demo):
    refunded = next(f for f in all_findings(demo.engine) if f["kind"] == "refunded_but_active")
    row_id = refunded["subscription_ids"][0]
    view = lookup(demo, str(row_id))
    assert refunded["customer_email"] in view.customer["emails"]
    assert row_id in view.rows["id"].tolist()
    payment = view.payments.set_index("payment_id").loc[refunded["payment_id"]]
    assert payment["status_in_app"] == f"active row {row_id}"
    assert [f.kind for f in view.findings] == ["refunded_but_active"]


def test_customer_lookup_timeline_tells_the_incident_in_order(demo):
    view = lookup(demo, INCIDENT_EMAIL)
    timeline = view.timeline
    assert list(timeline.columns) == ["at", "kind", "title", "detail", "ref"]
    assert timeline["at"].is_monotonic_increasing
    usd149 = incident(demo)
    by_kind = {k: group for k, group in timeline.groupby("kind")}
    assert usd149["payment_id"] in by_kind["payment"]["ref"].tolist()
    assert usd149["event_id"] in by_kind["event"]["ref"].tolist()
    log = by_kind["webhook_log"]
    assert log.iloc[0]["ref"] == usd149["event_id"] and REDIS_ERROR in log.iloc[0]["detail"]
    outage = by_kind["outage"].iloc[0]
    assert outage["ref"] == "redis:channels" and REDIS_ERROR in outage["detail"]
    paid_at = by_kind["payment"].iloc[0]["at"]
    assert outage["at"] <= paid_at
    assert [(o.component, o.status) for o in view.outages] == [("redis:channels", "down")]


@pytest.mark.parametrize(
    "query",
    ["nobody@example.com", "cs_test_doesnotexist", "cus_nobody", "evt_nothing", "99999999", "sub_none"],
)
def test_customer_lookup_of_someone_unknown_is_none(demo, query):
    assert lookup(demo, query) is None


@pytest.mark.parametrize("hostile", [*INJECTIONS, "%@%", "a@b' OR '1'='1", "x" * 5000, "", "   ", "_@_"])
def test_customer_lookup_of_a_hostile_string_is_none_and_changes_nothing(demo, hostile):
    before = len(all_findings(demo.engine))
    rows_before = len(demo.app.read_subscriptions())
    assert lookup(demo, hostile) is None
    assert len(all_findings(demo.engine)) == before
    assert len(demo.app.read_subscriptions()) == rows_before


def test_an_unreachable_app_database_is_shown_beside_the_stripe_side_not_hidden(demo):
    dead = AppDatabase(f"postgresql://postgres@127.0.0.1:{free_port()}/app", load_mapping("default"))
    try:
        detail = views.finding_detail(demo.engine, dead, incident(demo)["id"])
        assert "cannot connect to the app database" in detail.app_error
        assert detail.stripe_object["amount_total"] == 14900 and detail.event["pending_webhooks"] == 1
        view = views.customer_lookup(demo.engine, dead, INCIDENT_EMAIL, now=now_utc())
        assert "cannot connect" in view.app_error and len(view.payments) == 1
        overview = views.webhook_overview(
            demo.engine,
            dead,
            demo.cfg,
            now=now_utc(),
            expected_url=monitor_demo.expected_webhook_url(demo.cfg),
        )
        assert "cannot connect" in overview.app_error
        assert overview.failed["error"].isna().all() and len(overview.failed) == 1
        with pytest.raises(AppDatabaseError):  # a row id only the app can answer
            views.customer_lookup(demo.engine, dead, "12", now=now_utc())
    finally:
        dead.dispose()


# --- Webhooks, infrastructure, finance ------------------------------------------------------------------


def test_webhook_overview_shows_the_staging_url_beside_the_expected_one_and_the_stuck_event(demo):
    now = now_utc()
    overview = views.webhook_overview(
        demo.engine, demo.app, demo.cfg, now=now, expected_url=monitor_demo.expected_webhook_url(demo.cfg)
    )
    audit = overview.audit
    assert not audit.ok and audit.expected_url == DEMO_EXPECTED_WEBHOOK_URL
    assert DEMO_STAGING_WEBHOOK_URL in [e["url"] for e in audit.endpoints if e["status"] == "enabled"]
    assert DEMO_STAGING_WEBHOOK_URL in audit.summary

    usd149 = incident(demo)
    stuck = overview.undelivered.set_index("event_id").loc[usd149["event_id"]]
    assert stuck["type"] == "checkout.session.completed" and stuck["pending_webhooks"] == 1
    assert stuck["payment_id"] == usd149["payment_id"]
    retry, window = delivery_countdowns(stuck["created"].to_pydatetime(), now=now, livemode=False)
    assert retry is None and pd.isna(stuck["retry_left"])  # test mode: no 3-day retry window
    assert stuck["window_left"] == window and timedelta(days=29) < window < timedelta(days=30)
    assert "leaves the 30-day Events list in" in stuck["countdown"]

    failed = overview.failed.set_index("event_id").loc[usd149["event_id"]]
    assert failed["error"] == REDIS_ERROR and failed["attempts"] == 1
    counts = views.findings_summary(demo.engine).by_kind
    assert overview.counts == {
        "undelivered": counts["webhook_undelivered"],
        "failed": counts["webhook_failed"],
        "missing": counts["webhook_missing"],
    }
    assert len(overview.missing) == counts["webhook_missing"]
    assert overview.app_error is None


def test_webhook_overview_counts_payment_events_per_day_for_30_days(demo):
    now = now_utc()
    daily = views.webhook_overview(
        demo.engine, demo.app, demo.cfg, now=now, expected_url=monitor_demo.expected_webhook_url(demo.cfg)
    ).daily
    assert len(daily) == 30 and daily["day"].is_monotonic_increasing
    assert daily["day"].iloc[-1] == pd.Timestamp(now.date(), tz="UTC")
    first = int(daily["day"].iloc[0].timestamp())
    with demo.engine.connect() as conn:
        stored = conn.execute(
            text("SELECT type, pending_webhooks FROM stripe_events WHERE created >= :t"), {"t": first}
        ).all()
    payment_events = [p for t, p in stored if t in PAYMENT_EVENT_TYPES]
    assert daily["events"].sum() == len(payment_events)
    assert daily["pending"].sum() == sum(1 for p in payment_events if p > 0) >= 1
    assert (daily["delivered"] + daily["pending"] == daily["events"]).all()


def test_infrastructure_has_the_redis_outage_of_the_incident_with_its_exact_error(demo):
    now = now_utc()
    infra = views.infrastructure(demo.engine, now=now, since=now - timedelta(days=3))
    assert [c["name"] for c in infra["current"]] == COMPONENT_ORDER
    redis = [o for o in infra["outages"] if o.component == "redis:channels"]
    incident_outage, current_outage = redis
    assert incident_outage.error == REDIS_ERROR and incident_outage.status == "down"
    assert incident_outage.end is not None and incident_outage.end - incident_outage.start == timedelta(
        minutes=24
    )
    assert current_outage.end is None and current_outage.error == REDIS_ERROR  # `check` just found it down
    history = infra["history"]
    assert list(history.columns) == ["component", "status", "checked_at", "latency_ms"]
    assert set(history["component"]) == set(COMPONENT_ORDER)
    assert "down" in set(history[history["component"] == "redis:channels"]["status"])


def test_infrastructure_gives_an_outage_its_true_start_when_the_range_begins_inside_it(demo):
    now = now_utc()
    whole = views.infrastructure(demo.engine, now=now, since=now - timedelta(days=3))["outages"][0]
    middle = whole.start + timedelta(minutes=10)
    inside = views.infrastructure(demo.engine, now=middle + timedelta(minutes=1), since=middle)
    assert inside["outages"][0] == whole


def test_infrastructure_downsamples_a_long_history_keeping_the_outage(demo):
    now = now_utc()
    infra = views.infrastructure(demo.engine, now=now, since=now - timedelta(days=3))
    with demo.engine.connect() as conn:
        small = views.probe_history.history_frame(conn, now - timedelta(days=3), now, max_points=120)
    assert len(small) <= 120 + len(COMPONENT_ORDER) < len(infra["history"])
    assert "down" in set(small[small["component"] == "redis:channels"]["status"])


@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_finance_parity_per_period_adds_up_to_the_totals(demo, period):
    now = now_utc()
    since = now - timedelta(days=3650)
    result = views.finance(demo.engine, period=period, since=since, until=now)
    parity, totals = result["parity"], result["totals"].set_index("currency")
    counts = ["payments", "matched_payments", "paid_amount", "activated_amount", "at_risk_amount"]
    sums = parity.groupby("currency")[counts].sum()
    assert sums.to_dict() == totals[sums.columns].to_dict()
    assert (parity["activated_amount"] <= parity["paid_amount"]).all()
    assert (parity["activated_amount"] + parity["at_risk_amount"] == parity["paid_amount"]).all()
    assert parity["period_start"].is_monotonic_increasing
    with demo.engine.connect() as conn:
        payments = conn.execute(text("SELECT COUNT(*) FROM payments")).scalar()
    assert totals["payments"].sum() == payments == demo.report.summary["payments"]
    # One definition of parity (PARITY_DEFINITION): the reconcile's summary and Finance count the same.
    assert totals["matched_payments"].sum() == demo.report.summary["matched"] < payments
    assert totals.loc["usd", "at_risk_amount"] == demo.report.summary["amount_at_risk"]["usd"]
    if period == "week":
        assert (parity["period_start"].dt.day_of_week == 0).all()
    if period == "month":
        assert (parity["period_start"].dt.day == 1).all()


def test_with_payment_scope_subscriptions_finance_counts_what_the_reconcile_counts(fresh_demo):
    cfg = dataclasses.replace(fresh_demo.cfg, payment_scope="subscriptions")
    report = pipeline.run_reconcile(cfg, fresh_demo.engine)
    now = now_utc()
    totals = views.finance(
        fresh_demo.engine, period="month", since=now - timedelta(days=3650), until=now, scope="subscriptions"
    )["totals"]
    everything = views.finance(fresh_demo.engine, period="month", since=now - timedelta(days=3650), until=now)
    assert 0 < totals["payments"].sum() == report.summary["payments"] < everything["totals"]["payments"].sum()
    assert totals["matched_payments"].sum() == report.summary["matched"]
    with pytest.raises(ValueError, match="scope"):
        views.finance(fresh_demo.engine, period="month", since=now, until=now, scope="some")


def test_a_repaired_payment_matches_on_finance_after_the_next_reconcile(fresh_demo):
    def counted() -> tuple[int, set[str]]:
        now = now_utc()
        totals = views.finance(fresh_demo.engine, period="month", since=now - timedelta(days=3650), until=now)
        with fresh_demo.engine.connect() as conn:
            unmatched = set(conn.execute(text("SELECT payment_id FROM unmatched_payments")).scalars())
        return int(totals["totals"]["matched_payments"].sum()), unmatched

    usd149 = incident(fresh_demo)["payment_id"]
    matched, unmatched = counted()
    assert matched == fresh_demo.report.summary["matched"] and usd149 in unmatched
    result = repair.activate(
        fresh_demo.cfg, usd149, "support@example.com", engine=fresh_demo.engine, app=fresh_demo.app
    )
    assert result.outcome == "created", result.reason
    report = pipeline.run_reconcile(fresh_demo.cfg, fresh_demo.engine)
    now_matched, now_unmatched = counted()
    assert now_matched == report.summary["matched"] == matched + 1
    assert now_unmatched == unmatched - {usd149}


def test_finance_lists_refunded_but_active_and_active_without_payment_with_totals(demo):
    now = now_utc()
    result = views.finance(demo.engine, period="month", since=now - timedelta(days=60), until=now)
    refunded = [f for f in all_findings(demo.engine) if f["kind"] == "refunded_but_active"]
    assert set(result["refunded_but_active"]["payment_id"]) == {f["payment_id"] for f in refunded}
    assert result["refunded_but_active_totals"] == {"usd": sum(f["amount"] for f in refunded)}
    assert result["refunded_but_active_count"] == len(refunded) == 2
    assert len(result["active_without_payment"]) == result["active_without_payment_count"] == 1
    assert result["active_without_payment_totals"] == {"usd": 14900}
    with pytest.raises(ValueError, match="period"):
        views.finance(demo.engine, period="year", since=now, until=now)


# --- Audit log and actions ------------------------------------------------------------------------------


def test_audit_log_shows_a_repair_and_the_job_runs(fresh_demo):
    usd149 = incident(fresh_demo)
    result = repair.activate(
        fresh_demo.cfg,
        usd149["payment_id"],
        "support@example.com",
        engine=fresh_demo.engine,
        app=fresh_demo.app,
    )
    assert result.outcome == "created", result.reason
    log = views.audit_log(fresh_demo.engine)
    newest = log["repairs"].iloc[0]
    assert (newest["payment_id"], newest["operator"], newest["outcome"]) == (
        usd149["payment_id"],
        "support@example.com",
        "created",
    )
    assert not newest["dry_run"]
    assert {"sync", "reconcile"} <= set(log["job_runs"]["job"])
    assert (log["job_runs"]["outcome"] == "ok").all()
    assert list(log["alerts"].columns) == [
        "id",
        "sent_at",
        "status",
        "target",
        "title",
        "error",
        "duration_ms",
        "keys",
    ]

    view = lookup(fresh_demo, INCIDENT_EMAIL)
    assert view.payments.iloc[0]["status_in_app"].startswith("active row ")
    assert "repair" in set(view.timeline["kind"])


def acknowledging_config(tmp_path: Path, engine: Engine) -> config.Config:
    return config.load(
        {
            "MONITOR_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
            "OPERATOR_ROLES": "viewer@example.com=viewer,support@example.com=support",
        },
        toml_path=tmp_path / "none.toml",
    )


def one_finding(engine: Engine) -> str:
    f = finding("test_ack")
    with engine.begin() as conn:
        lifecycle.apply_findings(conn, [f], kinds=["paid_without_subscription"], now=now_utc())
    return f.id


def acknowledge_runs(engine: Engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(JobRun.outcome, JobRun.error, JobRun.counts)
            .where(JobRun.job == actions.ACKNOWLEDGE_JOB)
            .order_by(JobRun.id)
        ).all()


def test_a_viewer_may_not_acknowledge_and_the_refusal_is_recorded(empty_store, tmp_path):
    cfg = acknowledging_config(tmp_path, empty_store)
    fid = one_finding(empty_store)
    with pytest.raises(actions.Forbidden, match="viewer@example.com may not acknowledge"):
        actions.acknowledge(empty_store, cfg, fid, "viewer@example.com", "looking into it")
    [run] = acknowledge_runs(empty_store)
    assert run.outcome == "failed" and "role viewer" in run.error
    assert json.loads(run.counts)["finding_id"] == fid
    page, _ = views.find_findings(empty_store)
    assert page.iloc[0]["status"] == "open" and page.iloc[0]["ack_note"] is None


def test_support_acknowledges_and_the_finding_stays_visible_with_its_note(empty_store, tmp_path):
    cfg = acknowledging_config(tmp_path, empty_store)
    fid = one_finding(empty_store)
    actions.acknowledge(empty_store, cfg, fid, "support@example.com", "customer refunded by phone")
    page, total = views.find_findings(empty_store)
    assert total == 1
    row = page.iloc[0]
    assert (row["id"], row["status"], row["ack_note"]) == (fid, "acknowledged", "customer refunded by phone")
    summary = views.findings_summary(empty_store)
    assert (summary.open, summary.acknowledged) == (0, 1)
    assert [r.outcome for r in acknowledge_runs(empty_store)] == ["ok"]
    with empty_store.begin() as conn:  # the next reconcile still sees it: it stays acknowledged
        again = finding("test_ack")
        lifecycle.apply_findings(conn, [again], kinds=["paid_without_subscription"], now=now_utc())
    assert views.find_findings(empty_store)[0].iloc[0]["status"] == "acknowledged"


@pytest.mark.parametrize(
    "finding, operator, note, message",
    [
        ("0000000000000000", "support@example.com", "note", "no finding"),
        (None, "support@example.com", "", "a note is required"),
        (None, "", "note", "an operator is required"),
    ],
)
def test_acknowledge_refuses_bad_input_and_records_it(
    empty_store, tmp_path, finding, operator, note, message
):
    cfg = acknowledging_config(tmp_path, empty_store)
    fid = finding or one_finding(empty_store)
    with pytest.raises(BadInput, match=message):
        actions.acknowledge(empty_store, cfg, fid, operator, note)
    assert [r.outcome for r in acknowledge_runs(empty_store)] == ["failed"]


def test_run_checks_now_reports_progress_for_each_step_and_a_summary(tmp_path):
    cfg = config.load(
        {
            "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'monitor.db'}",
            "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        },
        toml_path=tmp_path / "none.toml",
    )
    calls = []
    summary = actions.run_checks_now(cfg, lambda step, fraction: calls.append((step, fraction)))
    assert calls == [("sync", 0.0), ("reconcile", 1 / 3), ("check", 2 / 3), ("done", 1.0)]
    assert summary["ok"] and summary["errors"] == []
    assert summary["status"] == "CRITICAL" and summary["components"]["redis:channels"] == "down"
    assert summary["payments"] > 0 and summary["open_findings"] > 0


# --- 100,000 findings -----------------------------------------------------------------------------------

BULK = 100_000


def bulk_findings(now: datetime) -> list[dict]:
    rng = random.Random(149)
    kinds = list(KINDS)
    rows = []
    for i in range(BULK):
        kind = kinds[i % len(kinds)]
        status = ("open", "acknowledged", "resolved", "resolved", "resolved")[i % 5]
        first = now - timedelta(minutes=rng.randint(0, 90 * 24 * 60))
        last = now - timedelta(minutes=rng.randint(0, 30))  # many ties: a run touches all at once
        key = f"{kind}:bulk_{i}"
        email = f"user{i % 997}@Example.com"
        payload = {"kind": kind, "key": key, "payment_id": f"cs_test_b{i}", "customer_email": email}
        payload["hint"] = f"paid USD 149.00; bulk finding number {i}"
        rows.append(
            {
                "id": finding_id(key),
                "key": key,
                "kind": kind,
                "severity": KINDS[kind][0],
                "status": status,
                "payment_id": f"cs_test_b{i}",
                "customer_email": email,
                "amount": 14900,
                "currency": "usd",
                "occurred_at": first,
                "payload": json.dumps(payload),
                "first_seen": first,
                "last_seen": last,
            }
        )
    return rows


@pytest.mark.slow
def test_a_filtered_page_among_100000_findings_is_the_right_one(empty_store):
    rows = bulk_findings(now_utc())
    with empty_store.begin() as conn:
        if conn.dialect.name == "sqlite":  # room for the indexes while 100,000 rows go in at random places
            conn.exec_driver_sql("PRAGMA cache_size = -262144")
        conn.execute(insert(FindingRow.__table__), rows)
    kinds = ["amount_mismatch", "webhook_failed"]
    wanted = [
        r
        for r in rows
        if r["kind"] in kinds
        and r["status"] in ("open", "acknowledged")
        and "user12" in r["customer_email"].lower()
    ]
    wanted.sort(key=lambda r: (r["last_seen"], r["first_seen"], r["id"]), reverse=True)
    page, total = views.find_findings(empty_store, kinds=kinds, text="USER12", limit=25, offset=20)
    assert total == len(wanted) > 45
    assert page["id"].tolist() == [r["id"] for r in wanted[20:45]]
    everything, all_total = views.find_findings(empty_store, statuses=None, limit=10)
    assert all_total == BULK and len(everything) == 10


@pytest.mark.parametrize(
    ("name", "day", "dates"),
    [
        ("Last month", "2026-03-15", ("2026-02-01", "2026-02-28")),
        ("Last month", "2026-01-01", ("2025-12-01", "2025-12-31")),
        ("This month", "2026-12-02", ("2026-12-01", "2026-12-02")),
        ("Last 30 days", "2026-03-01", ("2026-01-31", "2026-03-01")),
    ],
)
def test_finance_presets_are_whole_utc_dates(name, day, dates):
    picked = preset_range(name, datetime.fromisoformat(day).date())
    assert tuple(d.isoformat() for d in picked) == dates
