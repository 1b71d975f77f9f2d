"""Paid Checkout Sessions shaped like Stripe's own example, for the emulators the syncs read from."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import orjson

from monitor.emulator.shapes import paid_session

PRICES = np.array([4900, 9900, 14900, 29900], dtype=np.int64)
DAY = 86400


def session_base() -> dict:
    """The paid one-time Checkout Session every benchmark session is a copy of."""
    return paid_session()


def bench_sessions(
    n: int, newest: int, *, prefix: str = "cs_bench", email: str = "c", spacing: float = 60
) -> Iterator[dict]:
    """`n` paid Checkout Sessions `spacing` seconds apart, the newest created at `newest`."""
    base = session_base()
    details = base.get("customer_details") or {}
    for i in range(n):
        address = f"{email}{i}@example.com"
        price = int(PRICES[i % 4])
        obj = dict(base)
        obj.update(
            id=f"{prefix}{i:08d}",
            created=newest - int(i * spacing),
            amount_total=price,
            amount_subtotal=price,
            customer_email=address,
            customer_details={**details, "email": address},
        )
        yield obj


def write_fixtures(path: Path, objects: Iterable[dict]) -> int:
    n = 0
    with open(path, "wb") as f:
        f.write(b'{"objects":[')
        for obj in objects:
            f.write((b"," if n else b"") + orjson.dumps(obj))
            n += 1
        f.write(b"]}")
    return n


def chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
