"""Infrastructure probes: is each thing the payment path needs answering right now?

One function per component, each with a 1 s connect and a 1 s read timeout and no hidden retries, each
returning a `ProbeResult` (never raising): Redis (PING), the monitor's and the app's databases (SELECT 1),
the Stripe API (GET /v1/account), the app's webhook URL (an unsigned POST) and the scheduler's heartbeat
(pure). `run_probes` runs them all in parallel daemon threads and returns within its deadline whatever
happens, so `python -m monitor check` answers in time even when every dependency is dead or hung.

`detail` is one line with the component's own error text where there is one (redis-py's
`Error 111 connecting to localhost:6379. Connection refused.` word for word), never a password or key.
`latency_ms` is the time until the component answered, errors included (a 401, a failed AUTH); it is
None when nothing answered (refused, timed out, abandoned at the deadline) or nothing was probed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
import requests
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from monitor import demo
from monitor.clock import now_exact
from monitor.config import Config
from monitor.rules.timefmt import format_duration, iso
from monitor.secrets import mask_secrets, mask_url, url_secrets
from monitor.stripe_api.source import StripeSource

UP, DEGRADED, DOWN, UNKNOWN = "up", "degraded", "down", "unknown"
CONNECT_TIMEOUT_S = 1
READ_TIMEOUT_S = 1
DEFAULT_DEADLINE_S = 4.0
USER_AGENT = "payment-parity-monitor-probe"


@dataclass(frozen=True)
class ProbeResult:
    """One probe of one component. `checked_at` is tz-aware UTC."""

    name: str  # "redis:<name>", "monitor_db", "app_db", "stripe_api", "webhook_endpoint", "scheduler"
    status: str  # up | degraded | down | unknown
    detail: str
    latency_ms: float | None
    checked_at: datetime

    def to_json(self) -> dict:
        """DESIGN.md's component object of `check --json`."""
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "checked_at": iso(self.checked_at),
        }


_now = now_exact


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _result(name: str, status: str, detail: str, latency_ms: float | None, secrets=()) -> ProbeResult:
    return ProbeResult(name, status, mask_secrets(_one_line(detail), tuple(secrets)), latency_ms, _now())


class _Clock:
    def __init__(self) -> None:
        self._start = time.perf_counter()

    @property
    def ms(self) -> float:
        return (time.perf_counter() - self._start) * 1000


# ---------------------------------------------------------------------------------------------------------
# Redis


def probe_redis(name: str, url: str) -> ProbeResult:
    """PING the Redis at `url`; the result is named `redis:<name>`.

    redis-py 8 retries refused connections with backoff by default (about 4 s before it reports) and
    retries AuthenticationError too (a ConnectionError subclass), so the client gets no retry at all.
    Timeouts and retry settings in the URL's query are overridden. RESP2 is used whatever the URL says:
    PING answers the same, it works on servers without HELLO, and a missing password then reads
    "Authentication required." instead of the HELLO explanation.
    """
    component = f"redis:{name}"
    found = url_secrets(url)
    secrets = found.secrets
    ours = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": READ_TIMEOUT_S,
        "retry": None,
        "retry_on_timeout": False,
        "retry_on_error": [],
        "protocol": 2,
    }
    try:
        client = redis.Redis.from_url(url, **ours)
    except (ValueError, redis.RedisError) as e:
        # redis-py's message may quote a piece of a password it took for a port; found.problem never does
        detail = f"bad Redis URL {found.shown}: {found.problem or e}"
        return _result(component, DOWN, detail, None, secrets)
    client.connection_pool.connection_kwargs.update(ours)  # the URL's options won over ours in from_url
    clock = _Clock()
    try:
        client.ping()
        return _result(component, UP, "PONG", clock.ms, secrets)
    except redis.AuthenticationError as e:
        return _result(component, DOWN, f"authentication failed: {e}", clock.ms, secrets)
    except redis.TimeoutError as e:
        where = _redis_address(client)
        detail = f"{e} ({where}: no answer within {READ_TIMEOUT_S} s)"
        return _result(component, DOWN, detail, None, secrets)
    except redis.ConnectionError as e:
        return _result(component, DOWN, str(e), None, secrets)
    except redis.RedisError as e:  # the server answered, with an error (LOADING, MISCONF, a denied PING…)
        return _result(component, DOWN, f"{type(e).__name__}: {e}", clock.ms, secrets)
    finally:
        client.close()
        client.connection_pool.disconnect()


def _redis_address(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix socket {kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


# ---------------------------------------------------------------------------------------------------------
# Databases


def probe_database(name: str, url: str) -> ProbeResult:
    """`SELECT 1` on the database at `url` (SQLite or PostgreSQL).

    PostgreSQL: `connect_timeout=1`, which libpq and psycopg round up to their minimum of 2 s; a server
    that hangs after the handshake is bounded by `run_probes`' deadline (psycopg has no client-side read
    timeout). SQLite: a missing file is down ("no such file") and is never created: the file is opened
    read-only. `SELECT 1` needs no lock, so a database locked by a writer still answers; the file's header
    is checked instead, since SQLite answers `SELECT 1` on any file.
    """
    secrets = url_secrets(url).secrets
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        return _result(name, DOWN, f"bad database URL {mask_url(url)}: {e}", None, secrets)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _probe_sqlite(name, parsed)
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if backend == "postgresql" else {}
    try:
        engine = create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
    except (ArgumentError, SQLAlchemyError, ImportError, ValueError) as e:
        return _result(name, DOWN, f"cannot use {mask_url(url)}: {e}", None, secrets)
    return _select_one(name, engine, secrets)


def _probe_sqlite(name: str, parsed) -> ProbeResult:
    database = parsed.database or ""
    if database in ("", ":memory:") or parsed.query.get("uri"):
        # An in-memory database, or an explicit `file:` URI whose mode the URL's author chose.
        return _select_one(name, create_engine(parsed, poolclass=NullPool), ())
    path = Path(database)
    # The file is never opened here, only through SQLite: closing any descriptor of a database file drops
    # every POSIX lock that this process's SQLite connections hold on it (sqlite.org/howtocorrupt.html,
    # section 2.2), and the jobs process probes the store and the app database it has open. SQLite reads
    # the header itself (`PRAGMA schema_version` fails with "file is not a database").
    if not path.exists():
        return _result(name, DOWN, f"no such file: {database}", None)

    def read_only():
        import sqlite3

        uri = path.resolve().as_uri() + "?mode=ro"  # read-only: never creates the file
        # No busy wait: a writer's exclusive lock answers "database is locked" at once, which is an answer.
        return sqlite3.connect(uri, uri=True, timeout=0, check_same_thread=False)

    def header(conn) -> None:
        try:
            conn.exec_driver_sql("PRAGMA schema_version")  # reads the header: "file is not a database"
        except OperationalError as e:
            if "locked" not in str(e.orig):  # locked by a writer: a database, in use
                raise

    engine = create_engine("sqlite://", creator=read_only, poolclass=NullPool)
    result = _select_one(name, engine, (), first=header)
    if result.status == DOWN and result.detail == "file is not a database":
        return replace(result, detail=f"{database}: file is not a database")
    return result


def _select_one(name: str, engine, secrets, first: Callable | None = None) -> ProbeResult:
    clock = _Clock()
    try:
        with engine.connect() as conn:
            if first is not None:
                first(conn)
            value = conn.exec_driver_sql("SELECT 1").scalar()
        if value != 1:
            return _result(name, DOWN, f"SELECT 1 answered {value!r}", clock.ms, secrets)
        return _result(name, UP, "SELECT 1 answered", clock.ms, secrets)
    except SQLAlchemyError as e:
        orig = getattr(e, "orig", None)
        return _result(name, DOWN, str(orig if orig is not None else e), None, secrets)
    except Exception as e:  # noqa: BLE001 - a driver error SQLAlchemy did not wrap (e.g. from a creator)
        return _result(name, DOWN, f"{type(e).__name__}: {e}", None, secrets)
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------------------
# Stripe


def probe_stripe(api_key: str, api_base: str) -> ProbeResult:
    """`GET /v1/account` with the configured key: one request, 1 s + 1 s timeouts, no retries at all.

    200 up (test or live mode, account id, latency); 401 down (key rejected); 403 degraded (the key works
    but may not read the account: a restricted key); 429 degraded; 5xx, other answers, refused or timed
    out: down.
    """
    name = "stripe_api"
    secrets = (api_key,)
    source = StripeSource(
        api_key, api_base, max_network_retries=0, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
    )
    clock = _Clock()
    try:
        check = source.check_account()
    finally:
        source.close()
    ms = clock.ms
    status = check.http_status
    if status is None:
        return _result(name, DOWN, f"cannot reach {source.api_base}: {check.message}", None, secrets)
    if 200 <= status < 300 and check.account is not None:
        livemode = check.account.get("livemode")
        if not isinstance(livemode, bool):
            livemode = "_live_" in api_key
        account = check.account.get("id") or "(no id)"
        detail = f"key accepted ({'live' if livemode else 'test'} mode), account {account}, {ms:.0f} ms"
        return _result(name, UP, detail, ms, secrets)
    if status == 401:
        return _result(name, DOWN, f"key rejected (401): {check.message}", ms, secrets)
    if status == 403:
        detail = f"key accepted but may not read the account (403): {check.message} (a restricted key?)"
        return _result(name, DEGRADED, detail, ms, secrets)
    if status == 429:
        return _result(name, DEGRADED, f"rate limited (429): {check.message}", ms, secrets)
    if status >= 500:
        return _result(name, DOWN, f"Stripe failed ({status}): {check.message}", ms, secrets)
    return _result(name, DOWN, f"unexpected answer ({status}): {check.message}", ms, secrets)


# ---------------------------------------------------------------------------------------------------------
# Webhook URL

# 400, 401 and 403 to an unsigned POST: the route exists and refuses what is not signed by Stripe.
ALIVE_STATUSES = frozenset({400, 401, 403})
# 404 and 410: no route. 405: the URL exists but refuses POST, and Stripe delivers by POST, so every
# delivery would fail exactly as if the route were missing.
DEAD_STATUSES = frozenset({404, 405, 410})


def probe_webhook_url(url: str | None) -> ProbeResult:
    """An unsigned POST of `{}` to the expected webhook URL (no Stripe-Signature header, no redirects).

    400/401/403 up (the route is alive and checks signatures); 2xx degraded (it accepted an unsigned
    request); 3xx down (Stripe does not follow redirects); 404/405/410 down; other 4xx degraded (alive,
    but an answer a signature check does not give); 5xx, refused, timed out, TLS or DNS failure down.
    """
    name = "webhook_endpoint"
    if url is None:
        return _result(name, UNKNOWN, "EXPECTED_WEBHOOK_URL is not configured", None)
    secrets = url_secrets(url).secrets
    shown = mask_url(url)
    clock = _Clock()
    try:
        with requests.Session() as session:
            response = session.post(
                url,
                data=b"{}",
                headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
                timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                allow_redirects=False,
            )
            response.close()
    except requests.exceptions.SSLError as e:
        return _result(name, DOWN, f"TLS failure at {shown}: {_requests_reason(e)}", None, secrets)
    except requests.exceptions.Timeout as e:
        return _result(name, DOWN, f"no answer from {shown}: {_requests_reason(e)}", None, secrets)
    except requests.exceptions.ConnectionError as e:
        return _result(name, DOWN, f"cannot connect to {shown}: {_requests_reason(e)}", None, secrets)
    except (requests.RequestException, ValueError) as e:
        return _result(name, DOWN, f"cannot POST to {shown}: {_requests_reason(e)}", None, secrets)
    ms = clock.ms
    code = response.status_code
    answered = f"{code} {response.reason}".strip() if response.reason else str(code)
    if code in ALIVE_STATUSES:
        detail = (
            f"route alive: answered {answered} to an unsigned request, as a signature-checking handler should"
        )
        return _result(name, UP, detail, ms, secrets)
    if 200 <= code < 300:
        detail = (
            f"accepted an unsigned request (answered {answered}): does the handler verify Stripe signatures?"
        )
        return _result(name, DEGRADED, detail, ms, secrets)
    if 300 <= code < 400:
        location = response.headers.get("Location") or "(no Location header)"
        detail = f"redirects to {mask_url(location)} ({answered}): Stripe does not follow redirects"
        return _result(name, DOWN, detail, ms, secrets)
    if code in DEAD_STATUSES:
        why = "refuses POST, and Stripe delivers by POST" if code == 405 else "no webhook route at this URL"
        return _result(name, DOWN, f"answered {answered}: {why}", ms, secrets)
    if code >= 500:
        return _result(name, DOWN, f"answered {answered}: the app fails on this URL", ms, secrets)
    detail = f"answered {answered} to an unsigned request: alive, but not the 400 a signature check gives"
    return _result(name, DEGRADED, detail, ms, secrets)


def _requests_reason(e: requests.RequestException) -> str:
    """The innermost reason of a requests error (urllib3's NewConnectionError, SSLError…), else its text."""
    inner = e.args[0] if e.args else None
    reason = getattr(inner, "reason", None)
    return _one_line(reason if reason is not None else e)


# ---------------------------------------------------------------------------------------------------------
# Scheduler


def probe_scheduler(last_run_at: datetime | None, *, now: datetime, max_age: timedelta) -> ProbeResult:
    """Pure: up if the last scheduled job run is at most `max_age` old, down if older, unknown if never.
    A naive `last_run_at` is taken as UTC (SQLite returns naive datetimes)."""
    name = "scheduler"
    checked_at = now if now.tzinfo else now.replace(tzinfo=UTC)
    if last_run_at is None:
        detail = "no scheduled run recorded yet: start `python -m jobs`"
        return ProbeResult(name, UNKNOWN, detail, None, checked_at)
    if last_run_at.tzinfo is None:
        last_run_at = last_run_at.replace(tzinfo=UTC)
    age = max(timedelta(0), checked_at - last_run_at)
    shown = f"last scheduled run {format_duration(age)} ago (limit {format_duration(max_age)})"
    if age <= max_age:
        return ProbeResult(name, UP, shown, None, checked_at)
    return ProbeResult(name, DOWN, f"{shown}: is `python -m jobs` running?", None, checked_at)


# ---------------------------------------------------------------------------------------------------------
# All of them


def run_probes(
    config: Config,
    *,
    deadline_s: float = DEFAULT_DEADLINE_S,
    extra: dict[str, Callable[[], ProbeResult]] | None = None,
) -> list[ProbeResult]:
    """Every component of `config` probed in parallel; returns within `deadline_s` whatever happens.

    Order: each Redis in configuration order, monitor_db, app_db, stripe_api, webhook_endpoint, then the
    `extra` probes (an extra whose name is a built-in's replaces it, in its place). A probe still running
    at the deadline is down "no answer within N s"; its daemon thread is left behind and cannot delay the
    interpreter's exit. A probe that raises (a bug) is unknown. Every detail is masked with the
    configuration's secrets.
    """
    probes: dict[str, Callable[[], ProbeResult]] = {}
    for redis_name, url in config.redis_urls.items():
        probes[f"redis:{redis_name}"] = _bind(probe_redis, redis_name, url)
    probes["monitor_db"] = _bind(probe_database, "monitor_db", config.monitor_database_url)
    probes["app_db"] = _bind(probe_database, "app_db", config.app_database_url)
    probes["stripe_api"] = _bind(probe_stripe, config.stripe_api_key, config.stripe_api_base)
    probes["webhook_endpoint"] = _bind(probe_webhook_url, config.expected_webhook_url)
    for name, why in demo.unprobed(config).items():
        probes[name] = _bind(_result, name, UNKNOWN, why, None)
    probes.update(extra or {})

    results: dict[str, ProbeResult] = {}
    lock = threading.Lock()

    def run(name: str, probe: Callable[[], ProbeResult]) -> None:
        try:
            result = replace(probe(), name=name)
        except Exception as e:  # noqa: BLE001 - a bug in one probe must not hide the other components
            result = _result(name, UNKNOWN, f"probe failed: {type(e).__name__}: {e}", None)
        with lock:
            results[name] = result

    end = time.monotonic() + deadline_s
    threads = [
        threading.Thread(target=run, args=(name, probe), name=f"probe-{name}", daemon=True)
        for name, probe in probes.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    with lock:
        finished = dict(results)
    ordered = []
    for name in probes:
        result = finished.get(name) or _result(name, DOWN, f"no answer within {deadline_s:.1f} s", None)
        ordered.append(replace(result, detail=config.mask(result.detail)))
    return ordered


def _bind(function: Callable[..., ProbeResult], *args) -> Callable[[], ProbeResult]:
    return lambda: function(*args)


__all__ = [
    "ProbeResult",
    "probe_database",
    "probe_redis",
    "probe_scheduler",
    "probe_stripe",
    "probe_webhook_url",
    "run_probes",
]
