"""3. Incremental sync: the requests of a sync after the backfill with nothing new (one per resource, one
for events), and with 1,000 new sessions (a page per 100 more)."""

from __future__ import annotations

from sqlalchemy import Engine

from benchmarks.context import Bench
from benchmarks.harness import Emulator, log
from benchmarks.report import count
from benchmarks.sessions import bench_sessions, chunks
from benchmarks.syncing import our_sync, stored_sessions
from monitor.stripe_api.source import RESOURCES

# Requests a sync makes when nothing happened: one per listed resource (the 8 object lists and webhook
# endpoints) plus one for events.
QUIET_REQUESTS = len(RESOURCES) + 1


def incremental(bench: Bench, emu: Emulator, engine: Engine) -> None:
    """3. Two scheduled syncs after the backfill into `engine`: one with nothing new, one with new sessions."""
    sizes, report = bench.sizes, bench.report
    log("incremental sync: nothing new")
    quiet = our_sync(engine, emu.base_url, sizes.rate_limit, now=bench.t_backfill + 600, label="incremental")
    report.add(
        "Incremental sync, 0 new objects: requests",
        count(quiet.result.requests),
        "",
        f"≤ {QUIET_REQUESTS} (1 per resource + 1 for events)",
        quiet.result.requests <= QUIET_REQUESTS,
    )
    k = sizes.new_objects
    log(f"incremental sync: {k:,} new sessions")
    fresh = bench_sessions(k, bench.t_backfill + 1199, prefix="cs_new", email="new", spacing=598 / k)
    for chunk in chunks(fresh, 1000):
        emu.add(chunk)
    busy = our_sync(engine, emu.base_url, sizes.rate_limit, now=bench.t_backfill + 1200, label="incremental")
    expected = QUIET_REQUESTS + -(-k // 100)
    allowed = int(expected + 0.5 * k / 100)
    report.add(
        f"Incremental sync, {k:,} new sessions: requests",
        count(busy.result.requests),
        "",
        f"≈ {expected} ({QUIET_REQUESTS} + {k:,}/100); met when ≤ {allowed}",
        busy.result.requests <= allowed,
    )
    report.notes.append(
        f"Incremental: the backfill, the quiet run and the busy run are given `now` 10 minutes apart; "
        f"the {k:,} new sessions were added through POST /_emulator/objects, created within the last 10 "
        f"minutes; the busy run fetched {busy.result.objects.get('checkout_sessions', 0):,} sessions."
    )
    if stored_sessions(engine) != sizes.objects + k:
        report.notes.append(
            f"After the busy run the store holds {stored_sessions(engine):,} sessions, not {sizes.objects + k:,}."
        )
