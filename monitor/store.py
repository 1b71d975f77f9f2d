"""The monitor's own store: engine, schema migrations, Stripe snapshot upserts, sync cursors, job runs.

SQLite and PostgreSQL. The schema is Alembic's (monitor/migrations): `open_store` brings it to head,
once, under a lock, so many processes may start at the same moment.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import traceback
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

import orjson
import pandas as pd
from sqlalchemy import Connection, Engine, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from monitor import payment_table
from monitor.config import mask_url
from monitor.db import make_engine
from monitor.errors import StoreError
from monitor.models import JobRun, ProbeResultRow, SyncState, SyncWindow, now_utc
from monitor.stripe_rows import object_type, row_for, table_for

MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK_KEY = 7_149_149  # PostgreSQL advisory lock id held while migrating


def is_sqlite(engine_or_conn) -> bool:
    return engine_or_conn.dialect.name == "sqlite"


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if is_sqlite(engine):
        database = make_url(str(engine.url)).database
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            conn.commit()


def _alembic_config():
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the store's schema to the newest revision (a no-op when it is there already)."""
    if _current(engine) == _head():
        return
    from alembic import command

    with _migration_lock(engine):
        if _current(engine) == _head():
            return
        cfg = _alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")


def open_store(url: str) -> Engine:
    """An engine on the store at `url`, its schema migrated. Failures are a StoreError naming the URL."""
    try:
        engine = make_engine(url)
        migrate(engine)
        return engine
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
        raise StoreError(f"cannot open the monitor's store at {mask_url(url)}: {reason}") from None
    except OSError as e:
        raise StoreError(f"cannot open the monitor's store at {mask_url(url)}: {e}") from None


# --- Stripe snapshot ---------------------------------------------------------------------------


def _upsert(conn: Connection, model, rows: list[dict]) -> None:
    """Insert rows, or update the stored copy where the new one is at least as fresh."""
    if not rows:
        return
    table = model.__table__
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    columns = {c.name: stmt.excluded[c.name] for c in table.columns if c.name != "id"}
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.id],
        set_=columns,
        # Only a fresher copy that differs is written: a re-sync of unchanged objects writes nothing.
        where=(stmt.excluded.snapshot_at >= table.c.snapshot_at) & (stmt.excluded.raw != table.c.raw),
    )
    conn.execute(stmt, rows)


def save_objects(conn: Connection, objects: Iterable[dict], snapshot_at: int) -> int:
    """Upsert Stripe objects of every kept type; an event's `data.object` is upserted too, stamped with
    the event's time, so later changes to old payments (refunds, disputes, late payment) arrive through
    events. Returns how many top-level objects were saved."""
    by_type: dict[str, dict[str, dict]] = {}
    saved = 0
    for obj in objects:
        kind = object_type(obj)
        if kind is None:
            continue
        saved += 1
        _keep_freshest(by_type, kind, row_for(obj, snapshot_at))
        if kind == "event":
            inner = (obj.get("data") or {}).get("object") or {}
            inner_kind = object_type(inner)
            if inner_kind is not None and inner_kind not in ("event", "webhook_endpoint"):
                _keep_freshest(by_type, inner_kind, row_for(inner, obj.get("created") or 0))
    for kind, rows in by_type.items():
        _upsert(conn, table_for(kind), list(rows.values()))
    payment_table.refresh(conn, {kind: rows.values() for kind, rows in by_type.items()})
    return saved


def _keep_freshest(by_type: dict[str, dict[str, dict]], kind: str, row: dict) -> None:
    rows = by_type.setdefault(kind, {})
    old = rows.get(row["id"])
    if old is None or row["snapshot_at"] >= old["snapshot_at"]:
        rows[row["id"]] = row


def replace_objects(conn: Connection, kind: str, objects: list[dict], snapshot_at: int) -> None:
    """Make the stored set of `kind` exactly `objects` (for small, fully listed types like endpoints)."""
    model = table_for(kind)
    ids = [o["id"] for o in objects]
    conn.execute(model.__table__.delete().where(model.__table__.c.id.not_in(ids)))
    save_objects(conn, objects, snapshot_at)


def has_pending_events(conn: Connection) -> bool:
    t = table_for("event").__table__
    return conn.execute(select(t.c.id).where(t.c.pending_webhooks > 0).limit(1)).first() is not None


def mark_delivered(conn: Connection, still_pending: set[str], snapshot_at: int) -> int:
    """Events stored as pending that Stripe no longer lists as undelivered have been delivered since:
    set their `pending_webhooks` to 0. Returns how many."""
    t = table_for("event").__table__
    pending = conn.execute(select(t.c.id, t.c.raw).where(t.c.pending_webhooks > 0)).all()
    delivered = [(i, raw) for i, raw in pending if i not in still_pending]
    for event_id, raw in delivered:
        obj = orjson.loads(raw)
        obj["pending_webhooks"] = 0
        conn.execute(
            update(t)
            .where(t.c.id == event_id)
            .values(pending_webhooks=0, raw=orjson.dumps(obj).decode(), snapshot_at=snapshot_at)
        )
    return len(delivered)


def count_objects(conn: Connection, kind: str) -> int:
    model = table_for(kind)
    return conn.execute(select(func.count()).select_from(model.__table__)).scalar_one()


# --- sync cursors -----------------------------------------------------------------------------


def synced_until(conn: Connection, resource: str) -> int | None:
    return conn.execute(select(SyncState.synced_until).where(SyncState.resource == resource)).scalar()


def has_synced(conn: Connection) -> bool:
    """True once a sync has completed at least one resource: before that, the snapshot says nothing."""
    return conn.execute(select(SyncState.resource).limit(1)).first() is not None


def open_windows(conn: Connection, resource: str) -> list[SyncWindow]:
    """The resource's windows not finished yet, oldest first."""
    rows = conn.execute(
        select(SyncWindow.__table__).where(SyncWindow.resource == resource, SyncWindow.done.is_(False))
    ).all()
    return sorted(rows, key=lambda w: w.window_start)


def add_window(conn: Connection, resource: str, start: int, end: int) -> None:
    conn.execute(
        insert(SyncWindow).values(
            resource=resource,
            window_start=start,
            window_end=end,
            starting_after=None,
            done=False,
            pages=0,
            objects=0,
            updated_at=now_utc(),
        )
    )


def advance_window(
    conn: Connection,
    resource: str,
    start: int,
    end: int,
    last_id: str | None,
    count: int,
    done: bool,
    *,
    split: list[int] | None = None,
) -> None:
    """Record one saved page of a window: call it in the page's own transaction.

    With `split` (descending points p1 > p2 > … > pn, all > start), the window continues as [p1, end)
    after `last_id` and hands its older part to new windows [p2, p1), …, [start, pn) that other workers
    can fetch: every object not yet seen is then in exactly one window."""
    w = SyncWindow.__table__.c
    values = dict(
        starting_after=last_id, done=done, pages=w.pages + 1, objects=w.objects + count, updated_at=now_utc()
    )
    if split:
        values["window_start"] = split[0]
    conn.execute(
        update(SyncWindow)
        .where(w.resource == resource, w.window_start == start, w.window_end == end)
        .values(**values)
    )
    if split:
        bounds = [*split, start]
        for newer, older in zip(bounds, bounds[1:], strict=False):
            add_window(conn, resource, older, newer)
    if done:
        settle_cursor(conn, resource)


def settle_cursor(conn: Connection, resource: str) -> None:
    """When no window of the resource is open, move its cursor to the end of the newest one."""
    w = SyncWindow.__table__.c
    if conn.execute(select(func.count()).where(w.resource == resource, w.done.is_(False))).scalar_one():
        return
    newest = conn.execute(select(func.max(w.window_end)).where(w.resource == resource)).scalar()
    if newest is None:
        return
    current = synced_until(conn, resource)
    if current is None:
        conn.execute(insert(SyncState).values(resource=resource, synced_until=newest, updated_at=now_utc()))
    elif newest > current:
        conn.execute(
            update(SyncState)
            .where(SyncState.resource == resource)
            .values(synced_until=newest, updated_at=now_utc())
        )
    conn.execute(SyncWindow.__table__.delete().where(w.resource == resource, w.done.is_(True)))


# --- job runs ---------------------------------------------------------------------------------


class RunRecorder:
    """Writes a job_runs row when a job starts and completes it when the job ends, with its error."""

    def __init__(self, engine: Engine, job: str):
        self.engine, self.job = engine, job
        self.counts: dict = {}
        self.id: int | None = None

    def __enter__(self) -> RunRecorder:
        with self.engine.begin() as conn:
            self.id = conn.execute(
                insert(JobRun)
                .values(job=self.job, started_at=now_utc(), outcome="running")
                .returning(JobRun.id)
            ).scalar_one()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        error = None
        if exc is not None:
            error = str(exc) or exc_type.__name__
            if not hasattr(exc, "exit_status"):
                error += "\n" + "".join(traceback.format_exception(exc_type, exc, tb))[-4000:]
        with contextlib.suppress(SQLAlchemyError), self.engine.begin() as conn:
            conn.execute(
                update(JobRun)
                .where(JobRun.id == self.id)
                .values(
                    finished_at=now_utc(),
                    outcome="failed" if exc is not None else "ok",
                    error=error,
                    counts=json.dumps(self.counts, default=str),
                )
            )


def last_runs(conn: Connection, job: str | None = None, limit: int = 50) -> list:
    q = select(JobRun.__table__).order_by(JobRun.id.desc()).limit(limit)
    if job:
        q = q.where(JobRun.job == job)
    return conn.execute(q).all()


def last_run_started(conn: Connection, jobs: tuple[str, ...]) -> datetime | None:
    """When the newest run of any of `jobs` started, whatever its outcome: a scheduler's heartbeat."""
    return conn.execute(select(func.max(JobRun.started_at)).where(JobRun.job.in_(jobs))).scalar()


def last_successful_run(conn: Connection, jobs: tuple[str, ...]) -> datetime | None:
    """When the newest successful run of any of `jobs` finished."""
    return conn.execute(
        select(func.max(JobRun.finished_at)).where(JobRun.job.in_(jobs), JobRun.outcome == "ok")
    ).scalar()


# --- probe history ----------------------------------------------------------------------------


def save_probe_results(conn: Connection, results: Iterable[dict]) -> None:
    """Store probe results: dicts with component, status, detail, latency_ms, checked_at."""
    rows = [{k: r[k] for k in ("component", "status", "detail", "latency_ms", "checked_at")} for r in results]
    if rows:
        conn.execute(insert(ProbeResultRow), rows)


def probe_history(conn: Connection, since: datetime) -> pd.DataFrame:
    """Probe results checked at or after `since`, oldest first: component, status, detail, latency_ms,
    checked_at (UTC)."""
    t = ProbeResultRow.__table__
    rows = conn.execute(
        select(t.c.component, t.c.status, t.c.detail, t.c.latency_ms, t.c.checked_at)
        .where(t.c.checked_at >= since)
        .order_by(t.c.checked_at, t.c.id)
    ).all()
    df = pd.DataFrame(rows, columns=["component", "status", "detail", "latency_ms", "checked_at"])
    df["checked_at"] = pd.to_datetime(df["checked_at"], utc=True)
    return df


def has_probe_history_before(conn: Connection, moment: datetime) -> bool:
    t = ProbeResultRow.__table__
    return conn.execute(select(t.c.id).where(t.c.checked_at <= moment).limit(1)).first() is not None
