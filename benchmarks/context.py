"""What one run is given (Sizes) and what it holds while it runs (Bench): the processes and engines it
has started, closed by its exit stack, and the report every measurement fills."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from benchmarks.postgres import postgres_database, postgres_version
from benchmarks.report import Report, machine
from monitor import store


@dataclass(frozen=True)
class Sizes:
    objects: int  # backfill (ours and the naive loop)
    latency_ms: float
    rate_limit: float  # STRIPE_RATE_LIMIT for our backfill
    rows: int  # the large reconciliation, through a store and an app database
    recon_rows: int  # reconciliation through a store and app database, and the naive per-row one
    findings: int  # in the store for the dashboard reads
    new_objects: int  # the incremental run's new sessions
    rate_bound_objects: int
    mapping_sample: int  # payments the naive-through-AppDatabase variant runs, then extrapolated
    postgres: str  # auto | off | a URL
    quick: bool


@dataclass
class Bench:
    """One benchmark run: what it has started (closed by `stack`), and the report it fills."""

    sizes: Sizes
    stack: contextlib.ExitStack
    workdir: Path
    report: Report = field(default_factory=Report)
    info: dict = field(default_factory=machine)
    now_s: int = field(default_factory=lambda: int(time.time()))
    pg_admin: str | None = None
    pg_note: str = ""

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_s, UTC)

    @property
    def t_backfill(self) -> int:
        """The backfill's `now`; the incremental runs come 10 and 20 minutes later, as scheduled syncs."""
        return self.now_s - 1200

    def engine(self, url: str) -> Engine:
        engine = store.open_store(url)
        self.stack.callback(engine.dispose)
        return engine

    def postgres(self) -> str | None:
        """A new database on the PostgreSQL server (None without one; pg_note says why)."""
        if not self.pg_admin:
            return None
        try:
            url = postgres_database(self.pg_admin, self.stack)
            self.info.setdefault("postgres", postgres_version(url))
            return url
        except Exception as e:  # noqa: BLE001 - no PostgreSQL rows then, and the table says why
            shown = make_url(self.pg_admin).render_as_string()
            reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            self.pg_note, self.pg_admin = f"skipped: cannot create a database on {shown}: {reason}", None
            return None
