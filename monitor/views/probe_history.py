"""Reads of the probe history that stay fast however long it grows (90 days of 30-second probes is more
than a million rows): the latest result per component, the outages around a time range with their true
start and end, and a downsampled history for charts."""

from __future__ import annotations

import math
from datetime import datetime

import pandas as pd
from sqlalchemy import Connection, and_, case, cast, func, literal_column, or_, select, text
from sqlalchemy.types import BigInteger, Float, String

from monitor.rules.outages import DEGRADED, DOWN, UP, Outage, outage_windows
from monitor.rules.timefmt import to_utc
from monitor.store.models import ProbeResultRow, UTCDateTime
from monitor.views.common import frame

# Components in the order the status strip shows them, after every redis:* one.
COMPONENT_ORDER = ("monitor_db", "app_db", "stripe_api", "webhook_endpoint", "scheduler")
HISTORY_COLUMNS = ("component", "status", "checked_at", "latency_ms")
MAX_HISTORY_POINTS = 4000
_BAD = (DOWN, DEGRADED)
_KNOWN = (UP, DOWN, DEGRADED)
_WORST = {3: DOWN, 2: DEGRADED, 1: "unknown", 0: UP}

_t = ProbeResultRow.__table__

# A loose index scan (one index seek per component, not a scan of the history), then the newest result
# of each component through the (component, checked_at) index.
_LATEST = text("""
WITH RECURSIVE names(component) AS (
  SELECT MIN(component) FROM probe_results
  UNION ALL
  SELECT (SELECT MIN(p.component) FROM probe_results p WHERE p.component > names.component)
  FROM names WHERE names.component IS NOT NULL
)
SELECT r.component, r.status, r.detail, r.latency_ms, r.checked_at
FROM names JOIN probe_results r ON r.id = (
  SELECT q.id FROM probe_results q WHERE q.component = names.component
  ORDER BY q.checked_at DESC, q.id DESC LIMIT 1
)
""").columns(component=String, status=String, detail=String, latency_ms=Float, checked_at=UTCDateTime)


def component_order(name: str) -> tuple:
    if name.startswith("redis:"):
        return (0, name)
    if name in COMPONENT_ORDER:
        return (1 + COMPONENT_ORDER.index(name), "")
    return (1 + len(COMPONENT_ORDER), name)


def latest_results(conn: Connection) -> list[dict]:
    """The newest probe result of every component, in the status strip's order."""
    rows = [
        {
            "name": r.component,
            "status": r.status,
            "detail": r.detail,
            "latency_ms": r.latency_ms,
            "checked_at": r.checked_at,
        }
        for r in conn.execute(_LATEST)
    ]
    return sorted(rows, key=lambda r: component_order(r["name"]))


def _known_rows(start: datetime | None, end: datetime | None, component: str | None = None):
    where = [_t.c.status.in_(_KNOWN)]
    if start is not None:
        where.append(_t.c.checked_at >= start)
    if end is not None:
        where.append(_t.c.checked_at <= end)
    if component is not None:
        where.append(_t.c.component == component)
    return where


def _transitions(conn: Connection, start, end, component: str | None = None) -> pd.DataFrame:
    """The results in [start, end] where a component's status changes (and failing results whose error
    text changes): all that outage_windows needs, a few rows instead of every probe."""
    order = (_t.c.checked_at, _t.c.id)
    inner = (
        select(
            _t.c.id,
            _t.c.component,
            _t.c.status,
            _t.c.detail,
            _t.c.checked_at,
            func.lag(_t.c.status).over(partition_by=_t.c.component, order_by=order).label("prev_status"),
            func.lag(_t.c.detail).over(partition_by=_t.c.component, order_by=order).label("prev_detail"),
        )
        .where(*_known_rows(start, end, component))
        .subquery()
    )
    q = (
        select(inner.c.component, inner.c.status, inner.c.detail, inner.c.checked_at)
        .where(
            or_(
                inner.c.prev_status.is_(None),
                inner.c.prev_status != inner.c.status,
                and_(inner.c.status != UP, inner.c.prev_detail != inner.c.detail),
            )
        )
        .order_by(inner.c.component, inner.c.checked_at, inner.c.id)
    )
    return frame(conn.execute(q), ("component", "status", "detail", "checked_at"), times=("checked_at",))


def _one(conn: Connection, where, newest: bool):
    order = (_t.c.checked_at.desc(), _t.c.id.desc()) if newest else (_t.c.checked_at, _t.c.id)
    return conn.execute(
        select(_t.c.component, _t.c.status, _t.c.detail, _t.c.checked_at)
        .where(*where)
        .order_by(*order)
        .limit(1)
    ).first()


def outages_between(conn: Connection, start: datetime, end: datetime) -> list[Outage]:
    """Every outage that overlaps [start, end], with its true start (probes before `start` are read back to
    the component's last `up`) and its end (the first `up` after `end`, if any)."""
    start, end = to_utc(start), to_utc(end)
    parts = [_transitions(conn, start, end)]
    for component in components(conn):
        before = _one(conn, [*_known_rows(None, None, component), _t.c.checked_at < start], newest=True)
        if before is not None and before.status in _BAD:
            last_up = _one(
                conn, [_t.c.component == component, _t.c.status == UP, _t.c.checked_at < start], newest=True
            )
            since = None if last_up is None else last_up.checked_at
            earlier = _transitions(conn, since, start, component)
            parts.append(earlier[earlier["checked_at"] < pd.Timestamp(start)])
        in_range = parts[0][parts[0]["component"] == component]
        last_status = in_range["status"].iloc[-1] if len(in_range) else (before.status if before else None)
        if last_status in _BAD:
            recovery = _one(
                conn, [_t.c.component == component, _t.c.status == UP, _t.c.checked_at > end], newest=False
            )
            if recovery is not None:
                parts.append(
                    frame([recovery], ("component", "status", "detail", "checked_at"), times=("checked_at",))
                )
    history = (
        pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else None
    )
    return [o for o in outage_windows(history) if o.overlaps(start, end)]


def components(conn: Connection) -> list[str]:
    return [r["name"] for r in latest_results(conn)]


def history_frame(
    conn: Connection, start: datetime, end: datetime, *, max_points: int = MAX_HISTORY_POINTS
) -> pd.DataFrame:
    """component, status, checked_at, latency_ms of the probes in [start, end], oldest first. Past
    `max_points` rows it is downsampled in SQL into equal time buckets per component: the worst status of
    the bucket, its first time and its mean latency."""
    start, end = to_utc(start), to_utc(end)
    where = [_t.c.checked_at >= start, _t.c.checked_at <= end]
    n = conn.execute(select(func.count()).select_from(_t).where(*where)).scalar_one()
    if n <= max_points:
        rows = conn.execute(
            select(_t.c.component, _t.c.status, _t.c.checked_at, _t.c.latency_ms)
            .where(*where)
            .order_by(_t.c.checked_at, _t.c.id)
        )
        return frame(rows, HISTORY_COLUMNS, times=("checked_at",))
    per_component = max(1, max_points // max(1, len(components(conn))))
    bucket_s = max(1, math.ceil((end - start).total_seconds() / per_component))
    if conn.dialect.name == "sqlite":
        seconds = cast(func.strftime("%s", _t.c.checked_at), BigInteger)
    else:
        seconds = cast(func.floor(func.extract("epoch", _t.c.checked_at)), BigInteger)
    bucket = (seconds // literal_column(str(bucket_s), BigInteger)).label("bucket")
    rank = case((_t.c.status == DOWN, 3), (_t.c.status == DEGRADED, 2), (_t.c.status == UP, 0), else_=1)
    rows = conn.execute(
        select(
            _t.c.component,
            func.max(rank).label("worst"),
            func.min(_t.c.checked_at).label("checked_at"),
            func.avg(_t.c.latency_ms).label("latency_ms"),
        )
        .where(*where)
        .group_by(_t.c.component, bucket)
        .order_by(func.min(_t.c.checked_at))
    ).all()
    df = frame(
        [(r.component, _WORST[int(r.worst)], r.checked_at, r.latency_ms) for r in rows],
        HISTORY_COLUMNS,
        times=("checked_at",),
    )
    df["latency_ms"] = pd.to_numeric(df["latency_ms"]).astype("float64")
    return df
