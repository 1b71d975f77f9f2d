"""Canary secrets: every secret the configuration can hold is given a canary value, then the CLI, the jobs
process and an alert run for real; the canaries must appear in none of their output, logs or records."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from sqlalchemy import create_engine, text

from monitor.emulator import server
from tests.conftest import REPO_ROOT
from tests.services import clean_env, free_port
from tests.stripe_cast import Account

KEY = "sk_test_CANARY7f3a9c1e55d04b2"
WEBHOOK_SECRET = "whsec_CANARY1b2c3d4e5f"
REDIS_PASSWORD = "pwCANARY9d8e7f6a"
ALERT_TOKEN = "CANARYalerttoken42"


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
    engine = create_engine(env["MONITOR_DATABASE_URL"])
    with engine.connect() as conn:
        stored = json.dumps(
            [
                [str(v) for v in row]
                for table in ("job_runs", "alert_deliveries", "probe_results", "repairs", "findings")
                for row in conn.execute(text(f"SELECT * FROM {table}"))
            ]
        )
    engine.dispose()
    assert_no_canary(stored, "the monitor's store")
