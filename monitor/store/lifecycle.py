"""Findings across runs: a finding keeps its identity (kind + the objects it is about), so each run updates
`last_seen`; one no longer detected is resolved; one detected again after that is reopened. Bulk SQL only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, fields
from datetime import datetime

import orjson
from sqlalchemy import Connection, bindparam, insert, or_, select, update

from monitor.rules.findings import Finding
from monitor.rules.timefmt import iso
from monitor.store.models import FindingRow

_RUN_FIELDS = {f.name for f in fields(Finding)}

OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"
_CHUNK = 500


def _payload(f: Finding) -> str:
    return orjson.dumps(f.to_dict(), default=_iso).decode()


def _iso(value):
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


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
) -> list[StoredFinding]:
    """Findings in `statuses` (the Finding's fields plus its lifecycle), by severity, kind, first seen."""
    t = FindingRow.__table__
    q = select(t).where(t.c.status.in_(list(statuses))).order_by(t.c.severity, t.c.kind, t.c.first_seen)
    if kinds is not None:
        q = q.where(t.c.kind.in_(list(kinds)))
    return [StoredFinding.from_row(row) for row in conn.execute(q)]


def recent_findings(conn: Connection, *, since: datetime) -> list[StoredFinding]:
    """Findings open or acknowledged, and those resolved at or after `since`: what an incident that
    resolved since then was made of."""
    t = FindingRow.__table__
    q = (
        select(t)
        .where(or_(t.c.status.in_((OPEN, ACKNOWLEDGED)), t.c.resolved_at >= since))
        .order_by(t.c.severity, t.c.kind, t.c.first_seen)
    )
    return [StoredFinding.from_row(row) for row in conn.execute(q)]


def close_findings(conn: Connection, ids: Collection[str], *, note: str, by: str, now: datetime) -> list[str]:
    """Acknowledge the findings `ids` that are open, with `note` by `by`; the ids it changed. A
    compare-and-set on `open`: a finding acknowledged or resolved meanwhile keeps its state and note.

    Acknowledged, not resolved: a later reconcile that still detects the finding (a webhook the app never
    processed stays missing from its log after the row was written another way) keeps it acknowledged,
    where a resolved one would be reopened; one it no longer detects it resolves as usual."""
    t = FindingRow.__table__
    changed: list[str] = []
    for chunk in _chunks(sorted(set(ids))):
        rows = conn.execute(
            update(t)
            .where(t.c.id.in_(chunk), t.c.status == OPEN)
            .values(status=ACKNOWLEDGED, ack_note=note, ack_by=by, ack_at=now)
            .returning(t.c.id)
        ).all()
        changed += [r.id for r in rows]
    return sorted(changed)


@dataclass
class StoredFinding(Finding):
    """A finding as the store keeps it: what the run found (a monitor.rules.findings.Finding, its `key` and
    therefore its `id` included) and its lifecycle. Times are UTC datetimes; `to_json` is DESIGN's JSON
    object of a finding."""

    status: str = OPEN
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    resolved_at: datetime | None = None
    ack_note: str | None = None
    ack_by: str | None = None
    ack_at: datetime | None = None

    @classmethod
    def from_row(cls, row) -> StoredFinding:
        """From a row of the findings table: the run's fields from its payload, the lifecycle from its
        columns."""
        payload = orjson.loads(row.payload)
        run = {name: payload[name] for name in _RUN_FIELDS if name in payload}
        run.update(kind=row.kind, key=row.key, occurred_at=row.occurred_at)
        run["subscription_ids"] = list(run.get("subscription_ids") or [])
        return cls(**run, **{name: getattr(row, name) for name in _LIFECYCLE_FIELDS})

    @property
    def acknowledged(self) -> bool:
        """Whether someone left a note or their name on it (the JSON then carries ack_*)."""
        return bool(self.ack_note or self.ack_by)

    def to_json(self) -> dict:
        """DESIGN's JSON object: the run's fields (Finding.to_dict's order, without key and occurred_at),
        then the lifecycle."""
        d = {name: getattr(self, name) for name in _JSON_RUN_FIELDS}
        d["subscription_ids"] = list(self.subscription_ids)
        d["severity"] = self.severity
        d["id"] = self.id
        d.update(
            status=self.status,
            first_seen=iso(self.first_seen),
            last_seen=iso(self.last_seen),
            resolved_at=iso(self.resolved_at),
            occurred_at=iso(self.occurred_at),
        )
        if self.acknowledged:
            d.update(ack_note=self.ack_note, ack_by=self.ack_by, ack_at=iso(self.ack_at))
        return d


# The lifecycle's fields, each a column of the findings table of the same name.
_LIFECYCLE_FIELDS = tuple(f.name for f in fields(StoredFinding) if f.name not in _RUN_FIELDS)
# The run's fields in the JSON (the key is the id's source; occurred_at is written with the lifecycle).
_JSON_RUN_FIELDS = tuple(f.name for f in fields(Finding) if f.name not in ("key", "occurred_at"))
