"""Our sync as the measurements run it: `monitor.stripe_api.sync.sync` through a rate-limited StripeSource,
with the start of each request timed (shared by the backfill, incremental and rate-bound measurements)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from benchmarks.harness import KEY, log
from monitor.store.models import CheckoutSession
from monitor.stripe_api.ratelimit import RateLimiter
from monitor.stripe_api.source import StripeSource
from monitor.stripe_api.sync import DEFAULT_WORKERS, SyncResult, sync


@dataclass
class SyncRun:
    result: SyncResult
    starts: list[float]

    @property
    def max_per_second(self) -> int:
        return max_in_window(self.starts, 1.0)


def max_in_window(starts: list[float], window: float) -> int:
    """The most request starts in any `window` seconds (any half-open interval of that length)."""
    times = sorted(starts)
    best, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - window:
            first += 1
        best = max(best, last - first + 1)
    return best


def our_sync(engine: Engine, base_url: str, rate: float, *, now: int, label: str) -> SyncRun:
    """`monitor.stripe_api.sync.sync` through a StripeSource limited to `rate` requests/s, each request's start timed."""
    source = StripeSource(KEY, base_url, limiter=RateLimiter(rate))
    starts: list[float] = []
    request = source._request

    def timed(path: str, params: dict) -> dict:
        starts.append(time.monotonic())  # list.append is atomic: safe from the sync's threads
        return request(path, params)

    source._request = timed  # type: ignore[method-assign]
    shown = [time.monotonic()]

    def progress(resource: str, objects: int, pages: int) -> None:
        if time.monotonic() - shown[0] >= 5:
            shown[0] = time.monotonic()
            log(f"  {label}: {resource} {objects:,} objects, {pages:,} pages")

    try:
        result = sync(engine, source, now=now, progress=progress, workers=DEFAULT_WORKERS)
    finally:
        source.close()
    return SyncRun(result, starts)


def stored_sessions(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(CheckoutSession)).scalar_one()
