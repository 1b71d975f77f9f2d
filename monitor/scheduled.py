"""The scheduled jobs as plain functions: `python -m jobs` wraps each in an APScheduler job, tests call them
directly with a fixed clock.

Each records its own job_runs row (jobs:sync, jobs:probes, jobs:retention: the scheduler's heartbeat that
`check` reads) with start, end, outcome, error and counts, and raises what failed after recording it.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, select

from monitor import alerts, pipeline, store
from monitor.clock import now_exact
from monitor.config import Config
from monitor.rules.heartbeat import SCHEDULED_JOBS
from monitor.store import lifecycle
from monitor.store.models import AlertDelivery, AlertSent, FindingRow, JobRun, ProbeResultRow
from monitor.stripe_api.sync import SyncIncomplete

SYNC_JOB, PROBE_JOB, RETENTION_JOB = SCHEDULED_JOBS
# Which process ran a job, kept in its counts: with several jobs processes (HA) the runs say who led.
PROCESS = f"{socket.gethostname()}:{os.getpid()}"


def sync_job(config: Config, engine: Engine, now: datetime | None = None) -> pipeline.Report:
    """Sync from Stripe, reconcile, then send the alerts that are due. Returns the reconcile report.

    A sync that brought in only some resources (SyncIncomplete: a permission missing, one list failing)
    is still reconciled, on what the snapshot holds and saying what it lacks; the job then fails with the
    sync's error, so the runs show it."""
    with store.RunRecorder(engine, SYNC_JOB) as run:
        run.counts = {"process": PROCESS}
        incomplete = None
        try:
            result = pipeline.run_sync(config, engine)
        except SyncIncomplete as e:
            incomplete, result = e, e.result
        run.counts.update(objects=result.total, requests=result.requests)
        report = pipeline.run_reconcile(config, engine, now=now)
        run.counts.update(
            payments=report.summary["payments"],
            open_findings=sum(report.summary["open_by_kind"].values()),
        )
        run.counts["alerts"] = alerts.send_due_alerts(config, engine, now=now)
        if incomplete is not None:
            raise incomplete
    return report


def probe_job(config: Config, engine: Engine, now: datetime | None = None) -> pipeline.CheckReport:
    """Probe every component (results stored by `run_check`), then send the alerts that are due.
    Returns the check's report (the jobs process serves its metrics)."""
    with store.RunRecorder(engine, PROBE_JOB) as run:
        run.counts = {"process": PROCESS}
        report = pipeline.run_check(config, now=now)
        run.counts.update(
            status=report.status,
            components=len(report.components),
            down=[c.name for c in report.components if c.status == "down"],
        )
        if report.notes:
            run.counts["notes"] = [config.mask(n) for n in report.notes]
        run.counts["alerts"] = alerts.send_due_alerts(config, engine, now=now)
    return report


def retention_job(config: Config, engine: Engine, now: datetime | None = None) -> dict:
    """Delete what is older than RETENTION_DAYS: probe results, resolved findings, job runs, alert
    deliveries, and the claims of outages recovered before then. Open and acknowledged findings stay
    whatever their age. Returns how many rows of each went."""
    now = now or now_exact()
    cutoff = now - timedelta(days=config.retention_days)
    with store.RunRecorder(engine, RETENTION_JOB) as run:
        run.counts = {"process": PROCESS, "before": cutoff.isoformat()}
        deleted = {}
        with engine.begin() as conn:
            deleted["probe_results"] = conn.execute(
                delete(ProbeResultRow).where(ProbeResultRow.checked_at < cutoff)
            ).rowcount
            deleted["findings"] = conn.execute(
                delete(FindingRow).where(
                    FindingRow.status == lifecycle.RESOLVED, FindingRow.resolved_at < cutoff
                )
            ).rowcount
            deleted["job_runs"] = conn.execute(
                delete(JobRun).where(JobRun.started_at < cutoff, JobRun.id != run.id)
            ).rowcount
            deleted["alert_deliveries"] = conn.execute(
                delete(AlertDelivery).where(AlertDelivery.sent_at < cutoff)
            ).rowcount
            recovered = conn.execute(
                select(AlertSent.key).where(AlertSent.kind == alerts.RECOVERY, AlertSent.sent_at < cutoff)
            ).scalars()
            keys = [k for r in recovered for k in (r, alerts.OUTAGE + r.removeprefix(alerts.RECOVERY))]
            deleted["alerts_sent"] = (
                conn.execute(delete(AlertSent).where(AlertSent.key.in_(keys))).rowcount if keys else 0
            )
        run.counts["deleted"] = deleted
    return deleted
