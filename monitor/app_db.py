"""The app's database: the only module that touches it. Reads subscriptions and the app's webhook log
through a mapping (APP_SCHEMA: a preset name or a mapping TOML), and runs the mapping's repair SQL.

A mapping's queries return canonical column names; the `default` preset (monitor/presets/default.toml)
reads the schema of DESIGN.md. A query that does not fit the database (a missing table or column) is a
MappingError naming what is missing; an unreachable database is an AppDatabaseError.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from monitor.config import mask_url
from monitor.errors import AppDatabaseError, MappingError

PRESETS = Path(__file__).with_name("presets")
SUBSCRIPTION_COLUMNS = (
    "id",
    "email",
    "customer_id",
    "checkout_session_id",
    "payment_intent_id",
    "stripe_subscription_id",
    "amount",
    "currency",
    "status",
    "created_at",
    "activated_at",
    "current_period_end",
)
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


def _require(section: dict, key: str, where: str, kind: type):
    value = section.get(key)
    if not isinstance(value, kind) or (isinstance(value, str | list) and not value):
        raise MappingError(f"{where}: [{key}] is missing or not a {kind.__name__}")
    return value


def load_mapping(schema: str) -> Mapping:
    """The mapping named by APP_SCHEMA: `default`, `djstripe`, or a path to a mapping TOML."""
    path = PRESETS / f"{schema}.toml" if re.fullmatch(r"[a-z_]+", schema) else Path(schema)
    if not path.is_file():
        raise MappingError(f"APP_SCHEMA={schema!r}: no such preset or mapping file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise MappingError(f"mapping {path}: not valid TOML: {e}") from None
    subs = data.get("subscriptions")
    if not isinstance(subs, dict):
        raise MappingError(f"mapping {path}: no [subscriptions] section")
    where = f"mapping {path} [subscriptions]"
    query = _require(subs, "query", where, str)
    active = _require(subs, "active_statuses", where, list)
    log = data.get("webhook_log") or {}
    repair = data.get("repair") or {}
    for name, sql in repair.items():
        if name not in REPAIR_PARAMETERS:
            raise MappingError(f"mapping {path} [repair]: unknown template {name!r}; known: activate, create")
        unknown = set(re.findall(r"(?<![:\w]):([A-Za-z_]\w*)", sql)) - REPAIR_PARAMETERS[name]
        if unknown:
            raise MappingError(
                f"mapping {path} [repair] {name}: unknown parameter(s) "
                f"{', '.join(':' + u for u in sorted(unknown))}; allowed: "
                f"{', '.join(':' + p for p in sorted(REPAIR_PARAMETERS[name]))}"
            )
    return Mapping(
        name=schema,
        subscriptions_query=query,
        active_statuses=tuple(str(s) for s in active),
        webhook_log_query=log.get("query"),
        ok_statuses=tuple(str(s) for s in log.get("ok_statuses", ["processed"])),
        webhook_log_optional=bool(log.get("optional", False)),
        repair={k: str(v) for k, v in repair.items()},
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
        if self.is_sqlite and parsed.database and parsed.database != ":memory:":
            if not Path(parsed.database).is_file():
                raise AppDatabaseError(f"the app database {self.shown_url} does not exist (no such file)")
        connect_args = {"timeout": 30} if self.is_sqlite else {"connect_timeout": 5}
        self.engine: Engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)

    def _read(self, conn: Connection, query: str, what: str, columns: tuple[str, ...]) -> pd.DataFrame:
        try:
            result = conn.execute(text(query))
            df = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
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
        """The app's subscription rows with the canonical columns, times as UTC."""
        with self._connect() as conn:
            df = self._read(conn, self.mapping.subscriptions_query, "[subscriptions]", SUBSCRIPTION_COLUMNS)
        return _normalise(df)

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


def _is_connection_error(e: DBAPIError) -> bool:
    reason = _reason(e).lower()
    return any(
        s in reason
        for s in ("connection refused", "could not connect", "connection failed", "unable to open database")
    )


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for column in _TIME_COLUMNS:
        if column in df.columns:
            df[column] = pd.to_datetime(df[column], utc=True, errors="coerce", format="mixed")
    for column in (*_ID_COLUMNS, "email", "currency", "status", "event_id", "type", "error"):
        if column in df.columns:
            df[column] = df[column].astype(object).where(df[column].notna(), None)
    if "amount" in df.columns:
        df["amount"] = pd.to_numeric(df["amount"], errors="coerce").astype("Int64")
    return df


def create_default_schema(url: str) -> None:
    """Create the default schema's tables in an empty database (used by the demo and tests)."""
    engine = create_engine(url)
    ddl = (PRESETS / "default_schema.sql").read_text()
    statements = [s.strip() for s in re.sub(r"--[^\n]*", "", ddl).split(";") if s.strip()]
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()
