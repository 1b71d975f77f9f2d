"""Engines for the monitor's store and the app's database, with the same SQLite discipline for both."""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url

log = logging.getLogger(__name__)


def make_engine(url: str, *, immediate: bool = True) -> Engine:
    """An engine for `url`. On SQLite: WAL, a busy timeout, and (with `immediate`) every transaction
    begun with BEGIN IMMEDIATE, so writers queue on the lock instead of failing on an upgrade."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    # pysqlite's own transaction handling is off so the BEGIN below is the one that counts
    # (SQLAlchemy docs, "Serializable isolation / Savepoints / Transactional DDL" for pysqlite).
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        deferred = not immediate or conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

    return engine


BUSY_TIMEOUT_S = 30


def _use_wal(cursor: sqlite3.Cursor) -> None:
    """PRAGMA journal_mode=WAL, waiting for other writers as the busy timeout would. SQLite answers
    "database is locked" at once, without its busy handler, while another connection writes a file that
    is not in WAL mode yet: a new store that another process is creating at the same moment."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


READ_ONLY = "monitor_read_only"


def for_reading(engine: Engine) -> Engine:
    """`engine` (the same pool) for reads that must never queue behind a writer: on SQLite its
    transactions begin with a plain BEGIN, which WAL lets run beside the file's one writer, instead of
    BEGIN IMMEDIATE, which waits for the write lock. Elsewhere it changes nothing."""
    return engine.execution_options(**{READ_ONLY: True})


def read_frame(conn: Connection, statement, params: dict | None = None) -> pd.DataFrame:
    """A query's rows as a DataFrame, in bulk. Built from plain tuples: pandas probes each SQLAlchemy Row
    with hasattr, which takes Row's slow missing-attribute path (about 3x the time on 100,000 rows)."""
    result = conn.execute(statement, params or {})
    columns = list(result.keys())
    return pd.DataFrame.from_records([tuple(r) for r in result.fetchall()], columns=columns)


def read_bulk(conn: Connection, sql: str, *, rows_of: str | None = None) -> pd.DataFrame:
    """Every row of one query, for the big reads (all payments, all events, all of the app's rows).

    On a connection that has not begun a transaction (so there is nothing uncommitted it could miss), the
    query is read column-wise through ADBC straight into Arrow, with no Python object per value: on
    PostgreSQL in this process; on a SQLite file of SQLITE_CHILD_BYTES or more in a reader process kept
    for the next read (monitor/store/sqlite_reader.py says why). Inside a transaction, on small SQLite files,
    on other databases, or should ADBC fail for any reason, it is read row by row through `conn` (which
    also raises the driver's own error for a query that cannot run). `rows_of`, the table whose rows are
    read, keeps a read of fewer than BULK_MIN_ROWS in this process (counted up to that bound only): on a
    file made big by other tables a reader process would cost more than it saves.

    Text comes back as pandas strings or objects, integers as Int64 or objects, times as the database
    returns them: callers normalise the types either way."""
    if not conn.in_transaction():
        small = False
        if rows_of is not None:
            bounded = f"SELECT COUNT(*) FROM (SELECT 1 FROM {rows_of} LIMIT {BULK_MIN_ROWS}) rows_of"
            small = conn.execute(text(bounded)).scalar_one() < BULK_MIN_ROWS
            conn.rollback()  # the count's own transaction, begun here: nothing in it to keep
        table = None if small else _read_arrow(conn.engine.url, sql)
        if table is not None:
            return table.to_pandas(types_mapper=_arrow_types().get)
    return read_frame(conn, text(sql))


BULK_MIN_ROWS = 50_000  # fewer rows read row by row in this process take under half a second

# Below this size a SQLite file is read row by row in this process: a reader process costs more than it saves.
SQLITE_CHILD_BYTES = 16 * 1024 * 1024
_SQLITE_READER = Path(__file__).with_name("sqlite_reader.py")
_MAX_IDLE_READERS = 2  # the store and the app database, read at the same moment


class _SQLiteReaders:
    """Reader processes (monitor/store/sqlite_reader.py), kept between reads: starting one costs about half a
    second, mostly importing pyarrow. One read at a time per process; a process that fails is dropped."""

    def __init__(self) -> None:
        self._idle: list[subprocess.Popen] = []
        self._warmed: set[str] = set()
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-I", str(_SQLITE_READER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def warm(self, uri: str) -> None:
        """Have a reader starting for `uri` (one per database, two at the most), so that reads of the store
        and of the app database at the same moment both find one ready."""
        with self._lock:
            self._warmed.add(uri)
            while len(self._idle) < min(len(self._warmed), _MAX_IDLE_READERS):
                self._idle.append(self._start())

    def read(self, uri: str, sql: str):
        import pyarrow as pa

        with self._lock:
            child = self._idle.pop() if self._idle else self._start()
        try:
            child.stdin.write(json.dumps({"uri": uri, "sql": sql}).encode() + b"\n")
            child.stdin.flush()
            status = child.stdout.readline().decode(errors="replace").strip()
            if status != "ok":
                raise RuntimeError(status.removeprefix("error ") or f"the reader exited ({child.poll()})")
            table = pa.ipc.open_stream(child.stdout).read_all()
        except BaseException:
            self._stop(child)
            raise
        with self._lock:
            keep = len(self._idle) < _MAX_IDLE_READERS
            if keep:
                self._idle.append(child)
        if not keep:
            self._stop(child)
        return table

    def _stop(self, child: subprocess.Popen) -> None:
        for pipe in (child.stdin, child.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=2)
        if child.poll() is None:
            child.kill()
            child.wait()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for child in idle:
            self._stop(child)


_READERS = _SQLiteReaders()
atexit.register(_READERS.close)


def _sqlite_uri(url: URL) -> str | None:
    """A read-only URI for a SQLite file big enough to read in a reader process, else None."""
    database = url.database
    if (
        url.get_backend_name() != "sqlite"
        or not database
        or database == ":memory:"
        or database.startswith("file:")
    ):
        return None
    path = Path(database).resolve()
    if not path.is_file() or path.stat().st_size < SQLITE_CHILD_BYTES:
        return None
    return f"file:{quote(str(path))}?mode=ro"


def warm_bulk_reader(url: URL | str) -> None:
    """Start a SQLite reader process now when bulk reads of `url` will use one (a big SQLite file), so the
    first read does not wait for it. Anything else: nothing."""
    with contextlib.suppress(Exception):
        uri = _sqlite_uri(make_url(url))
        if uri is not None:
            _READERS.warm(uri)


def _read_arrow(url: URL, sql: str):
    """The query's result as an Arrow table, or None when ADBC cannot or should not read it here."""
    try:
        uri = _sqlite_uri(url)
        if uri is not None:
            return _READERS.read(uri, sql)
        if url.get_backend_name() == "postgresql":
            import adbc_driver_postgresql.dbapi as adbc

            uri = url.set(drivername="postgresql").render_as_string(hide_password=False)
            with adbc.connect(uri) as conn, conn.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetch_arrow_table()
    except Exception as e:  # noqa: BLE001 - any failure: the engine's own driver reads it, or says why not
        log.debug("bulk read through ADBC failed (%s: %s); reading row by row", type(e).__name__, e)
    return None


@functools.cache
def _arrow_types() -> dict:
    import pyarrow as pa

    return {
        pa.string(): pd.StringDtype(na_value=np.nan),
        pa.large_string(): pd.StringDtype(na_value=np.nan),
        pa.int64(): pd.Int64Dtype(),
        pa.int32(): pd.Int64Dtype(),
        pa.int16(): pd.Int64Dtype(),
    }
