"""The Overview's reads: the status strip, the open findings in numbers and the one status line they add up
to, parity over time, and whether the monitor's own data is fresh."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace

import pandas as pd
from sqlalchemy import Engine, func, select

from monitor.rules.completeness import SnapshotState
from monitor.rules.findings import AT_RISK_KINDS, CRITICAL, KINDS, WARNING
from monitor.rules.heartbeat import SCHEDULED_JOBS, scheduler_max_age
from monitor.rules.incidents import ENDPOINT_COMPONENT
from monitor.rules.timefmt import format_duration, to_utc
from monitor.rules.verdict import verdict
from monitor.store import snapshot
from monitor.store.lifecycle import ACKNOWLEDGED, OPEN
from monitor.store.models import FindingRow, JobRun
from monitor.views.common import frame, loads
from monitor.views.probe_history import latest_results

SYNC_JOBS = ("sync", "jobs:sync")
PARITY_COLUMNS = ("finished_at", "payments", "matched", "parity_pct")
MAX_PARITY_POINTS = 2000
ENDPOINT_PROBLEM = "webhook endpoint misconfigured"  # as monitor.rules.incidents.Cause.title says it
_f = FindingRow.__table__
_j = JobRun.__table__


def status_strip(engine: Engine) -> list[dict]:
    """The newest probe result of every component: name, status, detail (the exact error when down),
    latency_ms, checked_at; redis:* first, then monitor_db, app_db, stripe_api, webhook_endpoint,
    scheduler, then any other."""
    with engine.connect() as conn:
        return latest_results(conn)


@dataclass(frozen=True)
class FindingsSummary:
    """The findings in numbers: open and acknowledged; the open ones by kind (in KINDS' order) and by
    severity; the amount at risk per currency in minor units, as `monitor check` counts it (open findings of
    the kinds where money was taken and no access given)."""

    open: int = 0
    acknowledged: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_severity: dict[str, int] = field(default_factory=dict)
    amount_at_risk: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Freshness:
    """How fresh the monitor's own data is: when the last successful sync and reconcile finished and the
    last scheduled job started (None: never), their ages in seconds, whether sync or the scheduler is stale,
    and one line saying so."""

    last_sync_at: datetime | None
    last_reconcile_at: datetime | None
    last_scheduled_run_at: datetime | None
    last_sync_age_s: float | None
    last_reconcile_age_s: float | None
    last_scheduled_run_age_s: float | None
    sync_stale: bool
    scheduler_stale: bool
    message: str

    @property
    def stale(self) -> bool:
        return self.sync_stale or self.scheduler_stale


def findings_summary(engine: Engine) -> FindingsSummary:
    """The open and acknowledged findings in numbers (FindingsSummary)."""
    with engine.connect() as conn:
        counts = conn.execute(
            # By kind only, answered from the (status, kind) index alone: a kind's severity is fixed.
            select(_f.c.status, _f.c.kind, func.count())
            .where(_f.c.status.in_((OPEN, ACKNOWLEDGED)))
            .group_by(_f.c.status, _f.c.kind)
        ).all()
        risk = conn.execute(
            select(_f.c.currency, func.sum(_f.c.amount))
            .where(
                _f.c.status == OPEN,
                _f.c.kind.in_(AT_RISK_KINDS),
                _f.c.currency.is_not(None),
                _f.c.amount.is_not(None),
            )
            .group_by(_f.c.currency)
        ).all()
    order = {k: i for i, k in enumerate(KINDS)}
    by_kind: dict[str, int] = {}
    by_severity = {CRITICAL: 0, WARNING: 0}
    totals = {OPEN: 0, ACKNOWLEDGED: 0}
    for status, kind, n in sorted(counts, key=lambda r: (order.get(r[1], len(order)), r[1])):
        totals[status] += n
        if status == OPEN:
            severity = KINDS[kind][0] if kind in KINDS else WARNING
            by_kind[kind] = by_kind.get(kind, 0) + n
            by_severity[severity] = by_severity.get(severity, 0) + n
    return FindingsSummary(
        open=totals[OPEN],
        acknowledged=totals[ACKNOWLEDGED],
        by_kind=by_kind,
        by_severity=by_severity,
        amount_at_risk={currency: int(total) for currency, total in sorted(risk)},
    )


@dataclass(frozen=True)
class StatusLine:
    """The Overview's first line: the verdict `monitor check` gives (CRITICAL, WARNING, UNKNOWN, OK) and the
    whole line, 'CRITICAL — redis:channels down, webhook endpoint misconfigured'."""

    verdict: str
    text: str


def status_line(strip: Iterable[Mapping], summary: FindingsSummary) -> StatusLine:
    """The verdict `monitor check` gives (rules.verdict) for these components (status_strip) and open
    findings (findings_summary), and what makes it so, worst first: components down, then the webhook
    endpoint problem, then components degraded; with none of those, the open findings, else the components
    whose state is unknown."""
    # A component without a status is unknown, for the verdict and for the words alike.
    strip = [{**c, "status": str(c.get("status") or "unknown")} for c in strip]
    by_kind = dict(summary.by_kind)
    worst = verdict([SimpleNamespace(status=c["status"]) for c in strip], by_kind, store_read=True)

    def named(status: str) -> list[str]:
        return [
            f"{c.get('name')} {status}"
            for c in strip
            if c["status"] == status and c.get("name") != ENDPOINT_COMPONENT
        ]

    endpoint = by_kind.get("endpoint_misconfigured", 0) > 0 or any(
        c.get("name") == ENDPOINT_COMPONENT and c["status"] in ("down", "degraded") for c in strip
    )
    parts = named("down") + ([ENDPOINT_PROBLEM] if endpoint else []) + named("degraded")
    if not parts:
        severity = summary.by_severity
        for level in ("critical", "warning"):
            n = int(severity.get(level) or 0)
            if n:
                parts.append(f"{n} {level} finding{'s' if n != 1 else ''} open")
    if not parts:
        parts = named("unknown")
    if not strip:
        parts.append("no probe has run yet")
    return StatusLine(worst, f"{worst} — " + (", ".join(parts) or "every component up, no open finding"))


def parity_history(engine: Engine, *, since: datetime, max_points: int = MAX_PARITY_POINTS) -> pd.DataFrame:
    """finished_at, payments, matched, parity_pct of every successful reconcile run started since `since`,
    oldest first; past `max_points` runs, evenly thinned (the newest run always kept)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(_j.c.finished_at, _j.c.counts)
            .where(_j.c.job == "reconcile", _j.c.outcome == "ok", _j.c.started_at >= to_utc(since))
            .order_by(_j.c.started_at, _j.c.id)
        ).all()
    points = []
    for finished_at, counts in rows:
        c = loads(counts, {})
        if isinstance(c, dict) and "payments" in c and "parity_pct" in c:
            points.append((finished_at, int(c["payments"]), int(c.get("matched", 0)), float(c["parity_pct"])))
    if len(points) > max_points:
        step = -(-len(points) // max_points)
        points = points[::-1][::step][::-1]
    return frame(points, PARITY_COLUMNS, times=("finished_at",))


def _newest(conn, jobs: tuple[str, ...], *, ok_only: bool, column) -> datetime | None:
    """The newest `column` over the newest run of each job (each read through the (job, started_at) index
    backwards, so it costs a seek whatever the number of runs)."""
    found = []
    for job in jobs:
        where = [_j.c.job == job] + ([_j.c.outcome == "ok"] if ok_only else [])
        value = conn.execute(
            select(column).where(*where).order_by(_j.c.started_at.desc(), _j.c.id.desc()).limit(1)
        ).scalar()
        if value is not None:
            found.append(value)
    return max(found) if found else None


def freshness(engine: Engine, *, now: datetime, sync_interval: int, probe_interval: int) -> Freshness:
    """How fresh the monitor's own data is (Freshness).

    Stale: no successful sync within 2 × sync_interval + 60 s, or no run of a scheduled job (any outcome:
    the scheduler's heartbeat, as `check` reads it) within 2 × min(sync_interval, probe_interval)."""
    now = to_utc(now)
    with engine.connect() as conn:
        last_sync = _newest(conn, SYNC_JOBS, ok_only=True, column=_j.c.finished_at)
        last_reconcile = _newest(conn, ("reconcile",), ok_only=True, column=_j.c.finished_at)
        last_scheduled = _newest(conn, SCHEDULED_JOBS, ok_only=False, column=_j.c.started_at)

    def age(moment: datetime | None) -> float | None:
        return None if moment is None else max((now - moment).total_seconds(), 0.0)

    sync_limit = 2 * sync_interval + 60
    scheduler_limit = scheduler_max_age(
        sync_interval=sync_interval, probe_interval=probe_interval
    ).total_seconds()
    sync_age, scheduled_age = age(last_sync), age(last_scheduled)
    sync_stale = sync_age is None or sync_age > sync_limit
    scheduler_stale = scheduled_age is None or scheduled_age > scheduler_limit

    def ago(seconds: float) -> str:
        return format_duration(timedelta(seconds=seconds)) + " ago"

    problems = []
    if sync_age is None:
        problems.append("no successful sync yet")
    elif sync_stale:
        problems.append(
            f"last successful sync {ago(sync_age)} (expected every {format_duration(timedelta(seconds=sync_interval))})"
        )
    if scheduled_age is None:
        problems.append("the scheduler (python -m jobs) has never run")
    elif scheduler_stale:
        problems.append(f"the scheduler (python -m jobs) last ran a job {ago(scheduled_age)}")
    if problems:
        message = "Stale: " + "; ".join(problems)
    else:
        message = f"Fresh: last sync {ago(sync_age)}, last scheduled run {ago(scheduled_age)}"
    return Freshness(
        last_sync_at=last_sync,
        last_reconcile_at=last_reconcile,
        last_scheduled_run_at=last_scheduled,
        last_sync_age_s=sync_age,
        last_reconcile_age_s=age(last_reconcile),
        last_scheduled_run_age_s=scheduled_age,
        sync_stale=sync_stale,
        scheduler_stale=scheduler_stale,
        message=message,
    )


@dataclass(frozen=True)
class SnapshotStatus:
    """The snapshot's completeness (monitor.rules.completeness.SnapshotState) and the kinds the last reconcile
    held back, with why (kind -> one line)."""

    state: SnapshotState
    held_back: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.state.complete and not self.held_back


def snapshot_status(engine: Engine) -> SnapshotStatus:
    """What every page's banner says when the snapshot is incomplete: the resources missing or failing
    (with Stripe's words), and what the last successful reconcile therefore did not judge."""
    with engine.connect() as conn:
        state = snapshot.read_state(conn)
        counts = conn.execute(
            select(_j.c.counts)
            .where(_j.c.job == "reconcile", _j.c.outcome == "ok")
            .order_by(_j.c.started_at.desc(), _j.c.id.desc())
            .limit(1)
        ).scalar()
    held = (loads(counts) or {}).get("held_back") or {}
    return SnapshotStatus(state, dict(held))
