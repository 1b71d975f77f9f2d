"""The runs every entry point calls (CLI, jobs, dashboard): sync, reconcile and check, each recorded.

In demo mode (no STRIPE_API_KEY) the Stripe emulator runs in-process with the demo scenario, the demo app
database is created at APP_DATABASE_URL when it does not exist yet, and the store gets the demo's probe
history once; nothing needs a network. monitor.demo makes those decisions; this module only asks it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from monitor import demo, store
from monitor.app_db import AppDatabase, load_mapping
from monitor.clock import now_utc
from monitor.config import Config
from monitor.errors import BadInput, MonitorError, StripeAuthError, StripeError
from monitor.rules.completeness import snapshot_json, whole_kinds_held_back
from monitor.rules.findings import PAYMENT_KINDS, WEBHOOK_KINDS, amount_at_risk, finding_id
from monitor.rules.heartbeat import SCHEDULED_JOBS, scheduler_max_age
from monitor.rules.outages import outage_windows
from monitor.rules.reconcile import reconcile
from monitor.rules.root_cause import explain
from monitor.rules.timefmt import iso
from monitor.rules.verdict import verdict  # also pipeline.verdict, as `check` gives it
from monitor.rules.webhook_health import audit_endpoints, webhook_findings
from monitor.store import lifecycle, payment_table, snapshot
from monitor.store.db import warm_bulk_reader
from monitor.stripe_api.ratelimit import RateLimiter
from monitor.stripe_api.source import StripeSource
from monitor.stripe_api.sync import Progress, SyncIncomplete, SyncResult, sync

HISTORY_DAYS = 35  # probe history read for root causes: a little more than Stripe's 30-day Events window
CHECK_DEADLINE_S = 4.0


# --- the two outside sides -----------------------------------------------------------------------


@contextlib.contextmanager
def stripe_source(config: Config) -> Iterator[StripeSource]:
    """The Stripe account of `config` (in demo mode, the scenario served by an in-process emulator)."""
    with demo.stripe_endpoint(config) as stripe:
        limiter = RateLimiter(stripe.rate_limit) if stripe.rate_limit else None
        yield StripeSource(stripe.api_key, stripe.base_url, limiter=limiter)


def open_app_database(config: Config) -> AppDatabase:
    """The app's database of `config` (in demo mode created first when it does not exist yet)."""
    demo.prepare_app_database(config)
    return AppDatabase(config.app_database_url, load_mapping(config.app_schema))


# --- sync and reconcile -----------------------------------------------------------------------


class AccountMismatch(BadInput):
    """The store was filled from another Stripe account or mode than the one configured."""


def run_sync(
    config: Config, engine: Engine, *, full: bool = False, progress: Progress | None = None
) -> SyncResult:
    """Sync the store from Stripe (see monitor.stripe_api.sync). Raises AccountMismatch before anything is fetched
    when the key is for another account or mode than the store's (unless `full`, which starts the store
    anew for it), and SyncIncomplete, after recording the run, when some resources failed."""
    with store.RunRecorder(engine, "sync") as run, stripe_source(config) as source:
        claim_account(engine, source, livemode=bool(config.livemode), full=full)
        try:
            result = sync(engine, source, full=full, progress=progress)
        except SyncIncomplete as e:
            run.counts = _sync_counts(e.result)
            raise
        run.counts = _sync_counts(result)
    demo.ensure_history(config, engine)
    return result


def _sync_counts(result: SyncResult) -> dict:
    return {"objects": result.objects, "requests": result.requests, "pages": result.pages}


def _mode(livemode: bool | None) -> str:
    return "live mode" if livemode else "test mode"


def claim_account(engine: Engine, source: StripeSource, *, livemode: bool, full: bool) -> None:
    """Make sure the store holds (or will hold) only the account and mode `source` reaches: the store
    remembers both when first filled and refuses another (AccountMismatch, exit 2), unless `full`: then
    it forgets its snapshot and is filled anew. An account Stripe will not name (GET /v1/account refused)
    is checked by mode only."""
    try:
        account_id = source.account().get("id")
    except StripeAuthError as e:
        if e.http_status == 401:
            raise
        account_id = None  # a restricted key without the Account permission: the mode still tells
    except StripeError:
        account_id = None
    with engine.begin() as conn:
        stored_id, stored_live = store.stored_account(conn)
        other_account = stored_id is not None and account_id is not None and stored_id != account_id
        other_mode = stored_live is not None and stored_live != livemode
        if other_account or other_mode:
            was = f"{stored_id or 'an unnamed account'} ({_mode(stored_live)})"
            now = f"{account_id or 'an unnamed account'} ({_mode(livemode)})"
            if not full:
                raise AccountMismatch(
                    f"this store was filled from Stripe account {was}, but the key is for {now}: point "
                    "MONITOR_DATABASE_URL at a store of its own, or run `python -m monitor sync --full` to "
                    f"empty this one and fill it from {now}"
                )
            store.forget_snapshot(conn)
        store.remember_account(conn, account_id, livemode)


def check_mode(config: Config, engine: Engine) -> None:
    """AccountMismatch when the store was filled in the other mode than the configured key's (reconcile
    and the pages cannot ask Stripe for the account, but the key says its mode)."""
    with engine.connect() as conn:
        stored_id, stored_live = store.stored_account(conn)
    livemode = bool(config.livemode)
    if stored_live is not None and stored_live != livemode:
        raise AccountMismatch(
            f"this store was filled from Stripe account {stored_id or 'an unnamed account'} in "
            f"{_mode(stored_live)}, but the key is a {_mode(livemode)} key: point MONITOR_DATABASE_URL at a "
            "store of its own, or run `python -m monitor sync --full` to fill this one anew"
        )


@dataclass
class Report:
    generated_at: datetime
    summary: dict
    findings: list[lifecycle.StoredFinding]

    def to_json(self) -> dict:
        return {
            "generated_at": iso(self.generated_at),
            "summary": self.summary,
            "findings": [f.to_json() for f in self.findings],
        }


def run_reconcile(config: Config, engine: Engine, *, now: datetime | None = None) -> Report:
    """Reconcile the store's payments with the app's rows, judge webhook delivery, explain each payment
    finding from its event, the app's log and the outages around it, record the findings' lifecycle,
    and report the current (open and acknowledged) findings."""
    now = now or now_utc()
    # Reader processes for big SQLite files start now, while the app database opens and the run is
    # recorded; not when a store is merely opened (the dashboard opens it and seldom reconciles).
    warm_bulk_reader(engine.url)
    warm_bulk_reader(config.app_database_url)
    app = open_app_database(config)
    try:
        return _reconcile(config, engine, app, now)
    finally:
        app.dispose()


def _reconcile(config: Config, engine: Engine, app: AppDatabase, now: datetime) -> Report:
    demo.ensure_history(config, engine)
    check_mode(config, engine)
    grace = timedelta(minutes=config.grace_minutes)
    with store.RunRecorder(engine, "reconcile") as run:
        payments, subscriptions = read_both_sides(engine, app)
        webhook_log = app.read_webhook_log()
        with engine.connect() as conn:
            events = snapshot.read_events(conn)  # first on this connection: read column-wise
        with engine.connect() as conn:
            if not store.has_synced(conn):
                raise MonitorError(
                    "the store holds no Stripe data yet: run `python -m monitor sync` first (reconciling an "
                    "empty snapshot would call every subscription unpaid)"
                )
            endpoints = snapshot.read_endpoints(conn)
            history = store.probe_history(conn, since=now - timedelta(days=HISTORY_DAYS))
            state = snapshot.read_state(conn)
        result = reconcile(
            payments,
            subscriptions,
            now=now,
            grace=grace,
            active_statuses=app.mapping.active_statuses,
            scope=config.payment_scope,
            snapshot=state,
        )
        # What the snapshot cannot support is not judged: whole kinds (a missing list they all need), and
        # single findings reconcile held back. Their earlier findings stay as they were.
        held = whole_kinds_held_back(state, PAYMENT_KINDS + WEBHOOK_KINDS)
        judged = [k for k in PAYMENT_KINDS + WEBHOOK_KINDS if k not in held.reasons]
        held.update(result.held_back)
        delivery = webhook_findings(
            events,
            webhook_log,
            endpoints,
            payments,
            now=now,
            grace=grace,
            expected_url=demo.expected_webhook_url(config),
            livemode=config.livemode,
            ok_statuses=app.mapping.ok_statuses,
        )
        findings = explain(
            [f for f in result.findings + delivery if f.kind in judged],
            payments,
            events,
            webhook_log,
            outage_windows(history),
            now=now,
            ok_statuses=app.mapping.ok_statuses,
        )
        with engine.begin() as conn:
            run.counts = lifecycle.apply_findings(
                conn, findings, kinds=judged, now=now, keep={finding_id(k) for k in held.keys}
            )
            payment_table.save_unmatched(conn, result.unmatched)  # Finance counts parity from these
            current = lifecycle.current_findings(conn)
        # The summary of every run is kept, so parity can be charted over time.
        run.counts.update(
            {k: result.summary[k] for k in ("payments", "matched", "parity_pct", "amount_at_risk")}
        )
        run.counts["held_back"] = held.reasons  # what the pages' banner says was not judged
    summary = dict(result.summary)
    summary["open_by_kind"] = open_by_kind(current)
    summary["snapshot"] = snapshot_json(state, held, iso=iso)
    return Report(generated_at=now, summary=summary, findings=current)


def read_both_sides(engine: Engine, app: AppDatabase) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every payment in the store, every subscription row of the app), read at the same time: each read
    waits mostly in its database driver, which lets the other run. The app's errors come first (a mapping
    that does not fit is the first thing to say)."""

    def payments() -> pd.DataFrame:
        with engine.connect() as conn:
            return snapshot.read_payments(conn)

    with ThreadPoolExecutor(1, thread_name_prefix="read-payments") as pool:
        stored = pool.submit(payments)
        subscriptions = app.read_subscriptions()
        return stored.result(), subscriptions


def open_by_kind(findings: list[lifecycle.StoredFinding]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in findings:
        if f.status == lifecycle.OPEN:
            counts[f.kind] = counts.get(f.kind, 0) + 1
    return counts


# --- check ------------------------------------------------------------------------------------

NAGIOS = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


@dataclass
class CheckReport:
    status: str
    components: list  # monitor.probes.ProbeResult
    findings: dict[str, int]  # open findings by kind
    amount_at_risk: dict[str, int] = field(default_factory=dict)
    last_sync_age_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        return NAGIOS[self.status]

    def to_json(self) -> dict:
        return {
            "status": self.status,
            "components": [c.to_json() for c in self.components],
            "findings": self.findings,
            "amount_at_risk": self.amount_at_risk,
            "last_sync_age_s": self.last_sync_age_s,
            "notes": self.notes,
        }


class _Background:
    """fn(*args) started at once in a daemon thread: a hung database must not hang the check, and a daemon
    thread does not delay the process's exit. `result(timeout)` is its result, its exception, or a
    TimeoutError when it has not answered in time."""

    def __init__(self, fn: Callable, *args):
        self._box: dict = {}

        def run() -> None:
            try:
                self._box["result"] = fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the caller by result()
                self._box["error"] = e

        self._started = time.monotonic()
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def result(self, timeout: float):
        self._thread.join(max(0.0, timeout))
        if self._thread.is_alive():
            raise TimeoutError(f"no answer within {time.monotonic() - self._started:.1f} s")
        if "error" in self._box:
            raise self._box["error"]
        return self._box["result"]


def _store_state(config: Config, now: datetime) -> dict:
    """What `check` reads from the store: the scheduler's heartbeat, open findings, the last sync."""
    engine = store.open_store(config.monitor_database_url)
    try:
        demo.ensure_history(config, engine)
        with engine.connect() as conn:
            return {
                "engine": engine,
                "heartbeat": store.last_run_started(conn, SCHEDULED_JOBS),
                "findings": lifecycle.current_findings(conn),
                "last_sync": store.last_successful_run(conn, ("sync", "jobs:sync")),
                "endpoints": snapshot.read_endpoints(conn),
                "snapshot": snapshot.read_state(conn),
            }
    except BaseException:
        engine.dispose()
        raise


def run_check(config: Config, *, now: datetime | None = None) -> CheckReport:
    """Probe every component in parallel, read the open findings, and give one Nagios verdict; answers
    within about CHECK_DEADLINE_S seconds whatever is dead or hung."""
    from monitor import probes

    now = now or now_utc()
    # One deadline for everything: the store is read while the components are probed, never after.
    deadline = time.monotonic() + CHECK_DEADLINE_S
    reading = _Background(_store_state, config, now)
    extra = demo.check_probes(config)
    components = probes.run_probes(config, deadline_s=CHECK_DEADLINE_S - 0.5, extra=extra)
    notes: list[str] = []
    state: dict | None = None
    try:
        state = reading.result(deadline - 0.3 - time.monotonic())
    except Exception as e:  # noqa: BLE001 - the store is one of the things check reports on
        notes.append(f"the monitor's store could not be read: {config.mask(str(e))}")
    if state is None:
        scheduler = probes.ProbeResult(
            "scheduler", "unknown", "the monitor's store could not be read", None, now_utc()
        )
    else:
        max_age = scheduler_max_age(sync_interval=config.sync_interval, probe_interval=config.probe_interval)
        scheduler = probes.probe_scheduler(state["heartbeat"], now=now_utc(), max_age=max_age)
    components.append(scheduler)
    if state is not None:
        components = [with_endpoint_audit(c, config, state["endpoints"]) for c in components]
        components = [with_sync_failures(c, state["snapshot"]) for c in components]

    findings: dict[str, int] = {}
    risk: dict[str, int] = {}
    last_sync_age = None
    if state is not None:
        current = state["findings"]
        findings = open_by_kind(current)
        risk = amount_at_risk(
            {"kind": f.kind, "amount": f.amount, "currency": f.currency}
            for f in current
            if f.status == lifecycle.OPEN
        )
        if state["last_sync"] is not None:
            last_sync_age = (now - state["last_sync"]).total_seconds()
        rows = [
            {
                "component": c.name,
                "status": c.status,
                "detail": c.detail,
                "latency_ms": c.latency_ms,
                "checked_at": c.checked_at,
            }
            for c in components
        ]
        # Kept for the history, within what is left of the deadline: a slow or failing store must not delay
        # or change the answer, which already says what the probes found.
        with contextlib.suppress(TimeoutError, SQLAlchemyError, MonitorError):
            _Background(_save_probe_results, state["engine"], rows).result(deadline - time.monotonic())
    return CheckReport(
        status=verdict(components, findings, store_read=state is not None),
        components=components,
        findings=findings,
        amount_at_risk=risk,
        last_sync_age_s=last_sync_age,
        notes=notes,
    )


def _save_probe_results(engine: Engine, rows: list[dict]) -> None:
    try:
        with engine.begin() as conn:
            store.save_probe_results(conn, rows)
    finally:
        engine.dispose()


def with_endpoint_audit(result, config: Config, endpoints: list[dict]):
    """The webhook_endpoint component judged from both sides: an endpoint registered at Stripe for the
    expected URL (the audit of the synced endpoints) and the URL answering (the probe). A registration at
    the wrong URL is the incident's cause, so it makes the component down whatever the URL answers."""
    if result.name != "webhook_endpoint":
        return result
    audit = audit_endpoints(
        endpoints, expected_url=demo.expected_webhook_url(config), livemode=config.livemode
    )
    if audit.configured and not audit.ok:
        # A probe that did not contact the URL has nothing to add: say only what is wrong.
        probe = f"; {result.detail}" if demo.contacts_webhook_url(config) else ""
        return dataclasses.replace(result, status="down", detail="; ".join(audit.problems) + probe)
    if not audit.configured:
        return dataclasses.replace(result, detail=audit.summary)
    return result


def with_sync_failures(result, state):
    """The stripe_api component, degraded when the last sync of some resource failed (a restricted key
    without a permission, a list Stripe keeps failing on): the probe's GET /v1/account may well succeed."""
    if result.name != "stripe_api":
        return result
    failed = [g for g in (*state.missing, *state.failing) if g.error]
    if not failed:
        return result
    said = "; ".join(f"sync of {g.resource} failed: {g.why()}" for g in failed)
    status = result.status if result.status == "down" else "degraded"
    return dataclasses.replace(result, status=status, detail=f"{result.detail}; {said}")
