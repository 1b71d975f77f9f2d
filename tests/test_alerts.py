"""Alerts through apprise to a local HTTP receiver: what is alerted, once, what an alert says, digests, the
hourly cap, failed deliveries, and no secret in any of it."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select, update

from monitor import alerts, config, store
from monitor.rules.findings import PAYMENT_KINDS, WEBHOOK_KINDS, Finding
from monitor.store import lifecycle
from monitor.store.models import AlertDelivery, FindingRow
from tests.services import free_port
from tests.stripe_cast import REDIS_ERROR
from tests.table_cast import finding

T0 = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)


# --- a receiver like shared/acceptance/lib/receiver.py ----------------------------------------


class Receiver:
    """An HTTP server in a thread that keeps every JSON body POSTed to it and answers `status`."""

    def __init__(self, status: int = 200):
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/alerts"

    @property
    def titles(self) -> list[str]:
        return [b["title"] for b in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def engine(tmp_path):
    e = store.open_store(f"sqlite:///{tmp_path / 'monitor.db'}")
    yield e
    e.dispose()


def settings(tmp_path, **extra) -> config.Config:
    return config.load(
        {
            "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'monitor.db'}",
            "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
            **extra,
        }
    )


# --- the cast ---------------------------------------------------------------------------------


def paid_never_activated(name="dana", amount=14900, email="dana.whitfield@example.com") -> Finding:
    why = f'Why: the app\'s webhook handler failed: "{REDIS_ERROR}"'
    hint = f"paid USD {amount // 100}.00; no subscription row links to it. {why}"
    return finding(name, amount=amount, customer_email=email, hint=hint)


def paid_row_pending() -> Finding:
    return finding(
        "tomas",
        "subscription_not_active",
        customer_email="tomas.novak@example.net",
        subscription_ids=[315],
        hint="row 315 links to it but is pending, not active",
    )


def webhook_failed() -> Finding:
    hint = f'app log: failed: "{REDIS_ERROR}"'
    return finding("dana", "webhook_failed", customer_email="dana.whitfield@example.com", hint=hint)


def endpoint_misconfigured() -> Finding:
    hint = "Stripe delivers to https://staging.example-saas.com/stripe/webhook instead"
    return finding(kind="endpoint_misconfigured", hint=hint)


def refunded_still_active() -> Finding:
    return finding("erin", "refunded_but_active", amount=4900)


def record(engine, findings: list[Finding], now: datetime = T0) -> None:
    """A reconcile run that found exactly `findings`."""
    with engine.begin() as conn:
        lifecycle.apply_findings(conn, findings, kinds=PAYMENT_KINDS + WEBHOOK_KINDS, now=now)


def probe(engine, at: datetime, status: str, detail: str, component: str = "redis:channels") -> None:
    with engine.begin() as conn:
        store.save_probe_results(
            conn,
            [
                {
                    "component": component,
                    "status": status,
                    "detail": detail,
                    "latency_ms": None,
                    "checked_at": at,
                }
            ],
        )


def deliveries(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(AlertDelivery.__table__).order_by(AlertDelivery.id)).all()


# --- findings ---------------------------------------------------------------------------------


def test_a_new_critical_finding_is_alerted_once_with_who_how_much_and_why(tmp_path, engine, receiver):
    cfg = settings(tmp_path, ALERT_URLS=receiver.url)
    record(engine, [paid_never_activated()])
    assert alerts.send_due_alerts(cfg, engine, now=T0) == {"alerts": 1, "messages": 1, "sent": 1}
    (body,) = receiver.bodies
    assert body["title"] == "CRITICAL: paid_without_subscription dana.whitfield@example.com USD 149.00"
    assert body["type"] == "failure"
    for part in (
        "Amount: USD 149.00",
        "cs_dana",
        "cus_dana",
        REDIS_ERROR,
        "Root cause:",
        "monitor repair cs_dana",
    ):
        assert part in body["message"]

    record(engine, [paid_never_activated()], now=T0 + timedelta(minutes=5))
    assert alerts.send_due_alerts(cfg, engine, now=T0 + timedelta(minutes=5))["alerts"] == 0
    assert len(receiver.bodies) == 1
    (row,) = deliveries(engine)
    assert (row.status, row.error, json.loads(row.keys)) == (
        "sent",
        None,
        [f"finding:{paid_never_activated().id}"],
    )
    assert row.duration_ms > 0 and row.target.startswith("json://127.0.0.1:")


def test_warnings_and_acknowledged_findings_are_not_alerted(tmp_path, engine, receiver):
    cfg = settings(tmp_path, ALERT_URLS=receiver.url)
    record(engine, [refunded_still_active(), paid_row_pending()])
    with engine.begin() as conn:
        conn.execute(
            update(FindingRow)
            .where(FindingRow.kind == "subscription_not_active")
            .values(status="acknowledged")
        )
    assert alerts.send_due_alerts(cfg, engine, now=T0)["alerts"] == 0
    assert receiver.bodies == []


def test_a_finding_that_is_resolved_and_opens_again_is_alerted_again(tmp_path, engine, receiver):
    cfg = settings(tmp_path, ALERT_URLS=receiver.url)
    record(engine, [paid_never_activated()])
    alerts.send_due_alerts(cfg, engine, now=T0)
    record(engine, [], now=T0 + timedelta(minutes=5))  # activated: resolved
    alerts.send_due_alerts(cfg, engine, now=T0 + timedelta(minutes=5))
    record(engine, [paid_never_activated()], now=T0 + timedelta(minutes=10))  # the row went away again
    alerts.send_due_alerts(cfg, engine, now=T0 + timedelta(minutes=10))
    assert receiver.titles == [receiver.titles[0]] * 2


def test_a_burst_goes_out_as_one_digest_listing_each_alert(tmp_path, engine, receiver):
    cfg = settings(tmp_path, ALERT_URLS=receiver.url)
    burst = [
        paid_never_activated(),
        paid_never_activated("priya", 4900, "priya.raman@example.org"),
        paid_row_pending(),
        webhook_failed(),
        endpoint_misconfigured(),
    ]
    record(engine, burst)
    assert alerts.send_due_alerts(cfg, engine, now=T0)["alerts"] == 5
    (body,) = receiver.bodies
    assert body["title"] == "CRITICAL: 5 alerts (5 critical findings)"
    lines = [x for x in body["message"].splitlines() if x.startswith("- ")]
    assert len(lines) == 5
    assert any("dana.whitfield@example.com USD 149.00" in x for x in lines)
    assert any("priya.raman@example.org USD 49.00" in x for x in lines)
    (row,) = deliveries(engine)
    assert sorted(json.loads(row.keys)) == sorted(f"finding:{f.id}" for f in burst)
    assert alerts.send_due_alerts(cfg, engine, now=T0 + timedelta(minutes=1))["alerts"] == 0


# --- components -------------------------------------------------------------------------------


def test_a_component_going_down_and_recovering_is_alerted_once_each(tmp_path, engine, receiver):
    cfg = settings(tmp_path, ALERT_URLS=receiver.url)
    m = lambda minutes: T0 + timedelta(minutes=minutes)  # noqa: E731
    probe(engine, m(0), "up", "PONG")
    probe(engine, m(1), "down", REDIS_ERROR)
    alerts.send_due_alerts(cfg, engine, now=m(1))
    probe(engine, m(2), "down", REDIS_ERROR)
    alerts.send_due_alerts(cfg, engine, now=m(2))
    probe(engine, m(3), "up", "PONG")
    alerts.send_due_alerts(cfg, engine, now=m(3))
    alerts.send_due_alerts(cfg, engine, now=m(4))
    assert receiver.titles == ["DOWN: redis:channels", "RECOVERED: redis:channels"]
    down, up = receiver.bodies
    assert f"Error: {REDIS_ERROR}" in down["message"] and "down since 11:01 UTC" in down["message"]
    assert "up again since 11:03 UTC, after 2 min down" in up["message"] and up["type"] == "success"

    probe(engine, m(5), "down", REDIS_ERROR)  # a new outage is a new alert
    alerts.send_due_alerts(cfg, engine, now=m(5))
    assert receiver.titles[-1] == "DOWN: redis:channels" and len(receiver.bodies) == 3


def test_an_outage_that_ended_before_anyone_looked_is_not_alerted(tmp_path, engine, receiver):
    cfg = settings(tmp_path, ALERT_URLS=receiver.url)
    probe(engine, T0, "down", REDIS_ERROR)
    probe(engine, T0 + timedelta(minutes=20), "up", "PONG")
    alerts.send_due_alerts(cfg, engine, now=T0 + timedelta(minutes=30))
    assert receiver.bodies == []


def test_the_scheduler_component_is_left_to_outside_checks(tmp_path, engine, receiver):
    cfg = settings(tmp_path, ALERT_URLS=receiver.url)
    probe(engine, T0, "up", "last run 3 s ago", component="scheduler")
    probe(engine, T0 + timedelta(minutes=1), "down", "no run for 75 s", component="scheduler")
    alerts.send_due_alerts(cfg, engine, now=T0 + timedelta(minutes=1))
    assert receiver.bodies == []


def test_a_component_down_longer_than_the_history_read_is_not_alerted_again(tmp_path, engine, receiver):
    cfg = settings(tmp_path, ALERT_URLS=receiver.url)
    probe(engine, T0, "down", REDIS_ERROR)
    alerts.send_due_alerts(cfg, engine, now=T0)
    later = T0 + alerts.OUTAGE_LOOKBACK + timedelta(hours=1)
    probe(engine, later - timedelta(minutes=1), "down", REDIS_ERROR)
    alerts.send_due_alerts(cfg, engine, now=later)
    assert receiver.titles == ["DOWN: redis:channels"]


# --- deliveries -------------------------------------------------------------------------------


def test_past_the_hourly_cap_alerts_are_recorded_as_capped_and_not_sent(tmp_path, engine, receiver):
    cfg = settings(tmp_path, ALERT_URLS=receiver.url, ALERTS_PER_HOUR="2")
    cast = [paid_never_activated(f"c{i}", 1000 + i, f"c{i}@example.com") for i in range(4)]
    for i in range(3):
        record(engine, cast[: i + 1], now=T0 + timedelta(minutes=i))
        alerts.send_due_alerts(cfg, engine, now=T0 + timedelta(minutes=i))
    assert len(receiver.bodies) == 2
    assert "Alert cap reached: 2 per hour" in receiver.bodies[1]["message"]
    assert [d.status for d in deliveries(engine)] == ["sent", "sent", "capped"]
    assert deliveries(engine)[-1].error == "over the cap of 2 alerts per hour"

    an_hour_later = T0 + timedelta(minutes=61)
    record(engine, cast, now=an_hour_later)
    alerts.send_due_alerts(cfg, engine, now=an_hour_later)
    assert len(receiver.bodies) == 3 and "c3@example.com" in receiver.titles[-1]


def test_a_failing_target_is_recorded_with_its_error_and_the_others_still_get_the_alert(
    tmp_path, engine, receiver
):
    broken = Receiver(status=500)
    try:
        dead = f"json://127.0.0.1:{free_port()}/alerts"
        cfg = settings(tmp_path, ALERT_URLS=f"{receiver.url},{dead},{broken.url}")
        record(engine, [paid_never_activated()])
        assert alerts.send_due_alerts(cfg, engine, now=T0) == {
            "alerts": 1,
            "messages": 1,
            "sent": 1,
            "failed": 2,
        }
    finally:
        broken.close()
    assert len(receiver.bodies) == 1
    sent, refused, erred = deliveries(engine)
    assert sent.status == "sent"
    assert (
        refused.status == "failed"
        and "Connection error" in refused.error
        and "Connection refused" in refused.error
    )
    assert erred.status == "failed" and "error=500" in erred.error
    assert all(d.duration_ms is not None for d in (sent, refused, erred))


def test_without_alert_urls_alerts_are_recorded_for_the_dashboard_but_not_sent(tmp_path, engine):
    cfg = settings(tmp_path)
    record(engine, [paid_never_activated()])
    assert alerts.send_due_alerts(cfg, engine, now=T0) == {"alerts": 1, "messages": 1, "not_sent": 1}
    (row,) = deliveries(engine)
    assert row.status == "not_sent" and "ALERT_URLS is not set" in row.error
    assert row.title.startswith("CRITICAL: paid_without_subscription")


def test_no_secret_reaches_an_alert_its_record_or_the_target_shown(tmp_path, engine, receiver):
    redis_password, webhook_secret = "redis-pass-8d1f3c", "whsec_9aX2bC4dE6fG8hJ0kL"
    url = receiver.url.replace("json://", "json://alice:alert-pass-77c2@")
    cfg = settings(
        tmp_path,
        ALERT_URLS=url,
        REDIS_URLS=f"channels=redis://:{redis_password}@127.0.0.1:6379/0",
        WEBHOOK_SECRET=webhook_secret,
    )
    leaky = paid_never_activated()
    leaky.hint += f" (signed with {webhook_secret})"
    record(engine, [leaky])
    probe(engine, T0, "down", f"cannot reach redis://:{redis_password}@127.0.0.1:6379/0")
    alerts.send_due_alerts(cfg, engine, now=T0)
    assert len(receiver.bodies) == 2
    seen = json.dumps(receiver.bodies) + " ".join(
        f"{d.target} {d.title} {d.message}" for d in deliveries(engine)
    )
    for secret in (redis_password, webhook_secret, "alert-pass-77c2", url):
        assert secret not in seen
    assert deliveries(engine)[0].target.startswith("json://alice:****@127.0.0.1:")


def test_an_alert_url_apprise_does_not_know_is_a_bad_setting(tmp_path):
    cfg = settings(tmp_path, ALERT_URLS="nosuchservice://token-5f2a9c@example.com")
    with pytest.raises(config.ConfigError, match="ALERT_URLS") as raised:
        alerts.check_targets(cfg)
    assert "token-5f2a9c" not in str(raised.value)


@pytest.mark.postgres
def test_of_many_evaluators_claiming_one_alert_at_once_exactly_one_wins(postgres_url):
    engines = [store.open_store(postgres_url) for _ in range(8)]
    try:
        alert = alerts.Alert("finding:abc", alerts.FINDING, "t", "m", "s")
        with ThreadPoolExecutor(len(engines)) as pool:
            won = list(pool.map(lambda e: alerts.claim(e, alert, now=T0), engines))
        assert won.count(True) == 1
    finally:
        for e in engines:
            e.dispose()
