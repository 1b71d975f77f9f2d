"""4. Reconciliation at scale: 1,000,000 payments against 1,000,000 app rows, both SQLite, in a child process;
read + reconcile against a time goal, and the child's peak memory against a memory goal."""

from __future__ import annotations

import time

from benchmarks.context import Bench
from benchmarks.harness import log
from benchmarks.reconcile_child import in_child
from benchmarks.report import mib, seconds
from benchmarks.synthetic import build_app_db, build_recon_store

RECONCILE_GOAL_S = 10.0
MEMORY_GOAL_MIB = 2048.0


def reconciliation_large(bench: Bench) -> None:
    """4. The large reconciliation (--rows payments and as many app rows) in a child process."""
    big = bench.sizes.rows
    big_store = f"sqlite:///{bench.workdir / 'recon-big.db'}"
    big_app = f"sqlite:///{bench.workdir / 'recon-big-app.db'}"
    log(f"reconciliation: writing {big:,} payments to a store and their rows to an app database (minutes)")
    started = time.perf_counter()
    big_saved, big_rows = build_recon_store(big_store, big, bench.now_s)
    build_app_db(big_app, big_rows)
    built_s = time.perf_counter() - started
    del big_rows
    log(f"reconciliation: {big:,} payments × {big:,} rows (child process)")
    ours, total, first = in_child(big_store, big_app, big, bench.now_s)
    label = (
        f"Reconcile {ours['payments']:,} payments × {ours['rows']:,} rows (store on SQLite, app DB on SQLite)"
    )
    bench.report.add(f"{label}: read both sides", seconds(ours["read_s"]))
    bench.report.add(f"{label}: reconcile()", seconds(ours["reconcile_s"]))
    bench.report.add(
        f"{label}: read + reconcile",
        seconds(total),
        "",
        f"≤ {RECONCILE_GOAL_S:g} s",
        total <= RECONCILE_GOAL_S,
    )
    bench.report.add(
        f"{label}: the first run in a new process (readers starting), read + reconcile",
        seconds(first),
        "",
        f"≤ {RECONCILE_GOAL_S:g} s",
        first <= RECONCILE_GOAL_S,
    )
    bench.report.add(
        f"{label}: peak memory (the whole child process)",
        mib(ours["peak_mib"]),
        "",
        f"≤ {MEMORY_GOAL_MIB / 1024:g} GiB",
        ours["peak_mib"] <= MEMORY_GOAL_MIB,
    )
    bench.report.notes.append(
        f"Reconciliation ({ours['payments']:,} payments): {big_saved:,} Stripe objects and {ours['rows']:,} app "
        f"rows written in {seconds(built_s)}; read {seconds(ours['read_s'])} (peak "
        f"{mib(ours['read_peak_mib'])} after it), reconcile {seconds(ours['reconcile_s'])}, peak "
        f"{mib(ours['peak_mib'])} (the interpreter with pandas loaded is {mib(ours['baseline_mib'])}); "
        f"{ours['findings']:,} findings {ours['by_kind']}."
    )
