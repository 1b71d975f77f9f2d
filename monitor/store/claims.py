"""Claims on work that must happen once at a time, arbitrated by the store (STYLE.md habit 7).

A repair claims its payment by the payment's canonical id (monitor.stripe_api.payment_state.canonical_id), so every
id of one payment (`cs_`, `in_`, `pi_`) takes the same claim. The first claim is an INSERT that the primary key arbitrates; a later one (the
last repair is done, or its process died) is a compare-and-set UPDATE on the claim's token, which must
change exactly one row. Never a check in Python followed by a write.
"""

from __future__ import annotations

import random
import secrets
import time
from datetime import datetime, timedelta

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from monitor.clock import now_utc
from monitor.errors import MonitorError
from monitor.store.models import RepairClaim

STALE_AFTER = timedelta(minutes=2)  # an in-progress claim this old belongs to a process that died


class ClaimBusy(MonitorError):
    """Another repair of the same payment is in progress."""

    def __init__(self, payment_id: str, operator: str, since: datetime):
        super().__init__(
            f"another repair of {payment_id} is in progress (by {operator} since {since:%H:%M:%S} UTC); "
            "try again in a moment"
        )


def take(
    engine: Engine,
    payment_id: str,
    operator: str,
    *,
    wait_s: float = 20.0,
    stale_after: timedelta = STALE_AFTER,
) -> str:
    """Claim `payment_id` for this process; returns the claim's token. Waits up to `wait_s` for a claim in
    progress to end; raises ClaimBusy if it does not."""
    token = secrets.token_hex(16)
    deadline = time.monotonic() + wait_s
    t = RepairClaim.__table__
    while True:
        now = now_utc()
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(t).values(
                        payment_id=payment_id,
                        token=token,
                        state="in_progress",
                        operator=operator,
                        claimed_at=now,
                    )
                )
            return token
        except IntegrityError:
            pass
        with engine.begin() as conn:
            held = conn.execute(select(t).where(t.c.payment_id == payment_id)).one_or_none()
            if held is not None and (held.state != "in_progress" or held.claimed_at < now - stale_after):
                changed = conn.execute(
                    update(t)
                    .where(t.c.payment_id == payment_id, t.c.token == held.token)
                    .values(
                        token=token, state="in_progress", operator=operator, claimed_at=now, finished_at=None
                    )
                ).rowcount
                if changed == 1:
                    return token
        if time.monotonic() >= deadline:
            raise ClaimBusy(payment_id, held.operator if held else "?", held.claimed_at if held else now)
        time.sleep(0.05 + random.random() * 0.15)


def release(engine: Engine, payment_id: str, token: str, state: str) -> None:
    """End this process's claim with `state` (done or failed); a no-op if the claim was taken over."""
    t = RepairClaim.__table__
    with engine.begin() as conn:
        conn.execute(
            update(t)
            .where(t.c.payment_id == payment_id, t.c.token == token)
            .values(state=state, finished_at=now_utc())
        )
