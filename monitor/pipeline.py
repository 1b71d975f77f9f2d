"""The runs every entry point calls (CLI, jobs, dashboard): sync and reconcile, each recorded as a job run.

In demo mode (no STRIPE_API_KEY) the Stripe emulator runs in-process with the demo scenario, and the demo
app database is created at APP_DATABASE_URL when it does not exist yet; nothing needs a network.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from monitor import lifecycle, snapshot, store
from monitor.app_db import AppDatabase, load_mapping
from monitor.config import Config
from monitor.findings import PAYMENT_KINDS
from monitor.models import now_utc
from monitor.reconcile import reconcile
from monitor.stripe_source import StripeSource
from monitor.sync import Progress, SyncResult, sync


@contextlib.contextmanager
def stripe_source(config: Config) -> Iterator[StripeSource]:
    """The Stripe account of `config`, or in demo mode the demo scenario served by an in-process emulator."""
    if not config.demo:
        yield StripeSource(config.stripe_api_key, config.stripe_api_base)
        return
    from monitor.emulator import server
    from monitor.emulator.demo import build_demo, ensure_demo_app_db

    anchor = ensure_demo_app_db(config.app_database_url)
    key = "sk_test_demo_" + secrets.token_hex(8)
    with server.start(build_demo(anchor).objects, api_key=key) as running:
        yield StripeSource(key, running.base_url)


def ensure_app_database(config: Config) -> None:
    """In demo mode, create the demo app database if it does not exist yet."""
    if config.demo:
        from monitor.emulator.demo import ensure_demo_app_db

        ensure_demo_app_db(config.app_database_url)


def open_app_database(config: Config) -> AppDatabase:
    ensure_app_database(config)
    return AppDatabase(config.app_database_url, load_mapping(config.app_schema))


def run_sync(
    config: Config, engine: Engine, *, full: bool = False, progress: Progress | None = None
) -> SyncResult:
    with store.RunRecorder(engine, "sync") as run, stripe_source(config) as source:
        result = sync(engine, source, full=full, progress=progress)
        run.counts = {"objects": result.objects, "requests": result.requests, "pages": result.pages}
    return result


@dataclass
class Report:
    generated_at: datetime
    summary: dict
    findings: list[dict]

    def to_json(self) -> dict:
        return {
            "generated_at": lifecycle.iso(self.generated_at),
            "summary": self.summary,
            "findings": self.findings,
        }


def run_reconcile(config: Config, engine: Engine, *, now: datetime | None = None) -> Report:
    """Reconcile the store's payments with the app's rows, record the findings' lifecycle, and report the
    current (open and acknowledged) findings."""
    now = now or now_utc()
    app = open_app_database(config)
    with store.RunRecorder(engine, "reconcile") as run:
        subscriptions = app.read_subscriptions()
        with engine.connect() as conn:
            payments = snapshot.read_payments(conn)
        result = reconcile(
            payments,
            subscriptions,
            now=now,
            grace=timedelta(minutes=config.grace_minutes),
            active_statuses=app.mapping.active_statuses,
        )
        with engine.begin() as conn:
            run.counts = lifecycle.apply_findings(conn, result.findings, kinds=PAYMENT_KINDS, now=now)
            findings = lifecycle.current_findings(conn)
        run.counts["payments"] = result.summary["payments"]
    summary = dict(result.summary)
    summary["open_by_kind"] = _open_by_kind(findings)
    return Report(generated_at=now, summary=summary, findings=findings)


def _open_by_kind(findings: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in findings:
        if f["status"] == lifecycle.OPEN:
            counts[f["kind"]] = counts.get(f["kind"], 0) + 1
    return counts
