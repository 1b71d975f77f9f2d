"""5. Dashboard reads: each read of monitor.views, best of 3, with 100,000 findings in the store (written as
a reconcile run writes them), a day of probe results and 2,000 job runs; on SQLite, then PostgreSQL."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, text, update

from benchmarks.context import Bench
from benchmarks.harness import BenchError, log
from benchmarks.report import Report, seconds
from monitor import store
from monitor.app_db import AppDatabase, create_default_schema, load_mapping
from monitor.rules.findings import PAYMENT_KINDS, Finding, finding_id
from monitor.store import lifecycle
from monitor.store.models import FindingRow, JobRun

VIEW_GOAL_S = 1.5

_KIND_MIX = ("paid_without_subscription",) * 4 + (
    "subscription_not_active",
    "subscription_not_active",
    "amount_mismatch",
    "period_not_extended",
    "duplicate_subscription",
    "active_without_payment",
    "refunded_but_active",
)
_COMPONENTS = ("redis:cache", "monitor_db", "app_db", "stripe_api", "webhook_endpoint", "scheduler")


def seed_dashboard(engine: Engine, n: int, now: datetime) -> tuple[dict, float]:
    """`n` findings about the store's payments, written by lifecycle.apply_findings as a reconcile run
    writes them (then a sixteenth resolved and a sixteenth acknowledged), plus a day of probe results and
    2,000 job runs. Returns (samples for the reads, seconds apply_findings took)."""
    with engine.connect() as conn:
        payments = conn.execute(
            text(
                "SELECT payment_id, customer_email, amount, currency, created FROM payments ORDER BY payment_id"
            )
        ).all()
    if not payments:
        raise BenchError("the store holds no payments to write findings about")
    findings = []
    for j in range(n):
        p = payments[j % len(payments)]
        kind = _KIND_MIX[j % len(_KIND_MIX)]
        suffix = "" if j < len(payments) else f":{j}"
        row_kind = kind in ("active_without_payment", "duplicate_subscription")
        findings.append(
            Finding(
                kind=kind,
                key=f"{kind}:{p.payment_id}{suffix}",
                payment_id=None if kind == "active_without_payment" else p.payment_id,
                customer_email=p.customer_email,
                amount=p.amount,
                currency=p.currency,
                subscription_ids=[j + 1, j + 2] if row_kind else [],
                hint=f"{p.customer_email} paid {p.amount} {p.currency}; no active subscription row matches",
                occurred_at=datetime.fromtimestamp(p.created or 0, UTC),
            )
        )
    t = FindingRow.__table__
    started = time.perf_counter()
    with engine.begin() as conn:
        lifecycle.apply_findings(conn, findings, kinds=PAYMENT_KINDS, now=now)
    took = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(update(FindingRow).where(t.c.id.like("0%")).values(status="resolved", resolved_at=now))
        conn.execute(
            update(FindingRow)
            .where(t.c.id.like("1%"))
            .values(status="acknowledged", ack_note="known", ack_by="bench", ack_at=now)
        )
        store.save_probe_results(
            conn,
            (
                {
                    "component": c,
                    "status": "up",
                    "detail": "ok",
                    "latency_ms": 3.0,
                    "checked_at": now - timedelta(minutes=m),
                }
                for m in range(1440)
                for c in _COMPONENTS
            ),
        )
        conn.execute(
            insert(JobRun),
            [
                {
                    "job": ("sync", "reconcile", "probe", "jobs:sync")[m % 4],
                    "started_at": now - timedelta(minutes=5 * m + 1),
                    "finished_at": now - timedelta(minutes=5 * m),
                    "outcome": "ok",
                    "error": None,
                    "counts": json.dumps(
                        {"payments": len(payments), "matched": len(payments) - 1000, "parity_pct": 99.0}
                    ),
                }
                for m in range(2000)
            ],
        )
    middle = payments[len(payments) // 2]
    sample = {
        "email": middle.customer_email,
        "finding_id": finding_id(findings[len(findings) // 2].key),
        "search": middle.customer_email.split("@")[0] + "@",
    }
    return sample, took


def dashboard_app_db(url: str, engine: Engine) -> None:
    """An app database (default schema) with an active row for every session in the store."""
    with engine.connect() as conn:
        sessions = conn.execute(
            text(
                "SELECT id, customer_email, amount_total, currency, created FROM stripe_checkout_sessions ORDER BY id"
            )
        ).all()
    create_default_schema(
        url,
        [
            {
                "id": i + 1,
                "customer_email": s.customer_email or "",
                "stripe_checkout_session_id": s.id,
                "amount": s.amount_total,
                "currency": s.currency,
                "status": "active",
                "created_at": datetime.fromtimestamp(s.created, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            }
            for i, s in enumerate(sessions)
        ],
    )


def time_views(
    engine: Engine, app: AppDatabase, sample: dict, now: datetime
) -> list[tuple[str, float | str]]:
    """Each dashboard read that monitor.views has, best of 3: (label, seconds or an error)."""
    from monitor import views

    year_ago = now - timedelta(days=365)
    calls: list[tuple[str, str, tuple, dict]] = [
        ("find_findings: first page", "find_findings", (), {}),
        ("find_findings: text search", "find_findings", (), {"text": sample["search"]}),
        (
            "find_findings: one kind, page 21",
            "find_findings",
            (),
            {"kinds": ["amount_mismatch"], "offset": 1000},
        ),
        ("findings_summary", "findings_summary", (), {}),
        ("status_strip", "status_strip", (), {}),
        ("finance: by month, a year", "finance", (), {"period": "month", "since": year_ago, "until": now}),
        ("audit_log", "audit_log", (), {}),
        ("customer_lookup: an e-mail", "customer_lookup", (app, sample["email"]), {"now": now}),
        ("finding_detail", "finding_detail", (app, sample["finding_id"]), {"now": now}),
    ]
    timings: list[tuple[str, float | str]] = []
    for label, name, args, kwargs in calls:
        read = getattr(views, name, None)
        if read is None:
            continue
        best: float | str = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            try:
                read(engine, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - a failing read is a figure of the table, not a crash
                best = f"error: {e.__class__.__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
                break
            best = min(best, time.perf_counter() - started)
        timings.append((label, best))
    return timings


def view_rows(report: Report, where: str, timings: list[tuple[str, float | str]], findings: int) -> None:
    for label, took in timings:
        measure = f"Dashboard ({where}, {findings:,} findings): {label}"
        if isinstance(took, str):
            report.add(measure, took, "", f"< {VIEW_GOAL_S} s", False if label != "monitor.views" else None)
        else:
            report.add(measure, seconds(took), "", f"< {VIEW_GOAL_S} s", took < VIEW_GOAL_S)


def dashboard(bench: Bench, engines: list[tuple[str, Engine]], app_source: Engine) -> None:
    """5. The reads on each store in `engines` (6: SQLite, then PostgreSQL), after writing the findings; the
    app database holds an active row for each session of `app_source`."""
    app_url = f"sqlite:///{bench.workdir / 'dashboard-app.db'}"
    dashboard_app_db(app_url, app_source)
    app = AppDatabase(app_url, load_mapping("default"))
    bench.stack.callback(app.dispose)
    n = bench.sizes.findings
    for where, engine in engines:
        log(f"dashboard ({where}): writing {n:,} findings through lifecycle.apply_findings")
        sample, took = seed_dashboard(engine, n, bench.now)
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:  # what autovacuum does soon after a bulk write
                conn.execute(text("ANALYZE"))
        bench.report.notes.append(
            f"Dashboard ({where}): lifecycle.apply_findings wrote {n:,} findings in {seconds(took)}."
        )
        log(f"dashboard ({where}): timing the reads, best of 3")
        view_rows(bench.report, where, time_views(engine, app, sample, bench.now), n)
