"""What the read models share: hostile search text made into a literal LIKE pattern, times, frames, and
the app-database reads whose failure is shown beside the Stripe side instead of hiding it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import ColumnElement, bindparam

from monitor.errors import AppDatabaseError, MappingError
from monitor.rules.timefmt import to_utc

# The LIKE escape character: not a backslash, whose quoting differs between SQLite and PostgreSQL.
LIKE_ESCAPE = "/"
MAX_QUERY_LENGTH = 320  # longer than any e-mail address or Stripe id; longer input is not looked up


def like_pattern(text: str) -> str:
    """'%text%' with `text` taken literally: %, _ and the escape character are escaped."""
    escaped = text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%")
    return "%" + escaped.replace("_", LIKE_ESCAPE + "_") + "%"


def contains(column, pattern_param: str, dialect: str) -> ColumnElement:
    """`column` contains the bound pattern, case-insensitively: SQLite's LIKE already ignores ASCII case
    (and its LOWER() knows no other), PostgreSQL has ILIKE."""
    pattern = bindparam(pattern_param)
    if dialect == "sqlite":
        return column.like(pattern, escape=LIKE_ESCAPE)
    return column.ilike(pattern, escape=LIKE_ESCAPE)


def unindexed(column) -> ColumnElement:
    """`column` in a form no index serves: for a filter that matches most rows (a finding's status), which
    SQLite's planner, having no statistics (ANALYZE is never run), would otherwise prefer to a selective
    OR of indexed columns."""
    return column.concat("")


def epoch(moment: datetime) -> int:
    """Unix seconds, how the store keeps Stripe's `created`."""
    return int(to_utc(moment).timestamp())


def from_epoch(seconds) -> datetime | None:
    if seconds is None or pd.isna(seconds):
        return None
    return datetime.fromtimestamp(int(seconds), UTC)


def frame(rows: Iterable, columns: Iterable[str], *, times: Iterable[str] = ()) -> pd.DataFrame:
    """A DataFrame of `rows` with `columns`; `times` as UTC datetimes (also when there are no rows)."""
    df = pd.DataFrame([tuple(r) for r in rows], columns=list(columns))
    for column in times:
        df[column] = pd.to_datetime(df[column], utc=True)
    return df


def named_frame(
    rows: Iterable[Mapping], columns: Iterable[str], *, times: Iterable[str] = ()
) -> pd.DataFrame:
    """`frame` of rows given by column name: `columns` alone says the order."""
    columns = list(columns)
    return frame((tuple(r[c] for c in columns) for r in rows), columns, times=times)


def nullable_int(df: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for column in columns:
        df[column] = pd.to_numeric(df[column]).astype("Int64")
    return df


def plain(value):
    """A JSON- and comparison-friendly value: pandas' missing values as None, numpy scalars as Python's,
    timestamps as UTC datetimes."""
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.to_pydatetime()
    if value is None or (not isinstance(value, (str, list, dict, tuple)) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def records(df: pd.DataFrame | None) -> list[dict]:
    if df is None:
        return []
    return [{k: plain(v) for k, v in r.items()} for r in df.to_dict("records")]


def loads(text: str | None, default=None):
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def first_line(text: str | None) -> str | None:
    return None if text is None else (text.strip().splitlines() or [""])[0]


class AppReads:
    """Reads of the app's database for one view: a failure (database down, mapping broken) is kept as
    `error`, shown by the page beside the Stripe side, and the read gives None."""

    def __init__(self) -> None:
        self.error: str | None = None

    def __call__(self, read: Callable[[], pd.DataFrame | None]) -> pd.DataFrame | None:
        if self.error is not None:
            return None
        try:
            return read()
        except (AppDatabaseError, MappingError) as e:
            self.error = str(e)
            return None
