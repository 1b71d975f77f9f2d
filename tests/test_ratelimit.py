"""The client-side rate limiter: never more than the configured rate in any one-second window."""

import threading
import time

import pytest

from monitor.stripe_api.ratelimit import RateLimiter


def most_in_any_second(starts: list[float]) -> int:
    starts = sorted(starts)
    most, j = 0, 0
    for i, t in enumerate(starts):
        while starts[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    return most


@pytest.mark.parametrize("rate", [7, 40])
def test_no_one_second_window_holds_more_than_the_rate_whatever_the_threads(rate):
    limiter = RateLimiter(rate)
    starts: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(rate // 2 + 3):
            limiter.acquire()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(starts) == 8 * (rate // 2 + 3)
    assert most_in_any_second(starts) <= rate


def test_the_limiter_lets_a_full_second_through_without_waiting():
    waits = []
    limiter = RateLimiter(5, clock=lambda: 100.0, sleep=waits.append)
    for _ in range(5):
        limiter.acquire()
    assert waits == []


def test_a_zero_rate_is_refused():
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(0)
