"""Leadership among several `python -m jobs` processes: one named lease row in the store.

A process holds the lease while `expires_at` is in the future and renews it well before then. Taking or
renewing is one compare-and-set that must change exactly one row:

    UPDATE leases SET holder = :me, expires_at = :until
     WHERE name = :name AND (holder = :me OR expires_at < :now)

and the very first time, an INSERT that the primary key arbitrates. So however many processes try at the
same moment, at most one of them leads, on PostgreSQL and on SQLite alike. A process first reads the row
and does not write at all while someone else's lease is running: a standby never waits for the write lock
(on SQLite, one per file, held by the leader's jobs most of the time it is busy). Times are the processes' own
UTC clocks: hosts that share a store must keep their clocks in step (NTP), as healthchecks' and every
lease-based scheduler's do.

A holder also keeps a local deadline (`valid`), counted on the monotonic clock from *before* its last
successful renewal: a leader whose store stops answering stops counting itself leader when the lease it
last wrote runs out, even if the renewal call itself hangs, so a standby that takes over never overlaps it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, case, delete, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from monitor.clock import now_exact
from monitor.store.db import for_reading
from monitor.store.models import Lease as LeaseRow

SCHEDULER = "scheduler"


@dataclass(frozen=True)
class LeaseState:
    """Who holds a lease, and until when (None: nobody has held it yet)."""

    holder: str | None
    expires_at: datetime | None


_utcnow = now_exact


class Lease:
    """One process's handle on the lease `name`, held as `holder` for `duration` seconds per renewal."""

    def __init__(self, engine: Engine, holder: str, *, name: str = SCHEDULER, duration: float = 15.0):
        if duration <= 0:
            raise ValueError(f"a lease lasts more than 0 s, not {duration}")
        self.engine, self.holder, self.name = engine, holder, name
        self.duration = timedelta(seconds=duration)
        self._valid_until: float | None = None  # monotonic deadline of the lease we last wrote
        self.expires_at: datetime | None = None  # the same deadline, as written in the store

    def acquire(self, now: datetime | None = None) -> bool:
        """Take the lease, or renew it if we hold it. True when we hold it now.

        Store errors propagate (SQLAlchemy's); before they do, the local deadline is left as it was, so
        `valid` turns False when the lease last written runs out.
        """
        started = time.monotonic()
        now = now or _utcnow()
        until = now + self.duration
        held = self.current()
        if held.holder not in (None, self.holder) and held.expires_at >= now:
            # Someone else's lease is running: nothing to write (a standby stays off the write lock).
            self._valid_until = None
            self.expires_at = None
            return False
        t = LeaseRow.__table__
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(t)
                .where(t.c.name == self.name, (t.c.holder == self.holder) | (t.c.expires_at < now))
                .values(
                    holder=self.holder,
                    expires_at=until,
                    # A takeover starts a new tenure; a renewal keeps the old start.
                    acquired_at=case(
                        (t.c.holder == self.holder, t.c.acquired_at),
                        else_=literal(now, t.c.acquired_at.type),
                    ),
                )
            ).rowcount
            if changed != 1:
                dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
                # RETURNING says whether the row went in (psycopg reports no rowcount for this INSERT).
                inserted = conn.execute(
                    dialect.insert(t)
                    .values(name=self.name, holder=self.holder, acquired_at=now, expires_at=until)
                    .on_conflict_do_nothing(index_elements=[t.c.name])
                    .returning(t.c.name)
                ).first()
                changed = 1 if inserted is not None else 0
        if changed == 1:
            self._valid_until = started + self.duration.total_seconds()
            self.expires_at = until
            return True
        self._valid_until = None
        self.expires_at = None
        return False

    @property
    def valid(self) -> bool:
        """Whether we may act as leader now: our last successful acquire has not run out yet."""
        return self._valid_until is not None and time.monotonic() < self._valid_until

    def current(self) -> LeaseState:
        """Who holds the lease according to the store."""
        t = LeaseRow.__table__
        with for_reading(self.engine).connect() as conn:
            row = conn.execute(select(t.c.holder, t.c.expires_at).where(t.c.name == self.name)).first()
        return LeaseState(None, None) if row is None else LeaseState(row.holder, row.expires_at)

    def release(self) -> bool:
        """Give the lease up at once if we hold it (a clean shutdown: a standby need not wait for it to
        run out). True when a row of ours was removed."""
        self._valid_until = None
        self.expires_at = None
        t = LeaseRow.__table__
        with self.engine.begin() as conn:
            return (
                conn.execute(delete(t).where(t.c.name == self.name, t.c.holder == self.holder)).rowcount == 1
            )
