"""2. Rate-bound sync: with no latency, how close our limiter keeps the sync to the rate it is given, and
that it never goes over."""

from __future__ import annotations

from benchmarks.context import Bench
from benchmarks.harness import STRIPE_TEST_LIMIT, Emulator, log
from benchmarks.report import count
from benchmarks.syncing import our_sync

RATE_BOUND_LIMIT = 20.0  # STRIPE_RATE_LIMIT's default for test keys
RATE_GOAL = 0.90


def rate_bound(bench: Bench, emu: Emulator) -> None:
    """2. Our sync into a new SQLite store, limited to RATE_BOUND_LIMIT, against an emulator with no latency."""
    sizes, report = bench.sizes, bench.report
    engine = bench.engine(f"sqlite:///{bench.workdir / 'rate.db'}")
    log(f"rate-bound sync: {sizes.rate_bound_objects:,} sessions, latency 0, limit {RATE_BOUND_LIMIT:g}/s")
    emu.reset_stats()
    limited = our_sync(engine, emu.base_url, RATE_BOUND_LIMIT, now=bench.t_backfill, label="rate-bound")
    achieved = limited.result.requests / limited.result.seconds if limited.result.seconds else 0.0
    share = achieved / RATE_BOUND_LIMIT
    report.add(
        f"Rate-bound sync ({sizes.rate_bound_objects:,} sessions, 0 ms latency): requests/s",
        f"{achieved:.1f} ({share:.0%})",
        f"limit {RATE_BOUND_LIMIT:g}/s",
        f"≥ {RATE_GOAL:.0%} of the limit",
        share >= RATE_GOAL,
    )
    report.add(
        "Rate-bound sync: most requests started in any 1 s",
        count(limited.max_per_second),
        f"limit {RATE_BOUND_LIMIT:g}/s",
        f"≤ {RATE_BOUND_LIMIT:g}",
        limited.max_per_second <= RATE_BOUND_LIMIT,
    )
    report.notes.append(
        f"Rate-bound: {limited.result.requests:,} requests over the whole sync ({limited.result.seconds:.1f} s, "
        "planning to last write); the sliding-window limiter lets a full second's worth go at once, so a "
        f"short run shows a little over 100 %. The emulator, enforcing Stripe's test-mode "
        f"{STRIPE_TEST_LIMIT}/s, answered {emu.stats()['rate_limited']:,} of them 429."
    )
