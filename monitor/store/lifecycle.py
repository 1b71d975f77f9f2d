"""Findings across runs: a finding keeps its identity (kind + the objects it is about), so each run updates
`last_seen`; one no longer detected is resolved; one detected again after that is reopened. Bulk SQL only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

import orjson
from sqlalchemy import Connection, bindparam, insert, select, update

from monitor.rules.findings import Finding
from monitor.store.models import FindingRow

OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"
_CHUNK = 500


def _payload(f: Finding) -> str:
    return orjson.dumps(f.to_dict(), default=_iso).decode()


def _iso(value):
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def apply_findings(
    conn: Connection,
    findings: Iterable[Finding],
    *,
    kinds: Collection[str],
    now: datetime,
    keep: Collection[str] = (),
) -> dict:
    """Record one run's findings of `kinds`: open new ones, touch known ones, reopen resolved ones that are
    back, and resolve open ones of these kinds that the run no longer detected, except those whose id is
    in `keep` (not judged this run: the snapshot could not support them)."""
    found = {f.id: f for f in findings}
    t = FindingRow.__table__
    existing = dict(conn.execute(select(t.c.id, t.c.status).where(t.c.kind.in_(list(kinds)))).all())
    new = [f for i, f in found.items() if i not in existing]
    seen = [f for i, f in found.items() if i in existing]
    keep = set(keep)
    gone = [i for i, status in existing.items() if status != RESOLVED and i not in found and i not in keep]
    reopened = [f.id for f in seen if existing[f.id] == RESOLVED]

    if new:
        conn.execute(
            insert(FindingRow),
            [
                {
                    "id": f.id,
                    "key": f.key,
                    "kind": f.kind,
                    "severity": f.severity,
                    "status": OPEN,
                    "payment_id": f.payment_id,
                    "customer_email": f.customer_email,
                    "amount": f.amount,
                    "currency": f.currency,
                    "occurred_at": f.occurred_at,
                    "payload": _payload(f),
                    "first_seen": now,
                    "last_seen": now,
                }
                for f in new
            ],
        )
    if seen:
        conn.execute(
            update(FindingRow)
            .where(t.c.id == bindparam("fid"))
            .values(
                last_seen=now,
                payload=bindparam("payload"),
                customer_email=bindparam("email"),
                amount=bindparam("amt"),
                currency=bindparam("cur"),
            ),
            [
                {
                    "fid": f.id,
                    "payload": _payload(f),
                    "email": f.customer_email,
                    "amt": f.amount,
                    "cur": f.currency,
                }
                for f in seen
            ],
        )
    for chunk in _chunks(reopened):
        conn.execute(update(FindingRow).where(t.c.id.in_(chunk)).values(status=OPEN, resolved_at=None))
    for chunk in _chunks(gone):
        conn.execute(update(FindingRow).where(t.c.id.in_(chunk)).values(status=RESOLVED, resolved_at=now))
    return {
        "opened": len(new),
        "still_open": len(seen) - len(reopened),
        "reopened": len(reopened),
        "resolved": len(gone),
    }


def _chunks(items: list, size: int = _CHUNK):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def current_findings(
    conn: Connection,
    *,
    statuses: Collection[str] = (OPEN, ACKNOWLEDGED),
    kinds: Collection[str] | None = None,
) -> list[dict]:
    """Findings in `statuses` as DESIGN's JSON objects (the Finding's fields plus its lifecycle)."""
    t = FindingRow.__table__
    q = select(t).where(t.c.status.in_(list(statuses))).order_by(t.c.severity, t.c.kind, t.c.first_seen)
    if kinds is not None:
        q = q.where(t.c.kind.in_(list(kinds)))
    return [as_json(row) for row in conn.execute(q)]


def as_json(row) -> dict:
    d = orjson.loads(row.payload)
    d.pop("key", None)
    d.pop("occurred_at", None)
    d.update(
        id=row.id,
        status=row.status,
        first_seen=iso(row.first_seen),
        last_seen=iso(row.last_seen),
        resolved_at=iso(row.resolved_at),
        occurred_at=iso(row.occurred_at),
    )
    if row.ack_note or row.ack_by:
        d.update(ack_note=row.ack_note, ack_by=row.ack_by, ack_at=iso(row.ack_at))
    return d
