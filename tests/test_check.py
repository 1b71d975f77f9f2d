"""`monitor check` and the demo's delivery story end to end: Nagios verdicts, the component list, answering
in time when dependencies are dead or hung, Prometheus metrics, and root-cause hints."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import load
from monitor.pipeline import run_check, verdict
from tests.services import free_port
from tests.stripe_cast import REDIS_ERROR

COMPONENTS = {"stripe_api", "monitor_db", "app_db", "webhook_endpoint", "scheduler"}


def dead_redis() -> str:
    return f"channels=redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def hung_port():
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def component(report: dict, name: str) -> dict:
    return {c["name"]: c for c in report["components"]}[name]


def test_demo_with_redis_down_is_critical_with_redis_pys_own_words(cli_main):
    assert cli_main(["sync"]).returncode == 0
    started = time.monotonic()
    run = cli_main(["check", "--json"], {"REDIS_URLS": dead_redis()})
    took = time.monotonic() - started
    assert run.returncode == 2, run.stderr
    report = json.loads(run.stdout)
    assert report["status"] == "CRITICAL"
    redis = component(report, "redis:channels")
    assert redis["status"] == "down"
    assert re.search(r"Error 111 connecting to 127\.0\.0\.1:\d+\. Connection refused\.", redis["detail"])
    assert {c["name"] for c in report["components"]} >= COMPONENTS
    assert took < 6  # the check keeps to its 4 s deadline


def test_a_running_redis_is_up(cli_main, redis_server):
    run = cli_main(["check", "--json"], {"REDIS_URLS": f"channels={redis_server}"})
    assert component(json.loads(run.stdout), "redis:channels")["status"] == "up"


def test_check_answers_in_time_when_everything_is_dead_or_hung(cli_main, hung_port):
    env = {
        "REDIS_URLS": f"hung=redis://127.0.0.1:{hung_port}/0,dead=redis://127.0.0.1:{free_port()}/0",
        "STRIPE_API_KEY": "sk_test_nothing_answers",
        "STRIPE_API_BASE": f"http://127.0.0.1:{hung_port}",
        "APP_DATABASE_URL": f"postgresql://app:pw@127.0.0.1:{hung_port}/app",
        "EXPECTED_WEBHOOK_URL": f"http://127.0.0.1:{hung_port}/stripe/webhook",
    }
    started = time.monotonic()
    run = cli_main(["check", "--json"], env)
    took = time.monotonic() - started
    report = json.loads(run.stdout)
    assert run.returncode == 2
    assert took < 6
    for name in ("redis:hung", "redis:dead", "stripe_api", "app_db", "webhook_endpoint"):
        assert component(report, name)["status"] == "down", component(report, name)
    assert "pw@" not in run.stdout


def test_check_keeps_its_deadline_when_its_own_store_hangs_too(hung_port, tmp_path):
    """The store's read and the probes share one deadline: with the monitor's own store on a PostgreSQL
    that accepts and never answers (and every component dead or hung), check answers within 5 s."""
    config = load(
        {
            "MONITOR_DATABASE_URL": f"postgresql://monitor:pw@127.0.0.1:{hung_port}/monitor",
            "APP_DATABASE_URL": f"postgresql://app:pw@127.0.0.1:{hung_port}/app",
            "REDIS_URLS": f"hung=redis://127.0.0.1:{hung_port}/0",
            "STRIPE_API_KEY": "sk_test_nothing_answers",
            "STRIPE_API_BASE": f"http://127.0.0.1:{hung_port}",
        },
        toml_path=tmp_path / "none.toml",
    )
    started = time.monotonic()
    report = run_check(config)
    took = time.monotonic() - started
    assert took < 5.0, took
    assert report.status == "CRITICAL"
    assert {c.name: c.status for c in report.components}["scheduler"] == "unknown"
    assert any("store could not be read" in n for n in report.notes)


def test_check_writes_prometheus_metrics_in_the_text_format(cli_main, tmp_path):
    assert cli_main(["sync"]).returncode == 0
    assert cli_main(["reconcile"]).returncode == 0
    path = tmp_path / "monitor.prom"
    cli_main(["check", "--prometheus", str(path)], {"REDIS_URLS": dead_redis()})
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    open_findings = {s.labels["kind"]: s.value for s in families["payment_monitor_open_findings"].samples}
    assert open_findings["paid_without_subscription"] >= 1
    up = {s.labels["component"]: s.value for s in families["payment_monitor_component_up"].samples}
    assert up["redis:channels"] == 0
    risk = {s.labels["currency"]: s.value for s in families["payment_monitor_amount_at_risk"].samples}
    assert risk["usd"] >= 149


def test_the_demo_shows_every_webhook_kind_and_explains_the_incident(cli_main):
    assert cli_main(["sync"]).returncode == 0
    report = json.loads(cli_main(["reconcile", "--json"]).stdout)
    kinds = {f["kind"] for f in report["findings"]}
    assert {"webhook_undelivered", "webhook_failed", "webhook_missing", "endpoint_misconfigured"} <= kinds
    endpoint = next(f for f in report["findings"] if f["kind"] == "endpoint_misconfigured")
    urls = set(re.findall(r"https?://[^\s\"'<>]+", endpoint["hint"]))
    assert {
        "https://staging.example-saas.com/stripe/webhook",
        "https://app.example-saas.com/stripe/webhook",
    } <= urls
    incident = next(
        f for f in report["findings"] if f["kind"] == "paid_without_subscription" and f["amount"] == 14900
    )
    hint = incident["hint"]
    assert incident["event_id"] in hint
    assert f"\u201c{REDIS_ERROR}\u201d" in hint
    assert re.search(r"redis:channels down \d\d:\d\d–\d\d:\d\d UTC", hint)


def comp(status: str) -> SimpleNamespace:
    return SimpleNamespace(status=status)


@pytest.mark.parametrize(
    ("statuses", "findings", "store_read", "expected"),
    [
        (["up", "up"], {}, True, "OK"),
        (["up", "down"], {}, True, "CRITICAL"),
        (["up", "up"], {"paid_without_subscription": 1}, True, "CRITICAL"),
        (["up", "degraded"], {}, True, "WARNING"),
        (["up", "unknown"], {}, True, "WARNING"),
        (["up", "up"], {"amount_mismatch": 2}, True, "WARNING"),
        (["up", "up"], {"paid_without_subscription": 0}, True, "OK"),
        (["up", "up"], {}, False, "UNKNOWN"),
        (["down", "up"], {}, False, "CRITICAL"),
    ],
)
def test_the_verdict_is_the_worst_of_components_and_findings(statuses, findings, store_read, expected):
    assert verdict([comp(s) for s in statuses], findings, store_read=store_read) == expected
