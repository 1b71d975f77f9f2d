"""The monitor's own store: engine, schema migrations, Stripe snapshot upserts, sync cursors, job runs.

SQLite and PostgreSQL. The schema is Alembic's (monitor/migrations): `open_store` brings it to head,
once, under a lock, so many processes may start at the same moment.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import traceback
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import orjson
import pandas as pd
from sqlalchemy import Connection, Engine, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from monitor.clock import now_utc
from monitor.errors import StoreError
from monitor.secrets import mask_url
from monitor.store import payment_table
from monitor.store.db import make_engine
from monitor.store.models import (
    JobRun,
    ProbeResultRow,
    StoreMeta,
    SyncResource,
    SyncState,
    SyncWindow,
)
from monitor.store.rows import (
    EVENT_SEQ_TOP,
    INCLUDABLE,
    invoice_payments,
    listing_ranks,
    object_type,
    row_for,
    table_for,
)

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
    """Insert rows, or update the stored copy where the new one is at least as fresh: a later
    `snapshot_at`, or the same one with a `snapshot_seq` at least as high.

    Only a copy that differs is written (a re-sync of unchanged objects writes nothing), with one
    exception: an event's copy identical to the stored one but later in the same second raises its stamp.
    A list copy of that second (seq 0) was read at an unknown moment of it; the event shows it is at least
    that new, so an older event of the second must not replace it later."""
    if not rows:
        return
    table = model.__table__
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    columns = {c.name: stmt.excluded[c.name] for c in table.columns if c.name != "id"}
    new, old = stmt.excluded, table.c
    same_second = new.snapshot_at == old.snapshot_at
    fresher = (new.snapshot_at > old.snapshot_at) | (same_second & (new.snapshot_seq >= old.snapshot_seq))
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.id],
        set_=columns,
        where=(fresher & (new.raw != old.raw)) | (same_second & (new.snapshot_seq > old.snapshot_seq)),
    )
    conn.execute(stmt, rows)


_Saved = dict[str, dict[str, tuple[dict, dict]]]  # kind -> id -> (row, object)


def save_objects(
    conn: Connection,
    objects: Iterable[dict],
    snapshot_at: int,
    *,
    ranks: Sequence[int] | None = None,
    inner: bool = True,
) -> int:
    """Upsert Stripe objects of every kept type, fetched at `snapshot_at` (a list page, in the order
    Stripe listed it). Returns how many top-level objects were saved.

    - An event's `data.object` is upserted too, as fresh as the event (see stripe_rows.EVENT_SEQ_TOP):
      later changes to old payments (refunds, disputes, late payment) arrive through events, and of the
      events of one second the one Stripe lists first (the newest) wins, whatever order pages are saved
      in. `ranks` are the events' ranks within their second (stripe_rows.listing_ranks), when the page
      continues a listing; by default they are counted on `objects` alone. `inner=False` saves only the
      events themselves (a listing of some events only, whose ranks say nothing).
    - An invoice's `payments` are kept as invoice_payment rows of their own, and a copy that lacks an
      includable field (an event's) keeps the stored copy's value of it.
    """
    objects = list(objects)
    if ranks is None:
        ranks, _ = listing_ranks([o for o in objects if object_type(o) == "event"])
    event_ranks = iter(ranks)
    saved: _Saved = {}
    count = 0
    for obj in objects:
        kind = object_type(obj)
        if kind is None:
            continue
        count += 1
        _keep(saved, kind, obj, snapshot_at, 0)
        if kind != "event":
            continue
        rank = next(event_ranks, 0)
        body = (obj.get("data") or {}).get("object") or {}
        body_kind = object_type(body)
        if inner and body_kind is not None and body_kind not in ("event", "webhook_endpoint"):
            _keep(saved, body_kind, body, obj.get("created") or 0, EVENT_SEQ_TOP - rank)
    _keep_includable(conn, saved)
    for kind, found in saved.items():
        _upsert(conn, table_for(kind), [row for row, _ in found.values()])
    payment_table.refresh(conn, {kind: [row for row, _ in found.values()] for kind, found in saved.items()})
    return count


def _keep(saved: _Saved, kind: str, obj: dict, snapshot_at: int, seq: int) -> None:
    """Keep the freshest copy of `obj` among those of this save (a later one wins a tie: list order)."""
    rows = saved.setdefault(kind, {})
    old = rows.get(obj["id"])
    if old is None or (snapshot_at, seq) >= (old[0]["snapshot_at"], old[0]["snapshot_seq"]):
        rows[obj["id"]] = (row_for(obj, snapshot_at, seq=seq), obj)
    if kind == "invoice":
        for payment in invoice_payments(obj):
            _keep(saved, "invoice_payment", payment, snapshot_at, seq)


def _keep_includable(conn: Connection, saved: _Saved) -> None:
    """Copies that lack an includable field (INCLUDABLE) take the stored copy's value of it."""
    for kind, fields in INCLUDABLE.items():
        lacking = {
            i: pair for i, pair in saved.get(kind, {}).items() if any(f not in pair[1] for f in fields)
        }
        if not lacking:
            continue
        t = table_for(kind).__table__
        for object_id, raw in conn.execute(select(t.c.id, t.c.raw).where(t.c.id.in_(list(lacking)))):
            stored = orjson.loads(raw)
            row, obj = lacking[object_id]
            kept = {f: stored[f] for f in fields if f not in obj and f in stored}
            if kept:
                merged = {**obj, **kept}
                saved[kind][object_id] = (
                    row_for(merged, row["snapshot_at"], seq=row["snapshot_seq"]),
                    merged,
                )


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
    tie: tuple[int, int] | None = None,
) -> None:
    """Record one saved page of a window: call it in the page's own transaction.

    With `split` (descending points p1 > p2 > … > pn, all > start), the window continues as [p1, end)
    after `last_id` and hands its older part to new windows [p2, p1), …, [start, pn) that other workers
    can fetch: every object not yet seen is then in exactly one window (splits fall between whole
    seconds, so the events of one second stay in one window). `tie` is the (created, rank) of the page's
    last event (stripe_rows.listing_ranks), for the window's next page."""
    w = SyncWindow.__table__.c
    values = dict(
        starting_after=last_id,
        done=done,
        pages=w.pages + 1,
        objects=w.objects + count,
        updated_at=now_utc(),
        tie_created=tie[0] if tie else None,
        tie_rank=tie[1] if tie else None,
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


# --- how each resource last synced, and the account the snapshot is of ---


def record_sync_outcomes(conn: Connection, ok: Iterable[str], failed: dict, at: datetime) -> None:
    """Note the resources that came in whole (`ok`) and those that failed (`failed`: name -> the
    monitor.errors.StripeError that stopped it) at `at`. A success clears the resource's last error."""
    for name in ok:
        _set_outcome(
            conn,
            name,
            {"ok_at": at, "failed_at": None, "error": None, "http_status": None, "permission": None},
        )
    for name, error in failed.items():
        values = {
            "failed_at": at,
            "error": str(error),
            "http_status": getattr(error, "http_status", None),
            "permission": getattr(error, "permission", None),
        }
        _set_outcome(conn, name, values)


def _set_outcome(conn: Connection, name: str, values: dict) -> None:
    t = SyncResource.__table__
    if conn.execute(update(t).where(t.c.resource == name).values(**values)).rowcount == 0:
        conn.execute(insert(t).values(resource=name, **{"ok_at": None, **values}))


def sync_outcomes(conn: Connection) -> dict:
    """The sync_resources rows by resource name."""
    return {r.resource: r for r in conn.execute(select(SyncResource.__table__)).all()}


def stored_account(conn: Connection) -> tuple[str | None, bool | None]:
    """(Stripe account id, livemode) the snapshot was filled from; (None, None) for a store not yet filled
    (or filled before the store remembered it)."""
    meta = dict(conn.execute(select(StoreMeta.key, StoreMeta.value)).all())
    mode = meta.get("livemode")
    return meta.get("stripe_account"), None if mode is None else mode == "live"


def remember_account(conn: Connection, account_id: str | None, livemode: bool) -> None:
    t = StoreMeta.__table__
    values = {"livemode": "live" if livemode else "test"}
    if account_id:
        values["stripe_account"] = account_id
    for key, value in values.items():
        if conn.execute(update(t).where(t.c.key == key).values(value=value)).rowcount == 0:
            conn.execute(insert(t).values(key=key, value=value))


def forget_snapshot(conn: Connection) -> None:
    """Empty the Stripe snapshot (every object, the payments, the cursors, what the store knows of its
    account), so the store can be filled from another account. Findings, job runs and the repair ledger
    stay: the next reconcile resolves the findings the new snapshot no longer shows."""
    from monitor.store.models import STRIPE_TABLES

    for model in STRIPE_TABLES.values():
        conn.execute(model.__table__.delete())
    for name in ("payments", "sync_windows", "sync_state", "sync_resources", "store_meta"):
        conn.execute(text(f"DELETE FROM {name}"))


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
