"""Bulk reads (monitor.store.db.read_bulk): column-wise through ADBC and row by row through the driver give the same
frames once normalised, on SQLite and PostgreSQL, for the store's payments and events and the app's rows.

SQLite files are read through ADBC in a child process only from monitor.store.db.SQLITE_CHILD_BYTES up, so the
SQLite files here are padded past that size with a table of their own."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from monitor import store
from monitor.app_db import AppDatabase, _normalise, load_mapping
from monitor.emulator.demo import build_demo
from monitor.rules.reconcile import SUBSCRIPTION_COLUMNS
from monitor.store import snapshot
from monitor.store.db import SQLITE_CHILD_BYTES, read_bulk

ANCHOR = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

# Rows an app really writes: NULLs first (so a column's type cannot be guessed from its first rows),
# times naive, with offsets, with microseconds and far in the future, a missing amount.
ROWS = [
    (1, None, None, None, None, None, None, None, None, "2026-11-20 10:00:00", None, None),
    (2, "a@example.com", "cus_a", "cs_a", "pi_a", "sub_a", 14900, "USD", "Active", "2026-11-20 10:00:05",
     "2026-11-20 10:00:06.123456", "9999-12-31 00:00:00"),
    (3, "b@example.com", "cus_b", None, "pi_b", None, None, "eur", "pending", "2026-11-21T08:00:00+02:00",
     None, "2027-01-01"),
]  # fmt: skip


@pytest.fixture
def app_url(sqlite_or_postgres_url):
    return sqlite_or_postgres_url


def pad(engine) -> None:
    """Make a SQLite file big enough to be read in a child process."""
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE padding (b BLOB)"))
            conn.execute(text("INSERT INTO padding VALUES (zeroblob(:n))"), {"n": SQLITE_CHILD_BYTES + 4096})


def fill_app(url: str) -> None:
    engine = create_engine(url)
    pad(engine)
    pg = engine.dialect.name == "postgresql"
    when = "TIMESTAMPTZ" if pg else "TEXT"
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE subscriptions (id INTEGER PRIMARY KEY, customer_email TEXT, stripe_customer_id TEXT, "
                "stripe_checkout_session_id TEXT, stripe_payment_intent_id TEXT, stripe_subscription_id TEXT, "
                f"amount BIGINT, currency TEXT, status TEXT, created_at {when}, activated_at {when}, "
                f"current_period_end {when})"
            )
        )
        names = ", ".join(f":c{i}" for i in range(12))
        rows = [{f"c{i}": v for i, v in enumerate(r)} for r in ROWS]
        if pg:  # PostgreSQL's timestamptz cannot hold year 9999 with an offset beyond its range: keep it
            rows[1]["c11"] = "9999-12-31 00:00:00+00"
        conn.execute(text(f"INSERT INTO subscriptions VALUES ({names})"), rows)
    engine.dispose()


def both_ways(engine, sql: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(read column-wise on a fresh connection, read row by row inside a transaction)."""
    with engine.connect() as conn:
        fast = read_bulk(conn, sql)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # a transaction has begun: the read must see what it sees
        slow = read_bulk(conn, sql)
    return fast, slow


def test_the_apps_rows_read_column_wise_equal_the_rows_read_one_by_one(app_url):
    fill_app(app_url)
    app = AppDatabase(app_url, load_mapping("default"))
    try:
        fast, slow = both_ways(app.engine, app.mapping.subscriptions_query)
        assert fast["id"].dtype == "Int64" and slow["id"].dtype != "Int64"  # each way really ran
        fast, slow = (_normalise(df[list(SUBSCRIPTION_COLUMNS)], text="str") for df in (fast, slow))
        pd.testing.assert_frame_equal(fast, slow, check_dtype=False)
        subs = app.read_subscriptions()
    finally:
        app.dispose()
    pd.testing.assert_frame_equal(subs, fast, check_dtype=False)
    third = subs.set_index("id").loc[3]
    assert third["created_at"] == pd.Timestamp("2026-11-21 06:00:00", tz="UTC")  # the offset applied
    assert pd.isna(third["activated_at"]) and pd.isna(third["amount"])
    second = subs.set_index("id").loc[2]
    assert second["activated_at"] == pd.Timestamp("2026-11-20 10:00:06.123456", tz="UTC")
    assert second["current_period_end"].year == 9999


def test_sqlite_text_holding_numbers_reads_as_text_either_way(tmp_path):
    """SQLite lets a column hold integers and text at once (ids written by different code paths)."""
    url = f"sqlite:///{tmp_path / 'mixed.db'}"
    engine = create_engine(url)
    pad(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (ref)"))
        conn.execute(text("INSERT INTO t VALUES (NULL), (42), ('cs_x')"))
    fast, slow = both_ways(engine, "SELECT ref FROM t")
    engine.dispose()
    assert fast["ref"].astype("str").tolist()[1:] == slow["ref"].astype("str").tolist()[1:] == ["42", "cs_x"]


def test_the_stores_payments_and_events_read_column_wise_equal_those_read_one_by_one(store_engine):
    engine = store_engine
    pad(engine)
    with engine.begin() as conn:
        store.save_objects(conn, build_demo(ANCHOR).objects, snapshot_at=int(ANCHOR.timestamp()))
    frames = []
    for read in (snapshot.read_payments, snapshot.read_events):
        with engine.connect() as conn:
            fast = read(conn)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            slow = read(conn)
        frames.append((fast, slow))
    raw = both_ways(engine, "SELECT amount FROM payments")
    assert raw[0]["amount"].dtype == "Int64" and raw[1]["amount"].dtype != "Int64"  # each way really ran
    for fast, slow in frames:
        assert len(fast) > 50
        key = fast.columns[0]
        fast, slow = (df.sort_values(key).reset_index(drop=True) for df in (fast, slow))
        for column in fast.columns:
            assert fast[column].isna().tolist() == slow[column].isna().tolist(), column
            assert fast[column].dropna().tolist() == slow[column].dropna().tolist(), column


def test_a_read_inside_a_transaction_sees_that_transactions_own_writes(tmp_path):
    engine = store.open_store(f"sqlite:///{tmp_path / 'monitor.db'}")
    try:
        with engine.begin() as conn:
            store.save_objects(conn, build_demo(ANCHOR).objects[:40], snapshot_at=int(ANCHOR.timestamp()))
            inside = snapshot.read_payments(conn)
            written = conn.execute(text("SELECT COUNT(*) FROM payments")).scalar_one()
        assert len(inside) == written > 0
    finally:
        engine.dispose()


def test_where_adbc_cannot_go_the_driver_reads_and_errors_stay_the_drivers(tmp_path):
    memory = create_engine("sqlite://")
    with memory.connect() as conn:
        assert read_bulk(conn, "SELECT 1 AS one")["one"].tolist() == [1]
    memory.dispose()
    small = create_engine(f"sqlite:///{tmp_path / 'small.db'}")
    with small.connect() as conn:
        assert read_bulk(conn, "SELECT 7 AS n")["n"].dtype != "Int64"  # a small file: row by row
    small.dispose()
    engine = create_engine(f"sqlite:///{tmp_path / 'big.db'}")
    pad(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE few (n INTEGER)"))
        conn.execute(text("INSERT INTO few VALUES (1), (2)"))
    with engine.connect() as conn:
        assert read_bulk(conn, "SELECT n FROM few")["n"].dtype == "Int64"  # a big file: the reader
    with engine.connect() as conn:
        assert read_bulk(conn, "SELECT n FROM few", rows_of="few")["n"].dtype != "Int64"  # few rows: here
    with engine.connect() as conn, pytest.raises(Exception, match="no such table: nowhere"):
        read_bulk(conn, "SELECT * FROM nowhere")  # the child fails, the driver says why
    engine.dispose()
