"""The app's database: the only module that touches it. Reads subscriptions and the app's webhook log
through a mapping (APP_SCHEMA: a preset name or a mapping TOML), and runs the mapping's repair SQL.

A mapping's queries return canonical column names; the `default` preset (monitor/app_db/presets/default.toml)
reads the schema of DESIGN.md. A query that does not fit the database (a missing table or column) is a
MappingError naming what is missing; an unreachable database is an AppDatabaseError.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from monitor.errors import AppDatabaseError, MappingError
from monitor.rules.reconcile import SUBSCRIPTION_COLUMNS  # the canonical columns a mapping returns
from monitor.secrets import mask_url
from monitor.store.db import make_engine, read_bulk, read_frame

PRESETS = Path(__file__).with_name("presets")
WEBHOOK_LOG_COLUMNS = ("event_id", "type", "received_at", "processed_at", "status", "error")
_TIME_COLUMNS = ("created_at", "activated_at", "current_period_end", "received_at", "processed_at")
_ID_COLUMNS = ("customer_id", "checkout_session_id", "payment_intent_id", "stripe_subscription_id")
# Parameters the [repair] templates may use; values are always bound, never formatted into the SQL.
REPAIR_PARAMETERS = {
    "activate": {"id", "now"},
    "create": {
        "email",
        "customer_id",
        "checkout_session_id",
        "payment_intent_id",
        "stripe_subscription_id",
        "amount",
        "currency",
        "now",
    },
}


@dataclass(frozen=True)
class Mapping:
    name: str
    subscriptions_query: str
    active_statuses: tuple[str, ...]
    webhook_log_query: str | None
    ok_statuses: tuple[str, ...]
    webhook_log_optional: bool
    repair: dict[str, str]


# The sections of a mapping TOML and the keys each may hold.
MAPPING_KEYS = {
    "subscriptions": ("query", "active_statuses"),
    "webhook_log": ("query", "ok_statuses", "optional"),
    "repair": tuple(REPAIR_PARAMETERS),
}
# What SQLAlchemy's text() takes for a bound parameter (`:name`, not `::cast`, not `\:escaped`).
_BIND_PARAMETER = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


def _section(data: dict, name: str, where: str) -> dict | None:
    """The [name] table of a mapping, None when absent; MappingError for an unknown key in it."""
    section = data.get(name)
    if section is None:
        return None
    if not isinstance(section, dict):
        raise MappingError(f"{where}: {name} must be a [{name}] section, not a {_toml_type(section)}")
    known = MAPPING_KEYS[name]
    for key in section:
        if key not in known:
            what = "template" if name == "repair" else "key"
            raise MappingError(f"{where} [{name}]: unknown {what} {key!r}; known: {', '.join(known)}")
    return section


def _toml_type(value) -> str:
    return {str: "string", bool: "boolean", int: "number", float: "number", list: "list", dict: "table"}.get(
        type(value), type(value).__name__
    )


def _query(section: dict, where: str, columns: tuple[str, ...]) -> str:
    """The section's `query`: a non-empty string with no bound parameters."""
    query = section.get("query")
    if query is None:
        raise MappingError(f"{where}: no query (a SELECT returning {', '.join(columns)})")
    if not isinstance(query, str) or not query.strip():
        raise MappingError(
            f"{where}: query must be a SELECT returning {', '.join(columns)}, not {_toml_type(query)} "
            f"{query!r}"
        )
    bound = _BIND_PARAMETER.search(query)
    if bound:
        raise MappingError(
            f"{where}: query contains {bound.group(0)}, which would be read as a bound parameter, and this "
            f"query takes none (write \\{bound.group(0)} for a literal colon)"
        )
    return query


def _statuses(section: dict, key: str, where: str, default: list[str] | None = None) -> tuple[str, ...]:
    """A non-empty list of non-empty strings (`default` when the key is absent and a default exists)."""
    value = section.get(key, default)
    example = '["active", "trialing"]' if key == "active_statuses" else '["processed"]'
    if value is None:
        raise MappingError(f"{where}: no {key} (the statuses the query returns for this, e.g. {example})")
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise MappingError(f"{where}: {key} must be a list of status strings, e.g. {example}; got {value!r}")
    if not value:
        raise MappingError(
            f"{where}: {key} is empty; list at least one status, e.g. {example} (statuses are compared "
            "case-insensitively)"
        )
    return tuple(value)


def _repair_templates(section: dict, where: str) -> dict[str, str]:
    templates = {}
    for name, sql in section.items():
        if not isinstance(sql, str) or not sql.strip():
            raise MappingError(
                f"{where} [repair] {name}: must be an SQL statement, not {_toml_type(sql)} {sql!r}"
            )
        used = {m.group(1) for m in _BIND_PARAMETER.finditer(sql)}
        unknown = used - REPAIR_PARAMETERS[name]
        if unknown:
            raise MappingError(
                f"{where} [repair] {name}: unknown parameter(s) "
                f"{', '.join(':' + u for u in sorted(unknown))}; allowed: "
                f"{', '.join(':' + p for p in sorted(REPAIR_PARAMETERS[name]))}"
            )
        if name == "activate" and "id" not in used:
            raise MappingError(
                f"{where} [repair] activate: does not use :id, so it would not be limited to the row being "
                "repaired (e.g. ... WHERE id = :id)"
            )
        templates[name] = sql
    return templates


def load_mapping(schema: str) -> Mapping:
    """The mapping named by APP_SCHEMA: `default`, `djstripe`, or a path to a mapping TOML.

    Everything in the file is checked here, before any query runs; each mistake is one MappingError line
    naming the section and key (the queries themselves are checked when they first run on the database).
    """
    path = PRESETS / f"{schema}.toml" if re.fullmatch(r"[a-z_]+", schema) else Path(schema)
    if not path.is_file():
        raise MappingError(f"APP_SCHEMA={schema!r}: no such preset or mapping file")
    where = f"mapping {path}"
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise MappingError(f"{where}: not valid TOML: {e}") from None
    for name in data:
        if name not in MAPPING_KEYS:
            raise MappingError(
                f"{where}: unknown section [{name}]; a mapping has [subscriptions], and optionally "
                "[webhook_log] and [repair]"
            )
    subs = _section(data, "subscriptions", where)
    if subs is None:
        raise MappingError(f"{where}: no [subscriptions] section")
    query = _query(subs, f"{where} [subscriptions]", SUBSCRIPTION_COLUMNS)
    active = _statuses(subs, "active_statuses", f"{where} [subscriptions]")
    log = _section(data, "webhook_log", where)
    log_query, ok_statuses, optional = None, ("processed",), False
    if log is not None:
        log_query = _query(log, f"{where} [webhook_log]", WEBHOOK_LOG_COLUMNS)
        ok_statuses = _statuses(log, "ok_statuses", f"{where} [webhook_log]", default=["processed"])
        optional = log.get("optional", False)
        if not isinstance(optional, bool):
            raise MappingError(f"{where} [webhook_log]: optional must be true or false, not {optional!r}")
    repair = _repair_templates(_section(data, "repair", where) or {}, where)
    return Mapping(
        name=schema,
        subscriptions_query=query,
        active_statuses=active,
        webhook_log_query=log_query,
        ok_statuses=ok_statuses,
        webhook_log_optional=optional,
        repair=repair,
    )


def _reason(e: SQLAlchemyError) -> str:
    orig = getattr(e, "orig", None) or e
    return " ".join(str(orig).split())[:300]


def _missing_object(e: SQLAlchemyError) -> str | None:
    """'table subscriptions' or 'column x' when the error says a table or column does not exist."""
    reason = _reason(e)
    for pattern in (
        r"no such (table|column): ([\w.\"]+)",
        r"(relation|column) \"?([\w.]+)\"? does not exist",
        r"has no (column) named (\w+)",
    ):
        m = re.search(pattern, reason)
        if m:
            kind = "table" if m.group(1) == "relation" else m.group(1)
            return f"{kind} {m.group(2)}"
    return None


class AppDatabase:
    """The app's database at `url`, read and repaired through `mapping`."""

    def __init__(self, url: str, mapping: Mapping):
        self.url, self.mapping = url, mapping
        self.shown_url = mask_url(url)
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        in_file = self.is_sqlite and parsed.database and parsed.database != ":memory:"
        if in_file and not Path(parsed.database).is_file():
            raise AppDatabaseError(f"the app database {self.shown_url} does not exist (no such file)")
        connect_args = {"timeout": 30} if self.is_sqlite else {"connect_timeout": 5}
        self.engine: Engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        self._write_engine: Engine | None = None

    def dispose(self) -> None:
        self.engine.dispose()
        if self._write_engine is not None:
            self._write_engine.dispose()

    def _read(self, conn: Connection, query: str, what: str, columns: tuple[str, ...]) -> pd.DataFrame:
        try:
            df = read_bulk(conn, query)
        except DBAPIError as e:
            if e.connection_invalidated or _is_connection_error(e):
                raise AppDatabaseError(
                    f"cannot connect to the app database {self.shown_url}: {_reason(e)}"
                ) from None
            missing = _missing_object(e)
            detail = f"the app database has no {missing}" if missing else _reason(e)
            raise MappingError(
                f"APP_SCHEMA={self.mapping.name}: the {what} query fails on {self.shown_url}: {detail}"
            ) from None
        absent = [c for c in columns if c not in df.columns]
        if absent:
            raise MappingError(
                f"APP_SCHEMA={self.mapping.name}: the {what} query returns no column "
                f"{', '.join(absent)} (it must return {', '.join(columns)})"
            )
        return df[list(columns)]

    def _connect(self):
        try:
            return self.engine.connect()
        except SQLAlchemyError as e:
            raise AppDatabaseError(
                f"cannot connect to the app database {self.shown_url}: {_reason(e)}"
            ) from None

    def read_subscriptions(self) -> pd.DataFrame:
        """The app's subscription rows with the canonical columns, read in bulk: times as UTC, text as
        pandas strings (missing is NaN), amount as Int64."""
        with self._connect() as conn:
            df = self._read(conn, self.mapping.subscriptions_query, "[subscriptions]", SUBSCRIPTION_COLUMNS)
        return _normalise(df, text="str")

    def read_webhook_log(self) -> pd.DataFrame | None:
        """The app's log of webhooks it received, or None when the mapping has none (or it is optional and
        its table does not exist)."""
        if not self.mapping.webhook_log_query:
            return None
        with self._connect() as conn:
            try:
                df = self._read(conn, self.mapping.webhook_log_query, "[webhook_log]", WEBHOOK_LOG_COLUMNS)
            except MappingError:
                if self.mapping.webhook_log_optional:
                    return None
                raise
        return _normalise(df)

    # --- repair: one serialized transaction per payment (DESIGN.md "Activation repair", step 3) ---

    @contextlib.contextmanager
    def serialized(self, payment_id: str) -> Iterator[Connection]:
        """One app-database transaction that no other repair of `payment_id` runs beside: PostgreSQL takes
        an advisory lock on the payment for the transaction; SQLite begins it IMMEDIATE (the write lock).
        Reads inside it see every row committed before, so check-then-write inside it is safe."""
        with _WRITE_ENGINE_LOCK:  # racing first repairs must share one engine, or dispose() misses one
            if self._write_engine is None:
                self._write_engine = make_engine(self.url)
        try:
            with self._write_engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(payment_id)})
                yield conn
        except DBAPIError as e:
            if _is_connection_error(e):
                raise AppDatabaseError(
                    f"cannot connect to the app database {self.shown_url}: {_reason(e)}"
                ) from None
            missing = _missing_object(e)
            raise MappingError(
                f"APP_SCHEMA={self.mapping.name}: the repair failed on {self.shown_url}: "
                f"{f'the app database has no {missing}' if missing else _reason(e)}"
            ) from None

    def rows_for_payment(
        self,
        conn: Connection,
        *,
        checkout_session_id=None,
        payment_intent_id=None,
        stripe_subscription_id=None,
    ) -> pd.DataFrame:
        """The app's rows strongly linked to a payment (by session, intent or Stripe subscription id),
        through the mapping's [subscriptions] query, with bound parameters."""
        inner = self.mapping.subscriptions_query.strip().rstrip(";")
        query = (
            f"SELECT * FROM ({inner}) mapped WHERE mapped.checkout_session_id = :cs "
            "OR mapped.payment_intent_id = :pi OR mapped.stripe_subscription_id = :sub ORDER BY mapped.id"
        )
        params = {"cs": checkout_session_id, "pi": payment_intent_id, "sub": stripe_subscription_id}
        return _normalise(read_frame(conn, text(query), params))

    def find_rows(self, **criteria) -> pd.DataFrame:
        """The app's rows where any canonical column equals its value (e-mail case-insensitively), e.g.
        find_rows(email="a@example.com", customer_id="cus_1"); values are bound, never formatted in."""
        allowed = set(SUBSCRIPTION_COLUMNS) - {"amount", "created_at", "activated_at", "current_period_end"}
        unknown = set(criteria) - allowed
        if unknown:
            raise ValueError(f"cannot search the app's rows by {', '.join(sorted(unknown))}")
        wanted = {k: v for k, v in criteria.items() if v not in (None, "")}
        if not wanted:
            return _normalise(pd.DataFrame(columns=list(SUBSCRIPTION_COLUMNS)))
        inner = self.mapping.subscriptions_query.strip().rstrip(";")
        where = " OR ".join(
            "LOWER(mapped.email) = LOWER(:email)" if k == "email" else f"CAST(mapped.{k} AS TEXT) = :{k}"
            for k in wanted
        )
        params = {k: str(v) for k, v in wanted.items()}
        with self._connect() as conn:
            try:
                found = read_frame(
                    conn, text(f"SELECT * FROM ({inner}) mapped WHERE {where} ORDER BY mapped.id"), params
                )
            except DBAPIError as e:
                raise AppDatabaseError(
                    f"cannot read the app database {self.shown_url}: {_reason(e)}"
                ) from None
            return _normalise(found)

    def _template(self, name: str) -> str:
        sql = self.mapping.repair.get(name)
        if not sql:
            raise MappingError(
                f"APP_SCHEMA={self.mapping.name}: the mapping has no [repair] {name} template, so the db "
                "strategy cannot write the app's subscription rows; repair with --strategy webhook, which "
                "re-sends the Stripe event to the app's webhook endpoint (EXPECTED_WEBHOOK_URL)"
            )
        return sql

    def time_param(self, conn: Connection, now: datetime):
        """`now` as the app stores times: naive UTC text on SQLite, a naive UTC timestamp elsewhere."""
        naive = now.astimezone(UTC).replace(tzinfo=None, microsecond=0)
        return naive.strftime("%Y-%m-%d %H:%M:%S") if conn.dialect.name == "sqlite" else naive

    def activate_row(self, conn: Connection, row_id, now: datetime) -> None:
        conn.execute(text(self._template("activate")), {"id": row_id, "now": self.time_param(conn, now)})

    def create_row(self, conn: Connection, values: dict, now: datetime) -> None:
        params = {k: values.get(k) for k in REPAIR_PARAMETERS["create"] if k != "now"}
        conn.execute(text(self._template("create")), {**params, "now": self.time_param(conn, now)})


_WRITE_ENGINE_LOCK = threading.Lock()


def lock_key(payment_id: str) -> int:
    """A stable signed 64-bit advisory-lock key for a payment."""
    return int.from_bytes(hashlib.sha256(payment_id.encode()).digest()[:8], "big", signed=True)


def _is_connection_error(e: DBAPIError) -> bool:
    reason = _reason(e).lower()
    return any(
        s in reason
        for s in ("connection refused", "could not connect", "connection failed", "unable to open database")
    )


def _normalise(df: pd.DataFrame, text: str = "object") -> pd.DataFrame:
    """Canonical types: times as UTC, amount as Int64, text as `text` ("object": str or None; "str":
    pandas strings, missing as NaN, for the bulk reads reconciliation vectorises)."""
    df = df.copy()
    for column in _TIME_COLUMNS:
        if column in df.columns:
            df[column] = _utc_times(df[column])
    for column in (*_ID_COLUMNS, "email", "currency", "status", "event_id", "type", "error"):
        if column in df.columns:
            if text == "str":
                df[column] = df[column].astype("str")
            else:
                df[column] = df[column].astype(object).where(df[column].notna(), None)
    if "amount" in df.columns:
        df["amount"] = pd.to_numeric(df["amount"], errors="coerce").astype("Int64")
    return df


def _utc_times(s: pd.Series) -> pd.Series:
    """Times as UTC: naive values are taken as UTC, offsets converted, anything unreadable is NaT. Text
    read in bulk goes through Arrow's ISO 8601 parser first (naive, then with offsets; a tenth of pandas'
    time on a million rows); whatever it cannot read, through pandas' per-value parser."""
    if s.dtype == "str":
        import pyarrow as pa
        import pyarrow.compute as pc

        values = pa.array(s, type=pa.string(), from_pandas=True)
        for target in (pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
            try:
                parsed = pd.Series(pc.cast(values, target).to_pandas(), index=s.index, name=s.name)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
            return parsed if target.tz else parsed.dt.tz_localize("UTC")
    return pd.to_datetime(s, utc=True, errors="coerce", format="mixed")


def default_schema_statements(dialect: str) -> list[str]:
    """The default schema's CREATE TABLE statements for `dialect` (PostgreSQL gets a SERIAL id, which
    SQLite's INTEGER PRIMARY KEY already is)."""
    ddl = re.sub(r"--[^\n]*", "", (PRESETS / "default_schema.sql").read_text())
    if dialect == "postgresql":
        ddl = ddl.replace("id INTEGER PRIMARY KEY", "id SERIAL PRIMARY KEY")
    return [s.strip() for s in ddl.split(";") if s.strip()]


def _insert_rows(conn: Connection, table: str, rows: list[dict]) -> None:
    if rows:
        columns = list(rows[0])
        values = ", ".join(":" + c for c in columns)
        conn.execute(text(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"), rows)
    if rows and conn.dialect.name == "postgresql" and table == "subscriptions":
        # Rows came with their ids: move the SERIAL past them so the app's next insert gets a new one.
        conn.execute(
            text("SELECT setval(pg_get_serial_sequence('subscriptions', 'id'), MAX(id)) FROM subscriptions")
        )


def create_default_schema(url: str, rows: list[dict] = (), webhook_log: list[dict] = ()) -> None:
    """Create the default schema's tables, with `rows` and `webhook_log`, in an empty database (the demo
    and the tests)."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for statement in default_schema_statements(conn.dialect.name):
                conn.execute(text(statement))
            _insert_rows(conn, "subscriptions", list(rows))
            _insert_rows(conn, "webhook_events", list(webhook_log))
    finally:
        engine.dispose()


_DEMO_LOCK_KEY = 149_000_149  # serializes concurrent creators of one PostgreSQL demo database


def ensure_demo_database(
    url: str, anchor: datetime, build: Callable[[datetime], tuple[list, list]]
) -> datetime:
    """Create the demo app database at `url` unless it exists, and return the scenario's anchor.

    A new database gets the default schema, the rows and webhook log `build(anchor)` returns, and a
    `demo_scenario` table that keeps the anchor; creation is one transaction that concurrent creators wait
    for. An existing one is left alone and its stored anchor returned; one with a `subscriptions` table
    but no `demo_scenario` is not a demo database: AppDatabaseError.
    """
    engine = make_engine(url)
    try:
        # Build before taking the lock (it takes a few tenths of a second), then look again under it.
        built = None if _has_table(engine, "subscriptions") else build(anchor)
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DEMO_LOCK_KEY})
            if inspect(conn).has_table("subscriptions"):
                return _stored_anchor(conn, url)
            rows, log = built or build(anchor)
            for statement in default_schema_statements(conn.dialect.name):
                conn.execute(text(statement))
            conn.execute(text("CREATE TABLE demo_scenario (anchor TIMESTAMP NOT NULL)"))
            conn.execute(
                text("INSERT INTO demo_scenario (anchor) VALUES (:a)"),
                {"a": anchor.strftime("%Y-%m-%d %H:%M:%S")},
            )
            _insert_rows(conn, "subscriptions", rows)
            _insert_rows(conn, "webhook_events", log)
            return anchor
    except SQLAlchemyError as e:
        raise AppDatabaseError(f"cannot create the demo app database {mask_url(url)}: {_reason(e)}") from None
    finally:
        engine.dispose()


def _has_table(engine: Engine, name: str) -> bool:
    with engine.connect() as conn:
        return inspect(conn).has_table(name)


def _stored_anchor(conn: Connection, url: str) -> datetime:
    if not inspect(conn).has_table("demo_scenario"):
        raise AppDatabaseError(
            f"the app database {mask_url(url)} has a subscriptions table but no demo_scenario table: it is "
            "not a demo database (set STRIPE_API_KEY to use it, or point APP_DATABASE_URL elsewhere)"
        )
    value = conn.execute(text("SELECT anchor FROM demo_scenario")).scalar()
    if value is None:
        raise AppDatabaseError(f"the demo_scenario table of the app database {mask_url(url)} holds no anchor")
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC, microsecond=0) if value.tzinfo is None else value.astimezone(UTC)
