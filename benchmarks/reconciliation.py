"""4. Reconciliation of 100,000 payments: ours (both sides read in bulk, then reconcile(), in a child
process) against a naive reconciliation that asks the app database for each payment's rows and decides in
Python, over the same store and app database."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pandas as pd
from sqlalchemy import text

from benchmarks.context import Bench
from benchmarks.harness import log
from benchmarks.reconcile_child import GRACE, by_kind, in_child
from benchmarks.report import mib, seconds
from benchmarks.synthetic import build_app_db, build_recon_store, nonempty_text
from monitor import store
from monitor.app_db import AppDatabase, load_mapping
from monitor.rules.reconcile import PAYMENT_COLUMNS, SUBSCRIPTION_COLUMNS
from monitor.store import snapshot

RECONCILE_RATIO_GOAL = 50.0


def reconciliation(bench: Bench) -> None:
    """4. Ours against the naive per-payment loop over the same store and app database: both on SQLite, and
    (with PostgreSQL) the app database there, then both there."""
    n = bench.sizes.recon_rows
    sqlite_store = f"sqlite:///{bench.workdir / 'recon.db'}"
    sqlite_app = f"sqlite:///{bench.workdir / 'recon-app.db'}"
    log(f"reconciliation: writing {n:,} payments to a store and their rows to an app database")
    saved, rows = build_recon_store(sqlite_store, n, bench.now_s)
    build_app_db(sqlite_app, rows)
    pairs = [("SQLite", sqlite_store, "SQLite", sqlite_app)]
    pg_app, pg_store = bench.postgres(), bench.postgres()
    if pg_app and pg_store:
        log(
            "reconciliation: the same rows in an app database on PostgreSQL, the same objects in a store there"
        )
        build_app_db(pg_app, rows)
        build_recon_store(pg_store, n, bench.now_s)
        pairs += [
            ("SQLite", sqlite_store, "PostgreSQL", pg_app),
            ("PostgreSQL", pg_store, "PostgreSQL", pg_app),
        ]
    del rows
    for store_on, store_url, app_on, app_url in pairs:
        _against_naive(bench, store_on, store_url, app_on, app_url, mapping=app_on == store_on == "SQLite")
    bench.report.notes.append(
        f"Reconciliation ({n:,} payments): {saved:,} Stripe objects saved by store.save_objects (which keeps "
        "the `payments` table up to date as it saves); the app's rows in the default schema with indexes on "
        "its three Stripe id columns (the naive loop uses them; the bulk read does not)."
    )


def _against_naive(
    bench: Bench, store_on: str, store_url: str, app_on: str, app_url: str, *, mapping: bool
) -> None:
    """Ours in a child process, then the naive per-payment loop, over the same store and app database."""
    report, where = bench.report, f"store on {store_on}, app DB on {app_on}"
    log(f"reconciliation: {bench.sizes.recon_rows:,} payments, {where} (child process)")
    ours, ours_s, first_s = in_child(store_url, app_url, bench.sizes.recon_rows, bench.now_s)
    log(f"naive reconciliation: one query per payment to the app database on {app_on}")
    naive_read, naive_loop_s, _, naive_kinds = naive_reconcile(
        store_url, app_url, bench.now, through_mapping=False, limit=None
    )
    naive_s = naive_read + naive_loop_s
    log(f"  naive: {naive_s:.1f} s")
    label = f"Reconcile {ours['payments']:,} payments × {ours['rows']:,} rows ({where})"
    report.add(f"{label}: read both sides", seconds(ours["read_s"]))
    report.add(f"{label}: reconcile()", seconds(ours["reconcile_s"]))
    report.add(
        f"{label}: the first run in a new process (readers starting), read + reconcile", seconds(first_s)
    )
    ratio = naive_s / ours_s if ours_s else 0.0
    report.add(
        f"{label}: total vs naive, one bare SQL query per payment",
        seconds(ours_s),
        seconds(naive_s),
        f"{ratio:.1f}× (goal ≥ {RECONCILE_RATIO_GOAL:g}×)",
        ratio >= RECONCILE_RATIO_GOAL,
    )
    if mapping:
        sample = min(bench.sizes.mapping_sample, ours["payments"])
        log(f"naive reconciliation through AppDatabase.rows_for_payment: {sample:,} payments, extrapolated")
        _, m_loop, m_done, _ = naive_reconcile(
            store_url, app_url, bench.now, through_mapping=True, limit=sample
        )
        mapping_s = naive_read + m_loop * (ours["payments"] / max(m_done, 1))
        ratio = mapping_s / ours_s if ours_s else 0.0
        report.add(
            f"{label}: total vs naive, one AppDatabase.rows_for_payment per payment (extrapolated from {m_done:,})",
            seconds(ours_s),
            seconds(mapping_s),
            f"{ratio:.1f}× (goal ≥ {RECONCILE_RATIO_GOAL:g}×)",
            ratio >= RECONCILE_RATIO_GOAL,
        )
        report.add(f"{label}: peak memory (the whole child process)", mib(ours["peak_mib"]))
        report.notes.append(
            f"Reconciliation ({ours['payments']:,} payments): ours found {ours['findings']:,} {ours['by_kind']}; "
            f"the naive loop {sum(naive_kinds.values()):,} {naive_kinds}: it judges less (no "
            "active_without_payment, no latest-payment rules), so its time is a lower bound."
        )
    if naive_s < RECONCILE_RATIO_GOAL * ours_s:
        per_query = naive_loop_s / max(ours["payments"], 1) * 1e6
        per_payment = ours_s / max(ours["payments"], 1) * 1e6
        report.notes.append(
            f"Reconciliation, {where}: the ratio is bounded by how cheap one query is here: "
            f"{per_query:.0f} µs a payment for the naive loop against {per_payment:.1f} µs a payment for "
            f"ours (reading {len(PAYMENT_COLUMNS) + len(SUBSCRIPTION_COLUMNS)} values and deciding); "
            f"{RECONCILE_RATIO_GOAL:g}× would need ours under {per_query / RECONCILE_RATIO_GOAL:.1f} µs a "
            f"payment, while reconcile() alone takes {ours['reconcile_s'] / max(ours['payments'], 1) * 1e6:.1f}."
        )
    report.notes.append(
        f"Reconciliation, {where}: both sides read at once in {seconds(ours['read_s'])}, reconcile "
        f"{seconds(ours['reconcile_s'])}; naive: payments read in bulk in {seconds(naive_read)}, then one "
        f"query per payment in {seconds(naive_loop_s)} "
        f"({naive_loop_s / max(ours['payments'], 1) * 1e6:.0f} µs a payment)."
    )


_ACTIVE = frozenset({"active", "trialing"})
_ENDED = frozenset({"canceled", "incomplete_expired"})


def _missing(value) -> bool:
    return value is None or (not isinstance(value, list | dict) and bool(pd.isna(value)))


def _when(value) -> datetime | None:
    if _missing(value):
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def naive_decide(p: dict, rows: list[dict], now: datetime) -> list[str]:
    """The per-payment decisions of a naive reconciliation, in plain Python, for one payment and its rows.
    (It judges less than monitor.rules.reconcile: no active_without_payment, no latest-payment rules.)"""
    created = _when(p["created"])
    due = created is not None and now - created > GRACE
    refunded, amount = int(p["amount_refunded"] or 0), int(p["amount"] or 0)
    settled = (refunded > 0 and refunded >= amount) or p["dispute_status"] == "lost"
    if not rows:
        return ["paid_without_subscription"] if due and not settled else []
    kinds = []
    active = [r for r in rows if not _missing(r["status"]) and str(r["status"]).lower() in _ACTIVE]
    if not active and due and not settled and p["stripe_subscription_status"] not in _ENDED:
        kinds.append("subscription_not_active")
    for r in active:
        currency = "" if _missing(r["currency"]) else str(r["currency"]).lower()
        if (not _missing(r["amount"]) and int(r["amount"]) != amount) or (
            currency and currency != p["currency"]
        ):
            kinds.append("amount_mismatch")
            break
    if active and settled:
        kinds.append("refunded_but_active")
    if len(active) > 1:
        kinds.append("duplicate_subscription")
    period_end = _when(p["period_end"])
    if period_end is not None and active and due and not settled:
        ends = [_when(r["current_period_end"]) for r in active]
        if any(e is None or e < period_end - timedelta(days=1) for e in ends):
            kinds.append("period_not_extended")
    return kinds


def naive_reconcile(store_url: str, app_url: str, now: datetime, *, through_mapping: bool, limit: int | None):
    """One app-database query per payment (payments themselves read in bulk), decisions in Python.
    Returns (seconds reading payments, seconds of the per-payment loop, payments done, findings by kind).

    through_mapping: each payment's rows through AppDatabase.rows_for_payment (the project's own
    per-payment read, a DataFrame per call); else a bare SQL query returning tuples."""
    engine = store.open_store(store_url)
    app = AppDatabase(app_url, load_mapping("default"))
    try:
        t0 = time.perf_counter()
        with engine.connect() as conn:
            payments = snapshot.read_payments(conn)
        t1 = time.perf_counter()
        records = payments.to_dict("records")[:limit]
        inner = app.mapping.subscriptions_query.strip().rstrip(";")
        query = text(
            f"SELECT * FROM ({inner}) mapped WHERE mapped.checkout_session_id = :cs "
            "OR mapped.payment_intent_id = :pi OR mapped.stripe_subscription_id = :sub"
        )
        kinds: list[str] = []
        t2 = time.perf_counter()
        with app.engine.connect() as conn:
            for p in records:
                ids = {
                    "cs": nonempty_text(p["checkout_session_id"]),
                    "pi": nonempty_text(p["payment_intent_id"]),
                    "sub": nonempty_text(p["stripe_subscription_id"]),
                }
                if through_mapping:
                    rows = app.rows_for_payment(
                        conn,
                        checkout_session_id=ids["cs"],
                        payment_intent_id=ids["pi"],
                        stripe_subscription_id=ids["sub"],
                    ).to_dict("records")
                else:
                    rows = [r._asdict() for r in conn.execute(query, ids)]
                kinds += naive_decide(p, rows, now)
        t3 = time.perf_counter()
    finally:
        engine.dispose()
        app.dispose()
    return t1 - t0, t3 - t2, len(records), by_kind(kinds)
