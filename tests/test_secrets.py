"""Canary secrets: every secret the configuration can hold is given a canary value, then the CLI, the jobs
process and an alert run for real; the canaries must appear in none of their output, logs or records.

That includes passwords that urllib cannot read but SQLAlchemy or redis-py can (or nothing can): a `#`, `/`
or `[` in them, or a host like `[bad` (issue 14), fed through every URL setting."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from monitor import secrets
from monitor.emulator import server
from tests.conftest import REPO_ROOT
from tests.services import clean_env, free_port, run_cli
from tests.stripe_cast import Account

KEY = "sk_test_CANARY7f3a9c1e55d04b2"
WEBHOOK_SECRET = "whsec_CANARY1b2c3d4e5f"
REDIS_PASSWORD = "pwCANARY9d8e7f6a"
ALERT_TOKEN = "CANARYalerttoken42"


# Each URL as the parser that opens it reads it; the canary must leave both the URL shown and any text.
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:pw#CANARY@db:5432/app", "postgresql://app:****@db:5432/app"),
        ("postgresql://app:pw/CANARY@db/app", "postgresql://app:****@db/app"),
        ("postgresql://app:pw[CANARY@db/app", "postgresql://app:****@db/app"),
        ("postgresql://app:CANARY@[bad/app", "postgresql://app:****@[bad/app"),
        ("postgresql+psycopg://app:p%23CANARY@db/app", "postgresql+psycopg://app:****@db/app"),
        ("postgresql://app@db/app?password=CANARY", "postgresql://app@db/app?password=****"),
        ("postgresql://app:pw@CANARY@db/app", "postgresql://****@db/app"),  # read differently: all masked
        ("redis://:CANARY@127.0.0.1:6379/0", "redis://:****@127.0.0.1:6379/0"),
        ("redis://:pw#CANARY@127.0.0.1:6379/0", "redis://****@127.0.0.1:6379/0"),  # unreadable: all
        ("redis://:CANARY#x@127.0.0.1/0", "redis://****@127.0.0.1/0"),
        ("redis://user:pw[CANARY@h/0", "redis://****@h/0"),
        ("redis://:CANARY@[bad/0", "redis://****@[bad/0"),
        ("redis://h/0?password=CANARY", "redis://h/0?password=****"),
        ("http://hook:CANARY@app.example.com/hook", "http://hook:****@app.example.com/hook"),
        ("http://hook:CANARY@[::1", "http://****@[::1"),
        ("sqlite:///data/monitor.db", "sqlite:///data/monitor.db"),
    ],
)
def test_a_url_is_masked_as_the_parser_that_opens_it_reads_it(url, shown):
    assert secrets.mask_url(url) == shown
    found = secrets.url_secrets(url).secrets
    assert "CANARY" not in secrets.mask_secrets(f"cannot connect to {url}: refused", found)
    assert all("CANARY" not in secrets.mask_secrets(s, found) for s in found)


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[str] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        self.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def world(tmp_path):
    a = Account(int(time.time()))
    paid = a.checkout_payment("canary-customer@example.com")
    a.checkout_payment("fine@example.com")
    app_url = f"sqlite:///{tmp_path / 'app.db'}"
    a.write_app_db(app_url)
    receiver = HTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.bodies = []
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    with server.start(a.objects, api_key=KEY) as running:
        env = {
            "STRIPE_API_KEY": KEY,
            "STRIPE_API_BASE": running.base_url,
            "APP_DATABASE_URL": app_url,
            "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'monitor.db'}",
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "EXPECTED_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/hook",
            "REDIS_URLS": f"channels=redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
            "ALERT_URLS": f"json://127.0.0.1:{receiver.server_address[1]}/alerts?token={ALERT_TOKEN}",
            "OPERATOR_ROLES": "support@example.com=support",
        }
        yield env, paid, tmp_path
    receiver.shutdown()
    receiver.server_close()


def assert_no_canary(text: str, where: str) -> None:
    for canary in ("CANARY",):
        assert canary not in text, (
            f"a canary secret leaked into {where}: …{text[text.find(canary) - 60 :][:160]}…"
        )


def test_the_cli_never_prints_a_secret(cli, world):
    env, paid, _ = world
    outputs = []
    for args, extra in (
        (["sync"], {}),
        (["reconcile", "--json"], {}),
        (["reconcile"], {}),
        (["check", "--json"], {}),
        (["check"], {}),
        (["repair", paid["cs"], "--operator", "support@example.com", "--dry-run"], {}),
        (["repair", paid["cs"], "--operator", "support@example.com", "--strategy", "webhook"], {}),
        (["sync"], {"STRIPE_API_KEY": KEY + "x"}),
        (["check"], {"GRACE_MINUTES": "bad"}),
        (["reconcile"], {"REDIS_URLS": f"channels=redis://:{REDIS_PASSWORD}@host:notaport/0,oops"}),
    ):
        run = cli(args, {**env, **extra})
        outputs.append(f"$ {' '.join(args)}\n{run.stdout}\n{run.stderr}")
    joined = "\n".join(outputs)
    assert "Traceback" not in joined
    assert_no_canary(joined, "the CLI's output")


def test_the_jobs_process_its_alerts_and_its_records_hold_no_secret(world):
    env, _, tmp_path = world
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs"],
        cwd=REPO_ROOT,
        env=clean_env({**env, "SYNC_INTERVAL": "3", "PROBE_INTERVAL": "2"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _Receiver.bodies:
        time.sleep(0.5)
    time.sleep(2)
    proc.terminate()
    log, _ = proc.communicate(timeout=30)
    assert _Receiver.bodies, f"no alert arrived; the jobs log said:\n{log[-2000:]}"
    assert_no_canary(log, "the jobs process's log")
    assert_no_canary("\n".join(_Receiver.bodies), "an alert")
    assert_no_canary(stored(env["MONITOR_DATABASE_URL"]), "the monitor's store")


STORED_TABLES = ("job_runs", "alert_deliveries", "probe_results", "repairs", "findings")


def stored(url: str) -> str:
    """Every row the jobs and the CLI record in the store at `url`, as text."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = [
            [str(v) for v in row]
            for table in STORED_TABLES
            for row in conn.execute(text(f"SELECT * FROM {table}"))
        ]
    engine.dispose()
    return json.dumps(rows)


# Passwords each parser reads differently: urllib stops the netloc at `#` or `/` and refuses a lone `[`;
# SQLAlchemy reads them all; redis-py (urllib inside) cannot. The canary is after the odd character, and
# before it; `[bad` is a host urllib refuses and SQLAlchemy takes.
AWKWARD_PASSWORDS = {
    "hash": "pw#CANARYhash1",
    "slash": "pw/CANARYslash2",
    "bracket": "pw[CANARYbracket3",
    "canary-first": "CANARYfirst4#x",
}
AWKWARD_URLS = [
    *(
        pytest.param(setting, template.format(pw=pw), id=f"{setting}-{shape}")
        for shape, pw in AWKWARD_PASSWORDS.items()
        for setting, template in (
            ("APP_DATABASE_URL", "postgresql://app:{pw}@127.0.0.1:{{port}}/app"),
            ("MONITOR_DATABASE_URL", "postgresql://monitor:{pw}@127.0.0.1:{{port}}/monitor"),
            ("REDIS_URLS", "channels=redis://:{pw}@127.0.0.1:{{port}}/0"),
        )
    ),
    pytest.param("APP_DATABASE_URL", "postgresql://app:CANARYhost5@[bad/app", id="APP_DATABASE_URL-host"),
    pytest.param(
        "MONITOR_DATABASE_URL",
        "postgresql://monitor:CANARYhost5@[bad/monitor",
        id="MONITOR_DATABASE_URL-host",
    ),
    pytest.param("REDIS_URLS", "channels=redis://:CANARYhost5@[bad/0", id="REDIS_URLS-host"),
]


@pytest.mark.parametrize(("setting", "url"), AWKWARD_URLS)
def test_a_password_urllib_cannot_read_is_never_printed_logged_or_stored(world, setting, url):
    env, _, _ = world
    env = {**env, setting: url.format(port=free_port()), "SYNC_INTERVAL": "2", "PROBE_INTERVAL": "1"}
    outputs = []
    for args in (["reconcile"], ["check", "--json"]):
        run = run_cli(args, env)
        outputs.append(f"$ {' '.join(args)} (exit {run.returncode})\n{run.stdout}\n{run.stderr}")
    joined = "\n".join(outputs)
    assert "Traceback" not in joined
    assert_no_canary(joined, "the CLI's output")

    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs"],
        cwd=REPO_ROOT,
        env=clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    store_url = env["MONITOR_DATABASE_URL"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if store_url.startswith("sqlite") and _finished_jobs(store_url) >= {"jobs:sync", "jobs:probes"}:
            break
        time.sleep(0.5)
    proc.terminate()
    log, _ = proc.communicate(timeout=30)
    assert_no_canary(log, "the jobs process's log")
    if setting == "APP_DATABASE_URL":  # the store is reachable: the failed runs are recorded there
        assert _finished_jobs(store_url) >= {"jobs:sync", "jobs:probes"}, log[-2000:]
        assert_no_canary(stored(store_url), "the monitor's store")


def _finished_jobs(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT job FROM job_runs WHERE finished_at IS NOT NULL")).all()
    except OperationalError:  # the jobs process has not created its tables yet
        rows = []
    finally:
        engine.dispose()
    return {r.job for r in rows}


@pytest.mark.parametrize(
    "alert_url",
    ["CANARYalertnoscheme", "foo://host/CANARYpath", "slack://CANARYslack"],
)
def test_jobs_never_logs_an_alert_url_it_cannot_use(tmp_path, alert_url):
    env = {"MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'monitor.db'}", "ALERT_URLS": alert_url}
    run = subprocess.run(
        [sys.executable, "-m", "jobs"],
        cwd=REPO_ROOT,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "ALERT_URLS" in run.stderr and "Traceback" not in run.stderr
    assert_no_canary(run.stdout + run.stderr, "the jobs process's output")
