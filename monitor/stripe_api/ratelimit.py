"""A client-side rate limiter shared by every thread of a sync.

A sliding one-second window (the times of the last `rate` requests): a request may start only when fewer
than `rate` started in the second before it, so no one-second window ever holds more than `rate` requests.
A token bucket would let a full bucket plus the refill through in one second; Stripe counts per second
(docs.stripe.com/rate-limits: 25 requests/s in test mode, 100 in live mode).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

GUARD_S = 0.05


class RateLimiter:
    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic, sleep=time.sleep):
        if rate <= 0:
            raise ValueError(f"rate must be > 0 requests/s, not {rate}")
        self.rate = rate
        self._per_window = max(1, int(rate))
        # 1 s for whole rates (longer for fractional ones), plus a guard: a request admitted here starts a
        # moment later, and on a loaded machine such moments can bunch `rate` + 1 starts into one second.
        self._window = self._per_window / rate + GUARD_S
        self._starts: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep

    def acquire(self) -> None:
        """Block until a request may start, then count it as started."""
        while True:
            with self._lock:
                now = self._clock()
                while self._starts and now - self._starts[0] >= self._window:
                    self._starts.popleft()
                if len(self._starts) < self._per_window:
                    self._starts.append(now)
                    return
                wait = self._window - (now - self._starts[0])
            self._sleep(wait)
