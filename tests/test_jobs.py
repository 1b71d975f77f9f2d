"""The scheduled jobs: the plain functions with a fixed clock, and the real `python -m jobs` process (and the
`make run` launcher) started, watched through the store, and stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from monitor import config, scheduled, store
from monitor.emulator import server
from monitor.emulator.demo import build_demo, ensure_demo_app_db
from monitor.emulator.demo_names import INCIDENT_EMAIL
from monitor.errors import StripeError
from monitor.rules.findings import PAYMENT_KINDS
from monitor.rules.timefmt import iso
from monitor.store import lifecycle
from monitor.store.models import AlertDelivery, FindingRow, JobRun, Lease, ProbeResultRow
from tests.jobs_process import QUIET, JobsChild, job_runs, wait_until
from tests.services import REPO_ROOT, clean_env, free_port
from tests.table_cast import finding

T0 = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)
# The demo is anchored a day ago, so everything it holds is in the past of the real clock the sync uses.
ANCHOR = (datetime.now(UTC) - timedelta(days=1)).replace(second=0, microsecond=0)
NOW = ANCHOR + timedelta(minutes=30)


@pytest.fixture
def urls(tmp_path) -> dict[str, str]:
    return {
        "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'monitor.db'}",
        "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
    }


@pytest.fixture
def engine(urls):
    e = store.open_store(urls["MONITOR_DATABASE_URL"])
    yield e
    e.dispose()


def runs(engine, job: str | None = None) -> list:
    with engine.connect() as conn:
        return list(reversed(store.last_runs(conn, job)))


# --- the job functions, called directly -------------------------------------------------------


def test_a_sync_job_records_its_run_the_sync_and_the_reconcile_and_opens_the_findings(urls, engine):
    ensure_demo_app_db(urls["APP_DATABASE_URL"], now=ANCHOR)
    cfg = config.load(urls)
    report = scheduled.sync_job(cfg, engine, now=NOW)
    (incident,) = [
        f
        for f in report.findings
        if f.kind == "paid_without_subscription" and f.customer_email == INCIDENT_EMAIL
    ]
    assert incident.amount == 14900 and iso(incident.first_seen) == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [r.job for r in runs(engine)] == ["jobs:sync", "sync", "reconcile"]
    job = runs(engine, "jobs:sync")[0]
    assert job.outcome == "ok" and job.error is None and job.finished_at >= job.started_at
    counts = json.loads(job.counts)
    assert counts["objects"] > 0 and counts["open_findings"] == len(report.findings)
    assert counts["alerts"]["not_sent"] == 1  # the demo's burst of critical findings, one digest
    assert counts["process"] == scheduled.PROCESS


def test_a_failing_sync_job_is_recorded_with_its_error_and_the_next_run_succeeds(urls, engine):
    anchor = ensure_demo_app_db(urls["APP_DATABASE_URL"], now=ANCHOR)
    with server.start(build_demo(anchor).objects, api_key="sk_test_jobs", error_rate=1.0) as stripe:
        cfg = config.load({**urls, "STRIPE_API_KEY": "sk_test_jobs", "STRIPE_API_BASE": stripe.base_url})
        with pytest.raises(StripeError):
            scheduled.sync_job(cfg, engine, now=NOW)
        failed = runs(engine, "jobs:sync")[0]
        assert failed.outcome == "failed" and "500" in failed.error or "unknown error" in failed.error
        assert "Traceback" not in failed.error  # an expected error is its message, not a stack
        stripe.emulator.error_rate = 0.0
        scheduled.sync_job(cfg, engine, now=NOW + timedelta(minutes=5))
    assert [r.outcome for r in runs(engine, "jobs:sync")] == ["failed", "ok"]


def test_a_probe_job_stores_every_components_probe_and_reports_redis_down(urls, engine):
    cfg = config.load({**urls, "REDIS_URLS": f"channels=redis://127.0.0.1:{free_port()}/0"})
    report = scheduled.probe_job(cfg, engine)
    by_name = {c.name: c for c in report.components}
    assert by_name["redis:channels"].status == "down" and by_name["scheduler"].status == "up"
    (run,) = runs(engine, "jobs:probes")
    assert run.outcome == "ok" and "redis:channels" in json.loads(run.counts)["down"]
    with engine.connect() as conn:
        stored = conn.execute(
            select(ProbeResultRow.component).where(ProbeResultRow.checked_at >= run.started_at)
        ).scalars()
        assert set(stored) == set(by_name)


def test_retention_deletes_only_what_is_older_than_retention_days(urls, engine):
    cfg = config.load({**urls, "RETENTION_DAYS": "30"})
    old, recent = T0 - timedelta(days=31), T0 - timedelta(days=29)
    with engine.begin() as conn:
        store.save_probe_results(
            conn,
            [
                {"component": "app_db", "status": "up", "detail": d, "latency_ms": 1.0, "checked_at": at}
                for d, at in (("old", old), ("recent", recent))
            ],
        )
        gone, kept = (finding(name, "amount_mismatch") for name in ("gone", "kept"))
        still = finding("still")
        lifecycle.apply_findings(conn, [gone, kept, still], kinds=PAYMENT_KINDS, now=old)
        lifecycle.apply_findings(conn, [kept, still], kinds=PAYMENT_KINDS, now=old)  # resolves `gone` then
        lifecycle.apply_findings(conn, [still], kinds=PAYMENT_KINDS, now=recent)  # resolves `kept` now
        for at in (old, recent):
            conn.execute(insert(JobRun).values(job="sync", started_at=at, finished_at=at, outcome="ok"))
            conn.execute(
                insert(AlertDelivery).values(
                    keys="[]", target="", title="t", message="m", status="not_sent", sent_at=at
                )
            )
    deleted = scheduled.retention_job(cfg, engine, now=T0)
    assert deleted == {
        "probe_results": 1,
        "findings": 1,
        "job_runs": 1,
        "alert_deliveries": 1,
        "alerts_sent": 0,
    }
    with engine.connect() as conn:
        assert conn.execute(select(ProbeResultRow.detail)).scalars().all() == ["recent"]
        left = dict(conn.execute(select(FindingRow.id, FindingRow.status)).all())
        assert left == {kept.id: "resolved", still.id: "open"}  # open findings stay whatever their age
        assert conn.execute(select(func.min(JobRun.started_at))).scalar() == recent
    assert runs(engine, "jobs:retention")[0].outcome == "ok"


# --- the real process -------------------------------------------------------------------------


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return answer.read().decode()


@pytest.mark.slow
def test_the_jobs_process_runs_its_jobs_serves_metrics_and_stops_cleanly_on_sigterm(urls, tmp_path):
    port = free_port()
    env = {
        **urls,
        "SYNC_INTERVAL": "2",
        "PROBE_INTERVAL": "1",
        "REDIS_URLS": f"channels=redis://127.0.0.1:{free_port()}/0",
        "METRICS_PORT": str(port),
    }
    child = JobsChild(env, tmp_path / "jobs.log")
    try:
        url = urls["MONITOR_DATABASE_URL"]

        def enough():
            done = [r.job for r in job_runs(url) if r.outcome == "ok"]
            return done.count("jobs:sync") >= 2 and done.count("jobs:probes") >= 3

        wait_until(enough, 30, "two syncs and three probe runs", children=[child])
        assert {"sync", "reconcile", "jobs:retention"} <= {r.job for r in job_runs(url)}
        text = metrics_text(port)
        assert 'payment_monitor_component_up{component="redis:channels"} 0.0' in text
        assert "payment_monitor_scheduler_leader 1.0" in text
        assert 'payment_monitor_open_findings{kind="paid_without_subscription",severity="critical"}' in text

        code, took = child.terminate()
        assert code == 0 and took < 8
    finally:
        child.kill()
    log = child.log()
    assert "Traceback" not in log
    for line in ("demo mode", "job jobs:sync: sync + reconcile + alerts, every 2 s", "every 1 s", "leading:"):
        assert line in log
    assert "stopped; the lease is given up" in log
    probe = store.open_store(urls["MONITOR_DATABASE_URL"])
    try:
        with probe.connect() as conn:
            assert conn.execute(select(Lease.__table__)).first() is None  # given up for a standby
    finally:
        probe.dispose()


@pytest.mark.slow
def test_against_a_failing_stripe_the_process_records_the_failure_and_recovers(urls, tmp_path):
    anchor = ensure_demo_app_db(urls["APP_DATABASE_URL"])
    with server.start(build_demo(anchor).objects, api_key="sk_test_jobs", error_rate=1.0) as stripe:
        env = {
            **urls,
            "STRIPE_API_KEY": "sk_test_jobs",
            "STRIPE_API_BASE": stripe.base_url,
            "SYNC_INTERVAL": "1",
            "PROBE_INTERVAL": "5",
        }
        child = JobsChild(env, tmp_path / "jobs.log")
        try:
            url = urls["MONITOR_DATABASE_URL"]
            wait_until(
                lambda: [r for r in job_runs(url) if r.job == "jobs:sync" and r.outcome == "failed"],
                30,
                "a failed sync run",
                children=[child],
            )
            stripe.emulator.error_rate = 0.0
            wait_until(
                lambda: [r for r in job_runs(url) if r.job == "jobs:sync" and r.outcome == "ok"],
                30,
                "a good sync",
                children=[child],
            )
            child.proc.send_signal(signal.SIGINT)  # Ctrl-C stops it as cleanly as SIGTERM
            assert child.proc.wait(10) == 0
        finally:
            child.kill()
    log = child.log()
    assert "jobs:sync failed: " in log and "jobs:sync ok again" in log
    assert "real mode: Stripe at http://127.0.0.1:" in log and "sk_test_jobs" not in log
    assert "Traceback" not in log


def test_a_bad_setting_stops_the_jobs_process_with_one_line_and_status_2(urls):
    done = subprocess.run(
        [sys.executable, "-m", "jobs"],
        cwd=REPO_ROOT,
        env=clean_env({**QUIET, **urls, "SYNC_INTERVAL": "0"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: SYNC_INTERVAL='0' is not valid: expected a whole number from 1 to 86400"
    ]


# --- make run ---------------------------------------------------------------------------------


def dashboard_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
            return answer.read() == b"ok"
    except OSError:
        return False


@pytest.mark.slow
def test_the_run_launcher_starts_the_demo_the_jobs_and_the_dashboard_and_stops_them_on_sigterm(
    urls, tmp_path
):
    port = free_port()
    out = open(tmp_path / "run.log", "w")  # noqa: SIM115 - closed below
    launcher = subprocess.Popen(
        [sys.executable, "scripts/run.py", "--port", str(port)],
        cwd=REPO_ROOT,
        env=clean_env({**QUIET, **urls, "SYNC_INTERVAL": "2", "PROBE_INTERVAL": "1"}),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    with_dashboard = (REPO_ROOT / "dashboard.py").exists()
    try:
        url = urls["MONITOR_DATABASE_URL"]
        wanted = {"jobs:sync", "jobs:probes", "sync", "reconcile"}
        wait_until(
            lambda: wanted <= {r.job for r in job_runs(url) if r.outcome == "ok"}, 40, "the jobs running"
        )
        if with_dashboard:
            wait_until(lambda: dashboard_answers(port), 30, "the dashboard answering")
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(20) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(10)
        out.close()
    log = (tmp_path / "run.log").read_text()
    assert "demo mode" in log and "Traceback" not in log
    if with_dashboard:
        assert f"dashboard (the demo scenario): http://127.0.0.1:{port}" in log
        assert not dashboard_answers(port)
    else:  # until the dashboard exists, the findings are printed once
        assert "paid_without_subscription" in log
    jobs_pid = int(re.search(r"started the jobs process \(pid (\d+)\)", log).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(jobs_pid, 0)  # stopped and reaped by the launcher
