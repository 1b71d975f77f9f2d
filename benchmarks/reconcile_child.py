"""The child process of the reconciliation measurements: `python -m benchmarks.reconcile_child --store URL
--app URL --now EPOCH` reconciles as `python -m monitor reconcile` does and prints its figures as JSON,
so its peak memory is its own."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import resource
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.harness import log, run_child
from monitor import pipeline, store
from monitor.app_db import AppDatabase, load_mapping
from monitor.rules.reconcile import reconcile
from monitor.store.db import warm_bulk_reader

GRACE = timedelta(minutes=10)  # GRACE_MINUTES' default


def in_child(store_url: str, app_url: str, n: int, now_s: int) -> tuple[dict, float, float]:
    """(the child's figures, read + reconcile of its later run, of its first run)."""
    ours = run_child(
        "benchmarks.reconcile_child",
        ["--store", store_url, "--app", app_url, "--now", str(now_s)],
        f"reconciling {n:,} payments",
    )
    total = ours["read_s"] + ours["reconcile_s"]
    first = ours["first_read_s"] + ours["first_reconcile_s"]
    log(
        f"  read {ours['read_s']:.2f} s, reconcile {ours['reconcile_s']:.2f} s (first run {first:.2f} s), "
        f"peak {ours['peak_mib']:.0f} MiB"
    )
    return ours, total, first


def child_reconcile(store_url: str, app_url: str, now: datetime) -> dict:
    """In a child process: a reconciliation as `python -m monitor reconcile` does it (both sides read at
    once, then reconcile()), twice: first as a new process meets it (the SQLite reader processes still
    starting), then as the jobs process does every run after its first (readers started). Its times and
    this process's peak memory."""
    gc.collect()
    out: dict = {"baseline_mib": _rss_mib()}
    engine = store.open_store(store_url)
    app = AppDatabase(app_url, load_mapping("default"))
    try:
        warm_bulk_reader(engine.url)  # as pipeline.run_reconcile does when it starts
        warm_bulk_reader(app_url)
        for run in ("first_", ""):
            t0 = time.perf_counter()
            payments, subscriptions = pipeline.read_both_sides(engine, app)
            t1 = time.perf_counter()
            out[f"{run}read_peak_mib"] = _peak_mib()
            result = reconcile(
                payments, subscriptions, now=now, grace=GRACE, active_statuses=app.mapping.active_statuses
            )
            t2 = time.perf_counter()
            out.update({f"{run}read_s": t1 - t0, f"{run}reconcile_s": t2 - t1})
            counts = (len(payments), len(subscriptions))
            if run:
                del payments, subscriptions, result
                gc.collect()
    finally:
        engine.dispose()
        app.dispose()
    out.update(
        payments=counts[0],
        rows=counts[1],
        findings=len(result.findings),
        by_kind=by_kind(f.kind for f in result.findings),
        peak_mib=_peak_mib(),
    )
    return out


def by_kind(kinds: Iterable[str]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for kind in kinds:
        counted[kind] = counted.get(kind, 0) + 1
    return dict(sorted(counted.items()))


def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reconcile_child", description=__doc__)
    parser.add_argument("--store", required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--now", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(child_reconcile(args.store, args.app, datetime.fromtimestamp(args.now, UTC))))
