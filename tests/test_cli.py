"""`python -m monitor` end to end, as a user runs it: demo mode, a fixture file through the emulator over
HTTP, and bad input (each one clear line, no traceback, nothing damaged). The commands run in this process
(`cli_main`); the emulator serving a fixture file runs as its own process, as a user starts it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from monitor.emulator import server
from monitor.rules.findings import PAYMENT_KINDS
from tests.conftest import REPO_ROOT
from tests.services import free_port
from tests.stripe_cast import Account, findings_of, known_cases

KEY = "sk_test_cli"


def test_demo_mode_finds_the_usd_149_incident_and_every_kind(cli_main):
    synced = cli_main(["sync"])
    assert synced.returncode == 0, synced.stderr
    assert "synced" in synced.stdout
    run = cli_main(["reconcile", "--json"])
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert set(report["summary"]) >= {"payments", "matched", "parity_pct", "open_by_kind", "amount_at_risk"}
    incident = [
        f for f in report["findings"] if f["kind"] == "paid_without_subscription" and f["amount"] == 14900
    ]
    assert incident and incident[0]["currency"] == "usd"
    assert incident[0]["payment_id"].startswith("cs_")
    assert {f["kind"] for f in report["findings"]} >= set(PAYMENT_KINDS)
    text_run = cli_main(["reconcile"])
    assert "paid_without_subscription" in text_run.stdout
    assert "USD 149.00" in text_run.stdout


@pytest.fixture
def cases(tmp_path):
    """A fixture file and app database with known cases, and the findings they must produce."""
    a = Account(int(time.time()))
    expect = set()
    expect |= known_cases(a)[0]
    fixtures = tmp_path / "fixtures.json"
    fixtures.write_text(json.dumps({"objects": a.objects}))
    app_url = f"sqlite:///{tmp_path / 'case-app.db'}"
    a.write_app_db(app_url)
    return fixtures, app_url, expect


def test_an_emulator_process_serving_a_fixture_file_gives_exactly_its_findings(cli_main, cases, tmp_path):
    fixtures, app_url, expect = cases
    port = free_port()
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monitor",
            "emulator",
            "--fixtures",
            str(fixtures),
            "--port",
            str(port),
            "--api-key",
            KEY,
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening" in emulator.stdout.readline()
        env = {
            "STRIPE_API_KEY": KEY,
            "STRIPE_API_BASE": f"http://127.0.0.1:{port}",
            "APP_DATABASE_URL": app_url,
        }
        assert cli_main(["sync"], env).returncode == 0
        first = json.loads(cli_main(["reconcile", "--json"], env).stdout)
        assert findings_of(first, PAYMENT_KINDS) == expect
        assert cli_main(["sync"], env).returncode == 0
        second = json.loads(cli_main(["reconcile", "--json"], env).stdout)
        assert findings_of(second, PAYMENT_KINDS) == expect
        assert {f["id"]: f["first_seen"] for f in second["findings"]} == {
            f["id"]: f["first_seen"] for f in first["findings"]
        }
    finally:
        emulator.terminate()
        emulator.wait(10)
        emulator.stdout.close()


def test_a_rejected_key_is_one_line_exit_1_and_no_traceback(cli_main, cases):
    fixtures, app_url, _ = cases
    with server.start(server.load_fixtures(fixtures), api_key=KEY) as running:
        env = {
            "STRIPE_API_KEY": "sk_test_wrong_and_secret_9999",
            "STRIPE_API_BASE": running.base_url,
            "APP_DATABASE_URL": app_url,
        }
        run = cli_main(["sync"], env)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "401" in run.stderr
    assert "wrong_and_secret" not in run.stderr + run.stdout
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GRACE_MINUTES": "soon"}, "GRACE_MINUTES"),
        ({"STRIPE_API_KEY": "sk_test_abc", "APP_DATABASE_URL": ""}, "APP_DATABASE_URL"),
        ({"REDIS_URLS": "nonsense"}, "REDIS_URLS"),
    ],
)
def test_a_bad_setting_is_exit_2_with_one_line_naming_it(cli_main, env, named):
    run = cli_main(["reconcile"], env)
    assert run.returncode == 2
    assert named in run.stderr
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_an_unreachable_app_database_is_a_clear_error_and_the_store_keeps_its_findings(cli_main, tmp_path):
    assert cli_main(["sync"]).returncode == 0
    assert cli_main(["reconcile"]).returncode == 0
    env = {
        "STRIPE_API_KEY": "sk_test_x",
        "APP_DATABASE_URL": f"postgresql://app:pw@127.0.0.1:{free_port()}/app",
    }
    run = cli_main(["reconcile", "--json"], env)
    assert run.returncode == 1
    assert "cannot connect to the app database" in run.stderr
    assert "Traceback" not in run.stderr
    again = json.loads(cli_main(["reconcile", "--json"]).stdout)
    assert any(f["kind"] == "paid_without_subscription" for f in again["findings"])


def test_a_mapping_missing_a_canonical_column_is_exit_2_naming_it(cli_main, cases, tmp_path):
    _, app_url, _ = cases
    preset = (REPO_ROOT / "monitor/app_db/presets/default.toml").read_text()
    broken = tmp_path / "broken.toml"
    broken.write_text(preset.replace("AS current_period_end", "AS period_end_wrong"))
    run = cli_main(
        ["reconcile"], {"STRIPE_API_KEY": KEY, "APP_DATABASE_URL": app_url, "APP_SCHEMA": str(broken)}
    )
    assert run.returncode == 2
    assert "current_period_end" in run.stderr
    assert "Traceback" not in run.stderr


def test_the_emulator_command_refuses_a_missing_fixture_file(cli_main, tmp_path):
    run = cli_main(["emulator", "--fixtures", str(tmp_path / "none.json"), "--port", str(free_port())])
    assert run.returncode == 2
    assert "none.json" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STRIPE_API_BASE": "http://[::1"}, "STRIPE_API_BASE"),
        ({"EXPECTED_WEBHOOK_URL": "http://[x"}, "EXPECTED_WEBHOOK_URL"),
        ({"STRIPE_API_BASE": "http://ops:CANARYpw1@[::1"}, "STRIPE_API_BASE"),
        ({"REDIS_URLS": "redis://:CANARYpw2@127.0.0.1:6379/0?ssl_cert_reqs=none"}, "REDIS_URLS"),
        ({"REDIS_URLS": "channels=redis://:pw#CANARYpw3@127.0.0.1:6379/0"}, "REDIS_URLS"),
        ({"REDIS_URLS": "channels=redis://:CANARYpw4@[bad/0"}, "REDIS_URLS"),
    ],
)
def test_a_bad_url_setting_is_exit_2_with_one_masked_line_naming_it(cli_main, env, named):
    run = cli_main(["reconcile"], env)
    assert run.returncode == 2
    assert named in run.stderr
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert "CANARY" not in run.stdout + run.stderr


def test_reconcile_shows_control_characters_in_an_email_escaped(cli_main, tmp_path):
    a = Account(int(time.time()))
    a.row(None, "mallory\x1b[31m\r\x9b2J@example.com")  # an active row with no payment behind it
    app_url = f"sqlite:///{tmp_path / 'app.db'}"
    a.write_app_db(app_url)
    with server.start(a.objects, api_key=KEY) as running:
        env = {
            "STRIPE_API_KEY": KEY,
            "STRIPE_API_BASE": running.base_url,
            "APP_DATABASE_URL": app_url,
            "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'monitor.db'}",
        }
        # Captured as written, before any newline translation could turn a CR into a newline.
        runs = {args: cli_main(args, env) for args in (("sync",), ("reconcile",), ("reconcile", "--json"))}
    text_run, json_run = runs[("reconcile",)], runs[("reconcile", "--json")]
    assert text_run.returncode == 0, text_run.stderr
    for raw in ("\x1b", "\r", "\x9b"):
        assert raw not in text_run.stdout and raw not in json_run.stdout
    assert r"mallory\x1b[31m\x0d\x9b2J@example.com" in text_run.stdout
    emails = [f["customer_email"] for f in json.loads(json_run.stdout)["findings"]]
    assert "mallory\x1b[31m\r\x9b2J@example.com" in emails  # JSON escapes it, and keeps it as it is
