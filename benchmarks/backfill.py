"""1. Backfill: our sync of N Checkout Sessions (into SQLite, and again into PostgreSQL) against the stripe
SDK's sequential `auto_paging_iter` loop over the same sessions and emulator, with injected latency."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import Engine

from benchmarks.context import Bench
from benchmarks.harness import KEY, ROOT, STRIPE_LIVE_LIMIT, BenchError, Emulator, child_env, log
from benchmarks.report import Report, count, seconds
from benchmarks.syncing import SyncRun, our_sync, stored_sessions

BACKFILL_GOAL = 8.0

NAIVE_LOOP = r"""
import sys, time
import stripe

base, key, every = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = stripe.StripeClient(key, base_addresses={"api": base}, max_network_retries=2)
started = time.monotonic()
count = 0
for _ in client.v1.checkout.sessions.list({"limit": 100}).auto_paging_iter():
    count += 1
    if every and count % every == 0:
        print(f"[bench]   naive loop: {count:,} sessions in {time.monotonic() - started:.0f} s",
              file=sys.stderr, flush=True)
print(count, time.monotonic() - started)
"""


def naive_loop(emulator: Emulator, progress_every: int) -> tuple[int, float, int]:
    """(sessions seen, seconds, requests) of the SDK's sequential auto-paging loop, in its own process."""
    emulator.reset_stats()
    done = subprocess.run(
        [sys.executable, "-c", NAIVE_LOOP, emulator.base_url, KEY, str(progress_every)],
        cwd=ROOT,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        timeout=6 * 3600,
    )
    if done.returncode != 0:
        raise BenchError(f"the naive loop failed (exit status {done.returncode}); see its error above")
    seen, took = done.stdout.split()[-2:]
    return int(seen), float(took), emulator.stats()["requests"]


def backfill_rows(
    report: Report,
    where: str,
    n: int,
    ours: SyncRun,
    naive: tuple[int, float, int],
    rate: float,
    latency: float,
) -> None:
    naive_seen, naive_s, naive_requests = naive
    ours_rate = ours.result.total / ours.result.seconds if ours.result.seconds else 0.0
    naive_rate = naive_seen / naive_s if naive_s else 0.0
    ratio = ours_rate / naive_rate if naive_rate else 0.0
    name = f"Backfill {n:,} sessions, {latency:g} ms latency ({where} store)"
    report.add(
        f"{name}: wall time",
        seconds(ours.result.seconds),
        seconds(naive_s),
        f"{naive_s / max(ours.result.seconds, 1e-9):.1f}× faster",
    )
    report.add(
        f"{name}: objects/s",
        count(ours_rate),
        count(naive_rate),
        f"{ratio:.1f}× (goal ≥ {BACKFILL_GOAL:g}×)",
        ratio >= BACKFILL_GOAL,
    )
    report.add(f"{name}: requests", count(ours.result.requests), count(naive_requests))
    report.add(
        f"{name}: most requests started in any 1 s",
        count(ours.max_per_second),
        f"limit {rate:g}/s",
        f"≤ {rate:g}",
        ours.max_per_second <= rate,
    )


def backfill(bench: Bench, emu: Emulator) -> tuple[Engine, Engine | None]:
    """1. The naive loop once, then our sync into a SQLite store and (6.) a PostgreSQL one; the stores'
    engines, for the incremental runs and the dashboard."""
    sizes, report = bench.sizes, bench.report
    log(f"naive loop: {sizes.objects:,} sessions through auto_paging_iter, one request at a time")
    naive = naive_loop(emu, 0 if sizes.quick else 10_000)
    log(f"naive loop: {naive[0]:,} sessions, {naive[2]:,} requests, {naive[1]:.1f} s")
    if naive[0] != sizes.objects:
        report.notes.append(f"The naive loop saw {naive[0]:,} sessions, not {sizes.objects:,}.")
    engine = bench.engine(f"sqlite:///{bench.workdir / 'monitor.db'}")
    pg_url = bench.postgres()
    pg_engine = bench.engine(pg_url) if pg_url else None
    for where, target in (("SQLite", engine), ("PostgreSQL", pg_engine)):
        if target is None:
            continue
        emu.reset_stats()
        log(f"our sync ({where} store, STRIPE_RATE_LIMIT={sizes.rate_limit:g})")
        ours = our_sync(target, emu.base_url, sizes.rate_limit, now=bench.t_backfill, label="sync")
        stats = emu.stats()
        log(
            f"our sync: {ours.result.total:,} objects, {ours.result.requests:,} requests, {ours.result.seconds:.1f} s"
        )
        backfill_rows(report, where, sizes.objects, ours, naive, sizes.rate_limit, sizes.latency_ms)
        if stored_sessions(target) != sizes.objects:
            report.notes.append(
                f"Our sync stored {stored_sessions(target):,} sessions in {where}, not {sizes.objects:,}."
            )
        report.notes.append(
            f"Backfill ({where}): the emulator answered our {stats['requests']:,} requests with "
            f"{stats['rate_limited']:,} 429s (it enforces Stripe's live limit, {STRIPE_LIVE_LIMIT}/s, as "
            "a token bucket)."
        )
    return engine, pg_engine
