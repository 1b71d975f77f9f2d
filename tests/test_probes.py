"""The infrastructure probes against real components: redis-server, PostgreSQL, SQLite files, the Stripe
emulator, local HTTP apps and a TCP server that accepts and never answers. No mocks."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from monitor import config as config_module
from monitor.emulator import server
from monitor.probes import (
    ProbeResult,
    probe_database,
    probe_redis,
    probe_scheduler,
    probe_stripe,
    probe_webhook_url,
    run_probes,
)
from tests.services import free_port

CANARY = "canary-Pw-7f3a9c"  # a password that must never appear in a probe's detail
TEST_KEY = "sk_test_probe_key_0123456789"
LIVE_KEY = "sk_live_probe_key_0123456789"
RESTRICTED_KEY = "rk_test_no_permissions_4321"


# ---------------------------------------------------------------------------------------------------------
# Helpers: a TCP server that never answers, a webhook app answering a chosen status


@dataclass
class SilentServer:
    """Accepts TCP connections and never sends a byte: a hung Redis, PostgreSQL or web server."""

    port: int
    _listener: socket.socket
    _stop: threading.Event = field(default_factory=threading.Event)
    _accepted: list[socket.socket] = field(default_factory=list)

    def serve(self) -> None:
        self._listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        time.sleep(0.1)
        for conn in self._accepted:
            conn.close()
        self._listener.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    silent = SilentServer(listener.getsockname()[1], listener)
    threading.Thread(target=silent.serve, name="silent-server", daemon=True).start()
    yield silent.port
    silent.close()


@dataclass
class WebhookApp:
    url: str
    received: list[dict]


@pytest.fixture
def webhook_app() -> Iterator[Callable[..., WebhookApp]]:
    """`webhook_app(status, headers={}) -> WebhookApp`: a local HTTP app answering every POST with `status`,
    recording each request's method, path, headers and body."""
    servers: list[ThreadingHTTPServer] = []

    def start(status: int, headers: dict[str, str] | None = None) -> WebhookApp:
        received: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - http.server's signature
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        servers.append(httpd)
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return WebhookApp(f"http://127.0.0.1:{httpd.server_address[1]}/stripe/webhook/", received)

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def timed(call: Callable[[], ProbeResult]) -> tuple[ProbeResult, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def assert_well_formed(result: ProbeResult) -> None:
    assert result.status in ("up", "degraded", "down", "unknown")
    assert "\n" not in result.detail and result.detail
    assert result.checked_at.tzinfo is not None and result.checked_at.utcoffset() == timedelta(0)


# ---------------------------------------------------------------------------------------------------------
# Redis


@pytest.mark.redis
def test_redis_up_then_down_with_redis_pys_exact_text_then_up_again_on_the_same_port(redis_factory):
    redis = redis_factory()
    up = probe_redis("channels", redis.url)
    assert (up.name, up.status, up.detail) == ("redis:channels", "up", "PONG")
    assert up.latency_ms is not None and 0 < up.latency_ms < 1000

    redis.stop()
    down, elapsed = timed(lambda: probe_redis("channels", redis.url))
    assert down.status == "down"
    assert down.detail == f"Error 111 connecting to 127.0.0.1:{redis.port}. Connection refused."
    assert down.latency_ms is None and elapsed < 1  # no hidden retries with backoff
    assert_well_formed(down)

    redis_factory(port=redis.port)
    assert probe_redis("channels", redis.url).status == "up"


def test_refused_redis_at_localhost_reads_like_the_incidents_error():
    port = free_port()
    result = probe_redis("channels", f"redis://localhost:{port}/0")
    assert result.detail == f"Error 111 connecting to localhost:{port}. Connection refused."


def test_hung_redis_is_down_with_the_timeout_message_within_two_seconds(silent_port):
    result, elapsed = timed(lambda: probe_redis("channels", f"redis://127.0.0.1:{silent_port}/0"))
    assert result.status == "down"
    assert result.detail.startswith("Timeout reading from socket")
    assert f"127.0.0.1:{silent_port}" in result.detail
    assert 0.9 < elapsed < 2


def test_timeouts_in_the_redis_url_cannot_make_the_probe_wait_longer(silent_port):
    url = f"redis://127.0.0.1:{silent_port}/0?socket_timeout=30&socket_connect_timeout=30&retry_on_timeout=1"
    result, elapsed = timed(lambda: probe_redis("channels", url))
    assert result.status == "down" and elapsed < 2


@pytest.mark.redis
def test_redis_password_right_is_up_wrong_or_missing_is_authentication_failed_never_showing_it(
    redis_factory,
):
    redis = redis_factory(password=CANARY)
    right = probe_redis("channels", redis.url)
    wrong = probe_redis("channels", f"redis://:wrong-{CANARY}@127.0.0.1:{redis.port}/0")
    missing = probe_redis("channels", f"redis://127.0.0.1:{redis.port}/0")
    assert right.status == "up"
    assert wrong.status == "down"
    assert wrong.detail == "authentication failed: invalid username-password pair or user is disabled."
    assert missing.status == "down"
    assert missing.detail == "authentication failed: Authentication required."
    assert wrong.latency_ms is not None  # the server answered, with a refusal

    redis.stop()
    refused = probe_redis("channels", redis.url)
    assert "Connection refused" in refused.detail
    for result in (right, wrong, missing, refused):
        assert CANARY not in json.dumps(result.to_json()) and CANARY not in repr(result)


def test_a_bad_redis_url_is_down_without_its_password():
    result = probe_redis("channels", f"http://:{CANARY}@127.0.0.1:1/0")
    assert result.status == "down" and "bad Redis URL" in result.detail and CANARY not in result.detail


# ---------------------------------------------------------------------------------------------------------
# Databases


@pytest.mark.postgres
def test_postgresql_answering_select_1_is_up(postgres_url):
    result = probe_database("app_db", postgres_url)
    assert (result.name, result.status, result.detail) == ("app_db", "up", "SELECT 1 answered")
    assert result.latency_ms is not None


def test_postgresql_on_a_closed_port_is_down_with_the_drivers_message_and_no_password():
    port = free_port()
    result = probe_database("app_db", f"postgresql://app:{CANARY}@127.0.0.1:{port}/app")
    assert result.status == "down"
    assert f'connection to server at "127.0.0.1", port {port} failed: Connection refused' in result.detail
    assert CANARY not in result.detail and result.latency_ms is None
    assert_well_formed(result)


def test_missing_sqlite_file_is_down_and_is_not_created(tmp_path: Path):
    path = tmp_path / "data" / "app.db"
    result = probe_database("app_db", f"sqlite:///{path}")
    assert result.status == "down" and result.detail == f"no such file: {path}"
    assert not path.exists() and not path.parent.exists()


def test_sqlite_file_is_up_even_while_a_writer_holds_an_exclusive_lock(tmp_path: Path):
    path = tmp_path / "app.db"
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("CREATE TABLE t (x)")
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute("INSERT INTO t VALUES (1)")
        result, elapsed = timed(lambda: probe_database("monitor_db", f"sqlite:///{path}"))
    finally:
        writer.close()
    assert result.status == "up" and elapsed < 1


def test_a_file_that_is_not_sqlite_is_down(tmp_path: Path):
    path = tmp_path / "notes.db"
    path.write_text("these are not the tables you are looking for\n" * 20)
    result = probe_database("app_db", f"sqlite:///{path}")
    assert result.status == "down" and result.detail == f"{path}: file is not a database"


# ---------------------------------------------------------------------------------------------------------
# Stripe (through the emulator)


def test_stripe_key_accepted_is_up_in_test_mode_with_account_and_latency():
    with server.start(api_key=TEST_KEY) as running:
        result = probe_stripe(TEST_KEY, running.base_url)
    assert result.name == "stripe_api" and result.status == "up"
    assert result.detail.startswith("key accepted (test mode), account acct_emulator, ")
    assert result.detail.endswith(" ms") and result.latency_ms is not None


def test_stripe_live_key_is_reported_in_live_mode():
    with server.start(api_key=LIVE_KEY) as running:
        result = probe_stripe(LIVE_KEY, running.base_url)
    assert result.status == "up" and "(live mode)" in result.detail


def test_stripe_rejected_key_is_down_401_without_the_key():
    with server.start(api_key=TEST_KEY) as running:
        result = probe_stripe("sk_test_someone_elses_key_9876", running.base_url)
    assert result.status == "down"
    assert result.detail == "key rejected (401): Invalid API Key provided: sk_test_****9876"
    assert "someone_elses" not in result.detail


def test_stripe_403_is_degraded_and_told_apart_from_401():
    with server.start(api_key=TEST_KEY, forbidden_keys=[RESTRICTED_KEY]) as running:
        result = probe_stripe(RESTRICTED_KEY, running.base_url)
    assert result.status == "degraded"
    assert result.detail.startswith("key accepted but may not read the account (403): The provided key")
    assert result.detail.endswith("(a restricted key?)") and RESTRICTED_KEY not in result.detail


def test_stripe_500_is_down_after_exactly_one_request():
    with server.start(error_rate=1.0) as running:
        result = probe_stripe(TEST_KEY, running.base_url)
        requests_made = running.emulator.stats()["requests"]
    assert result.status == "down" and result.detail.startswith("Stripe failed (500): An unknown error")
    assert requests_made == 1  # max_network_retries=0: the SDK retried nothing


def test_stripe_429_is_degraded_at_once_without_backing_off():
    with server.start(rate_limit=0.01) as running:
        first = probe_stripe(TEST_KEY, running.base_url)
        second, elapsed = timed(lambda: probe_stripe(TEST_KEY, running.base_url))
        requests_made = running.emulator.stats()["requests"]
    assert first.status == "up"
    assert second.status == "degraded" and second.detail.startswith("rate limited (429): ")
    assert requests_made == 2 and elapsed < 0.5


def test_stripe_slower_than_the_read_timeout_is_down_within_two_seconds():
    with server.start(latency_ms=1500) as running:
        result, elapsed = timed(lambda: probe_stripe(TEST_KEY, running.base_url))
    assert result.status == "down" and "Read timed out" in result.detail
    assert result.latency_ms is None and 0.9 < elapsed < 2


def test_stripe_unreachable_is_down_with_the_connection_error():
    port = free_port()
    result = probe_stripe(TEST_KEY, f"http://127.0.0.1:{port}")
    assert result.status == "down" and result.detail.startswith(f"cannot reach http://127.0.0.1:{port}: ")
    assert "Connection refused" in result.detail and TEST_KEY not in result.detail


# ---------------------------------------------------------------------------------------------------------
# Webhook URL


@pytest.mark.parametrize(
    ("status", "verdict", "words"),
    [
        (400, "up", "route alive: answered 400 Bad Request to an unsigned request"),
        (401, "up", "route alive: answered 401 Unauthorized"),
        (403, "up", "route alive: answered 403 Forbidden"),
        (200, "degraded", "accepted an unsigned request (answered 200 OK): does the handler verify"),
        (204, "degraded", "accepted an unsigned request"),
        (404, "down", "answered 404 Not Found: no webhook route at this URL"),
        (405, "down", "answered 405 Method Not Allowed: refuses POST"),
        (500, "down", "answered 500 Internal Server Error"),
        (503, "down", "answered 503 Service Unavailable"),
        (422, "degraded", "answered 422 Unprocessable Entity to an unsigned request"),
    ],
)
def test_webhook_url_verdict_follows_the_apps_answer_to_an_unsigned_post(webhook_app, status, verdict, words):
    app = webhook_app(status)
    result = probe_webhook_url(app.url)
    assert (result.name, result.status) == ("webhook_endpoint", verdict)
    assert words in result.detail
    assert result.latency_ms is not None


def test_webhook_probe_sends_an_unsigned_json_post_once(webhook_app):
    app = webhook_app(400)
    probe_webhook_url(app.url)
    assert len(app.received) == 1
    request = app.received[0]
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert request["path"] == "/stripe/webhook/" and request["body"] == b"{}"
    assert headers["content-type"] == "application/json" and "stripe-signature" not in headers


def test_webhook_url_that_redirects_is_down_because_stripe_does_not_follow(webhook_app):
    app = webhook_app(301, {"Location": "https://www.example.com/stripe/webhook/"})
    result = probe_webhook_url(app.url)
    assert result.status == "down"
    assert result.detail == (
        "redirects to https://www.example.com/stripe/webhook/ (301 Moved Permanently): "
        "Stripe does not follow redirects"
    )
    assert len(app.received) == 1  # not followed


def test_webhook_url_on_a_closed_port_is_down_connection_refused():
    url = f"http://127.0.0.1:{free_port()}/stripe/webhook/"
    result = probe_webhook_url(url)
    assert result.status == "down" and result.detail.startswith(f"cannot connect to {url}: ")
    assert "Connection refused" in result.detail and result.latency_ms is None


def test_webhook_url_that_never_answers_is_down_within_two_seconds(silent_port):
    result, elapsed = timed(lambda: probe_webhook_url(f"http://127.0.0.1:{silent_port}/hook"))
    assert result.status == "down" and "Read timed out" in result.detail and elapsed < 2


def test_webhook_url_with_a_tls_failure_is_down(webhook_app):
    app = webhook_app(400)  # plain HTTP, asked for TLS
    result = probe_webhook_url(app.url.replace("http://", "https://"))
    assert result.status == "down" and result.detail.startswith("TLS failure at https://127.0.0.1:")


def test_webhook_url_credentials_are_masked(webhook_app):
    app = webhook_app(404)
    result = probe_webhook_url(app.url.replace("http://", f"http://hook:{CANARY}@"))
    assert result.status == "down" and CANARY not in result.detail


def test_unconfigured_webhook_url_is_unknown():
    result = probe_webhook_url(None)
    assert result.status == "unknown" and result.detail == "EXPECTED_WEBHOOK_URL is not configured"
    assert result.latency_ms is None


# ---------------------------------------------------------------------------------------------------------
# Scheduler (pure)

NOW = datetime(2026, 11, 26, 11, 20, tzinfo=UTC)


def test_scheduler_with_a_recent_run_is_up():
    result = probe_scheduler(NOW - timedelta(seconds=12), now=NOW, max_age=timedelta(seconds=60))
    assert (result.name, result.status) == ("scheduler", "up")
    assert result.detail == "last scheduled run 12 s ago (limit 1 min)"
    assert result.checked_at == NOW and result.latency_ms is None


def test_scheduler_run_exactly_at_the_limit_is_still_up():
    result = probe_scheduler(NOW - timedelta(seconds=60), now=NOW, max_age=timedelta(seconds=60))
    assert result.status == "up"


def test_scheduler_with_an_old_run_is_down_with_its_age():
    result = probe_scheduler(NOW - timedelta(minutes=14), now=NOW, max_age=timedelta(seconds=60))
    assert result.status == "down"
    assert result.detail == "last scheduled run 14 min ago (limit 1 min): is `python -m jobs` running?"


def test_scheduler_never_run_is_unknown():
    result = probe_scheduler(None, now=NOW, max_age=timedelta(seconds=60))
    assert result.status == "unknown"
    assert result.detail == "no scheduled run recorded yet: start `python -m jobs`"


def test_scheduler_naive_last_run_is_read_as_utc():
    naive = (NOW - timedelta(minutes=3)).replace(tzinfo=None)
    result = probe_scheduler(naive, now=NOW, max_age=timedelta(minutes=5))
    assert result.status == "up" and result.detail == "last scheduled run 3 min ago (limit 5 min)"


def test_to_json_is_designs_component_object():
    result = ProbeResult("redis:channels", "up", "PONG", 1.2345, datetime(2026, 11, 26, 11, 20, 0, 123, UTC))
    assert result.to_json() == {
        "name": "redis:channels",
        "status": "up",
        "detail": "PONG",
        "latency_ms": 1.2,
        "checked_at": "2026-11-26T11:20:00Z",
    }
    assert ProbeResult("app_db", "down", "x", None, NOW).to_json()["latency_ms"] is None


# ---------------------------------------------------------------------------------------------------------
# run_probes


def load_config(tmp_path: Path, **env: str) -> config_module.Config:
    return config_module.load(env, toml_path=tmp_path / "absent.toml")


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown, so a probe written to hang forever lets its thread end."""
    event = threading.Event()
    yield event
    event.set()


def test_run_probes_with_everything_dead_or_hung_returns_within_the_deadline_listing_every_component(
    tmp_path, silent_port, release
):
    refused = free_port()
    config = load_config(
        tmp_path,
        STRIPE_API_KEY=TEST_KEY,
        STRIPE_API_BASE=f"http://127.0.0.1:{silent_port}",
        REDIS_URLS=f"channels=redis://:{CANARY}@localhost:{refused}/0,celery=redis://127.0.0.1:{silent_port}/1",
        MONITOR_DATABASE_URL=f"sqlite:///{tmp_path / 'missing' / 'monitor.db'}",
        APP_DATABASE_URL=f"postgresql://app:{CANARY}@127.0.0.1:{silent_port}/app",
        EXPECTED_WEBHOOK_URL=f"http://127.0.0.1:{silent_port}/stripe/webhook/",
    )

    def hangs() -> ProbeResult:
        release.wait()
        raise AssertionError("released after the test")

    results, elapsed = timed(lambda: run_probes(config, extra={"scheduler": hangs}))
    assert elapsed < 4.0 + 0.5
    assert [r.name for r in results] == [
        "redis:channels",
        "redis:celery",
        "monitor_db",
        "app_db",
        "stripe_api",
        "webhook_endpoint",
        "scheduler",
    ]
    assert all(r.status == "down" for r in results), [(r.name, r.status, r.detail) for r in results]
    by_name = {r.name: r for r in results}
    assert (
        by_name["redis:channels"].detail
        == f"Error 111 connecting to localhost:{refused}. Connection refused."
    )
    assert by_name["redis:celery"].detail.startswith("Timeout reading from socket")
    assert by_name["monitor_db"].detail.startswith("no such file: ")
    assert by_name["app_db"].detail == "connection timeout expired"
    assert "Read timed out" in by_name["stripe_api"].detail
    assert "Read timed out" in by_name["webhook_endpoint"].detail
    assert by_name["scheduler"].detail == "no answer within 4.0 s"
    assert all(CANARY not in json.dumps(r.to_json()) for r in results)
    left = [t for t in threading.enumerate() if t.name == "probe-scheduler"]
    assert left and all(t.daemon for t in left)  # cannot hold up the interpreter's exit


def test_demo_mode_never_contacts_stripe_or_the_webhook_url(tmp_path, webhook_app):
    app = webhook_app(400)
    with server.start() as stripe_like:
        config = load_config(
            tmp_path,
            STRIPE_API_BASE=stripe_like.base_url,
            EXPECTED_WEBHOOK_URL=app.url,
            REDIS_URLS=f"channels=redis://127.0.0.1:{free_port()}/0",
            MONITOR_DATABASE_URL=f"sqlite:///{tmp_path / 'monitor.db'}",
            APP_DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}",
        )
        assert config.demo
        results = run_probes(config)
        stripe_requests = stripe_like.emulator.stats()["requests"]
    by_name = {r.name: r for r in results}
    assert by_name["stripe_api"].status == "unknown"
    assert by_name["stripe_api"].detail.startswith("demo mode: ")
    assert by_name["webhook_endpoint"].status == "unknown"
    assert by_name["webhook_endpoint"].detail == "demo mode: the expected URL is not contacted"
    assert stripe_requests == 0 and app.received == []


def test_extra_probes_replace_built_ins_in_place_and_are_appended_otherwise(tmp_path):
    config = load_config(
        tmp_path,
        REDIS_URLS=f"channels=redis://127.0.0.1:{free_port()}/0",
        MONITOR_DATABASE_URL=f"sqlite:///{tmp_path / 'monitor.db'}",
        APP_DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}",
    )
    with server.start(api_key=TEST_KEY) as emulator:

        def broken() -> ProbeResult:
            raise RuntimeError("a bug in a probe")

        results = run_probes(
            config,
            extra={
                "stripe_api": lambda: probe_stripe(TEST_KEY, emulator.base_url),
                "scheduler": lambda: probe_scheduler(None, now=NOW, max_age=timedelta(minutes=1)),
                "custom": broken,
            },
        )
    names = [r.name for r in results]
    assert names == [
        "redis:channels",
        "monitor_db",
        "app_db",
        "stripe_api",
        "webhook_endpoint",
        "scheduler",
        "custom",
    ]
    by_name = {r.name: r for r in results}
    assert by_name["stripe_api"].status == "up" and "acct_emulator" in by_name["stripe_api"].detail
    assert by_name["webhook_endpoint"].detail == "EXPECTED_WEBHOOK_URL is not configured"
    assert by_name["scheduler"].status == "unknown"
    assert by_name["custom"].status == "unknown"
    assert by_name["custom"].detail == "probe failed: RuntimeError: a bug in a probe"


def test_run_probes_masks_the_configurations_secrets_in_every_detail(tmp_path):
    config = load_config(
        tmp_path,
        STRIPE_API_KEY=TEST_KEY,
        APP_DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}",
        MONITOR_DATABASE_URL=f"sqlite:///{tmp_path / 'monitor.db'}",
        REDIS_URLS=f"channels=redis://127.0.0.1:{free_port()}/0",
    )
    leaky = ProbeResult("stripe_api", "down", f"the key {TEST_KEY} was refused", None, NOW)
    results = run_probes(config, extra={"stripe_api": lambda: leaky})
    stripe = next(r for r in results if r.name == "stripe_api")
    assert TEST_KEY not in stripe.detail and stripe.detail.startswith("the key sk_test_")
